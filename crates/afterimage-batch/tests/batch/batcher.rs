//! The batcher under concurrent "dialogs" against the project's mock: rounds wait for
//! every live dialog, every call is answered once, line faults are retried within the
//! attempt budget, permanent ones reach the dialog, and small rounds go synchronous.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use afterimage_batch::{
    AnthropicBatch, BatchBackend, BatchEndpoint, BatchError, BatchItem, BatchLimits, BatchSettings,
    BatchStatus, Batcher, GeminiBatch, ItemOutcome, OpenAiBatch, RemoteBatch, RequestRole, Tail,
};
use afterimage_core::{
    ApiKey, ChatModel, ChatRequest, LiveDialogs, Message, ProviderError, in_dialog,
};
use afterimage_mock::{MockConfig, MockServer};
use afterimage_providers::{Anthropic, Gemini, OpenAiCompatible};

const DIALOGS: u64 = 20;
const TURNS: usize = 3;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
}

/// The backend, the synchronous model and the model name for `provider` on `server`.
pub(crate) fn clients(
    server: &MockServer,
    provider: Provider,
) -> (Arc<dyn BatchBackend>, Arc<dyn ChatModel>, &'static str) {
    match provider {
        Provider::OpenAi => {
            let client = || {
                OpenAiCompatible::builder(server.openai_base_url())
                    .api_key(ApiKey::new("sk-mock"))
                    .model("gpt-4o-mini")
                    .build()
                    .unwrap()
            };
            (
                Arc::new(OpenAiBatch::new(client())),
                Arc::new(client()),
                "gpt-4o-mini",
            )
        }
        Provider::Anthropic => {
            let client = || {
                Anthropic::builder()
                    .base_url(server.anthropic_base_url())
                    .api_key(ApiKey::new("sk-ant-mock"))
                    .model("claude-sonnet-4-5")
                    .build()
                    .unwrap()
            };
            (
                Arc::new(AnthropicBatch::new(client())),
                Arc::new(client()),
                "claude-sonnet-4-5",
            )
        }
        Provider::Gemini => {
            let client = || {
                Gemini::builder()
                    .base_url(server.gemini_base_url())
                    .api_key(ApiKey::new("g-mock"))
                    .model("gemini-2.5-flash")
                    .build()
                    .unwrap()
            };
            (
                Arc::new(GeminiBatch::new(client())),
                Arc::new(client()),
                "gemini-2.5-flash",
            )
        }
    }
}

/// Milliseconds instead of minutes, and every round a batch unless a test says so.
pub(crate) fn fast() -> BatchSettings {
    BatchSettings {
        min_requests: 1,
        linger: Duration::from_secs(30),
        poll_initial: Duration::from_millis(20),
        poll_max: Duration::from_millis(100),
        ..BatchSettings::default()
    }
}

pub(crate) async fn server(config: MockConfig) -> MockServer {
    let config = config
        .with_batch_phase(Duration::from_millis(30))
        .with_seed(11);
    MockServer::start(config).await.unwrap()
}

/// Runs `DIALOGS` dialogs of `TURNS` sequential calls each (an assistant call, then
/// alternating), each in its dialog scope and holding its live guard; returns every
/// call's result.
async fn dialogs(batcher: &Batcher) -> Vec<Result<String, ProviderError>> {
    dialogs_of(batcher, DIALOGS, TURNS).await
}

/// `count` dialogs of `turns` calls each.
pub(crate) async fn dialogs_of(
    batcher: &Batcher,
    count: u64,
    turns: usize,
) -> Vec<Result<String, ProviderError>> {
    dialogs_in(batcher, 0..count, turns).await
}

/// Dialogs numbered `numbers`, of `turns` calls each.
pub(crate) async fn dialogs_in(
    batcher: &Batcher,
    numbers: std::ops::Range<u64>,
    turns: usize,
) -> Vec<Result<String, ProviderError>> {
    // Every guard before any dialog runs, or the first to park would find itself
    // the only live caller and go alone.
    let guards: Vec<_> = numbers.map(|d| (d, batcher.enter(d))).collect();
    let (user, assistant) = (
        batcher.model(RequestRole::User),
        batcher.model(RequestRole::Assistant),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for (d, live) in guards {
        let (user, assistant) = (Arc::clone(&user), Arc::clone(&assistant));
        tasks.spawn(in_dialog(d, async move {
            let mut history = vec![
                Message::system("Be brief."),
                Message::user(format!("Hello from {d}")),
            ];
            let mut results = Vec::new();
            for turn in 0..turns {
                let model = if turn % 2 == 0 { &assistant } else { &user };
                let result = model
                    .chat(ChatRequest::new(history.clone()).max_tokens(32))
                    .await;
                if let Ok(response) = &result {
                    history.push(response.message.clone());
                }
                results.push(result.map(|r| r.message.content));
            }
            drop(live);
            results
        }));
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.unwrap());
    }
    all
}

/// Submissions per request key (the id without its attempt), from the mock's side.
pub(crate) fn per_key(submissions: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut keys = BTreeMap::new();
    for (id, n) in submissions {
        let key = id.rsplit_once('-').unwrap().0.to_string();
        *keys.entry(key).or_default() += n;
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_wait_for_every_live_dialog_on_all_three_protocols() {
    for provider in [Provider::OpenAi, Provider::Anthropic, Provider::Gemini] {
        let server = server(MockConfig::default()).await;
        let (backend, sync, model) = clients(&server, provider);
        let batcher = Batcher::start("r1", model, vec![backend], Some(sync), fast(), None);
        let results = dialogs(&batcher).await;
        assert_eq!(results.len(), 60, "{provider:?}");
        for result in &results {
            assert!(
                !result.as_ref().unwrap().is_empty(),
                "{provider:?}: empty answer"
            );
        }
        let report = batcher.report();
        assert_eq!(report.rounds, 3, "{provider:?}: {report:?}");
        assert_eq!(report.requests_submitted, 60, "{provider:?}");
        assert_eq!(report.sync_requests, 0, "{provider:?}");
        let submissions = server.batch_submissions();
        assert_eq!(submissions.len(), 60, "{provider:?}");
        assert!(
            submissions.values().all(|&n| n == 1),
            "{provider:?}: {submissions:?}"
        );
        assert_eq!(
            server.stats().chat_completions
                + server.stats().messages
                + server.stats().generate_content,
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_round_waits_for_dialogs_parked_on_either_of_two_endpoints() {
    let server = server(MockConfig::default()).await;
    let (openai, openai_sync, openai_model) = clients(&server, Provider::OpenAi);
    let (anthropic, anthropic_sync, anthropic_model) = clients(&server, Provider::Anthropic);
    let endpoints = vec![
        BatchEndpoint::new("", vec![openai]),
        BatchEndpoint::new("judge", vec![anthropic]),
    ];
    // A linger of 30 s: a round that waited for the other endpoint's dialogs would
    // not end before the test's own timeout.
    let batcher = Batcher::start_with(
        "r13",
        openai_model,
        endpoints,
        Some(openai_sync),
        fast(),
        None,
    );
    let assistant = batcher.model(RequestRole::Assistant);
    let judge = batcher
        .model_on(
            "judge",
            anthropic_model,
            RequestRole::Judge,
            Some(anthropic_sync),
        )
        .unwrap();
    assert!(
        batcher
            .model_on("nowhere", "m", RequestRole::Judge, None)
            .is_none()
    );
    assert_eq!(judge.model_id(), anthropic_model);
    let guards: Vec<_> = (0..DIALOGS).map(|d| (d, batcher.enter(d))).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (d, live) in guards {
        let (assistant, judge) = (Arc::clone(&assistant), Arc::clone(&judge));
        tasks.spawn(in_dialog(d, async move {
            let mut answers = Vec::new();
            // Half the dialogs start on each endpoint, so every round holds both.
            for turn in 0..TURNS as u64 {
                let model = if (turn + d) % 2 == 0 {
                    &assistant
                } else {
                    &judge
                };
                let request = ChatRequest::new(vec![Message::user(format!("Hi {d}"))]);
                answers.push(model.chat(request.max_tokens(16)).await.map(|r| r.batched));
            }
            drop(live);
            answers
        }));
    }
    let tasks = tokio::time::timeout(Duration::from_secs(20), tasks.join_all());
    let answers: Vec<_> = tasks.await.expect("rounds held back").concat();
    assert_eq!(answers.len(), 60);
    assert!(answers.iter().all(|a| matches!(a, Ok(true))), "{answers:?}");
    let report = batcher.report();
    assert_eq!(report.rounds, 3, "{report:?}");
    assert_eq!(
        report.batches_submitted, 6,
        "one batch per endpoint per round: {report:?}"
    );
    let submissions = server.batch_submissions();
    assert_eq!(submissions.len(), 60);
    assert!(submissions.values().all(|&n| n == 1), "{submissions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_and_missing_lines_are_submitted_again_within_the_budget() {
    let config = MockConfig::default()
        .with_batch_retryable_rate(0.2)
        .with_batch_missing_rate(0.15);
    let server = server(config).await;
    let (backend, sync, model) = clients(&server, Provider::OpenAi);
    let settings = BatchSettings {
        max_request_attempts: 6,
        ..fast()
    };
    let batcher = Batcher::start("r2", model, vec![backend], Some(sync), settings, None);
    let results = dialogs(&batcher).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let report = batcher.report();
    assert!(report.retried > 0, "{report:?}");
    assert!(report.rounds > 3, "{report:?}");
    let submissions = server.batch_submissions();
    assert!(
        submissions.values().all(|&n| n == 1),
        "an id was sent twice"
    );
    let keys = per_key(&submissions);
    assert_eq!(keys.len(), 60);
    assert!(keys.values().all(|&n| n <= 6), "{keys:?}");
    assert!(keys.values().any(|&n| n > 1), "{keys:?}");
    assert_eq!(
        report
            .submissions
            .values()
            .map(|&n| u64::from(n))
            .sum::<u64>(),
        keys.values().sum::<u64>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_attempts_and_permanent_lines_fail_the_call() {
    let config = MockConfig::default().with_batch_permanent_rate(0.3);
    let server = server(config).await;
    let (backend, sync, model) = clients(&server, Provider::OpenAi);
    let batcher = Batcher::start("r3", model, vec![backend], Some(sync), fast(), None);
    let results = dialogs(&batcher).await;
    let failed: Vec<&ProviderError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(!failed.is_empty());
    for error in &failed {
        assert!(
            matches!(error, ProviderError::BadRequest { status: 400, .. }),
            "{error}"
        );
        assert!(!error.is_retryable());
    }
    let report = batcher.report();
    assert_eq!(report.permanent_failures, failed.len() as u64);
    assert_eq!(report.retried, 0);
    assert!(server.batch_submissions().values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_line_every_time_ends_after_max_attempts() {
    let config = MockConfig::default().with_batch_retryable_rate(1.0);
    let server = server(config).await;
    let (backend, sync, model) = clients(&server, Provider::Anthropic);
    let batcher = Batcher::start("r4", model, vec![backend], Some(sync), fast(), None);
    let results = dialogs(&batcher).await;
    // Each dialog's first call fails, and the dialog goes on to its next.
    assert!(results.iter().all(Result::is_err));
    let keys = per_key(&server.batch_submissions());
    assert_eq!(keys.len(), 60);
    assert!(keys.values().all(|&n| n == 3), "{keys:?}");
    assert_eq!(batcher.report().permanent_failures, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_below_min_requests_goes_synchronous() {
    let server = server(MockConfig::default()).await;
    let (backend, sync, model) = clients(&server, Provider::OpenAi);
    let settings = BatchSettings {
        min_requests: 50,
        tail: Tail::Sync,
        ..fast()
    };
    let batcher = Batcher::start("r5", model, vec![backend], Some(sync), settings, None);
    let results = dialogs(&batcher).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(server.batches_created(), 0);
    assert!(server.batch_submissions().is_empty());
    assert_eq!(server.stats().chat_completions, 60);
    let report = batcher.report();
    assert_eq!(
        (
            report.rounds,
            report.sync_requests,
            report.requests_submitted
        ),
        (3, 60, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_batch_keeps_small_rounds_in_batches() {
    let server = server(MockConfig::default()).await;
    let (backend, sync, model) = clients(&server, Provider::Gemini);
    let settings = BatchSettings {
        min_requests: 50,
        tail: Tail::Batch,
        ..fast()
    };
    let batcher = Batcher::start("r6", model, vec![backend], Some(sync), settings, None);
    let results = dialogs(&batcher).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(server.stats().generate_content, 0);
    assert_eq!(server.batch_submissions().len(), 60);
    assert_eq!(batcher.report().sync_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_batch_fails_the_named_line_and_retries_the_others() {
    let config = MockConfig::default().with_batch_validation_failure_rate(1.0);
    let server = server(config).await;
    let (backend, sync, model) = clients(&server, Provider::OpenAi);
    let settings = BatchSettings {
        max_request_attempts: 10,
        ..fast()
    };
    let batcher = Batcher::start("r7", model, vec![backend], Some(sync), settings, None);
    let results = dialogs_of(&batcher, 4, 1).await;
    // Every batch names its first line, so one request fails per round.
    for result in &results {
        let error = result.as_ref().unwrap_err();
        assert!(
            matches!(error, ProviderError::BadRequest { status: 400, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("invalid_request"), "{error}");
    }
    let report = batcher.report();
    assert_eq!(
        (report.rounds, report.permanent_failures, report.retried),
        (4, 4, 6)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linger_submits_when_a_live_dialog_never_parks() {
    let server = server(MockConfig::default()).await;
    let (backend, sync, model) = clients(&server, Provider::Gemini);
    let settings = BatchSettings {
        linger: Duration::from_millis(200),
        ..fast()
    };
    let batcher = Batcher::start("r8", model, vec![backend], Some(sync), settings, None);
    // A dialog that is live but busy elsewhere: the barrier never closes.
    let idle = batcher.enter(99);
    let results = dialogs_of(&batcher, 5, 2).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(batcher.report().rounds >= 2);
    assert_eq!(server.batch_submissions().len(), 10);
    drop(idle);
}

/// The OpenAI backend with a provider limit of `max` requests per batch.
struct Small {
    inner: OpenAiBatch,
    max: usize,
    max_bytes: usize,
    /// More requests than this in one submit are refused as the enqueued-token limit.
    max_enqueued: usize,
}

#[async_trait::async_trait]
impl BatchBackend for Small {
    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_requests: self.max,
            max_bytes: self.max_bytes,
            ..self.inner.limits()
        }
    }
    fn line_bytes(&self, item: &BatchItem) -> Result<usize, BatchError> {
        self.inner.line_bytes(item)
    }
    async fn submit(&self, key: &str, items: &[BatchItem]) -> Result<RemoteBatch, BatchError> {
        assert!(
            items.len() <= self.max,
            "{} items in one batch",
            items.len()
        );
        if items.len() > self.max_enqueued {
            return Err(BatchError::TokenLimitExceeded {
                message: "enqueued token limit reached".into(),
            });
        }
        self.inner.submit(key, items).await
    }
    async fn find(&self, key: &str, requests: usize) -> Result<Vec<RemoteBatch>, BatchError> {
        self.inner.find(key, requests).await
    }
    async fn poll(&self, batch: &RemoteBatch) -> Result<BatchStatus, BatchError> {
        self.inner.poll(batch).await
    }
    async fn fetch_results(&self, batch: &RemoteBatch) -> Result<Vec<u8>, BatchError> {
        self.inner.fetch_results(batch).await
    }
    fn parse_results(
        &self,
        raw: &[u8],
        submitted: &[BatchItem],
    ) -> Result<Vec<(String, ItemOutcome)>, BatchError> {
        self.inner.parse_results(raw, submitted)
    }
    async fn cancel(&self, batch: &RemoteBatch) -> Result<(), BatchError> {
        self.inner.cancel(batch).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_goes_without_waiting_for_the_others() {
    let server = server(MockConfig::default()).await;
    let client = OpenAiCompatible::builder(server.openai_base_url())
        .api_key(ApiKey::new("sk-mock"))
        .model("gpt-4o-mini")
        .build()
        .unwrap();
    let backend: Arc<dyn BatchBackend> = Arc::new(Small {
        inner: OpenAiBatch::new(client),
        max: 8,
        max_bytes: 1 << 20,
        max_enqueued: 100,
    });
    let batcher = Batcher::start("r9", "gpt-4o-mini", vec![backend], None, fast(), None);
    let results = dialogs(&batcher).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let report = batcher.report();
    // A round goes as soon as 8 are parked instead of waiting for all 20 (which would
    // make 3 rounds of 3 batches): one batch per round, at least 60 / 8 of them.
    assert!(report.rounds >= 8, "{report:?}");
    assert_eq!(report.batches_submitted, report.rounds);
    assert_eq!(report.batches_submitted, server.batches_created());
    assert_eq!(report.requests_submitted, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_too_large_for_any_batch_fails_alone() {
    let server = server(MockConfig::default()).await;
    let client = OpenAiCompatible::builder(server.openai_base_url())
        .api_key(ApiKey::new("sk-mock"))
        .model("gpt-4o-mini")
        .build()
        .unwrap();
    let backend: Arc<dyn BatchBackend> = Arc::new(Small {
        inner: OpenAiBatch::new(client),
        max: 100,
        max_bytes: 2_000,
        max_enqueued: 100,
    });
    let batcher = Batcher::start("r10", "gpt-4o-mini", vec![backend], None, fast(), None);
    let (small, large) = (batcher.enter(0), batcher.enter(1));
    let model = batcher.model(RequestRole::User);
    let ask = |dialog: u64, text: String| {
        let model = Arc::clone(&model);
        in_dialog(dialog, async move {
            model
                .chat(ChatRequest::new(vec![Message::user(text)]))
                .await
        })
    };
    let (fits, too_big) = tokio::join!(ask(0, "Hi".into()), ask(1, "x".repeat(5_000)));
    drop((small, large));
    assert!(fits.is_ok(), "{fits:?}");
    let error = too_big.unwrap_err();
    assert!(
        matches!(error, ProviderError::BadRequest { status: 400, .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("over the provider's 2000 bytes"),
        "{error}"
    );
    assert_eq!(server.batch_submissions().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_dialog_no_longer_holds_the_round_back() {
    let server = server(MockConfig::default()).await;
    let (backend, sync, model) = clients(&server, Provider::Anthropic);
    // The linger is far longer than the test: only the barrier can close rounds.
    let batcher = Batcher::start("r11", model, vec![backend], Some(sync), fast(), None);
    let guards: Vec<_> = (0..12).map(|d| (d, batcher.enter(d))).collect();
    let model = batcher.model(RequestRole::Assistant);
    let mut tasks = tokio::task::JoinSet::new();
    for (d, live) in guards {
        let model = Arc::clone(&model);
        tasks.spawn(in_dialog(d, async move {
            for turn in 0..=(d % 3) {
                let request = ChatRequest::new(vec![Message::user(format!("Turn {turn}"))]);
                model.chat(request).await.unwrap();
            }
            drop(live);
        }));
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let report = batcher.report();
    assert_eq!(
        (report.rounds, report.requests_submitted),
        (3, 24),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_enqueued_token_limit_is_halved_without_spending_attempts() {
    let server = server(MockConfig::default()).await;
    let client = OpenAiCompatible::builder(server.openai_base_url())
        .api_key(ApiKey::new("sk-mock"))
        .model("gpt-4o-mini")
        .build()
        .unwrap();
    let backend: Arc<dyn BatchBackend> = Arc::new(Small {
        inner: OpenAiBatch::new(client),
        max: 100,
        max_bytes: 1 << 20,
        max_enqueued: 6,
    });
    let settings = BatchSettings {
        max_request_attempts: 1,
        ..fast()
    };
    let batcher = Batcher::start("r12", "gpt-4o-mini", vec![backend], None, settings, None);
    let results = dialogs(&batcher).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let report = batcher.report();
    // Each round of 20 is refused, then 10 + 10, then goes as four batches of 5.
    assert_eq!((report.rounds, report.retried), (3, 0), "{report:?}");
    assert_eq!(report.batches_submitted, 12);
    assert_eq!(server.batches_created(), 12);
    assert!(server.batch_submissions().values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_batch_failing_on_the_token_limit_is_halved_under_new_ids() {
    let config = MockConfig::default().with_batch_token_limit_rate(0.5);
    let server = server(config).await;
    let (backend, _, model) = clients(&server, Provider::OpenAi);
    let settings = BatchSettings {
        max_request_attempts: 10,
        ..fast()
    };
    let batcher = Batcher::start("r13", model, vec![backend], None, settings, None);
    let results = dialogs_of(&batcher, 8, 2).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let report = batcher.report();
    assert!(report.batches_submitted > report.rounds, "{report:?}");
    let submissions = server.batch_submissions();
    assert!(
        submissions.values().all(|&n| n == 1),
        "an id went in two batches: {submissions:?}"
    );
    assert!(
        submissions.keys().any(|id| !id.ends_with("-1")),
        "{submissions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_batches_leave_no_files_at_the_provider_unless_kept() {
    for keep_files in [false, true] {
        let server = server(MockConfig::default()).await;
        let (backend, _, model) = clients(&server, Provider::OpenAi);
        let settings = BatchSettings {
            keep_files,
            ..fast()
        };
        let batcher = Batcher::start("r14", model, vec![backend], None, settings, None);
        let results = dialogs_of(&batcher, 4, 2).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(server.batches_created(), 2);
        // Each batch has an input and an output file.
        let expected = if keep_files { 0 } else { 4 };
        assert_eq!(server.files_deleted(), expected, "keep_files: {keep_files}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_batch_keeps_its_finished_lines_and_asks_again_for_the_rest() {
    // (An expired Gemini job has no results at all: nothing to keep.)
    for provider in [Provider::OpenAi, Provider::Anthropic] {
        // Every batch expires with only the first half of its lines done; a round of
        // one (which would expire with nothing done) goes synchronously.
        let server = server(MockConfig::default().with_batch_expiry_rate(1.0)).await;
        let (backend, sync, model) = clients(&server, provider);
        let settings = BatchSettings {
            min_requests: 2,
            max_request_attempts: 4,
            ..fast()
        };
        let batcher = Batcher::start("r9", model, vec![backend], Some(sync), settings, None);
        let results = dialogs_of(&batcher, 8, 1).await;
        assert!(
            results.iter().all(Result::is_ok),
            "{provider:?}: {results:?}"
        );
        let submissions = server.batch_submissions();
        let twice: Vec<_> = submissions.iter().filter(|(_, n)| **n != 1).collect();
        assert!(twice.is_empty(), "{provider:?}: sent twice: {twice:?}");
        // 8 lines: 4 answered before the first batch expired, kept and never asked
        // again; of the 4 asked again 2 were kept, then 1, and the last went
        // synchronously.
        let keys = per_key(&submissions);
        let mut tries: Vec<u64> = keys.values().copied().collect();
        tries.sort_unstable();
        assert_eq!(tries, [1, 1, 1, 1, 2, 2, 3, 3], "{provider:?}: {keys:?}");
        let report = batcher.report();
        assert_eq!(
            (report.retried, report.sync_requests),
            (7, 1),
            "{provider:?}"
        );
    }
}
