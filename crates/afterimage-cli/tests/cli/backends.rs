//! Rows generated into SQLite and PostgreSQL, read back by `export`, `analyze` and the
//! export and report `generate` runs at the end of a run.

use std::collections::BTreeSet;
use std::path::Path;

use afterimage_mock::{MockConfig, MockServer};
use afterimage_storage::StorageSpec;

use crate::{Cli, DATASET, LOCAL, PostgresSchema, Run, assert_dialog, project, read_rows};

/// The ids stored in `out`, read through the storage itself.
async fn stored_ids(out: &str) -> BTreeSet<String> {
    let stored = StorageSpec::parse(out).read(true).await.unwrap();
    assert!(stored.problems.is_empty(), "{:?}", stored.problems);
    stored.rows.into_iter().map(|row| row.id).collect()
}

/// Every line of an OpenAI-format file is a whole user/assistant dialog.
fn assert_openai_records(path: &Path, count: usize) {
    let records = read_rows(path);
    assert_eq!(records.len(), count, "{}", path.display());
    for record in &records {
        let dialog = serde_json::json!({"conversations": record["messages"]});
        assert_dialog(&dialog);
    }
}

/// `export OUT -f raw --no-shuffle` writes every stored row, once, to `dir`.
async fn export_raw(out: &str, dir: &Path) -> Vec<serde_json::Value> {
    let run = Cli::new(&["export", out, "-f", "raw", "--no-shuffle", "--out-dir"])
        .args(&[dir.to_str().unwrap(), "--json"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["rows_read"], 12, "{report}");
    let file = report["formats"][0]["files"][0]["path"].as_str().unwrap();
    read_rows(Path::new(file))
}

/// `analyze OUT --json`: the figures, with the run's failures found in the run record.
async fn analyze_json(out: &str, html: &Path) -> serde_json::Value {
    let run = Cli::new(&["analyze", out, "--json", "--html", html.to_str().unwrap()])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let figures: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(figures["summary"]["rows"], 12);
    assert_eq!(figures["judge"]["scored_rows"], 12);
    assert_eq!(figures["summary"]["failures"], serde_json::json!({}));
    let page = std::fs::read_to_string(html).unwrap();
    assert!(page.contains("No failed dialogs."), "{page}");
    figures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_output_is_exported_and_analyzed_after_the_run_and_by_hand() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let (dir, config) = project(&format!("{LOCAL}{DATASET}"));
    let data = dir.path().join("data");
    let out = format!("sqlite:{}", data.join("runs.db").display());
    let run = Cli::generate(&config, &server.openai_base_url(), &out)
        .args(&["--json"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["rows_written"], 12);

    // The end-of-run export and report, next to the database and named after it.
    assert!(!run.stderr.contains("skipped"), "{}", run.stderr);
    for (name, lines) in [("runs_openai_train.jsonl", 9), ("runs_openai_val.jsonl", 3)] {
        assert_openai_records(&data.join(name), lines);
    }
    let sharegpt = read_rows(&data.join("runs_sharegpt_train.jsonl"));
    assert_eq!(sharegpt.len(), 9);
    assert!(
        sharegpt
            .iter()
            .all(|r| r["conversations"][0]["from"] == "human")
    );
    let auto_report = std::fs::read_to_string(data.join("runs.html")).unwrap();
    assert!(auto_report.contains("No failed dialogs."));
    assert!(auto_report.contains(&format!("sqlite:{}", data.join("runs.db").display())));

    // `export` by hand writes exactly the stored rows.
    let exported = export_raw(&out, &dir.path().join("exported")).await;
    let ids: BTreeSet<String> = exported
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, stored_ids(&out).await);
    assert!(dir.path().join("exported/runs_raw.jsonl").exists());
    exported.iter().for_each(assert_dialog);

    // `analyze` finds the run record in the database by itself.
    analyze_json(&out, &dir.path().join("r.html")).await;
    let run = Cli::new(&["analyze", &out]).run().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains(&data.join("runs.html").display().to_string()),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_output_is_exported_and_analyzed() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let (dir, config) = project(&format!("{LOCAL}quality:\n  auto_improve: true\n"));
    let schema = PostgresSchema::new();
    let run = Cli::generate(&config, &server.openai_base_url(), &schema.url)
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);

    let exported = export_raw(&schema.url, dir.path()).await;
    let ids: BTreeSet<String> = exported
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, stored_ids(&schema.url).await);
    assert!(dir.path().join("dataset_raw.jsonl").exists());

    let run = Cli::new(&["export", &schema.url, "-f", "openai", "--out-dir"])
        .args(&[dir.path().to_str().unwrap()])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_openai_records(&dir.path().join("dataset_openai.jsonl"), 12);

    analyze_json(&schema.url, &dir.path().join("report.html")).await;
    schema.drop().await;
}

/// Exit 2 and a single stderr line holding every needle (and nothing of `hidden`).
fn assert_one_line(run: &Run, needles: &[&str], hidden: &str) {
    assert_eq!(run.code, 2, "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {}", run.stderr);
    for needle in needles {
        assert!(lines[0].contains(needle), "{needle:?} not in {}", lines[0]);
    }
    assert!(!run.stderr.contains(hidden), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_unreachable_and_empty_inputs_name_the_cause_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite:{}", dir.path().join("nothing.db").display());
    let run = Cli::new(&["export", &missing, "-f", "raw"]).run().await;
    assert_one_line(
        &run,
        &[&format!("{missing} does not exist"), "afterimage generate"],
        "Backend",
    );
    assert!(
        !dir.path().join("nothing.db").exists(),
        "reading created it"
    );

    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let unreachable = format!("postgres://postgres:hunter2@127.0.0.1:{port}/test");
    let run = Cli::new(&["analyze", &unreachable]).run().await;
    assert_one_line(
        &run,
        &[
            &format!("cannot connect to postgres://postgres:***@127.0.0.1:{port}/test"),
            "check that the server runs",
        ],
        "hunter2",
    );

    let empty = format!("sqlite:{}", dir.path().join("empty.db").display());
    StorageSpec::parse(&empty).open().await.unwrap();
    let run = Cli::new(&["analyze", &empty]).run().await;
    assert_one_line(
        &run,
        &[&format!("{empty} holds no rows"), "generate into it first"],
        "Backend",
    );
    let empty_jsonl = dir.path().join("empty.jsonl");
    std::fs::write(&empty_jsonl, "").unwrap();
    let run = Cli::new(&["export", empty_jsonl.to_str().unwrap(), "--all"])
        .run()
        .await;
    assert_one_line(&run, &["holds no rows"], "Backend");
}
