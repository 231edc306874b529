//! Stopping: coverage of documents, a generator running out of documents, and
//! cancelling dialogs in flight when a criterion fires.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use afterimage_core::testing::ScriptedModel;
use afterimage_core::{
    ChatResponse, Document, GeneratedInstructions, InstructionGenerator, InstructionRequest,
    RunProgress, StoppingCriterion, StrategyError, Usage,
};
use afterimage_engine::{ContextCoverage, ConversationGenerator, GenerateOptions, InFlight};
use afterimage_storage::JsonlStorage;

/// One question per call, about documents `doc-0..doc-{n}` in turn; after `limit`
/// calls it reports that it ran out.
#[derive(Debug)]
struct RoundRobin {
    documents: usize,
    limit: usize,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl InstructionGenerator for RoundRobin {
    async fn generate(
        &self,
        _request: &InstructionRequest,
    ) -> Result<GeneratedInstructions, StrategyError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call >= self.limit {
            return Err(StrategyError::Exhausted {
                message: "every document reached target_visits = 2".to_owned(),
            });
        }
        let doc = Document::with_id(
            format!("doc-{}", call % self.documents),
            format!("text {call}"),
        );
        Ok(GeneratedInstructions {
            instructions: vec![format!("What changed in release {call}?")],
            context: doc.text.clone(),
            documents: vec![doc],
            usage: Usage::new(1, 1),
            requests: 1,
            ..Default::default()
        })
    }
}

fn generator(
    model: Arc<ScriptedModel>,
    instructions: RoundRobin,
    path: &std::path::Path,
) -> ConversationGenerator {
    ConversationGenerator::builder()
        .respondent_prompt("You are a support agent.")
        .correspondent_prompt("You are a customer.")
        .model(model)
        .instruction_generator(Arc::new(instructions))
        .storage(Arc::new(JsonlStorage::new(path)))
        .build()
        .unwrap()
}

fn quick_model() -> Arc<ScriptedModel> {
    Arc::new(ScriptedModel::new("scripted", |_request| async move {
        Ok(ChatResponse::text("an answer"))
    }))
}

fn visits(path: &std::path::Path) -> HashMap<String, u64> {
    let mut visits = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        *visits
            .entry(row["metadata"]["context_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    visits
}

#[tokio::test]
async fn context_coverage_stops_once_every_document_reached_its_visits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let instructions = RoundRobin {
        documents: 4,
        limit: usize::MAX,
        calls: AtomicUsize::new(0),
    };
    let report = generator(quick_model(), instructions, &path)
        .generate(
            GenerateOptions::new()
                .max_concurrency(1)
                .stopping_criterion(Arc::new(ContextCoverage {
                    documents: 4,
                    target_visits: 3,
                    coverage_threshold: 1.0,
                })),
        )
        .await
        .unwrap();
    assert_eq!(report.rows_written, 12, "{}", report.stop_reason);
    assert_eq!(
        report.stop_reason,
        "stopping criterion met: every document has 3 dialogs (4 documents)"
    );
    let visits = visits(&path);
    assert_eq!(visits.len(), 4);
    assert!(visits.values().all(|v| *v == 3), "{visits:?}");
}

#[tokio::test]
async fn a_generator_that_runs_out_ends_the_run_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let instructions = RoundRobin {
        documents: 3,
        limit: 6,
        calls: AtomicUsize::new(0),
    };
    let report = generator(quick_model(), instructions, &path)
        .generate(GenerateOptions::new().num_dialogs(100).max_concurrency(2))
        .await
        .unwrap();
    assert_eq!(report.rows_written, 6);
    assert_eq!(report.dialogs_failed, 0);
    assert!(
        report.stop_reason.contains("target_visits"),
        "{}",
        report.stop_reason
    );
    assert_eq!(visits(&path).values().sum::<u64>(), 6);
}

/// Stops after three rows.
#[derive(Debug)]
struct ThreeRows;

impl StoppingCriterion for ThreeRows {
    fn should_stop(&self, progress: &RunProgress) -> bool {
        progress.rows_written >= 3
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_drops_dialogs_in_flight_and_finish_keeps_them() {
    // Dialogs take 10, 110, 210, ... ms, so when the third row lands the rest are
    // still running.
    let slow_model = || {
        let calls = Arc::new(AtomicUsize::new(0));
        Arc::new(ScriptedModel::new("scripted", move |_request| {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(10 + 100 * (call as u64 % 8))).await;
                Ok(ChatResponse::text("an answer"))
            }
        }))
    };
    let instructions = || RoundRobin {
        documents: 2,
        limit: usize::MAX,
        calls: AtomicUsize::new(0),
    };
    let options = || {
        GenerateOptions::new()
            .num_dialogs(50)
            .fixed_turns(1)
            .max_concurrency(8)
            .stopping_criterion(Arc::new(ThreeRows))
    };

    let dir = tempfile::tempdir().unwrap();
    let cancelled_path = dir.path().join("cancel.jsonl");
    let cancelled = generator(slow_model(), instructions(), &cancelled_path)
        .generate(options().on_stop(InFlight::Cancel))
        .await
        .unwrap();
    let finished_path = dir.path().join("finish.jsonl");
    let finished = generator(slow_model(), instructions(), &finished_path)
        .generate(options())
        .await
        .unwrap();

    let stored = |path: &std::path::Path| visits(path).values().sum::<u64>();
    assert_eq!(stored(&cancelled_path), cancelled.rows_written);
    assert_eq!(stored(&finished_path), finished.rows_written);
    assert!(
        cancelled.stop_reason.contains("cancelled"),
        "{}",
        cancelled.stop_reason
    );
    assert!(cancelled.rows_written < 6, "{}", cancelled.rows_written);
    // Finishing keeps at least the whole first wave of eight.
    assert!(finished.rows_written >= 8, "{}", finished.rows_written);
    assert!(!finished.stop_reason.contains("cancelled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialogs_start_in_place_of_ones_parked_on_a_retry_delay() {
    let gauge = afterimage_core::ParkedRequests::new();
    let parked_model = {
        let gauge = gauge.clone();
        Arc::new(ScriptedModel::new("scripted", move |request| {
            let gauge = gauge.clone();
            async move {
                // Each dialog's first answer waits out a "Retry-After" first.
                if request.messages.len() == 2 {
                    let _waiting = gauge.park();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Ok(ChatResponse::text("an answer"))
            }
        }))
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let instructions = RoundRobin {
        documents: 2,
        limit: usize::MAX,
        calls: AtomicUsize::new(0),
    };
    let report = generator(Arc::clone(&parked_model), instructions, &path)
        .generate(
            GenerateOptions::new()
                .num_dialogs(16)
                .fixed_turns(1)
                .max_concurrency(4)
                .parked_requests(gauge.clone()),
        )
        .await
        .unwrap();
    assert_eq!(report.rows_written, 16);
    // Four dialogs parked, four more started; never more than twice the limit.
    let most = parked_model.max_in_flight();
    assert!((5..=8).contains(&most), "{most} calls in flight");
    assert_eq!(gauge.now(), 0);
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialogs_waiting_for_a_document_visit_do_not_hang_the_end_of_a_run() {
    // One document, one visit: the first pick takes it (a batch of three questions),
    // the other three dialogs wait for a visit to free up. Nothing must keep them
    // waiting once the run can start no more dialogs.
    let model = Arc::new(ScriptedModel::new("scripted", |request| async move {
        let wants_questions = request.response_schema.is_some();
        if wants_questions {
            // Slow enough that all four dialogs ask for questions at once.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(ChatResponse::text(if wants_questions {
            r#"{"instructions": ["How do I start the pump?", "How do I stop the pump?", "Why does the pump beep?"]}"#
        } else {
            "an answer"
        }))
    }));
    let documents = Arc::new(afterimage_strategies::InMemoryDocumentProvider::new([
        "The only document.",
    ]));
    let questions = afterimage_strategies::ContextualInstructionGenerator::new(
        Arc::clone(&model) as _,
        documents,
    )
    .target_visits(Some(1));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let generator = ConversationGenerator::builder()
        .respondent_prompt("You are a support agent.")
        .correspondent_prompt("You are a customer.")
        .model(model)
        .instruction_generator(Arc::new(questions))
        .storage(Arc::new(JsonlStorage::new(&path)))
        .build()
        .unwrap();
    let run = generator.generate(
        GenerateOptions::new()
            .num_dialogs(4)
            .fixed_turns(1)
            .max_concurrency(4),
    );
    let report = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the run hung on dialogs waiting for a document visit")
        .unwrap();
    assert!(
        report.stop_reason.contains("target_visits"),
        "{}",
        report.stop_reason
    );
    assert_eq!(report.dialogs_failed, 0);
    assert!(
        (1..=3).contains(&report.rows_written),
        "{}",
        report.rows_written
    );
}

#[tokio::test]
async fn a_resumed_coverage_run_counts_the_stored_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let round_robin = || RoundRobin {
        documents: 2,
        limit: usize::MAX,
        calls: AtomicUsize::new(0),
    };
    // Four rows first: two per document.
    generator(quick_model(), round_robin(), &path)
        .generate(GenerateOptions::new().num_dialogs(4).max_concurrency(1))
        .await
        .unwrap();
    // Resumed with a coverage rule of three per document: one more each, not three.
    let coverage = ContextCoverage {
        documents: 2,
        target_visits: 3,
        coverage_threshold: 1.0,
    };
    let report = generator(quick_model(), round_robin(), &path)
        .generate(
            GenerateOptions::new()
                .max_concurrency(1)
                .resume(true)
                .stopping_criterion(Arc::new(coverage)),
        )
        .await
        .unwrap();
    assert_eq!(report.rows_resumed, 4);
    assert_eq!(report.rows_written, 2, "{}", report.stop_reason);
    let visits = visits(&path);
    assert_eq!(visits.values().copied().collect::<Vec<_>>(), [3, 3]);
}
