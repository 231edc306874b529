//! The run's ledger: every request paid for, to the token, by model and role; priced;
//! held under a budget.

use afterimage_mock::{MockConfig, MockServer};

use crate::{Cli, LOCAL, project};

const PRICED: &str =
    "  model_name: mock-model\n  price: {input_per_million: 1.0, output_per_million: 4.0}\n";

/// A run with the judge, its first questions from documents, and a price.
fn judged_config() -> String {
    format!(
        "{}quality:\n  auto_improve: true\n  on_unjudged: keep\n  max_regenerations: 1\n",
        LOCAL.replace("  model_name: mock-model\n", PRICED).replace(
            "  max_concurrency: 4\n",
            "  max_concurrency: 4\n  max_failures: 400\n"
        )
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_matches_the_tokens_the_mock_served_under_faults() {
    let server = MockServer::start(
        MockConfig::default()
            .with_malformed_rate(0.10)
            .with_error_rate(0.05)
            .with_seed(11),
    )
    .await
    .unwrap();
    let (dir, path) = project(&judged_config());
    let out = dir.path().join("ledger.jsonl");
    let run = Cli::generate(&path, &server.openai_base_url(), &out)
        .args(&["--json"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let served = server.stats();
    assert!(served.malformed_injected > 0, "{served}");
    assert!(served.errors_injected > 0, "{served}");
    let ledger = &report["ledger"];
    // To the token: failed dialogs, rejected attempts and unusable answers included.
    assert_eq!(ledger["input_tokens"], served.input_tokens, "{ledger}");
    assert_eq!(ledger["output_tokens"], served.output_tokens, "{ledger}");
    // Answered requests: every model call less the injected 500s.
    let answered = served.chat_completions - served.errors_injected;
    assert_eq!(ledger["requests"], answered, "{ledger}");
    // The rows' own accounts leave out what no stored row owns.
    assert!(report["input_tokens"].as_u64().unwrap() <= served.input_tokens);

    assert_eq!(
        report["prices"], "model.price",
        "where the prices came from"
    );
    // The shape of `ledger`: totals, then by model, then by role within it.
    for key in [
        "cost",
        "input_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "output_tokens",
        "requests",
        "by_model",
        "cost_per_row",
        "projected_cost",
    ] {
        assert!(ledger.get(key).is_some(), "no {key} in {ledger}");
    }
    let model = &ledger["by_model"]["mock-model"];
    for role in ["respondent", "correspondent", "judge", "instructions"] {
        let figures = &model["by_role"][role];
        assert!(figures["requests"].as_u64().unwrap() > 0, "{role}: {model}");
        assert!(figures["cost"].as_f64().unwrap() > 0.0, "{role}: {model}");
    }
    let cost = ledger["cost"].as_f64().unwrap();
    let expected = (served.input_tokens as f64 + 4.0 * served.output_tokens as f64) / 1e6;
    assert!((cost - expected).abs() < 1e-9, "{cost} vs {expected}");
    let per_row = ledger["cost_per_row"].as_f64().unwrap();
    assert!((per_row * 12.0 - cost).abs() < 1e-9, "{per_row}");
    // A finished run's projection is what it cost; this call's cost is the whole run's.
    assert!((ledger["projected_cost"].as_f64().unwrap() - cost).abs() < 1e-9);
    assert!((report["cost"].as_f64().unwrap() - cost).abs() < 1e-9);

    // The record keeps it, and `stats` reads it there.
    let stats = Cli::new(&["stats", out.to_str().unwrap(), "--json"])
        .run()
        .await;
    assert_eq!(stats.code, 0, "{}", stats.stderr);
    let stats: serde_json::Value = serde_json::from_str(stats.stdout.trim()).unwrap();
    assert_eq!(stats["ledger"]["input_tokens"], served.input_tokens);
    assert_eq!(
        stats["ledger"]["by_model"]["mock-model"]["by_role"]["judge"]["requests"],
        model["by_role"]["judge"]["requests"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_shows_the_ledger_and_names_models_without_a_price() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let config = format!(
        "{}quality:\n  auto_improve: true\n  on_unjudged: keep\n  evaluator: {{provider: local, model_name: judge-model, base_url: '{}'}}\n",
        LOCAL.replace("  model_name: mock-model\n", PRICED),
        server.openai_base_url()
    );
    let (dir, path) = project(&config);
    let out = dir.path().join("table.jsonl");
    let run = Cli::generate(&path, &server.openai_base_url(), &out)
        .args(&["--num-dialogs", "3"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    for line in [
        "ledger",
        "  mock-model",
        "    respondent",
        "  judge-model",
        "spent",
        "cost per row",
        "projected (run)",
        "cost unknown for judge-model",
        "prices: model.price",
    ] {
        assert!(run.stdout.contains(line), "no {line:?} in\n{}", run.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_money_budget_rule_ends_the_run_at_or_under_it_counting_failures() {
    let server = MockServer::start(
        MockConfig::default()
            .with_malformed_rate(0.10)
            .with_error_rate(0.05)
            .with_seed(5),
    )
    .await
    .unwrap();
    let config = judged_config().replace(
        "  max_concurrency: 4\n",
        "  max_concurrency: 4\n  num_dialogs: 400\n  stopping:\n    - {type: budget, max_cost: 0.01}\n",
    ).replace("  num_dialogs: 12\n", "");
    let (dir, path) = project(&config);
    let out = dir.path().join("budget.jsonl");
    let run = Cli::generate(&path, &server.openai_base_url(), &out)
        .args(&["--json"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let served = server.stats();
    // The budget is checked against every token served, not only the kept rows'.
    let paid = (served.input_tokens as f64 + 4.0 * served.output_tokens as f64) / 1e6;
    let cost = report["ledger"]["cost"].as_f64().unwrap();
    assert!((cost - paid).abs() < 1e-9, "{cost} vs {paid}");
    assert!(cost > 0.0 && cost <= 0.01, "cost {cost}");
    let stop_reason = report["stop_reason"].as_str().unwrap();
    assert!(stop_reason.contains("cost budget of 0.01"), "{stop_reason}");
    let rows = report["rows_written"].as_u64().unwrap();
    assert!(rows > 0 && rows < 400, "{rows}");
    let projected = report["ledger"]["projected_cost"].as_f64().unwrap();
    assert!(
        projected > 0.01,
        "the full 400 would cost more: {projected}"
    );

    // Without prices a money budget is refused before any request.
    let (_dir, path) = project(&config.replace(PRICED, "  model_name: mock-model\n"));
    let run = Cli::new(&["generate", "--config", path.to_str().unwrap()])
        .run()
        .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("model.price"), "{}", run.stderr);
}

/// The input tokens, output tokens and requests of a stored run record's ledger.
fn recorded(record: &std::path::Path) -> Option<(u64, u64, u64)> {
    let text = std::fs::read_to_string(record).ok()?;
    let record: serde_json::Value = serde_json::from_str(&text).ok()?;
    let mut sum = (0, 0, 0);
    for roles in record.get("ledger")?.as_object()?.values() {
        for spent in roles.as_object()?.values() {
            sum.0 += spent["usage"]["input_tokens"].as_u64()?;
            sum.1 += spent["usage"]["output_tokens"].as_u64()?;
            sum.2 += spent["requests"].as_u64()?;
        }
    }
    Some(sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_then_resumed_run_accounts_for_both_sessions() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let server = MockServer::start(
        MockConfig::default()
            .with_latency(Duration::from_millis(100))
            .with_error_rate(0.05)
            .with_seed(2),
    )
    .await
    .unwrap();
    let config = LOCAL
        .replace("  num_dialogs: 12\n", "  num_dialogs: 30\n")
        .replace("  max_concurrency: 4\n", "  max_concurrency: 2\n");
    let (dir, path) = project(&config);
    let out = dir.path().join("rows.jsonl");
    let record = dir.path().join("rows.jsonl.run.json");
    let generate = || Cli::generate(&path, &server.openai_base_url(), &out).args(&["--json"]);

    // 1. Kill the run once its record holds a ledger.
    let mut child = generate()
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while recorded(&record).is_none_or(|(input, _, _)| input == 0) {
        assert!(child.try_wait().unwrap().is_none(), "the run ended first");
        assert!(Instant::now() < deadline, "no ledger saved after 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let first = recorded(&record).unwrap();
    let served_first = server.stats();
    // What the record kept is at most what was served: the tail since its last save
    // is lost with the process.
    assert!(
        first.0 <= served_first.input_tokens,
        "{first:?} {served_first}"
    );
    server.reset_stats();

    // 2. Resume: the ledger is the first session's record plus all the second served.
    let run = generate().args(&["--resume"]).run().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let second = server.stats();
    let ledger = &report["ledger"];
    assert_eq!(
        ledger["input_tokens"],
        first.0 + second.input_tokens,
        "{ledger}"
    );
    assert_eq!(
        ledger["output_tokens"],
        first.1 + second.output_tokens,
        "{ledger}"
    );
    assert_eq!(
        ledger["requests"],
        first.2 + second.chat_completions - second.errors_injected,
        "{ledger}"
    );
    // This call's own figures are the second session's alone.
    assert!(report["input_tokens"].as_u64().unwrap() <= second.input_tokens);
    assert_eq!(
        recorded(&record).unwrap(),
        (
            first.0 + second.input_tokens,
            first.1 + second.output_tokens,
            first.2 + second.chat_completions - second.errors_injected
        )
    );
}

/// Anthropic's format through the CLI, with documents long enough for its cache (the
/// mock's minimum is 1024 tokens), `model.prompt_caching` as given.
async fn anthropic_ledger(prompt_caching: bool) -> serde_json::Value {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let config = LOCAL.replace(
        "  model_name: mock-model\n",
        &format!("  model_name: mock-model\n  prompt_caching: {prompt_caching}\n"),
    );
    let (dir, path) = project(&config);
    let manual = "The router restarts after a firmware update. ".repeat(150);
    for doc in ["docs/errors.txt", "docs/password.md"] {
        std::fs::write(dir.path().join(doc), &manual).unwrap();
    }
    let out = dir.path().join("cached.jsonl");
    let run = Cli::generate(&path, &server.anthropic_base_url(), &out)
        .args(&["--provider", "anthropic", "--model", "claude-sonnet-4-5"])
        .args(&["--num-dialogs", "6", "--json"])
        .env("ANTHROPIC_API_KEY", "ant-key".into())
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let ledger = report["ledger"].clone();
    assert_eq!(
        ledger["cached_input_tokens"],
        server.stats().cached_input_tokens,
        "{ledger}"
    );
    ledger
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_documents_are_read_from_the_cache_unless_caching_is_off() {
    let on = anthropic_ledger(true).await;
    assert!(on["cached_input_tokens"].as_u64().unwrap() > 0, "{on}");
    assert!(on["cache_write_tokens"].as_u64().unwrap() > 0, "{on}");

    let off = anthropic_ledger(false).await;
    assert_eq!(off["cached_input_tokens"], 0, "{off}");
    assert_eq!(off["cache_write_tokens"], 0, "{off}");
    assert!(off["input_tokens"].as_u64().unwrap() > 0, "{off}");
}
