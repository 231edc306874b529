//! `afterimage preference` end to end against the mock: exact counts at concurrency,
//! each strategy (the secondary model really asked), multi-turn prefixes, each
//! format's columns, SIGKILL then `--resume`, an existing output refused, and the
//! output loaded by Hugging Face `datasets` when a Python with it is given.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use afterimage_mock::{MockConfig, MockServer};
use serde_json::Value;

use crate::{Cli, project, read_rows};

/// The dialog config plus a `preference:` section.
fn config(preference: &str) -> String {
    format!(
        "{}preference:\n{preference}",
        crate::LOCAL.replace("  max_concurrency: 4\n", "  max_concurrency: 2\n")
    )
}

fn preference(config: &Path, base_url: &str, out: &Path) -> Cli {
    Cli::new(&[
        "preference",
        "-c",
        config.to_str().unwrap(),
        "--base-url",
        base_url,
        "-o",
        out.to_str().unwrap(),
    ])
}

/// Runs a preference config to the end; its JSON report and rows.
async fn run_pairs(server: &MockServer, section: &str, extra: &[&str]) -> (Value, Vec<Value>) {
    let (dir, path) = project(&config(section));
    let out = dir.path().join("pairs.jsonl");
    let run = preference(&path, &server.openai_base_url(), &out)
        .args(&["--json", "--max-concurrency", "4"])
        .args(extra)
        .run()
        .await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    (report, read_rows(&out))
}

/// Exactly `n` rows, distinct ids of one run, each with the pair's metadata.
fn assert_pairs(rows: &[Value], n: usize) {
    assert_eq!(rows.len(), n);
    let ids: HashSet<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), n, "ids repeat");
    for row in rows {
        let m = &row["metadata"];
        let gap = m["score_gap"].as_f64().unwrap();
        assert!(gap >= 0.1 - 1e-9, "{row}");
        assert!(m["chosen_score"].as_f64().unwrap() > m["rejected_score"].as_f64().unwrap());
        assert!(m["chosen_label"].is_string() && m["rejected_label"].is_string());
        assert!(!m["context_ids"].as_array().unwrap().is_empty(), "{row}");
    }
}

fn columns(row: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = row
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temperature_pairs_are_exact_at_concurrency_and_discards_are_replaced() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let (report, rows) = run_pairs(&server, "  num_pairs: 8\n", &[]).await;
    assert_pairs(&rows, 8);
    assert_eq!(
        columns(&rows[0]),
        ["chosen", "id", "metadata", "prompt", "rejected"]
    );
    assert!(rows.iter().all(|r| r["prompt"].is_string()));
    // The mock answers tersely at 0.9 about two times in three: the others score
    // too close together and are discarded, counted, and replaced.
    assert_eq!(report["rows_written"], 8);
    let analytics = &report["preference"];
    assert_eq!(analytics["pairs_kept"], 8);
    assert!(
        report["failures"]["pair: score_gap_too_small"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{report}"
    );
    assert!(
        analytics["win_rates"]["temperature_0.1"]["chosen"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(analytics["score_gap"]["median"].as_f64().unwrap() >= 0.1);
    assert_eq!(report["attempt_budget"], 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_pairs_prefer_the_careful_answer_and_carry_scores() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let section = "  num_pairs: 5\n  strategy: prompt\n  output_format: orpo\n";
    let (report, rows) = run_pairs(&server, section, &[]).await;
    assert_pairs(&rows, 5);
    assert_eq!(
        columns(&rows[0]),
        [
            "chosen",
            "chosen_score",
            "id",
            "metadata",
            "prompt",
            "rejected",
            "rejected_score"
        ]
    );
    for row in &rows {
        assert_eq!(row["metadata"]["chosen_label"], "enhanced", "{row}");
        assert_eq!(row["metadata"]["rejected_label"], "degraded");
        assert!(row["rejected"].as_str().unwrap().split_whitespace().count() < 15);
    }
    // `enhanced` wins every pair: upstream's warning says so.
    let warnings = report["preference"]["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("enhanced")),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_pairs_really_ask_the_secondary_model() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    // The primary answers carefully, the secondary tersely (its temperature is high):
    // what matters here is that both are asked, by name.
    let section = "  num_pairs: 4\n  strategy: model\n  secondary_model: mock-small\n  min_score_gap: 0.0\n  output_format: ultrafeedback\n";
    let (_, rows) = run_pairs(&server, section, &[]).await;
    assert_eq!(rows.len(), 4);
    let by_model = server.requests_by_model();
    assert!(
        by_model.get("mock-small").copied().unwrap_or(0) >= 4,
        "{by_model:?}"
    );
    for row in &rows {
        assert_eq!(
            columns(row),
            [
                "chosen",
                "completions",
                "id",
                "instruction",
                "metadata",
                "prompt",
                "rejected",
                "score_chosen",
                "score_rejected"
            ]
        );
        let models: HashSet<&str> = row["completions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["model"].as_str().unwrap())
            .collect();
        assert_eq!(models, HashSet::from(["mock-model", "mock-small"]), "{row}");
        // Whole responses, not the first 100 characters.
        let full = row["completions"][0]["response"].as_str().unwrap();
        assert!(full.len() > 100, "{full}");
        assert_eq!(
            row["chosen"].as_array().unwrap().last().unwrap()["role"],
            "assistant"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_pairs_use_every_variant() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let section = "  num_pairs: 4\n  num_responses: 4\n  strategy: combined\n  secondary_model: mock-small\n  output_format: anthropic_hh\n";
    let (report, rows) = run_pairs(&server, section, &[]).await;
    assert_pairs(&rows, 4);
    assert!(server.requests_by_model()["mock-small"] >= 4);
    for row in &rows {
        assert_eq!(columns(row), ["chosen", "id", "metadata", "rejected"]);
        let chosen = row["chosen"].as_str().unwrap();
        assert!(chosen.starts_with("\n\nHuman: "), "{chosen}");
        assert!(chosen.contains("\n\nAssistant: "));
        let labels: Vec<&str> = row["metadata"]["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["label"].as_str().unwrap())
            .collect();
        assert_eq!(
            labels,
            ["enhanced", "degraded", "secondary_model", "temperature_0.4"]
        );
    }
    assert!(
        report["preference"]["win_rates"]["degraded"]["rejected"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_turn_pairs_share_a_real_dialog_and_differ_in_the_last_answer() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let section =
        "  num_pairs: 6\n  strategy: prompt\n  multi_turn: true\n  output_format: chat_dpo\n";
    let (_, rows) = run_pairs(&server, section, &["--max-turns", "3"]).await;
    assert_pairs(&rows, 6);
    let mut exchanges = HashSet::new();
    for row in &rows {
        let prompt = row["prompt"].as_array().unwrap();
        assert_eq!(prompt[0]["role"], "system");
        let dialog = &prompt[1..];
        // user, assistant, ..., user: 1 or 2 exchanges, then the question answered.
        assert!(dialog.len() == 3 || dialog.len() == 5, "{row}");
        for (i, m) in dialog.iter().enumerate() {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            assert_eq!(m["role"], role, "{row}");
            assert!(!m["content"].as_str().unwrap().trim().is_empty());
        }
        exchanges.insert(dialog.len());
        for side in ["chosen", "rejected"] {
            let answer = row[side].as_array().unwrap();
            assert_eq!(answer.len(), 1);
            assert_eq!(answer[0]["role"], "assistant");
        }
        assert_ne!(row["chosen"], row["rejected"]);
        assert_eq!(row["metadata"]["turns"], (dialog.len() as u64).div_ceil(2));
    }
    assert_eq!(
        exchanges.len(),
        2,
        "both prefix lengths drawn: {exchanges:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_output_needs_resume_and_a_misspelled_key_is_named() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let (dir, path) = project(&config("  num_pairs: 2\n  strategy: prompt\n"));
    let out = dir.path().join("pairs.jsonl");
    let first = preference(&path, &server.openai_base_url(), &out)
        .run()
        .await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let before = std::fs::read_to_string(&out).unwrap();
    let again = preference(&path, &server.openai_base_url(), &out)
        .run()
        .await;
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(
        again.stderr.contains("already holds 2 rows"),
        "{}",
        again.stderr
    );
    assert!(again.stderr.contains("--resume"), "{}", again.stderr);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        before,
        "nothing overwritten"
    );
    // Resuming a finished run writes nothing more.
    let resumed = preference(&path, &server.openai_base_url(), &out)
        .args(&["--resume"])
        .run()
        .await;
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(read_rows(&out).len(), 2);
    // ... but not in another format: one file holding two shapes would not load.
    let mixed = preference(&path, &server.openai_base_url(), &out)
        .args(&["--resume", "--format", "chat_dpo"])
        .run()
        .await;
    assert_eq!(mixed.code, 2);
    assert!(mixed.stderr.contains("holds dpo pairs"), "{}", mixed.stderr);

    std::fs::write(&path, config("  num_pair: 2\n")).unwrap();
    let typo = preference(&path, &server.openai_base_url(), &out)
        .run()
        .await;
    assert_eq!(typo.code, 2);
    assert!(typo.stderr.contains("num_pair"), "{}", typo.stderr);

    std::fs::write(&path, config("  strategy: model\n")).unwrap();
    let validate = Cli::new(&[
        "validate",
        "-c",
        path.to_str().unwrap(),
        "--base-url",
        &server.openai_base_url(),
    ])
    .run()
    .await;
    assert_eq!(validate.code, 2, "{}", validate.stdout);
    assert!(
        validate.stdout.contains("fail  preference.secondary_model"),
        "{}",
        validate.stdout
    );
    let dry = preference(&path, &server.openai_base_url(), &out)
        .args(&["--dry-run"])
        .run()
        .await;
    assert_eq!(dry.code, 2);
    assert!(
        dry.stderr.contains("preference.secondary_model"),
        "{}",
        dry.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_resumes_with_exactly_the_missing_pairs() {
    const N: usize = 16;
    let server = MockServer::start(MockConfig::default().with_latency(Duration::from_millis(40)))
        .await
        .unwrap();
    let (dir, path) = project(&config(&format!(
        "  num_pairs: {N}\n  strategy: prompt\n  output_format: chat_dpo\n"
    )));
    let out = dir.path().join("pairs.jsonl");
    let log = dir.path().join("killed.log");
    let mut child = preference(&path, &server.openai_base_url(), &out)
        .args(&["--json"])
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines(&out) < 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before the kill: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "no pairs after 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_at = lines(&out);
    assert!(killed_at < N, "the run finished before the kill");

    let run = preference(&path, &server.openai_base_url(), &out)
        .args(&["--resume", "--json"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let rows = read_rows(&out);
    assert_eq!(rows.len(), N);
    let ids: HashSet<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), N, "a pair was written twice");
    let run_ids: HashSet<&str> = ids
        .iter()
        .map(|id| id.rsplit_once('-').unwrap().0)
        .collect();
    assert_eq!(run_ids.len(), 1, "one run: {run_ids:?}");
    assert!(report["rows_resumed"].as_u64().unwrap() >= killed_at as u64 - 1);
    assert_eq!(
        report["rows_resumed"].as_u64().unwrap() + report["rows_written"].as_u64().unwrap(),
        N as u64
    );
}

/// Whole lines in `path` now.
fn lines(path: &PathBuf) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.matches('\n').count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hugging_face_datasets_loads_the_pairs() {
    let Some(python) = std::env::var_os("AFTERIMAGE_TEST_DATASETS_PYTHON") else {
        eprintln!(
            "skipped: AFTERIMAGE_TEST_DATASETS_PYTHON is not set (a Python with the `datasets` package, e.g. a venv under ~/.cache/afterimage)"
        );
        return;
    };
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    for (format, wanted) in [
        ("dpo", "prompt,chosen,rejected"),
        ("chat_dpo", "prompt,chosen,rejected"),
        (
            "ultrafeedback",
            "prompt,chosen,rejected,score_chosen,score_rejected",
        ),
        ("anthropic_hh", "chosen,rejected"),
        ("orpo", "prompt,chosen,rejected,chosen_score,rejected_score"),
    ] {
        let section = format!(
            "  num_pairs: 3\n  strategy: prompt\n  multi_turn: true\n  output_format: {format}\n"
        );
        let (dir, path) = project(&config(&section));
        let out = dir.path().join(format!("{format}.jsonl"));
        let run = preference(&path, &server.openai_base_url(), &out)
            .run()
            .await;
        assert_eq!(run.code, 0, "{format}: {}", run.stderr);
        let script = format!(
            "import sys\nfrom datasets import load_dataset\nds = load_dataset('json', data_files=sys.argv[1], split='train')\nassert ds.num_rows == 3, ds.num_rows\nfor c in '{wanted},id,metadata'.split(','):\n    assert c in ds.column_names, (c, ds.column_names)\nprint(ds.num_rows, ds[0]['metadata']['chosen_label'])\n"
        );
        let output = std::process::Command::new(&python)
            .args(["-c", &script, out.to_str().unwrap()])
            .env("HF_DATASETS_OFFLINE", "1")
            .env("HF_HOME", dir.path().join("hf"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).starts_with("3 "));
    }
}

/// `examples/preference.yaml` through `afterimage preference`: its 20 chat_dpo pairs,
/// with the requests per kept pair and the discard rate printed for the notes.
pub(crate) async fn run_example(server: &MockServer, config: &Path, dir: &Path) {
    let out = dir.join("preferences.jsonl");
    let run = Cli::new(&[
        "preference",
        "-c",
        config.to_str().unwrap(),
        "--provider",
        "local",
        "--base-url",
        &server.openai_base_url(),
        "-o",
        out.to_str().unwrap(),
        "--save-log",
        "--json",
    ])
    .run()
    .await;
    assert_eq!(run.code, 0, "preference: {}\n{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let rows = read_rows(&out);
    assert_pairs(&rows, 20);
    assert!(rows.iter().all(|r| r["prompt"][0]["role"] == "system"));
    let analytics = &report["preference"];
    let discarded: u64 = analytics["discarded"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(
        discarded > 0,
        "the mock's judge should discard some: {report}"
    );
    // The log: each pair whole (every candidate's answer), then the analytics.
    let log = read_rows(&dir.join("preferences_log.jsonl"));
    assert_eq!(log.len(), 21);
    for pair in &log[..20] {
        let candidates = pair["candidates"].as_array().unwrap();
        assert_eq!(candidates.len(), 3);
        assert!(candidates.iter().all(|c| c["response"].is_string()));
        assert!(rows.iter().any(|r| r["id"] == pair["id"]));
    }
    assert_eq!(log[20]["_analytics"]["preference"], *analytics);
    eprintln!(
        "examples/preference.yaml: {} pairs, {:.1} requests per kept pair, discard rate {}",
        rows.len(),
        report["requests"].as_f64().unwrap() / rows.len() as f64,
        analytics["discard_rate"]
    );
}

/// Pairs in SQLite or PostgreSQL: exact, refused without `--resume`, resumed to a
/// larger count with only the missing ones.
async fn database_pairs(server: &MockServer, out: &str) {
    use afterimage_core::Storage as _;
    let (dir, path) = project(&config("  num_pairs: 3\n  strategy: prompt\n"));
    let _keep = dir;
    let run = |extra: &[&str]| {
        Cli::new(&[
            "preference",
            "-c",
            path.to_str().unwrap(),
            "--base-url",
            &server.openai_base_url(),
            "-o",
            out,
        ])
        .args(extra)
    };
    let first = run(&[]).run().await;
    assert_eq!(first.code, 0, "{out}: {}", first.stderr);
    let again = run(&[]).run().await;
    assert_eq!(again.code, 2, "{out}: {}", again.stderr);
    assert!(again.stderr.contains("--resume"), "{}", again.stderr);
    let resumed = run(&["--resume", "--num-pairs", "5"]).run().await;
    assert_eq!(resumed.code, 0, "{out}: {}", resumed.stderr);
    let storage = afterimage_storage::StorageSpec::parse(out)
        .open()
        .await
        .unwrap();
    let ids: HashSet<String> = storage.existing_ids().await.unwrap().into_iter().collect();
    assert_eq!(ids.len(), 5, "{out}: {ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_postgres_keep_pairs_and_resume() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite:{}", dir.path().join("pairs.db").display());
    database_pairs(&server, &sqlite).await;
    let schema = crate::PostgresSchema::new();
    database_pairs(&server, &schema.url).await;
    schema.drop().await;
}
