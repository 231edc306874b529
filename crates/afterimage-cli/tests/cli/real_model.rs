//! The CLI against a real model: llama-cpp-python's OpenAI-compatible server running
//! SmolLM2-135M-Instruct (a 135M model on the CPU). It checks the pipeline end to end
//! (requests a real server accepts, replies it parses, rows written), not the quality
//! of the text, which from a model this small is weak.
//!
//! Needs `AFTERIMAGE_TEST_LLAMA_PYTHON` (a Python with `llama-cpp-python[server]`) and
//! `AFTERIMAGE_TEST_LLAMA_MODEL` (the GGUF file). Without them the test says why it
//! skipped, unless `AFTERIMAGE_REQUIRE_LLAMA` is set (`.ci/run` installs both and sets
//! it), which makes a missing server a failure. The README says how to run it by hand.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Cli, assert_dialog, project, read_rows};

/// The name the server gives the model (`--model_alias`), which configs ask for.
const ALIAS: &str = "smollm2";
/// Loading a 100 MB GGUF takes about a second; a busy CI machine may take far longer.
const STARTUP: Duration = Duration::from_secs(180);

/// A small run sized for a 135M model on two CPU cores: few short dialogs, one retry,
/// a short respondent prompt.
const CONFIG: &str = r#"
generation:
  num_dialogs: 3
  max_turns: 2
  max_concurrency: 2
  # A 135M model fails a dialog now and then (an unreadable list of questions); the
  # test checks the pipeline, so the budget is wide.
  max_failures: 30
  seed: 7
model:
  provider: local
  model_name: smollm2
  timeout_secs: 120
  max_retries: 1
  max_tokens: 384
respondent:
  system_prompt: You are a support agent. Answer in one or two short sentences.
documents:
  provider: directory
  path: docs
context:
  enabled: true
  num_random_contexts: 1
  n_instructions: 2
"#;

/// Low bar and at most one regeneration: the judge's scores of a 135M model's dialogs
/// are noise, and `keep_best` keeps every dialog whatever they are. No near-duplicate
/// check: the model asks nearly the same few questions, and each one skipped costs
/// another slow instruction request.
const AUTO_IMPROVE: &str = r#"quality:
  auto_improve: true
  min_score: 0.5
  max_regenerations: 1
  on_failure: keep_best
  dedup: false
"#;

/// `python -m llama_cpp.server` on a free port, killed when dropped.
struct LlamaServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl LlamaServer {
    async fn start(python: &Path, model: &Path, dir: &Path) -> LlamaServer {
        // Another process may take the port between this probe and the server's bind;
        // unlikely enough on a test machine.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("llama-server.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(python)
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--model_alias", ALIAS, "--n_ctx", "4096"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
        let mut server = LlamaServer { child, port, log };
        server.wait_until_ready().await;
        server
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Polls `GET /v1/models` until it answers; fails with the server's log if the
    /// process exits or takes longer than [`STARTUP`].
    async fn wait_until_ready(&mut self) {
        let client = reqwest::Client::new();
        let url = format!("{}/models", self.base_url());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the llama server exited ({status}):\n{}", self.log_text());
            }
            let answer = client.get(&url).send().await;
            if answer.is_ok_and(|a| a.status().is_success()) {
                return;
            }
            assert!(
                started.elapsed() < STARTUP,
                "the llama server did not answer within {STARTUP:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python and the GGUF from the environment, or `None` after saying why not.
fn llama_setup() -> Option<(PathBuf, PathBuf)> {
    let python = std::env::var_os("AFTERIMAGE_TEST_LLAMA_PYTHON").map(PathBuf::from);
    let model = std::env::var_os("AFTERIMAGE_TEST_LLAMA_MODEL").map(PathBuf::from);
    let missing = match (&python, &model) {
        (Some(python), Some(model)) if python.exists() && model.exists() => {
            return Some((python.clone(), model.clone()));
        }
        (None, _) => "AFTERIMAGE_TEST_LLAMA_PYTHON is not set".to_owned(),
        (_, None) => "AFTERIMAGE_TEST_LLAMA_MODEL is not set".to_owned(),
        (Some(python), Some(model)) => {
            format!("{} or {} does not exist", python.display(), model.display())
        }
    };
    // .ci/run installs the server and the model and sets this, so CI cannot skip.
    assert!(
        std::env::var_os("AFTERIMAGE_REQUIRE_LLAMA").is_none(),
        "AFTERIMAGE_REQUIRE_LLAMA is set but {missing}"
    );
    eprintln!("skipped: {missing} (see the README: a real model in the tests)");
    None
}

/// `generate --json --num-dialogs N` against the server: exit 0, N rows written, each
/// a dialog of alternating user and assistant turns. Returns the report and the rows.
async fn generate(
    server: &LlamaServer,
    config: &Path,
    out: &Path,
    dialogs: usize,
) -> (serde_json::Value, Vec<serde_json::Value>) {
    let started = Instant::now();
    let run = Cli::new(&["generate", "--config", config.to_str().unwrap()])
        .args(&["--num-dialogs", &dialogs.to_string()])
        .args(&["--provider", "local", "--base-url", &server.base_url()])
        .args(&["--model", ALIAS, "--out", out.to_str().unwrap(), "--json"])
        .run()
        .await;
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let rows = read_rows(out);
    assert_eq!(rows.len(), dialogs, "{report}");
    assert_eq!(report["rows_written"], dialogs, "{report}");
    for row in &rows {
        assert_dialog(row);
        let messages = row["conversations"].as_array().unwrap();
        assert!(messages.len() <= 4, "more than max_turns: {row}");
    }
    let requests = report["requests"].as_u64().unwrap_or(0);
    // The figures for the record (`cargo test -- --nocapture` shows them).
    eprintln!(
        "{}: {} rows, {requests} requests ({:.1} per row), {:.1} s",
        config.display(),
        rows.len(),
        requests as f64 / rows.len() as f64,
        started.elapsed().as_secs_f64()
    );
    (report, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_model_serves_validate_and_generate() {
    let Some((python, model)) = llama_setup() else {
        return;
    };
    let (dir, config) = project(CONFIG);
    let server = LlamaServer::start(&python, &model, dir.path()).await;

    let run = Cli::new(&["validate", "--config", config.to_str().unwrap()])
        .args(&["--provider", "local", "--base-url", &server.base_url()])
        .args(&["--model", ALIAS])
        .run()
        .await;
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(run.stdout.contains("endpoint answers"), "{}", run.stdout);

    generate(&server, &config, &dir.path().join("plain.jsonl"), 3).await;

    // Two dialogs: every judge request is a long prompt for a CPU-bound model.
    let improved = dir.path().join("auto-improve.yaml");
    std::fs::write(&improved, format!("{CONFIG}{AUTO_IMPROVE}")).unwrap();
    let (report, rows) = generate(&server, &improved, &dir.path().join("improved.jsonl"), 2).await;
    // A judge answer the model botched leaves its attempt unjudged, which the report
    // counts; a row without a score must be one of those.
    let unscored = rows
        .iter()
        .filter(|r| !r["final_score"].is_number())
        .count();
    assert!(
        report["unjudged"].as_u64().unwrap() >= unscored as u64,
        "{report}"
    );
}
