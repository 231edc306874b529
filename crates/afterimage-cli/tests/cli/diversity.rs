//! Running out of new questions, through the binary: two small documents against the
//! mock, whose steered question writer has a finite pool per document, asked for far
//! more dialogs than the documents can give.

use afterimage_mock::{MockConfig, MockServer};

use super::{Cli, LOCAL, project, read_rows};

/// The project's two small documents, asked for 2000 one-turn dialogs.
fn config(extra: &str) -> String {
    LOCAL
        .replace("num_dialogs: 12", "num_dialogs: 2000")
        .replace("max_turns: 3", "max_turns: 1")
        .replace("max_concurrency: 4", "max_concurrency: 8")
        + extra
}

/// Runs `config` with `--json`; returns the exit code, the report (when one was
/// printed), stderr, and the rows written.
async fn run(
    server: &MockServer,
    config: &str,
) -> (
    i32,
    serde_json::Value,
    String,
    Vec<serde_json::Value>,
    tempfile::TempDir,
) {
    let (dir, path) = project(config);
    let out = dir.path().join("out.jsonl");
    let run = Cli::generate(&path, &server.openai_base_url(), &out)
        .args(&["--json"])
        .run()
        .await;
    let report = serde_json::from_str(run.stdout.trim()).unwrap_or(serde_json::Value::Null);
    let rows = if out.exists() {
        read_rows(&out)
    } else {
        Vec::new()
    };
    (run.code, report, run.stderr, rows, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_questions_ends_cleanly_and_steering_widens_the_pool() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let (code, report, stderr, rows, dir) = run(&server, &config("")).await;
    assert_eq!(code, 0, "{stderr}");
    let reason = report["stop_reason"].as_str().unwrap();
    assert!(reason.starts_with("questions ran out: "), "{reason}");
    assert!(reason.contains("add documents"), "{reason}");
    assert_eq!(report["rows_written"], rows.len());
    assert!(rows.len() > 20 && rows.len() < 2000, "{}", rows.len());
    // Near duplicates were skipped, never failed dialogs.
    assert_eq!(report["dialogs_failed"], 0, "{report}");
    assert!(report["rejections"]["duplicate_question"].as_u64().unwrap() >= 24);
    // Every row says which kind of question it was asked for, and several kinds occur.
    let kinds: std::collections::HashSet<&str> = rows
        .iter()
        .map(|r| r["metadata"]["question_type"].as_str().unwrap())
        .collect();
    assert!(kinds.len() >= 5, "{kinds:?}");
    // The run record keeps the stop reason, and `stats` prints it.
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out.jsonl.run.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["stop_reason"], reason);
    let out = dir.path().join("out.jsonl");
    let stats = Cli::new(&["stats", out.to_str().unwrap()]).run().await;
    assert_eq!(stats.code, 0, "{}", stats.stderr);
    assert!(
        stats
            .stdout
            .lines()
            .any(|l| l.starts_with("stopped") && l.contains("questions ran out")),
        "{}",
        stats.stdout
    );

    // The same documents without steering: the mock writes from its general stock,
    // runs out sooner, and the reason says to turn steering on.
    let (code, off, stderr, off_rows, _dir) =
        run(&server, &config("instructions:\n  steering: false\n")).await;
    assert_eq!(code, 0, "{stderr}");
    let off_reason = off["stop_reason"].as_str().unwrap();
    assert!(
        off_reason.contains("instructions.steering: true"),
        "{off_reason}"
    );
    assert!(
        off_rows.len() * 2 < rows.len(),
        "steering on gave {} rows, off {}",
        rows.len(),
        off_rows.len()
    );
    assert!(
        off_rows
            .iter()
            .all(|r| r["metadata"].get("question_type").is_none())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_exhausted_fail_exits_1_with_the_rows_missing() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let config = config("").replace(
        "  max_concurrency: 8\n",
        "  max_concurrency: 8\n  on_exhausted: fail\n",
    );
    let (code, _, stderr, rows, _dir) = run(&server, &config).await;
    assert_eq!(code, 1, "{stderr}");
    let missing = 2000 - rows.len();
    let expected = format!(
        "run stopped with {} of 2000 rows ({missing} missing; generation.on_exhausted: fail): questions ran out",
        rows.len()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelt_question_type_or_key_is_a_config_error() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let on_exhausted = config("").replace(
        "  max_concurrency: 8\n",
        "  max_concurrency: 8\n  on_exhausted: maybe\n",
    );
    for (config, needle) in [
        (
            config("instructions:\n  question_types: [how-to]\n"),
            "instructions.question_types[0]: `how-to` is no built-in question type",
        ),
        (config("instructions:\n  avoid_cont: 3\n"), "avoid_cont"),
        (
            on_exhausted,
            "line 6 column 17: unknown variant `maybe`, expected one of stop, fail",
        ),
    ] {
        let (code, _, stderr, _, _dir) = run(&server, &config).await;
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
    }
}
