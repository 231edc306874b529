//! Many `afterimage generate --run NAME --join` processes on one PostgreSQL run:
//! SIGKILL and SIGSTOP chaos still ends with exactly N rows, late completions of a
//! paused worker are refused, and the workers share the run's request limit.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use afterimage_mock::{MockConfig, MockServer};

use crate::{Cli, PostgresSchema};

const CONFIG: &str = r#"
generation:
  num_dialogs: 1000
  max_turns: 1
  max_concurrency: 8
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
  n_instructions: 8
"#;

/// A worker process joining `run`, its output to files in `dir`.
fn worker(config: &Path, base_url: &str, out: &str, run: &str, dir: &Path, n: usize) -> Child {
    let log = std::fs::File::create(dir.join(format!("worker-{n}.log"))).unwrap();
    Cli::generate(config, base_url, out)
        .args(&["--run", run, "--join", "--json"])
        .env("AFTERIMAGE_LEASE_SECS", "2".into())
        .env("RUST_LOG", "error".into())
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

/// Every worker's stderr, for a failure message.
fn logs(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            text += &format!("\n--- {}\n", path.display());
            text += &std::fs::read_to_string(&path).unwrap_or_default();
        }
    }
    text
}

fn signal(child: &Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {name} failed");
}

/// A client on the test's schema.
async fn client(schema: &PostgresSchema) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&schema.base, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("SET search_path TO \"{}\"", schema.name))
        .await
        .unwrap();
    client
}

async fn open_slots(db: &tokio_postgres::Client, run: &str) -> i64 {
    db.query_opt(
        "SELECT count(*) FROM fleet_slots WHERE run_id = $1 AND state IN ('pending', 'leased')",
        &[&run],
    )
    .await
    .ok()
    .flatten()
    .map_or(i64::MAX, |row| row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_under_sigkill_and_sigstop_store_exactly_n_rows() {
    const N: i64 = 1000;
    let server = MockServer::start(MockConfig::default().with_latency(Duration::from_millis(80)))
        .await
        .unwrap();
    let schema = PostgresSchema::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let (run, base_url) = ("chaos", server.openai_base_url());
    let mut started = 0;
    let mut spawn = || {
        started += 1;
        worker(&config, &base_url, &schema.url, run, dir.path(), started)
    };
    let mut workers: Vec<Child> = (0..4).map(|_| spawn()).collect();
    let db = client(&schema).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut kills, mut pauses, mut tick) = (0, 0, 0u32);
    let mut paused: Vec<(u32, Instant)> = Vec::new();
    // Wait for the run to exist, then SIGKILL one worker every second (replacing it)
    // and, twice, SIGSTOP another for twice the lease.
    while open_slots(&db, run).await == i64::MAX || open_slots(&db, run).await > 0 {
        assert!(Instant::now() < deadline, "the run did not finish in 90 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
        tick += 1;
        if open_slots(&db, run).await == i64::MAX {
            continue;
        }
        // Pause the oldest worker (it holds dialogs) for twice the lease, in the
        // background so the kills go on, and SIGKILL the oldest of the others,
        // replacing it; a paused worker is never killed.
        let running =
            |w: &Child, paused: &[(u32, Instant)]| !paused.iter().any(|(p, _)| *p == w.id());
        if tick.is_multiple_of(3)
            && pauses < 3
            && let Some(oldest) = workers.iter().find(|w| running(w, &paused))
        {
            signal(oldest, "-STOP");
            paused.push((oldest.id(), Instant::now() + Duration::from_secs(4)));
            pauses += 1;
        }
        for (pid, until) in &paused {
            if Instant::now() >= *until {
                let _ = std::process::Command::new("kill")
                    .args(["-CONT", &pid.to_string()])
                    .status();
            }
        }
        paused.retain(|(_, until)| Instant::now() < *until);
        let victim = workers.iter().position(|w| running(w, &paused));
        if let Some(victim) = victim
            && open_slots(&db, run).await > N / 20
        {
            let mut dead = workers.remove(victim);
            dead.kill().unwrap();
            dead.wait().unwrap();
            kills += 1;
            workers.push(spawn());
        }
    }
    for (pid, _) in paused.drain(..) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &pid.to_string()])
            .status();
    }
    for mut child in workers.drain(..) {
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "{status}: {}", logs(dir.path()));
    }
    assert!(kills >= 3 && pauses >= 1, "kills {kills}, pauses {pauses}");

    let rows = db
        .query_one(
            "SELECT count(*), count(DISTINCT id) FROM conversations WHERE run_id = $1",
            &[&run],
        )
        .await
        .unwrap();
    assert_eq!(rows.get::<_, i64>(0), N, "rows");
    assert_eq!(rows.get::<_, i64>(1), N, "distinct ids");
    let done: i64 = db
        .query_one(
            "SELECT count(*) FROM fleet_slots WHERE run_id = $1 AND state = 'done'",
            &[&run],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(done, N);
    let record: String = db
        .query_one("SELECT status FROM runs WHERE run_id = $1", &[&run])
        .await
        .unwrap()
        .get(0);
    assert_eq!(record, "done");
    let counts = db
        .query_one(
            "SELECT coalesce(sum(fenced), 0)::bigint, coalesce(sum(leases_lost), 0)::bigint
               FROM fleet_workers WHERE run_id = $1",
            &[&run],
        )
        .await
        .unwrap();
    let (fenced, lost): (i64, i64) = (counts.get(0), counts.get(1));
    eprintln!(
        "chaos: {kills} kills, {pauses} pauses, {started} workers, {fenced} late completions refused, {lost} dialogs cancelled on a lost lease"
    );
    // A resumed worker learns of the takeover one of two ways, depending on which of
    // its tasks runs first after SIGCONT: a dialog's completion is refused (fenced),
    // or the heartbeat cancels the dialog first (lease lost). Either way it stored
    // nothing for a slot it no longer held, which the exact counts above show.
    assert!(
        fenced + lost > 0,
        "no paused worker noticed that its leases were taken over after {pauses} pauses"
    );

    // `status` shows the whole fleet; `cancel` marks the run.
    let status = Cli::new(&["status", &schema.url, "--run", run, "--json"])
        .run()
        .await;
    assert_eq!(status.code, 0, "{}", status.stderr);
    let status: serde_json::Value = serde_json::from_str(status.stdout.trim()).unwrap();
    assert_eq!(status["slots"]["done"], N, "{status}");
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(
        status["workers"].as_array().unwrap().len(),
        started,
        "{status}"
    );
    assert_eq!(status["fenced"], fenced, "{status}");
    eprintln!(
        "chaos: leases lost (dialogs cancelled by heartbeat) {}",
        status["leases_lost"]
    );
    let cancel = Cli::new(&["cancel", &schema.url, "--run", run]).run().await;
    assert_eq!(cancel.code, 0, "{}", cancel.stderr);
    let missing = Cli::new(&["cancel", &schema.url, "--run", "nope"])
        .run()
        .await;
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_share_a_600_rpm_limit_in_every_window() {
    const RPM: u64 = 600;
    const WINDOW: usize = 10;
    let server = MockServer::start(MockConfig::default().with_latency(Duration::from_millis(20)))
        .await
        .unwrap();
    let schema = PostgresSchema::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.yaml");
    let limited = CONFIG
        .replace("num_dialogs: 1000", "num_dialogs: 110")
        .replace(
            "model_name: mock-model",
            "model_name: mock-model\n  requests_per_minute: 600",
        );
    std::fs::write(&config, limited).unwrap();
    let base_url = server.openai_base_url();
    let workers: Vec<Child> = (1..=4)
        .map(|n| worker(&config, &base_url, &schema.url, "rpm", dir.path(), n))
        .collect();
    for mut child in workers {
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "{status}: {}", logs(dir.path()));
    }
    let seconds = server.requests_per_second();
    let total: u64 = seconds.iter().sum();
    // Each worker paces at 90% of a quarter with a second's burst at most, so the
    // limit holds in any window, not only in whole minutes: a 10-second window may
    // hold a sixth of the minute's budget, which makes the test short.
    let budget = RPM * WINDOW as u64 / 60;
    let busiest = seconds
        .windows(WINDOW.min(seconds.len()))
        .map(|w| w.iter().sum::<u64>())
        .max()
        .unwrap_or(0);
    let minute = seconds
        .windows(60.min(seconds.len()))
        .map(|w| w.iter().sum::<u64>())
        .max();
    eprintln!(
        "rpm: {total} requests in {} s, busiest {WINDOW} s window {busiest} (budget {budget}), busiest minute {minute:?}: {seconds:?}",
        seconds.len()
    );
    assert!(
        busiest <= budget,
        "{busiest} requests in {WINDOW} s: {seconds:?}"
    );
    assert!(minute.unwrap_or(0) <= RPM);
    // And the budget is used: the run took about as long as the limit requires.
    assert!(total >= 110, "{total}");
    assert!(
        (seconds.len() as u64) * 10 <= total * 2,
        "the fleet used less than half the limit: {seconds:?}"
    );
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_process_output_shows_its_record_and_refuses_join_and_cancel() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let (dir, config) = crate::project(crate::LOCAL);
    let out = dir.path().join("rows.jsonl");
    let out_text = out.to_str().unwrap();
    let run = Cli::generate(&config, &server.openai_base_url(), &out)
        .args(&["--run", "solo"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let status = Cli::new(&["status", out_text, "--json"]).run().await;
    assert_eq!(status.code, 0, "{}", status.stderr);
    let status: serde_json::Value = serde_json::from_str(status.stdout.trim()).unwrap();
    assert_eq!(status["run_id"], "solo", "{status}");
    assert_eq!(status["status"], "done");
    assert_eq!(status["rows_written"], 12);
    let other = Cli::new(&["status", out_text, "--run", "other"])
        .run()
        .await;
    assert_eq!(other.code, 2, "{}", other.stderr);

    let join = Cli::generate(
        &config,
        &server.openai_base_url(),
        dir.path().join("b.jsonl"),
    )
    .args(&["--run", "solo", "--join"])
    .run()
    .await;
    assert_eq!(join.code, 2);
    assert!(join.stderr.contains("PostgreSQL"), "{}", join.stderr);
    let cancel = Cli::new(&["cancel", out_text, "--run", "solo"]).run().await;
    assert_eq!(cancel.code, 2);
    assert!(cancel.stderr.contains("Ctrl-C"), "{}", cancel.stderr);
}
