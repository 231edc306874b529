//! Base URLs as users write them: a Gemini or Anthropic server's root works as well as
//! its versioned URL, from `--base-url` or the SDKs' variables; and the structured
//! output mode a run used is in its summary.

use afterimage_mock::{MockConfig, MockServer};

use crate::{Cli, LOCAL, project, read_rows};

/// `provider` at `base_url` makes two rows and names the mode in its `--json` report.
async fn two_rows(provider: &str, model: &str, base_url: &str, key_env: &'static str) {
    let server_key = "real-key";
    let (dir, config) = project(LOCAL);
    let out = dir.path().join("out.jsonl");
    let run = Cli::generate(&config, base_url, &out)
        .args(&[
            "--provider",
            provider,
            "--model",
            model,
            "--num-dialogs",
            "2",
            "--max-turns",
            "1",
            "--json",
        ])
        .env(key_env, server_key.into())
        .run()
        .await;
    assert_eq!(run.code, 0, "{provider} at {base_url}: {}", run.stderr);
    assert_eq!(read_rows(&out).len(), 2);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["structured_output"]["configured"], "auto");
    assert_eq!(report["structured_output"]["mode"], "json_schema");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_and_anthropic_take_a_root_or_a_versioned_base_url() {
    let server = MockServer::start(MockConfig::default().with_require_key("real-key"))
        .await
        .unwrap();
    let root = server.base_url();
    for url in [root.clone(), format!("{root}/"), server.gemini_base_url()] {
        two_rows("gemini", "gemini-2.5-flash", &url, "GEMINI_API_KEY").await;
    }
    for url in [root.clone(), server.anthropic_base_url()] {
        two_rows("anthropic", "claude-sonnet-4-5", &url, "ANTHROPIC_API_KEY").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_base_url_variable_is_used_when_no_base_url_is_configured() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let (dir, config) = project(LOCAL);
    let out = dir.path().join("out.jsonl");
    let out = out.to_str().unwrap();
    let config = config.to_str().unwrap();
    let run = Cli::new(&[
        "generate",
        "--config",
        config,
        "--out",
        out,
        "--provider",
        "anthropic",
        "--model",
        "claude-sonnet-4-5",
        "--num-dialogs",
        "1",
        "--max-turns",
        "1",
    ])
    .env("ANTHROPIC_API_KEY", "k".into())
    .env("ANTHROPIC_BASE_URL", server.base_url())
    .run()
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("structured output: json_schema (auto)"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_path_is_reported_as_a_wrong_base_url() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let (dir, config) = project(LOCAL);
    let out = dir.path().join("out.jsonl");
    let url = format!("{}/nothing/here", server.base_url());
    let run = Cli::generate(&config, &url, &out)
        .args(&[
            "--provider",
            "anthropic",
            "--model",
            "claude-x",
            "--num-dialogs",
            "1",
        ])
        .env("ANTHROPIC_API_KEY", "k".into())
        .run()
        .await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("nothing answers at"), "{}", run.stderr);
    assert!(
        run.stderr.contains("/nothing/here/v1/messages"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("check the model name"),
        "{}",
        run.stderr
    );
}
