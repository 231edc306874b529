//! SIGTERM, SIGHUP and a second signal through the real binary against the mock: the
//! run drains within its grace period, keeps the rows of the dialogs in flight, marks
//! its record stopped (not "running"), exits 128 + the signal, and `--resume` then
//! finishes with exactly N rows.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use afterimage_mock::{MockConfig, MockServer};

use afterimage_core::Storage as _;

use crate::Cli;

const N: usize = 40;

const CONFIG: &str = r#"
generation:
  num_dialogs: 40
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
"#;

/// A run of the binary in its own folder, against one mock server.
struct Scene {
    server: MockServer,
    dir: tempfile::TempDir,
    config: PathBuf,
    out: PathBuf,
}

impl Scene {
    async fn new(latency_ms: u64) -> Scene {
        let server = MockServer::start(
            MockConfig::default().with_latency(Duration::from_millis(latency_ms)),
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("run.yaml");
        std::fs::write(&config, CONFIG).unwrap();
        let out = dir.path().join("out.jsonl");
        Scene {
            server,
            dir,
            config,
            out,
        }
    }

    fn cli(&self, extra: &[&str]) -> Cli {
        Cli::generate(&self.config, &self.server.openai_base_url(), &self.out)
            .args(&["--json"])
            .args(extra)
    }

    /// Starts a run and returns it once `rows` rows are stored.
    async fn started(&self, extra: &[&str], rows: usize) -> Child {
        let log = self.dir.path().join("run.log");
        let mut child = self
            .cli(extra)
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while lines(&self.out) < rows {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the run ended before the signal: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            assert!(Instant::now() < deadline, "no rows after 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child
    }

    fn record(&self) -> serde_json::Value {
        let path = format!("{}.run.json", self.out.display());
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// `--resume` finishes the run: exactly N rows, N distinct ids, status done.
    async fn resume_finishes_exactly(&self) {
        self.server.set_extra_latency(Duration::ZERO);
        let run = self.cli(&["--resume"]).run().await;
        assert_eq!(run.code, 0, "{}", run.stderr);
        let rows = crate::read_rows(&self.out);
        assert_eq!(rows.len(), N);
        let mut ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), N);
        assert_eq!(self.record()["status"], "done");
    }
}

fn lines(out: &Path) -> usize {
    std::fs::read_to_string(out).map_or(0, |t| t.lines().count())
}

fn send(child: &Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for the exit: its code, the report on stdout and how long it took.
async fn exit(child: Child) -> (i32, serde_json::Value, Duration) {
    let start = Instant::now();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (output.status.code().unwrap_or(-1), report, start.elapsed())
}

/// The number in "... {n} in flight finished and were stored".
fn drained(stop_reason: &str) -> u64 {
    let (before, _) = stop_reason.split_once(" in flight finished").unwrap();
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

async fn drains_on(signal: &str, code: i32, name: &str) {
    // Slow enough that dialogs are in flight when the signal comes.
    let scene = Scene::new(100).await;
    let child = scene.started(&["--grace", "20"], 3).await;
    send(&child, signal);
    let (got, report, took) = exit(child).await;
    assert_eq!(got, code, "{report}");
    eprintln!(
        "{name}: exited {took:?} after the signal: {}",
        report["stop_reason"]
    );
    assert!(
        took < Duration::from_secs(20),
        "took {took:?}, past the grace"
    );
    let reason = report["stop_reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("interrupted by {name}")),
        "{reason}"
    );
    assert!(!reason.contains("cancelled"), "{reason}");
    assert!(
        drained(reason) >= 1,
        "the dialogs in flight were kept: {reason}"
    );
    let written = report["rows_written"].as_u64().unwrap() as usize;
    assert!(written < N, "{report}");
    assert_eq!(lines(&scene.out), written, "every finished row is on disk");
    let record = scene.record();
    assert_eq!(record["status"], "stopped", "{record}");
    assert_eq!(record["stop_reason"], reason);
    assert_eq!(record["rows_written"], written);
    scene.resume_finishes_exactly().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_dialogs_in_flight_and_resume_finishes_exactly() {
    drains_on("TERM", 143, "SIGTERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_drains_like_sigterm() {
    drains_on("HUP", 129, "SIGHUP").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_cancels_at_once_and_keeps_what_was_written() {
    let scene = Scene::new(0).await;
    let child = scene.started(&[], 3).await;
    // Requests in flight now hang far past the default grace of 25 s.
    scene.server.set_extra_latency(Duration::from_secs(120));
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(&child, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&child, "TERM");
    let (code, report, took) = exit(child).await;
    assert_eq!(code, 143, "{report}");
    eprintln!("second signal: exited {took:?} after it");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let reason = report["stop_reason"].as_str().unwrap();
    assert!(reason.contains("in flight were cancelled"), "{reason}");
    let written = report["rows_written"].as_u64().unwrap() as usize;
    assert_eq!(lines(&scene.out), written);
    crate::read_rows(&scene.out)
        .iter()
        .for_each(crate::assert_dialog);
    assert_eq!(scene.record()["status"], "stopped");
    scene.resume_finishes_exactly().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_the_grace_period_cancels_the_stragglers() {
    let scene = Scene::new(0).await;
    let child = scene.started(&["--grace", "2"], 3).await;
    scene.server.set_extra_latency(Duration::from_secs(120));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    send(&child, "TERM");
    let (code, report, _) = exit(child).await;
    let took = signalled.elapsed();
    assert_eq!(code, 143, "{report}");
    eprintln!("grace 2 s: exited {took:?} after the signal");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "took {took:?}: the grace is 2 s, the stragglers would take 120 s"
    );
    let reason = report["stop_reason"].as_str().unwrap();
    assert!(reason.contains("in flight were cancelled"), "{reason}");
    assert_eq!(
        lines(&scene.out),
        report["rows_written"].as_u64().unwrap() as usize
    );
    let record = scene.record();
    assert_eq!(record["status"], "stopped");
    assert_eq!(record["stop_reason"], reason);
    scene.resume_finishes_exactly().await;
}

#[tokio::test]
async fn help_documents_the_grace_period_and_the_exit_codes() {
    let run = Cli::new(&["generate", "--help"]).run().await;
    assert_eq!(run.code, 0);
    for needle in [
        "--grace <SECONDS>",
        "[default: 25]",
        "143 SIGTERM",
        "129 SIGHUP",
        "130",
    ] {
        assert!(
            run.stdout.contains(needle),
            "{needle} missing:\n{}",
            run.stdout
        );
    }
}

/// Rows readable in `out` (any backend) now.
async fn stored(out: &str) -> usize {
    match afterimage_storage::StorageSpec::parse(out).open().await {
        Ok(storage) => storage.read_report(false).await.map_or(0, |r| r.rows.len()),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_postgres_marks_the_run_stopped_and_resume_finishes_it() {
    let schema = crate::PostgresSchema::new();
    let scene = Scene::new(100).await;
    let cli = |extra: &[&str]| {
        Cli::generate(&scene.config, &scene.server.openai_base_url(), &schema.url)
            .args(&["--json"])
            .args(extra)
    };
    let child = cli(&[]).command().stdout(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored(&schema.url).await < 3 {
        assert!(Instant::now() < deadline, "no rows after 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send(&child, "TERM");
    let (code, report, _) = exit(child).await;
    assert_eq!(code, 143, "{report}");
    let written = report["rows_written"].as_u64().unwrap() as usize;
    assert_eq!(stored(&schema.url).await, written);
    let storage = afterimage_storage::StorageSpec::parse(&schema.url)
        .open()
        .await
        .unwrap();
    let record = storage.load_run().await.unwrap().unwrap();
    assert_eq!(record.status.as_str(), "stopped");
    assert!(
        record
            .stop_reason
            .as_deref()
            .is_some_and(|r| r.starts_with("interrupted by SIGTERM")),
        "{:?}",
        record.stop_reason
    );

    let resumed = cli(&["--resume"]).run().await;
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let rows = storage.read_report(true).await.unwrap().rows;
    let mut ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((rows.len(), ids.len()), (N, N));
    assert_eq!(
        storage.load_run().await.unwrap().unwrap().status.as_str(),
        "done"
    );
    schema.drop().await;
}
