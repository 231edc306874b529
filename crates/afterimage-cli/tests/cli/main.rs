//! The `afterimage` binary end to end, against the project's mock LLM server over
//! real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use afterimage_mock::{MockConfig, MockServer};

mod analyze;
mod backends;
mod base_urls;
mod batch;
mod diversity;
mod fleet;
mod fuzz_corpus;
mod ledger;
mod metrics;
mod preference;
mod quality;
mod real_model;
mod resume;
mod signals;
mod structured;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// One invocation of the `afterimage` binary, without the caller's API keys or
/// `RUST_LOG`.
struct Cli {
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    dir: Option<PathBuf>,
}

impl Cli {
    fn new(args: &[&str]) -> Cli {
        Cli {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            dir: None,
        }
    }

    /// `generate --config CONFIG --base-url URL --out OUT`, the run most tests make
    /// (`out` is a path or a storage spec such as `sqlite:FILE`).
    fn generate(config: &Path, base_url: &str, out: impl AsRef<Path>) -> Cli {
        let (config, out) = (config.to_str().unwrap(), out.as_ref().to_str().unwrap());
        Cli::new(&[
            "generate",
            "--config",
            config,
            "--base-url",
            base_url,
            "--out",
            out,
        ])
    }

    fn args(mut self, more: &[&str]) -> Cli {
        self.args.extend(more.iter().map(|s| s.to_string()));
        self
    }

    fn env(mut self, key: &'static str, value: String) -> Cli {
        self.env.push((key, value));
        self
    }

    fn current_dir(mut self, dir: &Path) -> Cli {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// The process, to spawn by hand (signals, pipes).
    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_afterimage"));
        command.args(&self.args);
        for var in [
            "GEMINI_API_KEY",
            "OPENAI_API_KEY",
            "DEEPSEEK_API_KEY",
            "OPENROUTER_API_KEY",
            "ANTHROPIC_API_KEY",
            "OPENAI_BASE_URL",
            "ANTHROPIC_BASE_URL",
            "GOOGLE_GEMINI_BASE_URL",
            "RUST_LOG",
        ] {
            command.env_remove(var);
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        command
    }

    /// Runs to the end; a panic of the CLI fails the test.
    async fn run(self) -> Run {
        let mut command = self.command();
        let output: Output = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        let run = Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        assert!(
            !run.stderr.contains("panicked") && !run.stderr.contains("RUST_BACKTRACE"),
            "the CLI panicked:\n{}",
            run.stderr
        );
        run
    }
}

/// A PostgreSQL output in a schema of its own (URL in `AFTERIMAGE_TEST_POSTGRES_URL`,
/// default `postgres://postgres@127.0.0.1:5432/test`), dropped by [`drop`](Self::drop).
struct PostgresSchema {
    base: String,
    name: String,
    /// The output URL, naming the schema.
    url: String,
}

impl PostgresSchema {
    fn new() -> PostgresSchema {
        use std::hash::{BuildHasher, Hasher};
        let base = std::env::var("AFTERIMAGE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        // A random-enough name without a rand dependency.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        let name = format!("afterimage_cli_{:016x}", hasher.finish());
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}schema={name}");
        PostgresSchema { base, name, url }
    }

    async fn drop(self) {
        let (client, connection) = tokio_postgres::connect(&self.base, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA \"{}\" CASCADE", self.name))
            .await
            .unwrap();
    }
}

/// A folder with a config and two support documents.
fn project(config: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("docs")).unwrap();
    std::fs::write(
        dir.path().join("docs/errors.txt"),
        "Error 503 means the service is unavailable. Retry after 5 minutes.",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("docs/password.md"),
        "To reset your password, click 'Forgot Password' on the login screen.",
    )
    .unwrap();
    let path = dir.path().join("run.yaml");
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

const LOCAL: &str = r#"
generation:
  num_dialogs: 12
  max_turns: 3
  max_concurrency: 4
model:
  provider: local
  model_name: mock-model
respondent:
  system_prompt: You are a Tier 1 Technical Support agent.
documents:
  provider: directory
  path: docs
context:
  enabled: true
  num_random_contexts: 1
  n_instructions: 3
"#;

fn read_rows(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn assert_dialog(row: &serde_json::Value) {
    let messages = row["conversations"].as_array().unwrap();
    assert!(
        !messages.is_empty() && messages.len().is_multiple_of(2),
        "{row}"
    );
    for (i, message) in messages.iter().enumerate() {
        let want = if i % 2 == 0 { "user" } else { "assistant" };
        assert_eq!(message["role"], want, "{row}");
        assert!(!message["content"].as_str().unwrap().trim().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_writes_exactly_n_alternating_rows_over_http() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let (dir, config) = project(LOCAL);
    let out = dir.path().join("out/rows.jsonl");
    let run = Cli::generate(&config, &server.openai_base_url(), &out)
        .args(&["--json"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["rows_written"], 12);
    assert_eq!(report["rows_requested"], 12);
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 12);
    for row in &rows {
        assert_dialog(row);
        let context = row["instruction_context"].as_str().unwrap();
        assert!(context.contains("Error 503") || context.contains("reset your password"));
        assert_eq!(row["response_context"].as_str().unwrap(), context);
        assert!(
            row["metadata"]["context_id"]
                .as_str()
                .unwrap()
                .ends_with(".txt")
                || row["metadata"]["context_id"]
                    .as_str()
                    .unwrap()
                    .ends_with(".md")
        );
    }
    // The simulated user's follow-ups went out framed as the user's turn: the mock
    // answers such requests with a question, and an assistant-framed one with an answer.
    let follow_ups: Vec<&str> = rows
        .iter()
        .flat_map(|r| {
            r["conversations"]
                .as_array()
                .unwrap()
                .iter()
                .skip(2)
                .step_by(2)
        })
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert!(!follow_ups.is_empty());
    assert!(
        follow_ups.iter().all(|m| m.trim_end().ends_with('?')),
        "{follow_ups:?}"
    );
    // Every model request the mock saw is in the report.
    assert_eq!(report["requests"], server.stats().chat_completions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_provider_over_http_with_flag_overrides() {
    let server = MockServer::start(MockConfig::default().with_require_key("gem-key"))
        .await
        .unwrap();
    let (dir, config) = project(LOCAL);
    let out = dir.path().join("gemini.jsonl");
    let run = Cli::generate(&config, &server.gemini_base_url(), &out)
        .args(&[
            "--provider",
            "gemini",
            "--model",
            "gemini-2.0-flash",
            "--num-dialogs",
            "5",
            "--max-turns",
            "2",
            "--max-concurrency",
            "2",
            "--seed",
            "7",
        ])
        .env("GEMINI_API_KEY", "gem-key".into())
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("rows written"), "{}", run.stdout);
    assert!(run.stdout.contains("5 of 5"), "{}", run.stdout);
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 5);
    rows.iter().for_each(assert_dialog);
    assert!(
        rows.iter()
            .all(|r| r["conversations"].as_array().unwrap().len() <= 4)
    );
    assert_eq!(server.stats().chat_completions, 0);
    assert!(!run.stdout.contains("gem-key") && !run.stderr.contains("gem-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_provider_over_http() {
    let server = MockServer::start(MockConfig::default().with_require_key("ant-key"))
        .await
        .unwrap();
    let (dir, config) = project(LOCAL);
    let out = dir.path().join("anthropic.jsonl");
    let run = Cli::generate(&config, &server.anthropic_base_url(), &out)
        .args(&[
            "--provider",
            "anthropic",
            "--model",
            "claude-sonnet-4-5",
            "--num-dialogs",
            "4",
            "--max-turns",
            "2",
            "--max-concurrency",
            "2",
            "--json",
        ])
        .env("ANTHROPIC_API_KEY", "ant-key".into())
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["rows_written"], 4);
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 4);
    for row in &rows {
        assert_dialog(row);
        assert!(row["conversations"].as_array().unwrap().len() <= 4);
        let context = row["instruction_context"].as_str().unwrap();
        assert!(context.contains("Error 503") || context.contains("reset your password"));
    }
    let stats = server.stats();
    assert!(stats.messages > 0, "{stats}");
    assert_eq!(stats.chat_completions + stats.generate_content, 0);
    assert_eq!(stats.unauthorized, 0);
    assert_eq!(report["requests"], stats.messages);
    assert!(!run.stdout.contains("ant-key") && !run.stderr.contains("ant-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_checks_everything_without_generating() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let (dir, config) = project(LOCAL);
    let out = dir.path().join("never.jsonl");
    let run = Cli::new(&[
        "validate",
        "--config",
        config.to_str().unwrap(),
        "--base-url",
        &server.openai_base_url(),
        "--out",
        out.to_str().unwrap(),
    ])
    .run()
    .await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("2 documents"), "{}", run.stdout);
    assert!(run.stdout.contains("endpoint answers"), "{}", run.stdout);
    assert!(!out.exists());
    assert_eq!(server.stats().chat_completions, 0);
}

/// Runs `generate` on `config` and expects a one-line error and exit `code`.
async fn expect_error(config: &str, extra: &[&str], code: i32, needles: &[&str]) {
    let (dir, path) = project(config);
    let out = dir.path().join("out.jsonl");
    let run = Cli::new(&[
        "generate",
        "--config",
        path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .args(extra)
    .run()
    .await;
    assert_eq!(run.code, code, "stderr: {}", run.stderr);
    let error_lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error"))
        .collect();
    assert_eq!(error_lines.len(), 1, "one error line: {}", run.stderr);
    for needle in needles {
        assert!(
            error_lines[0].contains(needle),
            "{needle:?} not in {}",
            error_lines[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_errors_exit_2_with_a_clear_line() {
    // Missing key: names the variable.
    expect_error(
        "model: {provider: openai}\nrespondent: {system_prompt: hi}\n",
        &[],
        2,
        &["OPENAI_API_KEY"],
    )
    .await;
    // Unknown provider: names it and the line.
    expect_error(
        "model:\n  provider: claude\nrespondent: {system_prompt: hi}\n",
        &[],
        2,
        &["claude", "line 2"],
    )
    .await;
    // A typo: the key and the line.
    expect_error(
        "generation:\n  num_dialog: 3\nrespondent: {system_prompt: hi}\n",
        &[],
        2,
        &["num_dialog", "line 2"],
    )
    .await;
    // num_dialogs 0.
    expect_error(
        LOCAL,
        &["--num-dialogs", "0"],
        2,
        &["generation.num_dialogs: is 0"],
    )
    .await;
    // An empty document folder.
    expect_error(
        &LOCAL.replace("path: docs", "path: empty"),
        &["--base-url", "http://127.0.0.1:9/v1"],
        2,
        &["empty"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_document_folder_names_the_folder() {
    let (dir, path) = project(&LOCAL.replace("path: docs", "path: nothing-here"));
    std::fs::create_dir(dir.path().join("nothing-here")).unwrap();
    let run = Cli::new(&["generate", "--config", path.to_str().unwrap()])
        .run()
        .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("nothing-here"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_fast_and_names_the_url() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/v1");
    let started = Instant::now();
    let (_dir, path) = project(LOCAL);
    let run = Cli::new(&[
        "generate",
        "--config",
        path.to_str().unwrap(),
        "--base-url",
        &url,
    ])
    .run()
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        run.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prose_instead_of_json_stops_the_run_with_the_cause() {
    let server = MockServer::start(MockConfig::default().with_prose_instead_of_json(true))
        .await
        .unwrap();
    let (dir, path) = project(LOCAL);
    let out = dir.path().join("out.jsonl");
    let run = Cli::generate(&path, &server.openai_base_url(), &out)
        .run()
        .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let error = run.stderr.lines().find(|l| l.starts_with("error")).unwrap();
    assert!(error.contains("instruction generator"), "{error}");
    assert!(error.contains("JSON"), "{error}");
    assert!(error.contains("0 rows written"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_improve_judges_every_row() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let (dir, config) = project(&format!("{LOCAL}quality:\n  auto_improve: true\n"));
    let out = dir.path().join("judged.jsonl");
    let run = Cli::generate(&config, &server.openai_base_url(), &out)
        .args(&["--num-dialogs", "4"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 4);
    for row in rows {
        let score = row["final_score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score), "{row}");
        for criterion in [
            "coherence",
            "factuality",
            "grounding",
            "helpfulness",
            "relevance",
        ] {
            assert!(row["evaluation"][criterion]["score"].is_number(), "{row}");
        }
        assert!(row["evaluation"]["overall_grade"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_score_is_bounded_and_reported() {
    // The mock's judge scores land in 0.8..0.95: 0.99 is never reached.
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let quality = "quality:\n  auto_improve: true\n  min_score: 0.99\n  max_regenerations: 1\n";
    let (dir, config) = project(&format!("{LOCAL}{quality}"));
    let out = dir.path().join("bounded.jsonl");
    let run = Cli::generate(&config, &server.openai_base_url(), &out)
        .args(&["--num-dialogs", "3", "--json"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["rows_written"], 3);
    assert_eq!(report["regenerations"], 3);
    for row in read_rows(&out) {
        assert_eq!(
            row["metadata"]["generation"]["attempts"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert!(row["final_score"].as_f64().unwrap() < 0.99);
    }

    // With `on_failure: drop` nothing passes, so the run stops on its failure budget
    // with the cause, instead of looping.
    let quality = "quality:\n  auto_improve: true\n  min_score: 0.99\n  max_regenerations: 1\n  on_failure: drop\n";
    let (dir, config) = project(&format!("{LOCAL}{quality}"));
    let out = dir.path().join("dropped.jsonl");
    let run = Cli::generate(&config, &server.openai_base_url(), &out)
        .args(&["--num-dialogs", "2"])
        .run()
        .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let error = run.stderr.lines().find(|l| l.starts_with("error")).unwrap();
    assert!(error.contains("no attempt of 2 passed"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_config_validates_and_generates_against_the_mock() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut checked = Vec::new();
    let mut configs: Vec<PathBuf> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    configs.sort();
    for path in configs {
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join(format!("{name}.jsonl"));
        let run = Cli::new(&[
            "validate",
            "--config",
            path.to_str().unwrap(),
            "--provider",
            "local",
            "--base-url",
            &server.openai_base_url(),
            "--out",
            out.to_str().unwrap(),
        ])
        .run()
        .await;
        assert_eq!(run.code, 0, "{name}: {}\n{}", run.stdout, run.stderr);
        let run = Cli::generate(&path, &server.openai_base_url(), &out)
            .args(&["--provider", "local", "--json"])
            .run()
            .await;
        assert_eq!(run.code, 0, "{name}: {}\n{}", run.stdout, run.stderr);
        let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let rows = read_rows(&out);
        assert!(!rows.is_empty(), "{name}: no rows");
        assert_eq!(
            report["rows_written"].as_u64(),
            Some(rows.len() as u64),
            "{name}"
        );
        match name.as_str() {
            "persona" => {
                assert_eq!(rows.len(), 12);
                for row in &rows {
                    let persona = row["persona"].as_str().unwrap_or_default();
                    assert!(!persona.is_empty(), "{name}: a row without a persona");
                    assert_eq!(row["metadata"]["persona_name"], row["persona"]);
                    assert!(
                        row["metadata"]["persona_generation_depth"].is_u64(),
                        "{name}: {row}"
                    );
                }
                // The personas are saved with the run, in upstream's documents shape.
                let documents = read_rows(&out_dir.path().join("persona.jsonl.documents.jsonl"));
                assert!(!documents.is_empty());
                assert!(
                    documents
                        .iter()
                        .all(|d| d["personas"][0]["metadata"]["generation_depth"].is_u64())
                );
            }
            "rag" => {
                let mut visits = std::collections::HashMap::new();
                for row in &rows {
                    let hits = row["metadata"]["retrieval"]["hits"].as_array().unwrap();
                    assert!(!hits.is_empty(), "{name}: no retrieval hits: {row}");
                    let context = row["response_context"].as_str().unwrap();
                    assert!(!context.is_empty());
                    *visits
                        .entry(row["metadata"]["context_id"].as_str().unwrap().to_owned())
                        .or_insert(0) += 1;
                }
                // Five documents, each the source of at least two stored dialogs.
                assert_eq!(visits.len(), 5, "{visits:?}");
                assert!(visits.values().all(|v| *v >= 2), "{visits:?}");
            }
            "tool-calling" => {
                assert_eq!(rows.len(), 8);
                let known = [
                    "get_device_status",
                    "set_temperature",
                    "schedule_technician",
                    "start_warranty_claim",
                ];
                let mut calls = 0;
                for row in &rows {
                    let messages = row["conversations"].as_array().unwrap();
                    for (i, message) in messages.iter().enumerate() {
                        let Some(tool_calls) = message["tool_calls"].as_array() else {
                            continue;
                        };
                        for call in tool_calls {
                            calls += 1;
                            let tool = call["function"]["name"].as_str().unwrap();
                            assert!(known.contains(&tool), "{name}: unknown tool {tool}");
                            // Each call is answered by a tool message with its id.
                            assert!(
                                messages[i + 1..].iter().any(|m| m["role"] == "tool"
                                    && m["tool_call_id"] == call["id"]),
                                "{name}: unanswered call in {row}"
                            );
                        }
                    }
                    // Every dialog ends with the assistant speaking in text.
                    let last = messages.last().unwrap();
                    assert_eq!(last["role"], "assistant");
                    assert!(!last["content"].as_str().unwrap_or_default().is_empty());
                }
                assert!(calls > 0, "{name}: no tool calls were stored");
            }
            "auto-improve" => {
                assert!(rows.iter().all(|r| r["final_score"].is_number()));
            }
            "preference" => preference::run_example(&server, &path, out_dir.path()).await,
            _ => {}
        }
        checked.push(name);
    }
    for expected in [
        "persona",
        "rag",
        "tool-calling",
        "support-bot",
        "auto-improve",
        "preference",
    ] {
        assert!(
            checked.iter().any(|c| c == expected),
            "examples/{expected}.yaml was not run: {checked:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_among_several_is_retired_and_never_shown() {
    let server =
        MockServer::start(MockConfig::default().with_require_key("sk-good-0000111122223333"))
            .await
            .unwrap();
    let config = LOCAL.replace(
        "  provider: local\n",
        "  provider: openai\n  api_key_env: TEAM_KEYS\n",
    );
    let (dir, path) = project(&config);
    let out = dir.path().join("keys.jsonl");
    let run = Cli::generate(&path, &server.openai_base_url(), &out)
        .args(&["--num-dialogs", "6", "--json"])
        .env(
            "TEAM_KEYS",
            "sk-revoked-9999888877776666, sk-good-0000111122223333".into(),
        )
        .env("RUST_LOG", "trace".into())
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value =
        serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["rows_written"], 6);
    let keys = report["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys.iter().filter(|k| k["retired"] == true).count(), 1);
    // Neither key appears anywhere: not in the report, the trace log, or the rows.
    let rows = std::fs::read_to_string(&out).unwrap();
    for secret in [
        "sk-revoked-9999888877776666",
        "sk-good-0000111122223333",
        "9999888877776666",
    ] {
        assert!(!run.stdout.contains(secret), "key in stdout");
        assert!(!run.stderr.contains(secret), "key in the trace log");
        assert!(!rows.contains(secret), "key in the rows");
    }
    assert!(run.stderr.contains("retired"), "the retirement is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_finishes_the_dialogs_in_flight_and_keeps_them() {
    let server = MockServer::start(MockConfig::default().with_latency(Duration::from_millis(50)))
        .await
        .unwrap();
    let (dir, path) = project(LOCAL);
    let out = dir.path().join("interrupted.jsonl");
    let child = Cli::generate(&path, &server.openai_base_url(), &out)
        .args(&["--num-dialogs", "500"])
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&out).map_or(0, |t| t.lines().count()) < 3 {
        assert!(Instant::now() < deadline, "no rows appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.ends_with('\n'));
    let rows = read_rows(&out);
    assert!(rows.len() >= 3 && rows.len() < 500, "{}", rows.len());
    rows.iter().for_each(assert_dialog);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_cost_stops_the_run_under_its_budget() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let priced = LOCAL.replace(
        "  model_name: mock-model\n",
        "  model_name: mock-model\n  price: {input_per_million: 1.0, output_per_million: 4.0}\n",
    );
    let (dir, path) = project(&priced);
    let out = dir.path().join("budget.jsonl");
    let run = Cli::generate(&path, &server.openai_base_url(), &out)
        .args(&["--num-dialogs", "400", "--max-cost", "0.01", "--json"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let cost = report["cost"].as_f64().unwrap();
    assert!(cost > 0.0 && cost <= 0.01, "cost {cost}");
    let rows = report["rows_written"].as_u64().unwrap();
    assert!(rows > 0 && rows < 400, "{rows}");
    let stop_reason = report["stop_reason"].as_str().unwrap();
    assert!(
        stop_reason.starts_with("stopping criterion met: cost budget of 0.01"),
        "{stop_reason}"
    );

    // Without prices the flag cannot work: a usage error, before any request.
    let (_dir, path) = project(LOCAL);
    let run = Cli::new(&[
        "generate",
        "--config",
        path.to_str().unwrap(),
        "--max-cost",
        "1",
    ])
    .run()
    .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("model.price"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_model_is_priced_from_the_built_in_table() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let listed = LOCAL.replace(
        "  provider: local\n  model_name: mock-model\n",
        "  provider: openai\n  model_name: gpt-4o-mini\n",
    );
    let (dir, path) = project(&listed);
    let validate = Cli::new(&[
        "validate",
        "--config",
        path.to_str().unwrap(),
        "--base-url",
        &server.openai_base_url(),
    ])
    .env("OPENAI_API_KEY", "k".into())
    .run()
    .await;
    assert!(
        validate
            .stdout
            .contains("ok    price of gpt-4o-mini: input 0.15")
            && validate.stdout.contains("(built-in table of 20"),
        "{}",
        validate.stdout
    );

    // --max-cost needs no model.price for a listed model.
    let out = dir.path().join("budget.jsonl");
    let run = Cli::generate(&path, &server.openai_base_url(), &out)
        .args(&["--num-dialogs", "400", "--max-cost", "0.002", "--json"])
        .env("OPENAI_API_KEY", "k".into())
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let cost = report["cost"].as_f64().unwrap();
    assert!(cost > 0.0 && cost <= 0.002, "cost {cost}");
    let rows = report["rows_written"].as_u64().unwrap();
    assert!(rows > 0 && rows < 400, "{rows}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_absorbed_by_retries_and_pacing_without_losing_dialogs() {
    let server = MockServer::start(
        MockConfig::default()
            .with_rate_limit_rate(0.4)
            .with_retry_after_secs(1)
            .with_seed(3),
    )
    .await
    .unwrap();
    // Enough retries that no request can plausibly fail 13 times in a row.
    let (dir, path) = project(&LOCAL.replace(
        "  model_name: mock-model\n",
        "  model_name: mock-model\n  max_retries: 12\n",
    ));
    let out = dir.path().join("limited.jsonl");
    let run = Cli::generate(&path, &server.openai_base_url(), &out)
        .args(&["--num-dialogs", "10", "--max-concurrency", "8", "--json"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["rows_written"], 10);
    assert_eq!(report["dialogs_failed"], 0, "{report}");
    assert!(server.stats().rate_limited > 0);
    let pacing = &report["pacing"][0];
    assert!(pacing["decreases"].as_u64().unwrap() >= 1, "{report}");
    assert!(pacing["lowest_limit"].as_u64().unwrap() < 8, "{report}");
    assert_eq!(read_rows(&out).len(), 10);
}

/// A judged dataset whose run also exports and writes the report (`output.export`,
/// `analytics.auto_analyze`).
async fn generate_dataset(server: &MockServer, dir: &Path, config: &Path) -> PathBuf {
    let out = dir.join("data/rows.jsonl");
    let run = Cli::generate(config, &server.openai_base_url(), &out)
        .args(&["--json"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // stdout stays the run report alone; the export and report speak on stderr.
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["rows_written"], 12);
    assert!(run.stderr.contains("report written to"), "{}", run.stderr);
    out
}

const DATASET: &str = "quality:\n  auto_improve: true\noutput:\n  export: {formats: [openai, sharegpt], split: 0.25, seed: 7}\nanalytics: {auto_analyze: true}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_then_export_and_analyze() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let (dir, config) = project(&format!("{LOCAL}{DATASET}"));
    let out = generate_dataset(&server, dir.path(), &config).await;
    let data = dir.path().join("data");

    // The end-of-run export: 12 rows, 3 to validate, both formats.
    for (name, lines) in [
        ("rows_openai_train.jsonl", 9),
        ("rows_openai_val.jsonl", 3),
        ("rows_sharegpt_train.jsonl", 9),
        ("rows_sharegpt_val.jsonl", 3),
    ] {
        let text = std::fs::read_to_string(data.join(name)).unwrap();
        assert_eq!(text.lines().count(), lines, "{name}");
    }
    let auto_report = std::fs::read_to_string(data.join("rows.html")).unwrap();
    assert!(auto_report.contains("<section id=\"lowest\">"));

    // `export` by hand: every record is a whole dialog in the format's shape.
    let exported = dir.path().join("exported");
    let run = Cli::new(&[
        "export",
        out.to_str().unwrap(),
        "--format",
        "alpaca",
        "--format",
        "llama_factory",
        "--split-turns",
        "--min-score",
        "0",
        "--out-dir",
        exported.to_str().unwrap(),
        "--json",
    ])
    .run()
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["rows_read"], 12);
    assert_eq!(report["rows_filtered_out"], 0);
    let alpaca = std::fs::read_to_string(exported.join("rows_alpaca.jsonl")).unwrap();
    let turns: usize = read_rows(&out)
        .iter()
        .map(|r| r["conversations"].as_array().unwrap().len() / 2)
        .sum();
    assert_eq!(alpaca.lines().count(), turns);
    for line in alpaca.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(!record["output"].as_str().unwrap().is_empty());
    }
    let llama = std::fs::read_to_string(exported.join("rows_llama_factory.jsonl")).unwrap();
    assert_eq!(llama.lines().count(), 12);

    // `analyze`: the JSON figures and the page, with never-used documents known.
    let html = dir.path().join("report/r.html");
    let run = Cli::new(&[
        "analyze",
        out.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
        "--documents",
        dir.path().join("docs").to_str().unwrap(),
        "--json",
    ])
    .run()
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let figures: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(figures["summary"]["rows"], 12);
    // The run record next to the rows says which dialogs failed (none here).
    assert_eq!(figures["summary"]["failures"], serde_json::json!({}));
    assert_eq!(figures["documents"]["known"], 2);
    assert_eq!(figures["judge"]["scored_rows"], 12);
    assert_eq!(figures["lowest"].as_array().unwrap().len(), 5);
    let page = std::fs::read_to_string(&html).unwrap();
    for id in afterimage_datasets::SECTIONS {
        assert!(page.contains(&format!("<section id=\"{id}\">")), "{id}");
    }

    // Usage errors exit 2 with one readable line.
    for (list, needle) in [
        (
            vec!["export", out.to_str().unwrap(), "-f", "csv"],
            "unknown export format",
        ),
        (
            vec!["export", "sqlite:runs.db", "-f", "raw"],
            "sqlite:runs.db does not exist",
        ),
        (vec!["export", out.to_str().unwrap()], "no format given"),
        (
            vec!["analyze", "postgres://u@h/db"],
            "cannot connect to postgres://u@h/db",
        ),
        (vec!["analyze", "missing.jsonl"], "missing.jsonl"),
    ] {
        let run = Cli::new(&list).run().await;
        assert_eq!(run.code, 2, "{list:?}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{list:?}: {}", run.stderr);
    }
    let run = Cli::new(&["export", "--list-formats"]).run().await;
    assert_eq!(run.code, 0);
    assert_eq!(run.stdout.lines().count(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_export_format_in_the_config_fails_before_generating() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let (dir, config) = project(&format!(
        "{LOCAL}output:\n  export: {{formats: [openai, csv]}}\n"
    ));
    let out = dir.path().join("rows.jsonl");
    let run = Cli::generate(&config, &server.openai_base_url(), &out)
        .run()
        .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("csv"), "{}", run.stderr);
    assert_eq!(server.stats().chat_completions, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_export_after_generate_keeps_the_rows_and_exit_0() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let (dir, config) = project(&format!(
        "{LOCAL}output:\n  export: {{formats: [openai], output_dir: blocked}}\n"
    ));
    // A file where the export folder should be.
    let blocked = dir.path().join("blocked");
    std::fs::write(&blocked, "not a folder").unwrap();
    let out = dir.path().join("rows.jsonl");
    let run = Cli::generate(&config, &server.openai_base_url(), &out)
        .current_dir(dir.path())
        .run()
        .await;
    let stderr = &run.stderr;
    assert_eq!(run.code, 0, "{stderr}");
    assert!(stderr.contains("output.export failed"), "{stderr}");
    assert_eq!(read_rows(&out).len(), 12);
}

/// `chromium`, if installed.
fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
}

/// Renders `html` with headless Chromium and returns the PNG's path.
fn screenshot(chromium: &Path, html: &Path, work: &Path, name: &str) -> PathBuf {
    let png = work.join(format!("{name}.png"));
    let profile = work.join(format!("{name}-profile"));
    let mut child = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--window-size=1280,2000")
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(png.is_file(), "chromium wrote no screenshot");
    png
}

/// The share of pixels that differ from the most common colour, and the number of
/// distinct colours: a blank page has (0, 1).
fn ink(png_path: &Path) -> (f64, usize) {
    let mut decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).unwrap(),
    ));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..info.buffer_size()];
    let per_pixel = info.line_size / info.width as usize;
    let mut counts: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    for pixel in bytes.chunks_exact(per_pixel) {
        *counts.entry(pixel).or_default() += 1;
    }
    let total = bytes.len() / per_pixel;
    let background = counts.values().copied().max().unwrap_or(0);
    (1.0 - background as f64 / total as f64, counts.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_renders_in_headless_chromium() {
    let Some(chromium) = find_chromium() else {
        // .ci/run installs chromium and sets this, so CI cannot skip the check.
        assert!(
            std::env::var_os("AFTERIMAGE_REQUIRE_CHROMIUM").is_none(),
            "AFTERIMAGE_REQUIRE_CHROMIUM is set but chromium is not on PATH"
        );
        eprintln!("skipped: chromium is not installed (apt-get install chromium)");
        return;
    };
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let (dir, config) = project(&format!("{LOCAL}{DATASET}"));
    generate_dataset(&server, dir.path(), &config).await;
    let html = dir.path().join("data/rows.html");
    let page = std::fs::read_to_string(&html).unwrap();
    for id in afterimage_datasets::SECTIONS {
        assert!(page.contains(&format!("<section id=\"{id}\">")), "{id}");
    }

    let work = dir.path().to_path_buf();
    let blank_html = work.join("blank.html");
    std::fs::write(&blank_html, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let (report_png, blank_png) = tokio::task::spawn_blocking(move || {
        (
            screenshot(&chromium, &html, &work, "report"),
            screenshot(&chromium, &blank_html, &work, "blank"),
        )
    })
    .await
    .unwrap();
    // The check itself can fail: a blank page is one colour.
    let (blank_ink, blank_colours) = ink(&blank_png);
    assert!(
        blank_ink < 0.001 && blank_colours <= 2,
        "{blank_ink} {blank_colours}"
    );
    let (report_ink, report_colours) = ink(&report_png);
    assert!(
        report_ink > 0.02 && report_colours > 16,
        "the report looks blank: {:.4} of pixels inked, {report_colours} colours",
        report_ink
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_is_not_a_panic() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let (dir, path) = project(LOCAL);
    let out = dir.path().join("piped.jsonl");
    let mut child = Cli::generate(&path, &server.openai_base_url(), &out)
        .args(&["--num-dialogs", "3"])
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the summary is printed.
    drop(child.stdout.take());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(read_rows(&out).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrieval_with_embeddings_runs_against_the_mock() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let config = format!(
        "{LOCAL}retrieval:\n  retriever: embedding\n  top_k: 2\n  per_turn: true\n  chunk_size: 200\n  chunk_overlap: 20\n  embedding: {{model_name: mock-embed, batch_size: 3}}\n"
    );
    let (dir, path) = project(&config);
    let out = dir.path().join("rag.jsonl");
    let run = Cli::generate(&path, &server.openai_base_url(), &out)
        .args(&["--json"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 12);
    for row in &rows {
        let retrieval = &row["metadata"]["retrieval"];
        assert_eq!(retrieval["retriever"], "embedding", "{row}");
        let hits = retrieval["hits"].as_array().unwrap();
        assert!(!hits.is_empty());
        // The chunks are the documents' (`<path>#<n>`), scored by cosine similarity.
        for hit in hits {
            assert!(hit["id"].as_str().unwrap().contains("/docs/"), "{hit}");
            let score = hit["score"].as_f64().unwrap();
            assert!(score > 0.0 && score <= 1.0 + 1e-9, "{hit}");
        }
    }
    // The chunks were embedded in batches of three, then one query per question.
    assert!(server.stats().embeddings >= 2, "{}", server.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_persona_run_reuses_the_saved_personas() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let config = examples.join("persona.yaml");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("persona.jsonl");
    let generate = |n: &str, resume: bool| {
        let cli = Cli::generate(&config, &server.openai_base_url(), &out).args(&[
            "--provider",
            "local",
            "--num-dialogs",
            n,
        ]);
        if resume { cli.args(&["--resume"]) } else { cli }
    };
    // Ten dialogs, two per batch: every one of the five documents gets personas.
    let run = generate("10", false).run().await;
    assert_eq!(run.code, 0, "{}", run.stderr);

    // Replace every saved persona by a marked one: if the resumed run generated
    // personas again, its rows would not carry the marks.
    let saved = out.with_file_name("persona.jsonl.documents.jsonl");
    let marked: Vec<String> = read_rows(&saved)
        .into_iter()
        .map(|mut document| {
            for layer in document["personas"].as_array_mut().unwrap() {
                for (i, persona) in layer["descriptions"]
                    .as_array_mut()
                    .unwrap()
                    .iter_mut()
                    .enumerate()
                {
                    *persona = format!("Saved persona {i} of a lighthouse keeper").into();
                }
            }
            document.to_string()
        })
        .collect();
    assert!(!marked.is_empty());
    std::fs::write(&saved, marked.join("\n") + "\n").unwrap();

    let run = generate("16", true).run().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 16);
    let resumed: Vec<&serde_json::Value> = rows[10..].iter().collect();
    for row in resumed {
        let persona = row["persona"].as_str().unwrap();
        assert!(
            persona.starts_with("Saved persona") || persona == "A curious user",
            "a resumed row got a newly generated persona: {persona}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coverage_rule_above_the_batch_size_is_met_for_every_document() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    // Three questions per batch, four dialogs wanted per document: one batch is not
    // enough, so each document must be picked twice.
    let config = LOCAL.replace(
        "  num_dialogs: 12\n",
        "  num_dialogs: null\n  stopping:\n    - {type: context_coverage, target_visits: 4}\n",
    );
    let (dir, path) = project(&config);
    let out = dir.path().join("coverage.jsonl");
    let run = Cli::generate(&path, &server.openai_base_url(), &out)
        .args(&["--json"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let mut visits = std::collections::HashMap::new();
    for row in read_rows(&out) {
        *visits
            .entry(row["metadata"]["context_id"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(visits.len(), 2, "{visits:?}");
    assert!(
        visits.values().all(|v| *v >= 4),
        "{visits:?}\n{}",
        run.stdout
    );
}
