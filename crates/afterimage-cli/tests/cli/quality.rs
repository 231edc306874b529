//! The quality keys end to end: per-role sampling settings, the instruction checks in
//! the report, and a judge that never answers readably.

use afterimage_mock::{MockConfig, MockServer};

use crate::{Cli, LOCAL, project, read_rows};

/// Every new key of the sampling and quality settings, at its non-default value.
const SETTINGS: &str = r#"
quality:
  auto_improve: true
  instruction_checks: true
  on_unjudged: keep
  temperature: 0.1
  max_tokens: 2000
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sampling_and_quality_keys_run_and_the_report_counts_rejected_questions() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let config = LOCAL.replace(
        "respondent:\n  system_prompt: You are a Tier 1 Technical Support agent.\n",
        "respondent:\n  system_prompt: You are a Tier 1 Technical Support agent.\n  temperature: 0.3\n  max_tokens: 800\ncorrespondent:\n  temperature: 1.0\n  max_tokens: 200\n",
    );
    let (dir, path) = project(&format!("{config}{SETTINGS}"));
    let out = dir.path().join("out.jsonl");
    let run = Cli::generate(&path, &server.openai_base_url(), &out)
        .args(&["--num-dialogs", "4", "--json"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["rows_written"], 4);
    // The mock writes real questions: none is discarded, and the map says so.
    assert_eq!(report["instructions_rejected"], serde_json::json!({}));
    assert_eq!(read_rows(&out).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_sampling_value_names_its_key() {
    let prompt = "  system_prompt: You are a Tier 1 Technical Support agent.\n";
    for (config, key) in [
        (
            LOCAL.replace(prompt, &format!("{prompt}  temperature: 3\n")),
            "respondent.temperature: is 3",
        ),
        (
            format!("{LOCAL}correspondent:\n  max_tokens: 0\n"),
            "correspondent.max_tokens: is 0",
        ),
        (
            format!("{LOCAL}quality:\n  temperature: -1\n"),
            "quality.temperature: is -1",
        ),
    ] {
        let (_dir, path) = project(&config);
        let run = Cli::new(&["generate", "--config", path.to_str().unwrap()])
            .run()
            .await;
        assert_eq!(run.code, 2, "{key}: {}", run.stderr);
        assert!(run.stderr.contains(key), "{key}: {}", run.stderr);
    }
}

/// A run judged on a second mock that answers structured requests with prose.
async fn unreadable_judge(on_unjudged: &str) -> (crate::Run, usize) {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let judge = MockServer::start(MockConfig::default().with_prose_instead_of_json(true))
        .await
        .unwrap();
    let quality = format!(
        "quality:\n  auto_improve: true\n  max_regenerations: 0\n  on_unjudged: {on_unjudged}\n  evaluator: {{provider: local, model_name: tiny-judge, base_url: '{}'}}\n",
        judge.openai_base_url()
    );
    let config = LOCAL.replace("max_concurrency: 4", "max_concurrency: 1");
    let (dir, path) = project(&format!("{config}{quality}"));
    let out = dir.path().join("out.jsonl");
    let run = Cli::generate(&path, &server.openai_base_url(), &out)
        .run()
        .await;
    let rows = std::fs::read_to_string(&out)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    (run, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_judge_that_never_answers_readably_stops_the_run() {
    let (run, rows) = unreadable_judge("stop").await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let error = run.stderr.lines().find(|l| l.starts_with("error")).unwrap();
    assert!(
        error.contains("the judge (model tiny-judge) never answered in readable JSON"),
        "{error}"
    );
    assert!(error.contains("quality.on_unjudged: keep"), "{error}");
    assert!(error.contains("9 rows written"), "{error}");
    assert_eq!(rows, 9);

    let (run, rows) = unreadable_judge("keep").await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(rows, 12);
    assert!(run.stdout.contains("unjudged"), "{}", run.stdout);
}
