//! Batch mode through the real binary against the mock's three batch protocols:
//! `generate --batch` on the support-bot example writes exactly N rows within the
//! predicted rounds, no request is submitted twice, line faults are retried or
//! replaced, a kill at every journal boundary and a Ctrl-C resume exactly, and
//! `batch status|cancel` reach the batches a stopped run left open.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use afterimage_mock::{BatchStall, MockConfig, MockServer};

use crate::{Cli, Run, read_rows};

/// Rows the support-bot example asks for.
const N: usize = 10;

/// Test speed: every round a batch (however small), polled every few ms. The linger
/// stays long enough that a loaded machine's slow dialogs still join their round
/// (a round normally goes as soon as every dialog waits, not after the linger).
const FAST: &str = "  min_requests: 1\n  linger_ms: 500\n  poll: {initial_s: 0.02, max_s: 0.1}\n";

/// A provider's batch protocol on the mock.
#[derive(Clone, Copy)]
struct Protocol {
    provider: &'static str,
    model: &'static str,
    key_env: &'static str,
    base_url: fn(&MockServer) -> String,
}

const OPENAI: Protocol = Protocol {
    provider: "openai",
    model: "gpt-4o-mini",
    key_env: "OPENAI_API_KEY",
    base_url: MockServer::openai_base_url,
};

const ANTHROPIC: Protocol = Protocol {
    provider: "anthropic",
    model: "claude-sonnet-4-5",
    key_env: "ANTHROPIC_API_KEY",
    base_url: MockServer::anthropic_base_url,
};

const GEMINI: Protocol = Protocol {
    provider: "gemini",
    model: "gemini-2.0-flash",
    key_env: "GEMINI_API_KEY",
    base_url: MockServer::gemini_base_url,
};

/// One batch-mode run in its own folder: `examples/support-bot.yaml` with `batch`
/// (the section's lines) appended, its documents found where the example keeps them.
struct Scene {
    server: MockServer,
    dir: tempfile::TempDir,
    config: PathBuf,
    out: PathBuf,
    protocol: Protocol,
    /// Variables every run of the scene gets (a judge's key).
    env: Vec<(&'static str, String)>,
}

impl Scene {
    async fn new(protocol: Protocol, mock: MockConfig, batch: &str) -> Scene {
        Scene::edited(protocol, mock, "support-bot.yaml", batch, |text, _| text).await
    }

    /// A scene on `examples/{example}`, its text changed by `edit` (which sees the
    /// mock, for base URLs).
    async fn edited(
        protocol: Protocol,
        mock: MockConfig,
        example: &str,
        batch: &str,
        edit: impl Fn(String, &MockServer) -> String,
    ) -> Scene {
        let server = MockServer::start(mock).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = example_config(dir.path(), example, batch, |text| edit(text, &server));
        let out = dir.path().join("rows.jsonl");
        Scene {
            server,
            dir,
            config,
            out,
            protocol,
            env: Vec::new(),
        }
    }

    /// `generate --config ... --batch` on this scene's protocol, every dialog (and
    /// its spares) in flight at once, so rounds are as the prediction counts them.
    fn generate(&self, extra: &[&str]) -> Cli {
        let p = self.protocol;
        let cli = Cli::generate(&self.config, &(p.base_url)(&self.server), &self.out);
        self.batched(cli, extra)
    }

    /// `COMMAND --config ... -o OUT --batch` (`structured`, `preference`) on this
    /// scene's protocol.
    fn job(&self, command: &str, extra: &[&str]) -> Cli {
        let p = self.protocol;
        let (config, out) = (self.config.to_str().unwrap(), self.out.to_str().unwrap());
        let base_url = (p.base_url)(&self.server);
        let cli = Cli::new(&[
            command,
            "--config",
            config,
            "-o",
            out,
            "--base-url",
            &base_url,
        ]);
        self.batched(cli, extra)
    }

    fn batched(&self, cli: Cli, extra: &[&str]) -> Cli {
        let p = self.protocol;
        let mut cli = cli
            .args(&["--batch", "--provider", p.provider, "--model", p.model])
            .args(&["--max-concurrency", "16", "--json"])
            .args(extra)
            .env(p.key_env, "key-one".into());
        for (name, value) in &self.env {
            cli = cli.env(name, value.clone());
        }
        cli
    }

    /// `afterimage batch COMMAND OUT --config CONFIG` with `key` as the API key.
    async fn batch_command(&self, command: &str, key: &str) -> Run {
        self.batch_command_with(command, key, &[]).await
    }

    /// [`batch_command`](Self::batch_command) with `extra` flags.
    async fn batch_command_with(&self, command: &str, key: &str, extra: &[&str]) -> Run {
        let p = self.protocol;
        let (out, config) = (self.out.to_str().unwrap(), self.config.to_str().unwrap());
        let mut cli = Cli::new(&["batch", command, out, "--config", config])
            .args(&["--provider", p.provider, "--base-url"])
            .args(&[&(p.base_url)(&self.server)])
            .args(extra)
            .env(p.key_env, key.into());
        for (name, value) in &self.env {
            cli = cli.env(name, value.clone());
        }
        cli.run().await
    }

    /// Starts a run as a child, its stderr in a log file.
    fn spawn(&self, extra: &[&str]) -> Child {
        let log = std::fs::File::create(self.dir.path().join("run.log")).unwrap();
        self.generate(extra)
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("run.log")).unwrap_or_default()
    }

    /// Waits until `ready` holds of the mock and the run's log, the child still
    /// running.
    async fn wait_for(
        &self,
        child: &mut Child,
        what: &str,
        ready: impl Fn(&MockServer, &str) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready(&self.server, &self.log()) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the run ended before {what}: {}",
                self.log()
            );
            assert!(
                Instant::now() < deadline,
                "no {what} after 60 s: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Exactly N rows with N distinct ids, and no request submitted twice.
    fn assert_exact(&self) {
        let rows = read_rows(&self.out);
        assert_eq!(rows.len(), N);
        let ids: BTreeSet<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), N, "duplicate row ids");
        let submissions = self.server.batch_submissions();
        assert!(!submissions.is_empty(), "nothing went through a batch");
        let twice: Vec<_> = submissions.iter().filter(|(_, n)| **n != 1).collect();
        assert!(twice.is_empty(), "submitted more than once: {twice:?}");
    }
}

/// An example config, its documents (and schema) at their absolute place, `edit`
/// applied, plus `batch:`.
fn example_config(
    dir: &Path,
    example: &str,
    batch: &str,
    edit: impl Fn(String) -> String,
) -> PathBuf {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let docs = examples.join("support-docs");
    let schema = examples.join("structured-faq.json");
    let text = std::fs::read_to_string(examples.join(example))
        .unwrap()
        .replace("path: support-docs", &format!("path: {}", docs.display()))
        .replace(
            "schema_file: structured-faq.json",
            &format!("schema_file: {}", schema.display()),
        );
    let text = edit(text);
    assert!(
        text.contains(docs.to_str().unwrap()),
        "the example moved its documents"
    );
    let config = dir.join("run.yaml");
    std::fs::write(&config, format!("{text}\nbatch:\n{batch}")).unwrap();
    config
}

/// The report's `batch` object, after a run that exited 0.
fn batch_report(run: &Run) -> serde_json::Value {
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(
        report["rows_written"].as_u64().unwrap() + report["rows_resumed"].as_u64().unwrap(),
        N as u64,
        "{report}"
    );
    report["batch"].clone()
}

/// The "about N rounds (...; M with ...)" figures of the announcement.
fn predicted(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("batch mode: "))
        .unwrap_or_else(|| panic!("no announcement: {stderr}"));
    let number_after = |marker: &str| -> u64 {
        let (_, rest) = line.split_once(marker).unwrap_or_else(|| panic!("{line}"));
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (number_after("about "), number_after("; "))
}

async fn exit(child: Child) -> (i32, String) {
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code().unwrap_or(-1), stdout)
}

fn send(child: &Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn fast_mock() -> MockConfig {
    MockConfig::default().with_batch_phase(Duration::from_millis(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_support_bot_example_writes_exactly_n_rows_over_each_protocol() {
    for protocol in [OPENAI, ANTHROPIC, GEMINI] {
        let scene = Scene::new(protocol, fast_mock(), FAST).await;
        let run = scene.generate(&[]).run().await;
        let batch = batch_report(&run);
        scene.assert_exact();
        let (floor, with_regenerations) = predicted(&run.stderr);
        assert!(
            run.stderr.contains("each round takes one batch turnaround"),
            "{}",
            run.stderr
        );
        let rounds = batch["rounds"].as_u64().unwrap();
        let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
        // A question the near-duplicate filter or the instruction checks reject is
        // drawn again: a round more for its dialog (questions are batched too), which
        // the prediction cannot know ahead.
        let count = |v: &serde_json::Value| {
            v.as_object().map_or(0, |m| {
                m.values()
                    .filter_map(serde_json::Value::as_u64)
                    .sum::<u64>()
            })
        };
        let redraws = count(&report["rejections"]) + count(&report["instructions_rejected"]);
        let bound = redraws
            + if report["regenerations"] == 0 {
                floor
            } else {
                with_regenerations
            };
        assert!(
            rounds >= 1 && rounds <= bound,
            "{}: {rounds} rounds, predicted {floor}/{with_regenerations}: {report}",
            protocol.provider
        );
        assert!(batch["batches"].as_u64().unwrap() >= 1, "{batch}");
        assert_eq!(batch["submissions_max"], 1, "{batch}");
        assert_eq!(batch["sync_requests"], 0, "{batch}");
        assert!(batch["batch_answered"].as_u64().unwrap() > 0, "{batch}");
        // The ledger prices batched answers apart from the synchronous ones.
        let models = report["ledger"]["by_model"].as_object().unwrap();
        assert!(
            models.keys().any(|m| m.ends_with(" (batch)")),
            "{}",
            report["ledger"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typos_and_bad_values_in_the_batch_section_are_errors_naming_the_key() {
    let server = MockServer::start(fast_mock()).await.unwrap();
    for (section, names) in [
        ("  min_request: 1\n", ["min_request", "line"]),
        ("  poll: {initial: 1}\n", ["initial", "line"]),
        (
            "  oversample: 0.5\n",
            ["batch.oversample", "between 1 and 10"],
        ),
        ("  tail: later\n", ["later", "line"]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = example_config(dir.path(), "support-bot.yaml", section, |t| t);
        let out = dir.path().join("rows.jsonl");
        let run = Cli::generate(&config, &server.openai_base_url(), &out)
            .args(&["--batch", "--provider", "openai"])
            .env("OPENAI_API_KEY", "k".into())
            .run()
            .await;
        assert_eq!(run.code, 2, "{section}: {}", run.stderr);
        for name in names {
            assert!(run.stderr.contains(name), "{section}: {}", run.stderr);
        }
        assert!(!out.exists(), "nothing ran");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_faults_are_retried_or_replaced_and_still_give_exactly_n() {
    let mock = fast_mock()
        .with_batch_retryable_rate(0.1)
        .with_batch_permanent_rate(0.03)
        .with_batch_missing_rate(0.1);
    for protocol in [OPENAI, ANTHROPIC, GEMINI] {
        let scene = Scene::new(protocol, mock.clone(), FAST).await;
        let batch = batch_report(&scene.generate(&[]).run().await);
        scene.assert_exact();
        assert!(batch["retried"].as_u64().unwrap() > 0, "{batch}");
    }
}

/// Kills a run with `-9` while a batch call hangs at `stall`, then resumes it:
/// exactly N rows, none submitted twice; returns the resumed run's batch figures.
async fn kill_and_resume(protocol: Protocol, stall: BatchStall) -> serde_json::Value {
    let scene = Scene::new(protocol, fast_mock(), FAST).await;
    scene.server.stall_batches(stall);
    let mut child = scene.spawn(&[]);
    scene
        .wait_for(&mut child, "a stalled batch call", |s, _| {
            s.batch_stalled() > 0
        })
        .await;
    send(&child, "KILL");
    let _ = exit(child).await;
    scene.server.unstall_batches();
    let run = scene.generate(&["--resume"]).run().await;
    let batch = batch_report(&run);
    scene.assert_exact();
    batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_every_journal_boundary_then_resume_gives_exactly_n_over_openai() {
    for (stall, adopted) in [
        (BatchStall::Upload, 0),
        (BatchStall::CreateBefore, 0),
        (BatchStall::CreateAfter, 1),
        (BatchStall::Poll, 1),
        (BatchStall::Results, 1),
    ] {
        let batch = kill_and_resume(OPENAI, stall).await;
        assert_eq!(batch["adopted"], adopted, "{stall:?}: {batch}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_every_journal_boundary_then_resume_gives_exactly_n_over_anthropic_and_gemini() {
    // Anthropic sends a batch as one body (no upload); an inline Gemini batch brings
    // its results with the get of the batch (the poll).
    let anthropic = [
        BatchStall::CreateBefore,
        BatchStall::CreateAfter,
        BatchStall::Poll,
        BatchStall::Results,
    ];
    let gemini = [
        BatchStall::CreateBefore,
        BatchStall::CreateAfter,
        BatchStall::Poll,
    ];
    let cases = anthropic
        .iter()
        .map(|s| (ANTHROPIC, *s))
        .chain(gemini.iter().map(|s| (GEMINI, *s)));
    for (protocol, stall) in cases {
        let batch = kill_and_resume(protocol, stall).await;
        let adopted = u64::from(stall != BatchStall::CreateBefore);
        assert_eq!(
            batch["adopted"], adopted,
            "{} {stall:?}: {batch}",
            protocol.provider
        );
    }
}

/// A run stopped by Ctrl-C while its batches run (held at their poll with `stall`,
/// else slow enough to still run), and what it printed.
async fn stopped_by_ctrl_c(mock: MockConfig, stall: bool) -> (Scene, String) {
    let scene = Scene::new(OPENAI, mock, FAST).await;
    if stall {
        scene.server.stall_batches(BatchStall::Poll);
    }
    let mut child = scene.spawn(&["--grace", "0"]);
    scene
        .wait_for(&mut child, "an open batch", |s, log| {
            // Held at its poll, or shown open: either way the run knows the batch.
            s.batch_stalled() > 0 || log.contains(": 1 open")
        })
        .await;
    send(&child, "INT");
    let (code, _) = exit(child).await;
    assert_eq!(code, 130, "{}", scene.log());
    let log = scene.log();
    assert!(log.contains("provider batch(es) running"), "{log}");
    assert!(log.contains("--resume"), "{log}");
    assert!(log.contains("afterimage batch status"), "{log}");
    assert!(log.contains("afterimage batch cancel"), "{log}");
    (scene, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_leaves_the_batches_running_and_resume_adopts_them() {
    let (scene, log) = stopped_by_ctrl_c(fast_mock(), true).await;
    scene.server.unstall_batches();
    let run = scene.generate(&["--resume"]).run().await;
    let batch = batch_report(&run);
    scene.assert_exact();
    // The batch left running was taken up again, not submitted anew (every id once).
    let left = log.matches("batch_").count();
    assert!(left >= 1, "{log}");
    assert_eq!(batch["adopted"], 1, "{batch}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_status_and_cancel_reach_the_batches_a_stopped_run_left_open() {
    // Phases long enough that the batch still runs when it is looked at.
    let slow = MockConfig::default().with_batch_phase(Duration::from_secs(60));
    let (scene, log) = stopped_by_ctrl_c(slow, false).await;
    let status = scene.batch_command("status", "key-one").await;
    assert_eq!(status.code, 0, "{}\n{}", status.stdout, status.stderr);
    let open: Vec<&str> = status
        .stdout
        .lines()
        .filter(|l| l.starts_with("ok "))
        .collect();
    assert!(!open.is_empty(), "{}", status.stdout);
    for line in &open {
        let id = line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .trim_end_matches(':');
        assert!(log.contains(id), "{id} was not named at the stop: {log}");
    }

    // The same, machine-readable.
    let json = scene
        .batch_command_with("status", "key-one", &["--json"])
        .await;
    assert_eq!(json.code, 0, "{}\n{}", json.stdout, json.stderr);
    let json: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    let run_id = scene.record()["run_id"].clone();
    assert!(
        json["run_id"].is_string() && json["run_id"] == run_id,
        "{json}"
    );
    let batches = json["open"].as_array().unwrap();
    assert_eq!(batches.len(), open.len(), "{json}");
    for batch in batches {
        let id = batch["id"].as_str().unwrap();
        assert!(log.contains(id), "{id}: {json}");
        assert!(
            batch["local_key"].as_str().unwrap().contains("-round"),
            "{json}"
        );
        assert!(
            !batch["key_fingerprint"].as_str().unwrap().is_empty(),
            "{json}"
        );
        assert!(
            !batch["key_fingerprint"]
                .as_str()
                .unwrap()
                .contains("key-one")
        );
        assert!(batch["provider_state"].is_string(), "{json}");
        assert!(
            ["queued", "running", "finalizing"].contains(&batch["phase"].as_str().unwrap()),
            "{json}"
        );
        assert!(batch["requests"].as_u64().unwrap() > 0, "{json}");
        assert!(batch.get("counts").is_some(), "{json}");
    }
    assert!(json["unsubmitted"].as_array().unwrap().is_empty(), "{json}");

    // Only the key that created a batch sees it.
    let other = scene.batch_command("status", "key-two").await;
    assert_ne!(other.code, 0, "{}", other.stdout);
    assert!(other.stdout.contains("not configured"), "{}", other.stdout);

    let cancel = scene.batch_command("cancel", "key-one").await;
    assert_eq!(cancel.code, 0, "{}\n{}", cancel.stdout, cancel.stderr);
    assert!(cancel.stdout.contains("cancelled "), "{}", cancel.stdout);
    let after = scene.batch_command("status", "key-one").await;
    assert_eq!(after.code, 0, "{}\n{}", after.stdout, after.stderr);
    assert!(after.stdout.contains(": cancel"), "{}", after.stdout);

    // No journal: a clear error.
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("other.jsonl");
    let missing = Cli::new(&["batch", "status", elsewhere.to_str().unwrap()])
        .args(&[
            "--config",
            scene.config.to_str().unwrap(),
            "--provider",
            "openai",
        ])
        .env("OPENAI_API_KEY", "key-one".into())
        .run()
        .await;
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("no batch journal"),
        "{}",
        missing.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_exit_cancels_the_open_batches_on_ctrl_c() {
    let slow = MockConfig::default().with_batch_phase(Duration::from_secs(60));
    let scene = Scene::new(OPENAI, slow, FAST).await;
    let mut child = scene.spawn(&["--grace", "0", "--cancel-on-exit"]);
    scene
        .wait_for(&mut child, "an open batch", |_, log| {
            log.contains(": 1 open")
        })
        .await;
    send(&child, "INT");
    let (code, _) = exit(child).await;
    assert_eq!(code, 130, "{}", scene.log());
    let log = scene.log();
    assert!(log.contains("cancelled 1 provider batch(es)"), "{log}");
    let status = scene.batch_command("status", "key-one").await;
    assert_eq!(status.code, 0, "{}\n{}", status.stdout, status.stderr);
    assert!(status.stdout.contains(": cancel"), "{}", status.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_report_gives_rounds_submissions_and_cost_batch_against_sync() {
    let scene = Scene::new(OPENAI, fast_mock(), FAST).await;
    let p = scene.protocol;
    let run = Cli::generate(&scene.config, &(p.base_url)(&scene.server), &scene.out)
        .args(&["--batch", "--provider", p.provider, "--model", p.model])
        .args(&["--max-concurrency", "16"])
        .env(p.key_env, "key-one".into())
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("batch: "))
        .collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert!(
        lines[0].contains("rounds") && lines[0].contains("at most 1)"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("replayed 0 answers"), "{}", lines[1]);
    assert!(
        lines[2].contains("batched answers") && lines[2].contains("synchronous ones"),
        "{}",
        lines[2]
    );
    assert!(
        !lines[2].contains("unknown"),
        "gpt-4o-mini has a built-in price: {}",
        lines[2]
    );
    scene.assert_exact();
}

/// The support-bot example with its judge on Anthropic's API of the mock while the
/// dialogs use OpenAI's: two providers, two batch endpoints, one round barrier.
async fn judged_elsewhere(mock: MockConfig) -> Scene {
    let mut scene = Scene::edited(OPENAI, mock, "support-bot.yaml", FAST, |text, server| {
        let judge = format!(
            "  auto_improve: true\n  evaluator: {{provider: anthropic, model_name: claude-judge, base_url: '{}'}}\n",
            server.anthropic_base_url()
        );
        text.replace("  auto_improve: true", judge.trim_end())
    })
    .await;
    scene.env.push(("ANTHROPIC_API_KEY", "key-two".into()));
    scene
}

/// The report's ledger names.
fn ledger_names(stdout: &str) -> Vec<String> {
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let models = report["ledger"]["by_model"].as_object().unwrap();
    models.keys().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judge_on_another_provider_is_batched_there_and_a_kill_resumes_exactly() {
    let scene = judged_elsewhere(fast_mock()).await;
    let run = scene.generate(&[]).run().await;
    let batch = batch_report(&run);
    scene.assert_exact();
    assert_eq!(batch["submissions_max"], 1, "{batch}");
    let names = ledger_names(&run.stdout);
    // Each answer is metered as batched on the model that gave it: both protocols
    // answered batches, and nothing went synchronous.
    for name in ["gpt-4o-mini (batch)", "claude-judge (batch)"] {
        assert!(names.iter().any(|n| n == name), "{name}: {names:?}");
    }
    assert!(!names.iter().any(|n| n == "claude-judge"), "{names:?}");
    assert!(!run.stderr.contains("stay synchronous"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the judge's requests go through Anthropic Message Batches API"),
        "{}",
        run.stderr
    );

    // A slower batch phase, so the judge's batch is still running when it stalls.
    let mock = MockConfig::default().with_batch_phase(Duration::from_millis(200));
    let scene = judged_elsewhere(mock).await;
    let mut child = scene.spawn(&[]);
    scene
        .wait_for(&mut child, "a judge request in a batch", |s, _| {
            s.batch_submissions().keys().any(|id| id.contains("j-"))
        })
        .await;
    scene.server.stall_batches(BatchStall::Poll);
    scene
        .wait_for(&mut child, "a stalled poll", |s, _| s.batch_stalled() > 0)
        .await;
    send(&child, "KILL");
    let _ = exit(child).await;
    scene.server.unstall_batches();
    // The judge's batches are pinned to its endpoint and key (the intent is
    // journalled before the create the mock saw), and `batch status` reaches every
    // open batch, the judge's with the judge's key.
    let journal = scene.dir.path().join("rows.jsonl.batch/journal.jsonl");
    let journal = std::fs::read_to_string(&journal).unwrap();
    assert!(journal.contains("@judge\""), "{journal}");
    let status = scene.batch_command("status", "key-one").await;
    assert_eq!(status.code, 0, "{}\n{}", status.stdout, status.stderr);
    let run = scene.generate(&["--resume"]).run().await;
    let batch = batch_report(&run);
    scene.assert_exact();
    assert!(batch["adopted"].as_u64().unwrap() >= 1, "{batch}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correspondent_with_its_own_model_is_batched_under_that_model() {
    let scene = Scene::edited(OPENAI, fast_mock(), "support-bot.yaml", FAST, |text, _| {
        format!("{text}correspondent:\n  model_name: gpt-4o-mini-user\n")
    })
    .await;
    let run = scene.generate(&[]).run().await;
    batch_report(&run);
    scene.assert_exact();
    let names = ledger_names(&run.stdout);
    assert!(
        names.iter().any(|n| n == "gpt-4o-mini-user (batch)"),
        "{names:?}"
    );
    // (It also has a synchronous entry: it writes the correspondent prompt in the
    // run's setup, outside any dialog.)
    assert!(!run.stderr.contains("stay synchronous"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_and_preference_write_exactly_n_rows_through_batches() {
    let scene = Scene::edited(OPENAI, fast_mock(), "structured.yaml", FAST, |t, _| t).await;
    let run = scene.job("structured", &["--num-samples", "6"]).run().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("batch mode: OpenAI Batch API, about 1 rounds"),
        "{}",
        run.stderr
    );
    assert_eq!(read_rows(&scene.out).len(), 6);
    let names = ledger_names(&run.stdout);
    assert!(
        names.iter().any(|n| n == "gpt-4o-mini (batch)"),
        "{names:?}"
    );
    let submissions = scene.server.batch_submissions();
    assert!(submissions.values().all(|&n| n == 1), "{submissions:?}");

    let scene = Scene::edited(OPENAI, fast_mock(), "support-bot.yaml", FAST, |text, _| {
        format!("{text}preference:\n  num_pairs: 4\n")
    })
    .await;
    let run = scene.job("preference", &[]).run().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows = read_rows(&scene.out);
    assert_eq!(rows.len(), 4);
    let ids: BTreeSet<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 4, "duplicate pair ids");
    let names = ledger_names(&run.stdout);
    assert!(
        names.iter().any(|n| n == "gpt-4o-mini (batch)"),
        "{names:?}"
    );
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert!(
        report["batch"]["batches"].as_u64().unwrap() >= 1,
        "{report}"
    );
    let submissions = scene.server.batch_submissions();
    assert!(submissions.values().all(|&n| n == 1), "{submissions:?}");
}

impl Scene {
    /// The rows stored so far (none before the first is written).
    fn rows_now(&self) -> usize {
        if self.out.exists() {
            read_rows(&self.out).len()
        } else {
            0
        }
    }

    /// The run record next to the rows.
    fn record(&self) -> serde_json::Value {
        let path = format!("{}.run.json", self.out.display());
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }
}

/// A scene whose dialogs all take the full 3 turns and never skip a question as a
/// near duplicate (a skipped dialog ends at once, and the engine's own cost criterion
/// would look at the spend then), so none ends before its last round.
async fn three_turn_scene() -> Scene {
    let scene = Scene::new(OPENAI, fast_mock(), FAST).await;
    let text = std::fs::read_to_string(&scene.config).unwrap();
    let edits = [
        ("  max_turns: 3\n", "  max_turns: 3\n  fixed_turns: true\n"),
        (
            "  auto_improve: true",
            "  auto_improve: true\n  dedup: false",
        ),
    ];
    let mut fixed = text.clone();
    for (from, to) in edits {
        assert!(fixed.contains(from), "the example changed: no {from:?}");
        fixed = fixed.replacen(from, to, 1);
    }
    std::fs::write(&scene.config, fixed).unwrap();
    scene
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_past_the_budget_stops_the_run_cleanly_and_resume_with_more_finishes() {
    // What a whole run costs, to put the limit past its setup and first round (the
    // correspondent prompt and the questions, which vary a little from run to run)
    // plus an eighth of its other batched answers: round 1 goes (nothing batched yet
    // to project from), and a later round is refused before the last, when the first
    // dialogs could finish.
    let full = three_turn_scene().await;
    let run = full.generate(&[]).run().await;
    let batch = batch_report(&run);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let questions = &report["ledger"]["by_model"]["gpt-4o-mini (batch)"]["by_role"]["instructions"];
    let questions = questions["cost"].as_f64().unwrap();
    let (sync, batched) = (batch["sync_cost"].as_f64(), batch["batch_cost"].as_f64());
    let first = sync.unwrap() + questions;
    let limit = format!("{:.8}", 1.3 * first + (batched.unwrap() - questions) / 8.0);

    let scene = three_turn_scene().await;
    let run = scene.generate(&["--max-cost", &limit]).run().await;
    assert_eq!(
        run.code, 0,
        "a budget stop exits as criteria do: {}",
        run.stderr
    );
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let reason = report["stop_reason"].as_str().unwrap();
    assert!(
        reason.contains("the budget of") && reason.contains("--resume"),
        "{reason}"
    );
    assert_eq!(report["dialogs_failed"], 0, "{report}");
    assert_eq!(report["batch"]["permanent_failures"], 0, "{report}");
    // Round 1 went; the refused round is no round (nothing of it was sent).
    assert!(report["batch"]["rounds"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["batch"]["submissions_max"], 1, "{report}");
    let rows = scene.rows_now();
    assert!(rows < N, "{rows} rows");
    let record = scene.record();
    assert_eq!(record["status"], "stopped", "{record}");
    let stored = record["stop_reason"].as_str().unwrap();
    assert!(stored.contains("the budget of"), "{record}");
    assert!(
        run.stderr.contains("raise --max-cost") && run.stderr.contains("--resume"),
        "{}",
        run.stderr
    );

    // The resumed run counts what the first spent: under the same limit it stops
    // again at once. What it replays from the journal costs nothing; a dialog whose
    // question came out of the shared pool differently this time asks anew, so a
    // small round may still go, but nothing like the first run's (which a gate
    // blind to the earlier spend would repeat).
    let first_submitted = report["batch"]["requests_submitted"].as_u64().unwrap();
    let again = scene
        .generate(&["--resume", "--max-cost", &limit])
        .run()
        .await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(scene.rows_now() < N, "{}", again.stdout);
    let report: serde_json::Value = serde_json::from_str(again.stdout.trim()).unwrap();
    let reason = report["stop_reason"].as_str().unwrap();
    assert!(reason.contains("budget of"), "{report}");
    let submitted = report["batch"]["requests_submitted"].as_u64().unwrap();
    assert!(
        submitted * 2 < first_submitted,
        "{first_submitted} then {report}"
    );

    let run = scene
        .generate(&["--resume", "--max-cost", "100"])
        .run()
        .await;
    batch_report(&run);
    scene.assert_exact();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credit_stops_the_run_at_once_with_the_providers_message() {
    // Credit for the first round's first lines only: the rest of that round fail for
    // low credit, and the dialogs whose lines went through must not make another
    // round of batches that could only fail alike.
    let scene = Scene::new(ANTHROPIC, fast_mock().with_batch_credit(5), FAST).await;
    let run = scene.generate(&[]).run().await;
    assert_eq!(
        run.code, 1,
        "a fatal provider error fails the run: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("credit balance is too low") && run.stderr.contains("add credit"),
        "{}",
        run.stderr
    );
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["batch"]["batches"], 1, "{report}");
    let submitted: u64 = scene.server.batch_submissions().values().copied().sum();
    assert_eq!(
        submitted,
        report["batch"]["requests_submitted"].as_u64().unwrap()
    );
    assert_eq!(
        scene.rows_now() as u64,
        report["rows_written"].as_u64().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn question_writing_is_batched_unless_instructions_leave_the_roles() {
    let scene = Scene::new(OPENAI, fast_mock(), FAST).await;
    let run = scene.generate(&[]).run().await;
    let batch = batch_report(&run);
    scene.assert_exact();
    assert_eq!(batch["submissions_max"], 1, "{batch}");
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let by_model = &report["ledger"]["by_model"];
    let batched = &by_model["gpt-4o-mini (batch)"]["by_role"];
    assert!(
        batched["instructions"]["requests"].as_u64().unwrap() > 0,
        "{by_model}"
    );
    // Only the correspondent prompt, written while the run is set up (outside any
    // dialog), may still go synchronously.
    let sync_roles = by_model["gpt-4o-mini"]["by_role"]
        .as_object()
        .map(|roles| roles.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    assert!(
        sync_roles.iter().all(|r| r == "correspondent"),
        "{sync_roles:?}"
    );

    let roles = "  roles: [respondent, correspondent, judge]\n";
    let scene = Scene::new(OPENAI, fast_mock(), &format!("{FAST}{roles}")).await;
    let run = scene.generate(&[]).run().await;
    batch_report(&run);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let sync = &report["ledger"]["by_model"]["gpt-4o-mini"]["by_role"];
    assert!(
        sync["instructions"]["requests"].as_u64().unwrap() > 0,
        "{sync}"
    );
}
