//! Kill the CLI with SIGKILL mid-run, resume, and check the output holds exactly
//! `num_dialogs` distinct ids and no torn rows, for JSONL, SQLite and PostgreSQL.

use std::process::Stdio;
use std::time::{Duration, Instant};

use afterimage_mock::{MockConfig, MockServer};
use afterimage_storage::StorageSpec;

use crate::{Cli, PostgresSchema};

const N: u64 = 30;

const CONFIG: &str = r#"
generation:
  num_dialogs: 30
  max_turns: 2
  max_concurrency: 4
model:
  provider: local
  model_name: mock-model
respondent:
  system_prompt: You are a Tier 1 Technical Support agent.
documents:
  provider: memory
  texts:
    - Error 503 means the service is unavailable. Retry after 5 minutes.
    - To reset your password, click 'Forgot Password' on the login screen.
context:
  num_random_contexts: 1
  n_instructions: 2
"#;

/// Rows readable now (malformed ones, such as a line being written, are skipped).
async fn rows_now(out: &str) -> usize {
    match StorageSpec::parse(out).open().await {
        Ok(storage) => storage
            .read_report(false)
            .await
            .map(|r| r.rows.len())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

async fn kill_then_resume(out: &str) {
    let server = MockServer::start(MockConfig::default().with_latency(Duration::from_millis(50)))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let base_url = server.openai_base_url();
    let generate = |extra: &[&str]| {
        Cli::generate(&config, &base_url, out)
            .args(&["--json"])
            .args(extra)
            .command()
    };

    // 1. Start a run and SIGKILL it once a few rows are stored.
    let log = dir.path().join("killed-run.log");
    let mut child = generate(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored = rows_now(out).await;
        if stored >= 3 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed ({stored} rows): {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "no rows after 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let killed_at = rows_now(out).await as u64;
    assert!(killed_at < N, "the run finished before the kill");

    // 2. Without --resume, the output is refused, never appended to.
    let refused = tokio::task::spawn_blocking({
        let mut command = generate(&[]);
        move || command.output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--resume"), "{stderr}");

    // 3. Resume: only the missing dialogs are made.
    let resumed = tokio::task::spawn_blocking({
        let mut command = generate(&["--resume"]);
        move || command.output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert_eq!(resumed.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&resumed.stdout).trim()).unwrap();
    let resumed_rows = report["rows_resumed"].as_u64().unwrap();
    assert!(resumed_rows >= killed_at, "{report}");
    assert_eq!(
        resumed_rows + report["rows_written"].as_u64().unwrap(),
        N,
        "{report}"
    );

    // 4. Exactly N distinct ids of one run, nothing torn, nothing duplicated.
    let storage = StorageSpec::parse(out).open().await.unwrap();
    let rows = storage.read_report(true).await.unwrap().rows;
    assert_eq!(rows.len() as u64, N);
    let mut ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as u64, N);
    let run_id = report["run_id"].as_str().unwrap();
    assert!(ids.iter().all(|id| id.starts_with(&format!("{run_id}-"))));

    // 5. `stats --json` agrees.
    let stats = tokio::task::spawn_blocking({
        let mut command = Cli::new(&["stats", out, "--json"]).command();
        move || command.output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(stats.status.code(), Some(0));
    let stats: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&stats.stdout).trim()).unwrap();
    assert_eq!(stats["rows"], N);
    assert_eq!(stats["distinct_ids"], N);
    assert_eq!(stats["malformed"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_survives_sigkill_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rows.jsonl");
    kill_then_resume(out.to_str().unwrap()).await;
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.ends_with('\n'));
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    let record = std::fs::read_to_string(dir.path().join("rows.jsonl.run.json")).unwrap();
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    // The run record is for people: the turn rule in words, not Rust's `UpTo(2)`.
    assert_eq!(record["config"]["turns"], "up to 2", "{record}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "rows.jsonl" && name != "rows.jsonl.run.json")
        .collect();
    assert!(leftovers.is_empty(), "files left behind: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_sigkill_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let out = format!("sqlite:{}", dir.path().join("rows.db").display());
    kill_then_resume(&out).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_sigkill_and_resumes_exactly() {
    let schema = PostgresSchema::new();
    kill_then_resume(&schema.url).await;
    schema.drop().await;
}

#[tokio::test]
async fn stats_names_a_malformed_line_and_goes_on_unless_strict() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rows.jsonl");
    let good = |id: &str| {
        format!(
            r#"{{"conversations":[{{"role":"user","content":"q"}},{{"role":"assistant","content":"a"}}],"persona":"p","final_score":0.9,"id":"{id}"}}"#
        )
    };
    std::fs::write(
        &path,
        format!("{}\nnot json\n{}\n", good("r-000000"), good("r-000001")),
    )
    .unwrap();
    let run = |strict: bool| {
        let mut args = vec!["stats", path.to_str().unwrap(), "--json"];
        if strict {
            args.push("--strict");
        }
        Cli::new(&args).command().output().unwrap()
    };
    let lenient = run(false);
    assert_eq!(lenient.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&lenient.stderr).contains("line 2"));
    let stats: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&lenient.stdout).trim()).unwrap();
    assert_eq!(
        (stats["rows"].as_u64(), stats["distinct_ids"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(stats["malformed"], 1);
    assert_eq!(stats["personas"], 1);
    assert_eq!(stats["scores"]["grades"]["perfect"], 2);
    let strict = run(true);
    assert_eq!(strict.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&strict.stderr).contains("line 2"));
}
