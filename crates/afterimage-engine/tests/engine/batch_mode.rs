//! The seams batch mode hangs on, with scripted models: every request knows its dialog
//! and step, the live set sees a wave enter together and a finished dialog leave only
//! after its replacement entered, spares replace rejected dialogs and still leave
//! exactly N rows (also across a resume), and the predicted rounds match the requests
//! one dialog really makes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use afterimage_core::testing::ScriptedModel;
use afterimage_core::{
    ChatRequest, ChatResponse, DialogStep, GeneratedInstructions, InstructionGenerator,
    InstructionRequest, LiveDialogs, LiveGuard, StrategyError, next_dialog_step,
};
use afterimage_engine::{ConversationGenerator, EngineError, GenerateOptions, predicted_rounds};
use afterimage_storage::JsonlStorage;
use afterimage_strategies::{
    ContextualInstructionGenerator, DEFAULT_JUDGE_CRITERIA, InMemoryDocumentProvider,
};

/// What the live set and the models saw, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Enter(u64),
    Leave(u64),
    Ask(DialogStep),
}

type Log = Arc<Mutex<Vec<Event>>>;

/// A live set that writes down every enter and every guard dropped.
#[derive(Debug, Default)]
struct RecordingLive {
    log: Log,
}

/// Writes `Leave` when the scheduler lets go of a dialog's place.
struct Leave {
    dialog: u64,
    log: Log,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.log.lock().unwrap().push(Event::Leave(self.dialog));
    }
}

impl LiveDialogs for RecordingLive {
    fn enter(&self, dialog: u64) -> LiveGuard {
        // A moment for any dialog already started to make its first request, so a
        // scheduler that starts dialogs while it still enters others is caught.
        std::thread::sleep(std::time::Duration::from_millis(2));
        self.log.lock().unwrap().push(Event::Enter(dialog));
        LiveGuard::new(Leave {
            dialog,
            log: Arc::clone(&self.log),
        })
    }
}

/// Three numbered questions per call, without a model (no request of its own).
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
        Ok(GeneratedInstructions {
            instructions: (0..3)
                .map(|i| format!("How do I fix problem {call}.{i} on my router?"))
                .collect(),
            context: "Router manual".into(),
            requests: 1,
            ..Default::default()
        })
    }
}

/// A judge answer scoring every default criterion `score`.
fn scores(score: f64) -> String {
    let criteria: serde_json::Map<String, serde_json::Value> = DEFAULT_JUDGE_CRITERIA
        .iter()
        .map(|name| {
            let verdict = serde_json::json!({"feedback": "be more specific", "score": score});
            ((*name).to_owned(), verdict)
        })
        .collect();
    serde_json::Value::Object(criteria).to_string()
}

fn is_judge(request: &ChatRequest) -> bool {
    request
        .response_schema
        .as_ref()
        .is_some_and(|schema| schema.name != "instructions")
}

fn is_instruction(request: &ChatRequest) -> bool {
    request
        .response_schema
        .as_ref()
        .is_some_and(|schema| schema.name == "instructions")
}

/// A reply no other request gets, so the cheap checks never see a loop.
fn reply(step: DialogStep, said: &AtomicUsize) -> String {
    let n = said.fetch_add(1, Ordering::SeqCst);
    format!(
        "In dialog {} (step {}), hold the reset button for {n} seconds, then wait.",
        step.dialog, step.step
    )
}

fn rows(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ids(rows: &[serde_json::Value]) -> HashSet<String> {
    rows.iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Each dialog's steps, in the order they were asked.
fn steps_by_dialog(log: &[Event]) -> BTreeMap<u64, Vec<u32>> {
    let mut steps: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for event in log {
        if let Event::Ask(step) = event {
            steps.entry(step.dialog).or_default().push(step.step);
        }
    }
    steps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_enters_together_and_a_dialog_leaves_after_its_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let live = Arc::new(RecordingLive::default());
    let log = Arc::clone(&live.log);
    let said = Arc::new(AtomicUsize::new(0));
    let model = Arc::new(ScriptedModel::new("scripted", move |_request| {
        let (log, said) = (Arc::clone(&log), Arc::clone(&said));
        // Read while the dialog's future is polled: the scope is the dialog's.
        let step = next_dialog_step();
        async move {
            let step = step.expect("a request outside any dialog");
            log.lock().unwrap().push(Event::Ask(step));
            Ok(ChatResponse::text(reply(step, &said)))
        }
    }));
    let (n, wave) = (10_u64, 4_usize);
    let report = ConversationGenerator::builder()
        .respondent_prompt("You are a support agent.")
        .correspondent_prompt("You are a customer.")
        .model(model)
        .instruction_generator(Arc::new(Numbered::default()))
        // The cheap checks make no request, but they would take scripted replies that
        // differ only by a number for a loop and regenerate: steps would vary.
        .quality_checks(false)
        .storage(Arc::new(JsonlStorage::new(&path)))
        .build()
        .unwrap()
        .generate(
            GenerateOptions::new()
                .num_dialogs(n)
                .fixed_turns(2)
                .max_concurrency(wave)
                .run_id("r")
                .live_dialogs(live.clone()),
        )
        .await
        .unwrap();
    assert_eq!((report.rows_written, report.spares), (n, 0));
    let log = live.log.lock().unwrap().clone();

    // The whole first wave entered before any dialog asked anything.
    let first_ask = log.iter().position(|e| matches!(e, Event::Ask(_))).unwrap();
    let entered_first: Vec<&Event> = log[..first_ask].iter().collect();
    assert_eq!(entered_first.len(), wave, "{log:?}");
    assert!(entered_first.iter().all(|e| matches!(e, Event::Enter(_))));

    // The k-th dialog to end leaves only after the dialog replacing it entered.
    let mut enters = 0;
    let mut leaves = 0;
    for event in &log {
        match event {
            Event::Enter(_) => enters += 1,
            Event::Leave(_) => {
                leaves += 1;
                assert_eq!(enters, (wave + leaves).min(n as usize), "{log:?}");
            }
            Event::Ask(_) => {}
        }
    }
    assert_eq!((enters, leaves), (n as usize, n as usize));

    // Each dialog asked with its own index, steps 0, 1, 2 (two replies, one
    // follow-up), and left after its last request.
    let steps = steps_by_dialog(&log);
    assert_eq!(
        steps.keys().copied().collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>()
    );
    for (dialog, steps) in &steps {
        assert_eq!(steps, &[0, 1, 2], "dialog {dialog}");
        let left = log
            .iter()
            .position(|e| *e == Event::Leave(*dialog))
            .unwrap();
        let last_ask = log
            .iter()
            .rposition(|e| matches!(e, Event::Ask(s) if s.dialog == *dialog))
            .unwrap();
        assert!(
            last_ask < left,
            "dialog {dialog} left before its last request"
        );
    }
    // And the row stored under each index holds the answers asked under it.
    for row in rows(&path) {
        let id = row["id"].as_str().unwrap();
        let index: u64 = id.trim_start_matches("r-").parse().unwrap();
        let answer = row["conversations"][1]["content"].as_str().unwrap();
        assert!(
            answer.starts_with(&format!("In dialog {index} ")),
            "{id}: {answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_live_dialogs_requests_still_carry_their_dialog() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let model = Arc::new(ScriptedModel::new("scripted", move |_request| {
        log.lock().unwrap().push(next_dialog_step());
        async { Ok(ChatResponse::text("Hold the reset button, then wait.")) }
    }));
    let dir = tempfile::tempdir().unwrap();
    ConversationGenerator::builder()
        .respondent_prompt("You are a support agent.")
        .correspondent_prompt("You are a customer.")
        .model(model)
        .instruction_generator(Arc::new(Numbered::default()))
        .storage(Arc::new(JsonlStorage::new(dir.path().join("out.jsonl"))))
        .build()
        .unwrap()
        .generate(GenerateOptions::new().num_dialogs(3).fixed_turns(1))
        .await
        .unwrap();
    let mut seen: Vec<DialogStep> = seen.lock().unwrap().iter().map(|s| s.unwrap()).collect();
    seen.sort_by_key(|s| s.dialog);
    let want: Vec<DialogStep> = (0..3)
        .map(|dialog| DialogStep { dialog, step: 0 })
        .collect();
    assert_eq!(seen, want);
}

/// Dialogs a spare-run test rejects (by the judge) or holds (never answered).
const N: u64 = 12;
const UNDER_WAY: u64 = 18; // N × 1.5

/// Rejected by the judge: every third dialog of the first wave.
fn rejected(dialog: u64) -> bool {
    dialog < UNDER_WAY && dialog.is_multiple_of(3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spares_replace_rejected_dialogs_and_exactly_n_rows_are_written() {
    // The first wave is 18 dialogs, 6 of which the judge rejects. Their replacements
    // (18 and up) never get an answer, and the passing dialogs' judge waits until
    // all six have asked: so the count is reached while six spares are running, and
    // they must be cancelled.
    let (asked, waiting) = tokio::sync::watch::channel(0_u64);
    let asked = Arc::new(asked);
    let live = Arc::new(RecordingLive::default());
    let said = Arc::new(AtomicUsize::new(0));
    let model = Arc::new(ScriptedModel::new("scripted", move |request| {
        let (asked, mut waiting, said) = (Arc::clone(&asked), waiting.clone(), Arc::clone(&said));
        let step = next_dialog_step().expect("a request outside any dialog");
        async move {
            if step.dialog >= UNDER_WAY {
                asked.send_modify(|n| *n += 1);
                return std::future::pending().await;
            }
            if !is_judge(&request) {
                return Ok(ChatResponse::text(reply(step, &said)));
            }
            if rejected(step.dialog) {
                return Ok(ChatResponse::text(scores(0.2)));
            }
            waiting.wait_for(|n| *n >= 6).await.unwrap();
            Ok(ChatResponse::text(scores(0.9)))
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let report = ConversationGenerator::builder()
        .respondent_prompt("You are a support agent.")
        .correspondent_prompt("You are a customer.")
        .model(model)
        .instruction_generator(Arc::new(Numbered::default()))
        .auto_improve(true)
        .max_regenerations(0)
        .keep_best(false)
        .storage(Arc::new(JsonlStorage::new(&path)))
        .build()
        .unwrap()
        .generate(
            GenerateOptions::new()
                .num_dialogs(N)
                .fixed_turns(1)
                .max_concurrency(64)
                .oversample(1.5)
                .live_dialogs(live.clone()),
        )
        .await
        .unwrap();
    let written = rows(&path);
    assert_eq!(written.len() as u64, N);
    assert_eq!(ids(&written).len() as u64, N);
    assert_eq!(report.rows_written, N);
    assert_eq!((report.dialogs_failed, report.spares), (6, 6), "{report:?}");
    assert!(
        report
            .stop_reason
            .contains("6 spare dialogs were discarded"),
        "{}",
        report.stop_reason
    );
    let log = live.log.lock().unwrap().clone();
    let entered = log.iter().filter(|e| matches!(e, Event::Enter(_))).count();
    let left = log.iter().filter(|e| matches!(e, Event::Leave(_))).count();
    assert_eq!(
        (entered, left),
        (24, 24),
        "every spare left the live set too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_spares_resumes_to_exactly_n() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let said = Arc::new(AtomicUsize::new(0));
    let model = Arc::new(ScriptedModel::new("scripted", move |_request| {
        let said = Arc::clone(&said);
        let step = next_dialog_step().expect("a request outside any dialog");
        async move { Ok(ChatResponse::text(reply(step, &said))) }
    }));
    let generator = ConversationGenerator::builder()
        .respondent_prompt("You are a support agent.")
        .correspondent_prompt("You are a customer.")
        .model(model)
        .instruction_generator(Arc::new(Numbered::default()))
        .quality_checks(false)
        .storage(Arc::new(JsonlStorage::new(&path)))
        .build()
        .unwrap();
    let options = || {
        GenerateOptions::new()
            .num_dialogs(10)
            .max_turns(3)
            .max_concurrency(32)
            .oversample(1.5)
            .seed(3)
            .run_id("r")
    };
    let report = generator.generate(options()).await.unwrap();
    assert_eq!(report.rows_written, 10);
    assert_eq!(rows(&path).len(), 10);

    // Simulate a kill: keep every other stored row (and the run record).
    let kept: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(i, line)| i % 2 == 0 || line.contains("\"rows_requested\""))
        .map(|(_, line)| format!("{line}\n"))
        .collect();
    std::fs::write(&path, kept.concat()).unwrap();
    let before = ids(&rows(&path));
    let stored = before.iter().filter(|id| id.starts_with("r-")).count() as u64;
    assert!(stored < 10);

    let report = generator.generate(options().resume(true)).await.unwrap();
    assert_eq!(
        (report.rows_resumed, report.rows_written),
        (stored, 10 - stored)
    );
    let after = rows(&path);
    let after_ids = ids(&after);
    assert_eq!(after.len(), 10, "no row twice, none missing");
    assert_eq!(after_ids.len(), 10);
    assert!(before.is_subset(&after_ids), "the stored rows are kept");
}

/// The requests each dialog makes, by kind, with the step they were asked at.
#[derive(Debug, Default)]
struct Counted {
    steps: Mutex<HashMap<u64, Vec<u32>>>,
    judged: Mutex<HashMap<u64, u32>>,
}

/// A model for every role that counts steps per dialog: the instruction generator's
/// requests get one fresh question, the judge rejects each dialog's first attempt
/// when `reject_first` and passes the rest.
fn counting_model(counted: Arc<Counted>, reject_first: bool) -> Arc<ScriptedModel> {
    let said = Arc::new(AtomicUsize::new(0));
    Arc::new(ScriptedModel::new("scripted", move |request| {
        let (counted, said) = (Arc::clone(&counted), Arc::clone(&said));
        let step = next_dialog_step().expect("a request outside any dialog");
        counted
            .steps
            .lock()
            .unwrap()
            .entry(step.dialog)
            .or_default()
            .push(step.step);
        async move {
            if is_instruction(&request) {
                let n = said.fetch_add(1, Ordering::SeqCst);
                let question = format!("Why does my router number {n} keep dropping?");
                return Ok(ChatResponse::text(
                    serde_json::json!({ "instructions": [question] }).to_string(),
                ));
            }
            if !is_judge(&request) {
                return Ok(ChatResponse::text(reply(step, &said)));
            }
            let mut judged = counted.judged.lock().unwrap();
            let seen = judged.entry(step.dialog).or_default();
            *seen += 1;
            let score = if reject_first && *seen == 1 { 0.2 } else { 0.9 };
            Ok(ChatResponse::text(scores(score)))
        }
    }))
}

/// Runs `n` dialogs of `turns` turns (judged, with `regenerations`, when `judged`)
/// and returns the steps each dialog asked.
async fn steps_per_dialog(
    turns: u32,
    judged: bool,
    regenerations: u32,
    n: u64,
) -> HashMap<u64, Vec<u32>> {
    let counted = Arc::new(Counted::default());
    let model = counting_model(Arc::clone(&counted), regenerations > 0);
    let documents = Arc::new(InMemoryDocumentProvider::new([
        "The router resets when its button is held for ten seconds. An orange light means a firmware update is running.",
    ]));
    let questions =
        ContextualInstructionGenerator::new(Arc::clone(&model) as _, documents).n_instructions(1);
    let dir = tempfile::tempdir().unwrap();
    ConversationGenerator::builder()
        .respondent_prompt("You are a support agent.")
        .correspondent_prompt("You are a customer.")
        .model(model)
        .instruction_generator(Arc::new(questions))
        .dedup_questions(false)
        // Scripted replies that differ only by a number look like loops to the cheap
        // checks (which make no request); their regenerations would blur the count.
        .quality_checks(false)
        .auto_improve(judged)
        .max_regenerations(regenerations)
        .storage(Arc::new(JsonlStorage::new(dir.path().join("out.jsonl"))))
        .build()
        .unwrap()
        .generate(
            GenerateOptions::new()
                .num_dialogs(n)
                .fixed_turns(turns)
                .max_concurrency(4),
        )
        .await
        .unwrap();
    counted.steps.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predicted_rounds_are_the_requests_one_dialog_makes() {
    for (turns, judged, regenerations) in [(1, false, 0), (3, false, 0), (2, true, 0), (2, true, 1)]
    {
        let estimate = predicted_rounds(turns, judged, regenerations);
        let want = if regenerations > 0 {
            estimate.with_regenerations
        } else {
            assert_eq!(estimate.with_regenerations, estimate.floor);
            estimate.floor
        };
        let steps = steps_per_dialog(turns, judged, regenerations, 5).await;
        assert_eq!(steps.len(), 5, "one entry per dialog: {steps:?}");
        for (dialog, steps) in steps {
            assert_eq!(
                steps,
                (0..want).collect::<Vec<u32>>(),
                "dialog {dialog} with {turns} turns, judged {judged}, {regenerations} regenerations"
            );
        }
    }
}

#[tokio::test]
async fn a_shared_run_refuses_batch_mode_and_spares() {
    let model = Arc::new(ScriptedModel::new("scripted", |_request| async {
        Ok(ChatResponse::text("unused"))
    }));
    let dir = tempfile::tempdir().unwrap();
    let generator = ConversationGenerator::builder()
        .respondent_prompt("You are a support agent.")
        .correspondent_prompt("You are a customer.")
        .model(model)
        .instruction_generator(Arc::new(Numbered::default()))
        .storage(Arc::new(JsonlStorage::new(dir.path().join("out.jsonl"))))
        .build()
        .unwrap();
    let slots = Arc::new(crate::shared::MemorySlots::new(
        std::time::Duration::from_secs(30),
    ));
    let shared = afterimage_engine::SharedRun::new(slots);
    let options = GenerateOptions::new().num_dialogs(2).shared(shared);
    let refused = generator
        .generate(
            options
                .clone()
                .live_dialogs(Arc::new(RecordingLive::default())),
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, EngineError::Config(_)), "{refused}");
    assert!(refused.to_string().contains("--join"), "{refused}");
    let refused = generator
        .generate(options.oversample(1.5))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("oversample"), "{refused}");
}

/// Passes requests on to a model, writing down the dialog step each was asked at.
#[derive(Debug)]
struct Stepping {
    inner: Arc<dyn afterimage_core::ChatModel>,
    log: Log,
}

#[async_trait::async_trait]
impl afterimage_core::ChatModel for Stepping {
    async fn chat(
        &self,
        request: ChatRequest,
    ) -> Result<ChatResponse, afterimage_core::ProviderError> {
        let step = next_dialog_step().expect("a request outside any dialog");
        self.log.lock().unwrap().push(Event::Ask(step));
        self.inner.chat(request).await
    }

    fn model_id(&self) -> &str {
        self.inner.model_id()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_jobs_run_in_their_dialog_scope_with_spares_and_exact_rows() {
    use afterimage_mock::{MockConfig, MockServer};
    let config = MockConfig::default()
        .with_latency(std::time::Duration::from_millis(2))
        .with_schema_violation_rate(0.5)
        .with_seed(5);
    let server = MockServer::start(config).await.unwrap();
    let live = Arc::new(RecordingLive::default());
    let client = afterimage_providers::OpenAiCompatible::builder(server.openai_base_url())
        .api_key(afterimage_core::ApiKey::new("sk-test"))
        .model("mock-model")
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let model = Arc::new(Stepping {
        inner: Arc::new(client),
        log: Arc::clone(&live.log),
    });
    let docs = Arc::new(InMemoryDocumentProvider::new([
        "Error 503 means the service is unavailable. Retry after 5 minutes.",
        "To reset your password, click 'Forgot Password' on the login screen.",
    ]));
    let schema = afterimage_core::JsonSchema::new(
        "faq_entry",
        serde_json::json!({
            "type": "object",
            "properties": {"title": {"type": "string"}, "answer": {"type": "string"}},
            "required": ["title", "answer"],
            "additionalProperties": false,
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("faq.jsonl");
    let report = afterimage_engine::StructuredGenerator::builder()
        .schema(schema)
        .respondent_prompt("You write FAQ entries for a support site.")
        .model(Arc::clone(&model) as _)
        .instruction_generator(Arc::new(ContextualInstructionGenerator::new(model, docs)))
        .output(Arc::new(JsonlStorage::new(&path)))
        .build()
        .unwrap()
        .generate(
            GenerateOptions::new()
                .num_dialogs(10)
                .max_concurrency(32)
                .max_failures(50)
                .oversample(1.5)
                .live_dialogs(live.clone()),
        )
        .await
        .unwrap();
    let written = rows(&path);
    assert_eq!((written.len(), ids(&written).len()), (10, 10));
    assert_eq!(report.rows_written, 10);
    let log = live.log.lock().unwrap().clone();
    let entered = log.iter().filter(|e| matches!(e, Event::Enter(_))).count() as u64;
    let left = log.iter().filter(|e| matches!(e, Event::Leave(_))).count() as u64;
    assert_eq!(entered, left);
    // Every job that entered ended as a row, a failure or a spare.
    assert_eq!(
        entered,
        report.rows_written + report.dialogs_failed + report.spares,
        "{report:?}"
    );
    assert!(entered >= 15, "the spares started with the first wave");
    // Each job's requests are numbered from 0 without a gap.
    for (dialog, steps) in steps_by_dialog(&log) {
        let want: Vec<u32> = (0..steps.len() as u32).collect();
        assert_eq!(steps, want, "job {dialog}");
    }
}
