//! `afterimage structured` end to end against the mock: the example writes exactly its
//! rows with invalid outputs asked again and replaced, a SIGKILLed run resumes to
//! exactly N distinct ids in JSONL, SQLite and PostgreSQL (URL in
//! `AFTERIMAGE_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`),
//! schema files are JSON or YAML relative to the config, and `validate` names a broken
//! schema.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use afterimage_mock::{MockConfig, MockServer};
use afterimage_storage::StorageSpec;
use afterimage_strategies::validate_arguments;

use crate::{Cli, PostgresSchema, read_rows};

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn structured(config: &Path, base_url: &str, out: &Path) -> Cli {
    Cli::new(&[
        "structured",
        "--config",
        config.to_str().unwrap(),
        "--provider",
        "local",
        "--base-url",
        base_url,
        "-o",
        out.to_str().unwrap(),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_writes_exactly_its_rows_with_bad_outputs_asked_again() {
    let config = MockConfig::default()
        .with_latency(Duration::from_millis(2))
        .with_schema_violation_rate(0.3)
        .with_seed(11);
    let server = MockServer::start(config).await.unwrap();
    let example = examples().join("structured.yaml");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("faq.jsonl");

    let validate = Cli::new(&[
        "validate",
        "--config",
        example.to_str().unwrap(),
        "--provider",
        "local",
        "--base-url",
        &server.openai_base_url(),
    ])
    .run()
    .await;
    assert_eq!(validate.code, 0, "{}\n{}", validate.stdout, validate.stderr);
    assert!(
        validate
            .stdout
            .contains("ok    structured: schema `structured-faq`"),
        "{}",
        validate.stdout
    );

    let run = structured(&example, &server.openai_base_url(), &out)
        .args(&["--json", "--max-concurrency", "4"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 12);
    assert_eq!(report["rows_written"], 12);
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(examples().join("structured-faq.json")).unwrap(),
    )
    .unwrap();
    let ids: HashSet<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 12);
    for row in &rows {
        validate_arguments(&schema, &row["output"]).unwrap();
        assert!(
            row["context"].as_str().is_some_and(|c| !c.is_empty()),
            "{row}"
        );
        assert_eq!(row["metadata"]["generation"]["schema"], "structured-faq");
    }
    // What the example costs: requests per row, and how often outputs were asked
    // again or replaced (the mock breaks 30% of answers).
    let requests = report["requests"].as_u64().unwrap();
    let reasked = report["rejections"]["output_reasked"].as_u64().unwrap_or(0);
    let failed = report["failures"]["output: invalid"].as_u64().unwrap_or(0);
    eprintln!(
        "structured example: {:.2} requests per row, {reasked} re-asks and {failed} rows replaced for 12 rows; failures {}",
        requests as f64 / 12.0,
        report["failures"]
    );
    assert!(reasked > 0, "{report}");
    // The mock also breaks instruction batches; every failure is counted by cause.
    let causes: u64 = report["failures"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(report["dialogs_failed"].as_u64(), Some(causes));
}

/// Rows stored in `out` now; a JSONL line being written is not counted.
async fn stored_now(out: &str) -> usize {
    use afterimage_core::Storage as _;
    match StorageSpec::parse(out) {
        StorageSpec::Jsonl(path) => std::fs::read_to_string(path)
            .map(|t| t.lines().filter(|l| l.ends_with('}')).count())
            .unwrap_or(0),
        spec => match spec.open_existing().await {
            Ok(storage) => storage.existing_ids().await.map_or(0, |ids| ids.len()),
            Err(_) => 0,
        },
    }
}

/// Every structured row in `out` as its JSON value (PostgreSQL's in `schema`).
async fn stored_rows(out: &str, schema: Option<&PostgresSchema>) -> Vec<serde_json::Value> {
    match StorageSpec::parse(out) {
        StorageSpec::Jsonl(path) => read_rows(&path),
        StorageSpec::Sqlite(path) => {
            let db = rusqlite::Connection::open(path).unwrap();
            let mut statement = db.prepare("SELECT row FROM conversations").unwrap();
            statement
                .query_map([], |row| row.get::<_, String>(0))
                .unwrap()
                .map(|text| serde_json::from_str(&text.unwrap()).unwrap())
                .collect()
        }
        StorageSpec::Postgres(_) => {
            let schema = schema.expect("a PostgreSQL output comes with its schema");
            let (client, connection) = tokio_postgres::connect(&schema.base, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            let query = format!("SELECT row::text FROM \"{}\".conversations", schema.name);
            let rows = client.query(&query, &[]).await.unwrap();
            rows.iter()
                .map(|row| serde_json::from_str(row.get::<_, &str>(0)).unwrap())
                .collect()
        }
    }
}

/// Starts a structured run into `out`, SIGKILLs it after a few rows, checks that it is
/// refused without `--resume` and by `generate --resume`, resumes it, and checks that
/// `out` holds exactly N rows of one run in the structured shape.
async fn kill_then_resume(out: &str, schema: Option<&PostgresSchema>) {
    const N: usize = 30;
    let server = MockServer::start(MockConfig::default().with_latency(Duration::from_millis(50)))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.yaml");
    std::fs::write(
        &config,
        r#"
generation: {max_concurrency: 4}
model: {provider: local, model_name: mock-model}
respondent: {system_prompt: You write knowledge-base entries.}
documents:
  provider: memory
  texts:
    - Error 503 means the service is unavailable. Retry after 5 minutes.
    - To reset your password, click 'Forgot Password' on the login screen.
context: {num_random_contexts: 1, n_instructions: 2}
structured:
  schema: {type: object, properties: {title: {type: string}, answer: {type: string}}, required: [title, answer]}
  num_samples: 30
"#,
    )
    .unwrap();
    let base_url = server.openai_base_url();
    let command = |extra: &[&str]| {
        structured(&config, &base_url, Path::new(out))
            .args(&["--json"])
            .args(extra)
            .command()
    };

    let mut child = command(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored_now(out).await < 3 {
        assert!(child.try_wait().unwrap().is_none(), "ended before the kill");
        assert!(Instant::now() < deadline, "no rows after 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let killed_at = stored_now(out).await;
    assert!(killed_at < N, "the run finished before the kill");

    let refused = command(&[]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));
    // A dialog run cannot be resumed into these rows.
    let wrong = Cli::generate(&config, &base_url, out)
        .args(&["--resume"])
        .run()
        .await;
    assert_eq!(wrong.code, 2, "{}", wrong.stderr);
    assert!(
        wrong.stderr.contains("holds structured rows"),
        "{}",
        wrong.stderr
    );

    let resumed = command(&["--resume"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert_eq!(resumed.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&resumed.stdout).trim()).unwrap();
    assert!(
        report["rows_resumed"].as_u64().unwrap() >= killed_at as u64,
        "{report}"
    );
    assert_eq!(
        report["rows_resumed"].as_u64().unwrap() + report["rows_written"].as_u64().unwrap(),
        N as u64
    );
    let rows = stored_rows(out, schema).await;
    assert_eq!(rows.len(), N);
    let ids: HashSet<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), N);
    let run_id = report["run_id"].as_str().unwrap();
    assert!(ids.iter().all(|id| id.starts_with(&format!("{run_id}-"))));
    for row in &rows {
        assert!(
            row["instruction"].as_str().is_some_and(|q| !q.is_empty()),
            "{row}"
        );
        assert!(row["output"]["title"].is_string(), "{row}");
        assert!(row["output"]["answer"].is_string(), "{row}");
        assert_eq!(row["metadata"]["generation"]["run_id"], run_id, "{row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_resumes_to_exactly_n_distinct_ids() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rows.jsonl");
    kill_then_resume(out.to_str().unwrap(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sqlite_run_resumes_to_exactly_n_distinct_ids() {
    let dir = tempfile::tempdir().unwrap();
    let out = format!("sqlite:{}", dir.path().join("rows.db").display());
    kill_then_resume(&out, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_postgres_run_resumes_to_exactly_n_distinct_ids() {
    let schema = PostgresSchema::new();
    kill_then_resume(&schema.url, Some(&schema)).await;
    schema.drop().await;
}

/// A structured run is a job of the dialog scheduler, so the grace period holds: at
/// its end the rows still in flight are cancelled, the record says `stopped` and why,
/// and `--resume` finishes the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_the_grace_period_cancels_rows_in_flight() {
    // Enough rows, slowly enough, that the run is still going when the test signals it,
    // however loaded the machine (at least 200 / 4 x 20 ms = 1 s of requests).
    const N: usize = 200;
    let config = MockConfig::default().with_latency(Duration::from_millis(20));
    let server = MockServer::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.yaml");
    std::fs::write(
        &config,
        "generation: {max_concurrency: 4}\nmodel: {provider: local, model_name: mock-model}\nrespondent: {system_prompt: You write knowledge-base entries.}\nstructured: {schema: {type: object, properties: {title: {type: string}}, required: [title]}, num_samples: 200}\n",
    )
    .unwrap();
    let out = dir.path().join("rows.jsonl");
    let command = |extra: &[&str]| {
        structured(&config, &server.openai_base_url(), &out)
            .args(&["--json"])
            .args(extra)
            .command()
    };
    let mut child = command(&["--grace", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_lines(&out) < 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "ended before the signal"
        );
        assert!(Instant::now() < deadline, "no rows after 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Requests in flight now hang far past the grace.
    server.set_extra_latency(Duration::from_secs(120));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let took = signalled.elapsed();
    assert_eq!(output.status.code(), Some(143));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "took {took:?}: the grace is 2 s, the rows in flight would take 120 s"
    );
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).unwrap();
    let reason = report["stop_reason"].as_str().unwrap();
    assert!(reason.starts_with("interrupted by SIGTERM"), "{reason}");
    assert!(reason.contains("in flight were cancelled"), "{reason}");
    assert_eq!(
        read_lines(&out),
        report["rows_written"].as_u64().unwrap() as usize
    );
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("rows.jsonl.run.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["status"], "stopped", "{record}");
    assert_eq!(record["stop_reason"], reason);

    server.set_extra_latency(Duration::ZERO);
    let resumed = command(&["--resume"]).output().unwrap();
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let ids: HashSet<String> = read_rows(&out)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!((read_lines(&out), ids.len()), (N, N));
}

fn read_lines(out: &Path) -> usize {
    std::fs::read_to_string(out).map_or(0, |t| t.lines().filter(|l| l.ends_with('}')).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_schema_files_are_read_relative_to_the_config_and_broken_ones_named() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("schemas")).unwrap();
    std::fs::write(
        project.join("schemas/recipe.yaml"),
        "type: object\nproperties:\n  dish: {type: string}\n  minutes: {type: integer, minimum: 1}\nrequired: [dish, minutes]\n",
    )
    .unwrap();
    let config = project.join("run.yaml");
    let body = "model: {provider: local, model_name: mock-model}\nrespondent: {system_prompt: You are a chef.}\nstructured: {schema_file: schemas/recipe.yaml, num_samples: 3}\n";
    std::fs::write(&config, body).unwrap();
    let out = dir.path().join("recipes.jsonl");
    // Run from another folder: the schema path is the config's, not the cwd's.
    let run = structured(&config, &server.openai_base_url(), &out)
        .current_dir(dir.path())
        .run()
        .await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| r["output"]["minutes"].as_i64().unwrap() >= 1)
    );
    assert_eq!(rows[0]["metadata"]["generation"]["schema"], "recipe");

    std::fs::write(
        project.join("schemas/recipe.yaml"),
        "type: object\nproperties:\n  dish: {type: sting}\nrequired: [dish]\n",
    )
    .unwrap();
    let validate = Cli::new(&[
        "validate",
        "--config",
        config.to_str().unwrap(),
        "--base-url",
        &server.openai_base_url(),
    ])
    .run()
    .await;
    assert_eq!(validate.code, 2, "{}", validate.stdout);
    let line = validate
        .stdout
        .lines()
        .find(|l| l.starts_with("fail  structured"))
        .unwrap_or_else(|| panic!("{}", validate.stdout));
    assert!(line.contains("structured.schema_file"), "{line}");
    assert!(line.contains("/properties/dish/type"), "{line}");
    assert!(line.contains("unknown type \"sting\""), "{line}");
    let run = structured(&config, &server.openai_base_url(), &out)
        .run()
        .await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("/properties/dish/type"),
        "{}",
        run.stderr
    );
}

/// A judged row as `generate` with `auto_improve` stores it.
fn judged(id: &str, question: &str, answer: &str, score: Option<f64>) -> String {
    let mut row = serde_json::json!({
        "conversations": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
        "metadata": {"context_id": null, "context_ids": []},
        "instruction_context": "",
        "response_context": null,
        "persona": null,
        "id": id,
    });
    if let Some(score) = score {
        row["final_score"] = score.into();
    }
    row.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_dpo_pairs_judged_rows_and_explains_unjudged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let judged_rows = dir.path().join("judged.jsonl");
    let lines = [
        judged(
            "r-000000",
            "How do I reset my password?",
            "Click 'Forgot Password'.",
            Some(0.92),
        ),
        judged(
            "r-000001",
            "How do I reset my password?",
            "I don't know.",
            Some(0.31),
        ),
        judged(
            "r-000002",
            "What does error 503 mean?",
            "The service is down; retry in 5 minutes.",
            Some(0.88),
        ),
        judged(
            "r-000003",
            "What does error 503 mean?",
            "It is unavailable.",
            Some(0.80),
        ),
        judged("r-000004", "Can I pay by invoice?", "Yes.", Some(0.7)),
    ];
    std::fs::write(&judged_rows, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("train");
    let export = |extra: &[&str]| {
        Cli::new(&[
            "export",
            judged_rows.to_str().unwrap(),
            "--format",
            "dpo",
            "--out-dir",
        ])
        .args(&[out.to_str().unwrap(), "--json"])
        .args(extra)
    };
    let run = export(&[]).run().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let pairs = read_rows(&out.join("judged_dpo.jsonl"));
    assert_eq!(pairs.len(), 1, "503's gap of 0.08 is below upstream's 0.2");
    let pair = &pairs[0];
    assert_eq!(
        pair["prompt"],
        serde_json::json!([{"role": "user", "content": "How do I reset my password?"}])
    );
    assert_eq!(pair["chosen"][0]["content"], "Click 'Forgot Password'.");
    assert_eq!(pair["rejected"][0]["content"], "I don't know.");
    assert_eq!(pair["chosen"][0]["role"], "assistant");
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["formats"][0]["skipped"]["small_gap"], 2);
    assert_eq!(report["formats"][0]["skipped"]["unpaired"], 1);

    let run = export(&["--min-score-gap", "0.05"]).run().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(read_rows(&out.join("judged_dpo.jsonl")).len(), 2);

    // `messages` and `oumi` are upstream's names for the openai shape.
    let run = Cli::new(&[
        "export",
        judged_rows.to_str().unwrap(),
        "--format",
        "oumi",
        "--out-dir",
    ])
    .args(&[out.to_str().unwrap()])
    .run()
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(read_rows(&out.join("judged_openai.jsonl")).len(), 5);

    let unjudged = dir.path().join("unjudged.jsonl");
    std::fs::write(
        &unjudged,
        judged("u-000000", "How do I reset my password?", "Click it.", None) + "\n",
    )
    .unwrap();
    let run = Cli::new(&["export", unjudged.to_str().unwrap(), "--format", "dpo"])
        .run()
        .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("no row has one"), "{}", run.stderr);
    assert!(run.stderr.contains("auto_improve"), "{}", run.stderr);
    // `--all` leaves the pairs out of unjudged rows instead of failing.
    let run = Cli::new(&["export", unjudged.to_str().unwrap(), "--all"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
}

/// Loads `file` with Hugging Face `datasets` and checks its row count and columns.
fn load_with_datasets(python: &std::ffi::OsStr, file: &Path, rows: usize, columns: &str) {
    let script = format!(
        "import sys\nfrom datasets import load_dataset\nds = load_dataset('json', data_files=sys.argv[1], split='train')\nassert ds.num_rows == {rows}, ds.num_rows\nfor c in '{columns}'.split(','):\n    assert c in ds.column_names, (c, ds.column_names)\nprint(ds.num_rows)\n"
    );
    let home = file.with_extension("hf");
    let output = std::process::Command::new(python)
        .args(["-c", &script, file.to_str().unwrap()])
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HOME", &home)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hugging_face_datasets_loads_structured_rows_and_dpo_pairs() {
    let Some(python) = std::env::var_os("AFTERIMAGE_TEST_DATASETS_PYTHON") else {
        eprintln!(
            "skipped: AFTERIMAGE_TEST_DATASETS_PYTHON is not set (a Python with the `datasets` package, e.g. a venv under ~/.cache/afterimage)"
        );
        return;
    };
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("faq.jsonl");
    let run = structured(
        &examples().join("structured.yaml"),
        &server.openai_base_url(),
        &out,
    )
    .run()
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    load_with_datasets(
        &python,
        &out,
        12,
        "instruction,context,persona,output,metadata,id",
    );

    let judged_rows = dir.path().join("judged.jsonl");
    let lines = [
        judged(
            "r-000000",
            "How do I pay?",
            "By card or invoice.",
            Some(0.9),
        ),
        judged("r-000001", "How do I pay?", "Somehow.", Some(0.2)),
    ];
    std::fs::write(&judged_rows, lines.join("\n") + "\n").unwrap();
    let export_dir = dir.path().join("train");
    let run = Cli::new(&[
        "export",
        judged_rows.to_str().unwrap(),
        "--format",
        "dpo",
        "--out-dir",
    ])
    .args(&[export_dir.to_str().unwrap()])
    .run()
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    load_with_datasets(
        &python,
        &export_dir.join("judged_dpo.jsonl"),
        1,
        "prompt,chosen,rejected",
    );
}
