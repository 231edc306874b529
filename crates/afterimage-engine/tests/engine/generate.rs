//! The engine with scripted models: exact counts, alternation, concurrency bounds,
//! failure replacement and run-stopping failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use afterimage_core::testing::ScriptedModel;
use afterimage_core::{
    ChatResponse, Document, GeneratedInstructions, InstructionGenerator, InstructionRequest,
    ProviderError, Role, RunStatus, Storage, StrategyError, Usage,
};
use afterimage_engine::{ConversationGenerator, EngineError, GenerateOptions};
use afterimage_storage::JsonlStorage;
use afterimage_strategies::correspondent_follow_up_note;

/// Three numbered questions per call about one of two documents.
#[derive(Debug, Default)]
struct Numbered {
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl InstructionGenerator for Numbered {
    async fn generate(
        &self,
        _request: &InstructionRequest,
    ) -> Result<GeneratedInstructions, StrategyError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let doc = Document::with_id(format!("doc-{}", call % 2), format!("text {}", call % 2));
        Ok(GeneratedInstructions {
            instructions: (0..3)
                .map(|i| format!("How do I fix problem {call}.{i}?"))
                .collect(),
            context: doc.text.clone(),
            documents: vec![doc],
            usage: Usage::new(10, 5),
            requests: 1,
            ..Default::default()
        })
    }
}

fn model(latency: Duration) -> Arc<ScriptedModel> {
    Arc::new(ScriptedModel::new("scripted", move |request| async move {
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let turn = request.messages.len();
        Ok(ChatResponse::text(format!("reply at {turn}")).with_usage(Usage::new(3, 2)))
    }))
}

fn generator(model: Arc<ScriptedModel>, path: &std::path::Path) -> ConversationGenerator {
    ConversationGenerator::builder()
        .respondent_prompt("You are a support agent.")
        .correspondent_prompt("You are a customer.")
        .model(model)
        .instruction_generator(Arc::new(Numbered::default()))
        .storage(Arc::new(JsonlStorage::new(path)))
        .build()
        .unwrap()
}

fn rows(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_exactly_the_requested_rows_at_any_concurrency() {
    for (concurrency, n) in [(1, 7), (8, 50), (256, 300)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let model = model(Duration::from_millis(2));
        let report = generator(Arc::clone(&model), &path)
            .generate(
                GenerateOptions::new()
                    .num_dialogs(n)
                    .max_turns(3)
                    .max_concurrency(concurrency)
                    .seed(1),
            )
            .await
            .unwrap();
        let written = rows(&path);
        assert_eq!(written.len() as u64, n, "concurrency {concurrency}");
        assert_eq!(report.rows_written, n);
        assert_eq!(report.dialogs_failed, 0);
        assert!(
            model.max_in_flight() <= concurrency,
            "{} in flight with max_concurrency {concurrency}",
            model.max_in_flight()
        );
        let mut ids: Vec<_> = written
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len() as u64, n, "row ids are unique");
        // Every model call and every instruction call is in the report.
        let instruction_calls = report.requests - model.calls() as u64;
        assert!(instruction_calls >= n.div_ceil(3));
        assert_eq!(
            report.input_tokens,
            model.calls() as u64 * 3 + instruction_calls * 10
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_used_but_never_exceeded() {
    let dir = tempfile::tempdir().unwrap();
    let model = model(Duration::from_millis(20));
    generator(Arc::clone(&model), &dir.path().join("out.jsonl"))
        .generate(
            GenerateOptions::new()
                .num_dialogs(64)
                .fixed_turns(2)
                .max_concurrency(16),
        )
        .await
        .unwrap();
    assert_eq!(model.max_in_flight(), 16);
}

#[tokio::test]
async fn turns_alternate_and_rows_carry_their_context() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let model = model(Duration::ZERO);
    generator(Arc::clone(&model), &path)
        .generate(
            GenerateOptions::new()
                .num_dialogs(6)
                .fixed_turns(3)
                .max_concurrency(1),
        )
        .await
        .unwrap();
    for row in rows(&path) {
        let messages = row["conversations"].as_array().unwrap();
        assert_eq!(messages.len(), 6);
        for (i, message) in messages.iter().enumerate() {
            let want = if i % 2 == 0 { "user" } else { "assistant" };
            assert_eq!(message["role"], want);
            assert!(!message["content"].as_str().unwrap().is_empty());
        }
        assert!(
            messages[0]["content"]
                .as_str()
                .unwrap()
                .starts_with("How do I fix problem ")
        );
        let context_id = row["metadata"]["context_id"].as_str().unwrap();
        assert!(context_id == "doc-0" || context_id == "doc-1");
        assert_eq!(row["metadata"]["context_ids"][0], context_id);
        assert_eq!(
            row["instruction_context"].as_str().unwrap(),
            format!("text {}", &context_id[4..])
        );
        assert_eq!(row["metadata"]["generation"]["turns"], 3);
        assert_eq!(
            row["metadata"]["generation"]["respondent_model"],
            "scripted"
        );
    }
    // The correspondent saw the whole dialog, with the first question as its own turn.
    let follow_ups: Vec<_> = model
        .requests()
        .into_iter()
        .filter(|r| {
            r.messages[0]
                .content
                .contains(correspondent_follow_up_note())
        })
        .collect();
    assert_eq!(follow_ups.len(), 6 * 2);
    for request in follow_ups {
        // The framing that keeps the simulated user a human user, pinned.
        let system = &request.messages[0].content;
        assert!(system.starts_with("You are a customer.\n\n"), "{system}");
        assert!(
            system.contains("You are the user in this chat, a human talking to an AI assistant")
        );
        assert!(system.contains("Never write as the assistant"));
        assert!(system.contains("Use the same language as your earlier messages."));
        assert_eq!(request.messages[1].role, Role::User);
        assert_eq!(request.messages[2].role, Role::Assistant);
        assert!(
            request.messages[2]
                .content
                .starts_with("How do I fix problem ")
        );
        assert_eq!(request.messages.last().unwrap().role, Role::User);
    }
}

#[tokio::test]
async fn the_correspondent_prompt_is_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let respondent = model(Duration::ZERO);
    let correspondent = Arc::new(ScriptedModel::new("user-sim", |request| async move {
        let writing_prompt = !request.messages[0]
            .content
            .contains(correspondent_follow_up_note());
        Ok(ChatResponse::text(if writing_prompt {
            "<user_system_prompt>You are a hurried customer.</user_system_prompt>".to_owned()
        } else {
            "And then?".to_owned()
        }))
    }));
    let generator = ConversationGenerator::builder()
        .respondent_prompt("You are a support agent.")
        .model(Arc::clone(&respondent) as _)
        .correspondent_model(Arc::clone(&correspondent) as _)
        .instruction_generator(Arc::new(Numbered::default()))
        .storage(Arc::new(JsonlStorage::new(dir.path().join("out.jsonl"))))
        .build()
        .unwrap();
    // The second call extends the first run (an output never takes a second run's
    // rows); either way the prompt is written once.
    for (n, resume) in [(4, false), (8, true)] {
        generator
            .generate(
                GenerateOptions::new()
                    .num_dialogs(n)
                    .fixed_turns(2)
                    .max_concurrency(4)
                    .resume(resume),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        generator.correspondent_prompt().await.unwrap(),
        "You are a hurried customer."
    );
    let writes = correspondent
        .requests()
        .iter()
        .filter(|r| {
            !r.messages[0]
                .content
                .contains(correspondent_follow_up_note())
        })
        .count();
    assert_eq!(writes, 1);
    // 8 dialogs, one follow-up each, all from the separate correspondent model.
    assert_eq!(correspondent.calls(), 1 + 8);
    assert!(correspondent.requests()[1..].iter().all(|r| {
        r.messages[0]
            .content
            .starts_with("You are a hurried customer.")
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_dialogs_are_replaced_until_the_count_is_met() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let failures = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&failures);
    let model = Arc::new(ScriptedModel::new("flaky", move |_request| {
        let counter = Arc::clone(&counter);
        async move {
            if counter.fetch_add(1, Ordering::SeqCst) < 4 {
                return Err(ProviderError::Server {
                    status: 503,
                    message: "overloaded".into(),
                });
            }
            Ok(ChatResponse::text("fine"))
        }
    }));
    let report = generator(model, &path)
        .generate(
            GenerateOptions::new()
                .num_dialogs(10)
                .max_concurrency(4)
                .failure_backoff(Duration::from_millis(1)),
        )
        .await
        .unwrap();
    assert_eq!(rows(&path).len(), 10);
    assert_eq!(report.rows_written, 10);
    assert_eq!(report.dialogs_failed, 4);
    assert_eq!(report.failures.get("respondent: server_error"), Some(&4));
}

#[tokio::test]
async fn a_persistent_failure_stops_the_run_at_the_budget_and_keeps_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let model = Arc::new(ScriptedModel::new("dying", move |_request| {
        let counter = Arc::clone(&counter);
        async move {
            // Two good dialogs, then the server breaks for good.
            if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                return Ok(ChatResponse::text("fine"));
            }
            Err(ProviderError::Server {
                status: 500,
                message: "boom".into(),
            })
        }
    }));
    let err = generator(model, &path)
        .generate(
            GenerateOptions::new()
                .num_dialogs(10)
                .max_concurrency(1)
                .max_failures(5)
                .failure_backoff(Duration::from_millis(1)),
        )
        .await
        .unwrap_err();
    let report = err.report().expect("a failed run has a report").clone();
    assert_eq!(report.rows_written, 2);
    assert_eq!(report.dialogs_failed, 6);
    assert_eq!(rows(&path).len(), 2);
    let message = err.to_string();
    assert!(message.contains("budget of 5"), "{message}");
    assert!(message.contains("HTTP 500"), "{message}");
    assert!(message.contains("2 rows written"), "{message}");
}

#[tokio::test]
async fn an_auth_failure_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(ScriptedModel::new("locked", |_request| async {
        Err::<ChatResponse, _>(ProviderError::Auth {
            status: 401,
            message: "invalid key".into(),
        })
    }));
    let err = generator(model, &dir.path().join("out.jsonl"))
        .generate(GenerateOptions::new().num_dialogs(100).max_concurrency(1))
        .await
        .unwrap_err();
    assert_eq!(err.report().unwrap().dialogs_failed, 1);
    assert!(err.to_string().contains("authentication failed"), "{err}");
}

#[tokio::test]
async fn bad_options_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let generator = generator(model(Duration::ZERO), &dir.path().join("out.jsonl"));
    for options in [
        GenerateOptions::new().num_dialogs(0),
        GenerateOptions::new(),
        GenerateOptions::new().num_dialogs(1).max_concurrency(0),
        GenerateOptions::new().num_dialogs(1).max_turns(0),
    ] {
        let err = generator.generate(options).await.unwrap_err();
        assert!(matches!(err, EngineError::Config(_)), "{err}");
    }
    let err = ConversationGenerator::builder()
        .respondent_prompt("x")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains(".model("), "{err}");
}

/// Scores the n-th evaluation from a list (`None`: a malformed answer), then repeats
/// the last one.
#[derive(Debug)]
struct ScoreList {
    scores: Vec<Option<f64>>,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl afterimage_core::Evaluator for ScoreList {
    async fn evaluate(
        &self,
        _row: &afterimage_core::ConversationRow,
    ) -> Result<afterimage_core::Verdict, StrategyError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let Some(score) = self.scores[call.min(self.scores.len() - 1)] else {
            return Err(StrategyError::MalformedOutput {
                message: "asked twice for scores, but it holds no JSON".into(),
            });
        };
        let mut criteria = std::collections::BTreeMap::new();
        criteria.insert(
            "coherence".to_owned(),
            afterimage_core::CriterionScore {
                feedback: format!("attempt {call} rambles"),
                score,
            },
        );
        Ok(afterimage_core::Verdict {
            evaluation: afterimage_core::Evaluation {
                criteria,
                overall_grade: afterimage_core::Grade::from_score(score),
            },
            score,
            usage: Usage::new(100, 10),
            requests: 1,
        })
    }
}

struct Judged {
    report: afterimage_engine::RunReport,
    rows: Vec<serde_json::Value>,
    judged: usize,
    model: Arc<ScriptedModel>,
}

async fn judged_run(
    scores: Vec<Option<f64>>,
    keep_best: bool,
    n: u64,
) -> Result<Judged, EngineError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let judge = Arc::new(ScoreList {
        scores,
        calls: AtomicUsize::new(0),
    });
    let model = model(Duration::ZERO);
    let report = ConversationGenerator::builder()
        .respondent_prompt("You are a support agent.")
        .correspondent_prompt("You are a customer.")
        .model(Arc::clone(&model) as _)
        .instruction_generator(Arc::new(Numbered::default()))
        .storage(Arc::new(JsonlStorage::new(&path)))
        .auto_improve(true)
        .evaluator(Arc::clone(&judge) as _)
        .max_regenerations(2)
        .keep_best(keep_best)
        .build()
        .unwrap()
        .generate(
            GenerateOptions::new()
                .num_dialogs(n)
                .max_concurrency(1)
                .failure_backoff(Duration::from_millis(1)),
        )
        .await?;
    Ok(Judged {
        report,
        rows: rows(&path),
        judged: judge.calls.load(Ordering::SeqCst),
        model,
    })
}

#[tokio::test]
async fn two_failed_attempts_then_a_pass_with_the_feedback_passed_on() {
    let run = judged_run(vec![Some(0.3), Some(0.5), Some(0.9)], true, 1)
        .await
        .unwrap();
    assert_eq!(run.judged, 3);
    assert_eq!(run.report.regenerations, 2);
    let row = &run.rows[0];
    assert_eq!(row["final_score"], 0.9);
    assert_eq!(row["evaluation"]["overall_grade"], "perfect");
    let attempts = row["metadata"]["generation"]["attempts"]
        .as_array()
        .unwrap();
    let scores: Vec<f64> = attempts
        .iter()
        .map(|a| a["score"].as_f64().unwrap())
        .collect();
    assert_eq!(scores, [0.3, 0.5, 0.9]);
    assert_eq!(attempts[0]["grade"], "not_acceptable");
    assert_eq!(attempts[0]["usage"]["input_tokens"], 103);
    // Attempts 2 and 3 were told what the judge found in the one before.
    let systems: Vec<String> = run
        .model
        .requests()
        .iter()
        .map(|r| r.messages[0].content.clone())
        .filter(|s| s.starts_with("You are a support agent."))
        .collect();
    assert_eq!(systems.len(), 3);
    assert!(!systems[0].contains("reviewer"));
    assert!(
        systems[1].contains("- coherence: attempt 0 rambles"),
        "{}",
        systems[1]
    );
    assert!(systems[2].contains("- coherence: attempt 1 rambles"));
    // The judge's tokens are in the report: 3 verdicts of 100 input tokens.
    assert!(run.report.input_tokens >= 300);
}

#[tokio::test]
async fn never_passing_keeps_the_best_attempt_within_the_bound() {
    let run = judged_run(vec![Some(0.5), Some(0.6), Some(0.4)], true, 3)
        .await
        .unwrap();
    assert_eq!(run.judged, 9);
    assert_eq!(run.rows.len(), 3);
    assert_eq!(run.report.regenerations, 6);
    assert_eq!(run.rows[0]["final_score"], 0.6);
    assert_eq!(
        run.rows[0]["evaluation"]["coherence"]["feedback"],
        "attempt 1 rambles"
    );
    assert_eq!(
        run.rows[0]["metadata"]["generation"]["attempts"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn never_passing_with_drop_makes_other_dialogs_until_the_count_holds() {
    // The first dialog never passes and is dropped; later ones pass at once.
    let run = judged_run(vec![Some(0.1), Some(0.1), Some(0.1), Some(0.95)], false, 2)
        .await
        .unwrap();
    assert_eq!(run.rows.len(), 2);
    assert_eq!(run.report.rows_written, 2);
    assert_eq!(run.report.failures.get("quality: rejected"), Some(&1));
    assert_eq!(run.judged, 5);
    assert!(run.rows.iter().all(|r| r["final_score"] == 0.95));
}

#[tokio::test]
async fn a_malformed_verdict_is_unjudged_and_never_a_pass() {
    // Unjudged, then unjudged, then a low score: the low score is the best judged
    // attempt and is kept; two attempts are counted unjudged.
    let run = judged_run(vec![None, None, Some(0.4)], true, 1)
        .await
        .unwrap();
    assert_eq!(run.report.unjudged, 2);
    assert_eq!(run.rows[0]["final_score"], 0.4);
    let attempts = run.rows[0]["metadata"]["generation"]["attempts"]
        .as_array()
        .unwrap();
    assert!(
        attempts[0]["judge_error"]
            .as_str()
            .unwrap()
            .contains("no JSON")
    );
    // Never judged at all: with drop, the dialog is never stored as a pass.
    let err = judged_run(vec![None], false, 1).await.err();
    assert!(err.is_none() || err.unwrap().report().unwrap().rows_written == 0);
}

#[tokio::test]
async fn cheap_checks_reject_before_the_judge() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let replies = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&replies);
    // The first respondent reply refuses; every later one answers.
    let model = Arc::new(ScriptedModel::new("refusing", move |request| {
        let counter = Arc::clone(&counter);
        async move {
            let respondent = request.messages[0]
                .content
                .starts_with("You are a support agent.");
            if respondent && counter.fetch_add(1, Ordering::SeqCst) == 0 {
                return Ok(ChatResponse::text("I'm sorry, but I can't help with that."));
            }
            Ok(ChatResponse::text("Here is how it works."))
        }
    }));
    let judge = Arc::new(ScoreList {
        scores: vec![Some(0.9)],
        calls: AtomicUsize::new(0),
    });
    let report = ConversationGenerator::builder()
        .respondent_prompt("You are a support agent.")
        .correspondent_prompt("You are a customer.")
        .model(model)
        .instruction_generator(Arc::new(Numbered::default()))
        .storage(Arc::new(JsonlStorage::new(&path)))
        .auto_improve(true)
        .evaluator(Arc::clone(&judge) as _)
        .build()
        .unwrap()
        .generate(
            GenerateOptions::new()
                .num_dialogs(1)
                .fixed_turns(1)
                .max_concurrency(1),
        )
        .await
        .unwrap();
    assert_eq!(report.rejections.get("refusal"), Some(&1));
    assert_eq!(
        judge.calls.load(Ordering::SeqCst),
        1,
        "the refusal was never judged"
    );
    let row = &rows(&path)[0];
    assert_eq!(row["conversations"][1]["content"], "Here is how it works.");
    let attempts = row["metadata"]["generation"]["attempts"]
        .as_array()
        .unwrap();
    assert!(
        attempts[0]["rejected"]
            .as_str()
            .unwrap()
            .starts_with("refusal")
    );
}

/// Batches whose questions repeat: calls 2k and 2k+1 ask the same three questions.
#[derive(Debug, Default)]
struct Repeating {
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl InstructionGenerator for Repeating {
    async fn generate(
        &self,
        _request: &InstructionRequest,
    ) -> Result<GeneratedInstructions, StrategyError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) / 2;
        Ok(GeneratedInstructions {
            instructions: (0..3)
                .map(|i| format!("What does setting number {call}{i} change in the app?"))
                .collect(),
            ..Default::default()
        })
    }
}

#[tokio::test]
async fn near_duplicate_questions_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let report = ConversationGenerator::builder()
        .respondent_prompt("You are a support agent.")
        .correspondent_prompt("You are a customer.")
        .model(model(Duration::ZERO))
        .instruction_generator(Arc::new(Repeating::default()))
        .storage(Arc::new(JsonlStorage::new(&path)))
        .dedup_questions(true)
        .build()
        .unwrap()
        .generate(GenerateOptions::new().num_dialogs(6).max_concurrency(1))
        .await
        .unwrap();
    let firsts: std::collections::HashSet<String> = rows(&path)
        .iter()
        .map(|r| {
            r["conversations"][0]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(firsts.len(), 6);
    // The second batch repeats the first word for word: all three are skipped.
    assert_eq!(report.rejections.get("duplicate_question"), Some(&3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_handle_lets_in_flight_dialogs_finish_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let handle = afterimage_engine::StopHandle::new();
    let trigger = handle.clone();
    let report = generator(model(Duration::from_millis(10)), &path)
        .generate(
            GenerateOptions::new()
                .num_dialogs(1000)
                .max_concurrency(4)
                .stop_handle(handle)
                .on_progress(move |p| {
                    if p.rows_written >= 5 {
                        trigger.stop();
                    }
                }),
        )
        .await
        .unwrap();
    assert!(report.interrupted);
    assert!(
        report.stop_reason.starts_with("interrupted"),
        "{}",
        report.stop_reason
    );
    let record = JsonlStorage::new(&path).load_run().await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Stopped, "not left running");
    // The 5th row stopped new starts; at most the 3 others in flight were added.
    assert!(
        (5..=8).contains(&report.rows_written),
        "{}",
        report.rows_written
    );
    assert_eq!(rows(&path).len() as u64, report.rows_written);
    assert_eq!(report.dialogs_failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_writes_only_the_missing_dialogs_with_the_same_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.jsonl");
    let path = dir.path().join("out.jsonl");
    let options = || {
        GenerateOptions::new()
            .num_dialogs(10)
            .max_turns(3)
            .seed(7)
            .run_id("r")
            .max_concurrency(3)
    };
    generator(model(Duration::ZERO), &full)
        .generate(options())
        .await
        .unwrap();
    generator(model(Duration::ZERO), &path)
        .generate(options())
        .await
        .unwrap();
    // Simulate a kill: keep rows 0, 3 and 7 only (and the run record).
    let kept: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| {
            ["r-000000", "r-000003", "r-000007"]
                .iter()
                .any(|id| l.contains(id))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(kept.len(), 3);
    std::fs::write(&path, kept.concat()).unwrap();

    // Without resume: refused, nothing appended.
    let err = generator(model(Duration::ZERO), &path)
        .generate(options())
        .await
        .unwrap_err();
    assert!(
        err.is_config() && err.to_string().contains("--resume"),
        "{err}"
    );
    assert_eq!(rows(&path).len(), 3);

    // A resumed run with another seed and id still finishes the stored run.
    let report = generator(model(Duration::ZERO), &path)
        .generate(options().seed(99).run_id("other").resume(true))
        .await
        .unwrap();
    assert_eq!((report.rows_resumed, report.rows_written), (3, 7));
    assert_eq!(report.run_id, "r");
    let mut resumed = rows(&path);
    assert_eq!(resumed.len(), 10);
    let mut original = rows(&full);
    let key = |r: &serde_json::Value| r["id"].as_str().unwrap().to_owned();
    resumed.sort_by_key(key);
    original.sort_by_key(key);
    for (a, b) in resumed.iter().zip(&original) {
        assert_eq!(a["id"], b["id"]);
        // Same per-dialog seed, hence the same turn count.
        assert_eq!(
            a["metadata"]["generation"]["seed"],
            b["metadata"]["generation"]["seed"]
        );
        assert_eq!(
            a["metadata"]["generation"]["turns"],
            b["metadata"]["generation"]["turns"]
        );
    }

    // Resuming a finished run writes nothing.
    let report = generator(model(Duration::ZERO), &path)
        .generate(options().resume(true))
        .await
        .unwrap();
    assert_eq!((report.rows_resumed, report.rows_written), (10, 0));
    assert_eq!(rows(&path).len(), 10);
}

/// A model whose first `failing` calls get an HTTP 503 (then every call with
/// `failing == usize::MAX`).
fn failing_first(failing: usize) -> Arc<ScriptedModel> {
    let calls = Arc::new(AtomicUsize::new(0));
    Arc::new(ScriptedModel::new("flaky", move |_request| {
        let calls = Arc::clone(&calls);
        async move {
            if calls.fetch_add(1, Ordering::SeqCst) < failing {
                return Err(ProviderError::Server {
                    status: 503,
                    message: "overloaded".into(),
                });
            }
            Ok(ChatResponse::text("fine"))
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_period_ends_by_cancelling_the_stragglers_and_the_record_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let handle = afterimage_engine::StopHandle::new();
    let trigger = handle.clone();
    // Dialogs that would take an hour: only the end of the grace period ends them.
    let generator = generator(model(Duration::from_secs(3600)), &path);
    let run = tokio::spawn(async move {
        generator
            .generate(
                GenerateOptions::new()
                    .num_dialogs(10)
                    .max_concurrency(3)
                    .stop_handle(handle),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    trigger.set_reason("SIGTERM");
    trigger.stop_after(Duration::from_millis(50));
    let report = run.await.unwrap().unwrap();
    assert!(report.interrupted);
    assert_eq!(report.rows_written, 0);
    assert!(
        report.stop_reason.starts_with("interrupted by SIGTERM")
            && report
                .stop_reason
                .ends_with("3 dialogs in flight were cancelled"),
        "{}",
        report.stop_reason
    );
    let record = JsonlStorage::new(&path).load_run().await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Stopped);
    assert_eq!(
        record.stop_reason.as_deref(),
        Some(report.stop_reason.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_comes_as_the_last_dialogs_finish_is_a_finished_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let handle = afterimage_engine::StopHandle::new();
    let trigger = handle.clone();
    let report = generator(model(Duration::from_millis(5)), &path)
        .generate(
            GenerateOptions::new()
                .num_dialogs(4)
                .max_concurrency(4)
                .stop_handle(handle)
                .on_progress(move |_| trigger.stop()),
        )
        .await
        .unwrap();
    assert!(!report.interrupted, "{}", report.stop_reason);
    assert_eq!(report.rows_written, 4);
    let record = JsonlStorage::new(&path).load_run().await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Done);
}

#[tokio::test]
async fn the_run_record_sums_the_failures_of_every_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let options = |n| {
        GenerateOptions::new()
            .num_dialogs(n)
            .max_turns(1)
            .seed(7)
            .run_id("r")
            .max_concurrency(1)
            .failure_backoff(Duration::from_millis(1))
    };
    let stored = || async { JsonlStorage::new(&path).load_run().await.unwrap().unwrap() };
    let cause = "respondent: server_error";

    // A clean session records that nothing failed, not that nobody counted.
    generator(failing_first(0), &path)
        .generate(options(2))
        .await
        .unwrap();
    assert_eq!(stored().await.failures, Some(Default::default()));

    let report = generator(failing_first(2), &path)
        .generate(options(4).resume(true))
        .await
        .unwrap();
    assert_eq!(report.failures.get(cause), Some(&2));
    let record = stored().await;
    assert_eq!(record.failures.unwrap().get(cause), Some(&2));
    assert_eq!((record.status, record.rows_written), (RunStatus::Done, 4));

    // A session that stops on its failures adds them too.
    let err = generator(failing_first(usize::MAX), &path)
        .generate(options(6).resume(true).max_failures(0))
        .await
        .unwrap_err();
    assert_eq!(err.report().unwrap().failures.get(cause), Some(&1));
    let record = stored().await;
    assert_eq!(record.failures.unwrap().get(cause), Some(&3));
    assert_eq!((record.status, record.rows_written), (RunStatus::Failed, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialogs_failing_after_a_cancel_count_as_cancelled_not_failed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let handle = afterimage_engine::StopHandle::new();
    let trigger = handle.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    // Like a batch round refused for the budget: the stop is asked for, then every
    // waiting request is answered with an error.
    let model = Arc::new(ScriptedModel::new("scripted", move |_| {
        let (calls, trigger) = (Arc::clone(&calls), trigger.clone());
        async move {
            if calls.fetch_add(1, Ordering::SeqCst) >= 8 {
                trigger.set_reason("the budget");
                trigger.cancel();
                return Err(ProviderError::Other {
                    message: "round refused".into(),
                    retryable: false,
                });
            }
            Ok(ChatResponse::text("ok").with_usage(Usage::new(3, 2)))
        }
    }));
    let report = generator(model, &path)
        .generate(
            GenerateOptions::new()
                .num_dialogs(50)
                .max_turns(1)
                .max_concurrency(4)
                .max_failures(0)
                .stop_handle(handle),
        )
        .await
        .unwrap();
    assert!(report.interrupted, "{}", report.stop_reason);
    assert_eq!(report.dialogs_failed, 0, "{}", report.stop_reason);
    assert!(report.rows_written < 50);
    assert!(
        report.stop_reason.starts_with("interrupted by the budget")
            && report.stop_reason.contains("in flight were cancelled"),
        "{}",
        report.stop_reason
    );
    let record = JsonlStorage::new(&path).load_run().await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Stopped);
}
