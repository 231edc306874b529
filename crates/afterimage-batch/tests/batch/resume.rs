//! Crash and resume against the project's mock: a batcher stopped while a batch is
//! open, then a new one on the same journal finishing the same dialogs, submits no
//! id twice and answers what was answered before from the journal; a create whose
//! answer was lost is found again; a batch pinned to a key no longer configured
//! fails its requests naming the key; the round gate, outside-dialog calls,
//! `batched`, progress and cancel-on-shutdown.

use std::sync::Arc;
use std::time::Duration;

use afterimage_batch::{
    BatchBackend, BatchError, BatchItem, BatchLimits, BatchPhase, BatchSettings, BatchStatus,
    Batcher, ItemOutcome, Journal, JournalRecord, RemoteBatch, RequestRole, Tail, request_hash,
};
use afterimage_core::{ChatRequest, LiveDialogs, Message, ProviderError, in_dialog};
use afterimage_mock::{MockConfig, MockServer};

use crate::batcher::{Provider, clients, dialogs_of, fast, per_key};

/// A backend that reports `fingerprint` as its key's name.
struct Keyed {
    inner: Arc<dyn BatchBackend>,
    fingerprint: &'static str,
}

#[async_trait::async_trait]
impl BatchBackend for Keyed {
    fn limits(&self) -> BatchLimits {
        self.inner.limits()
    }
    fn key_fingerprint(&self) -> String {
        self.fingerprint.into()
    }
    fn line_bytes(&self, item: &BatchItem) -> Result<usize, BatchError> {
        self.inner.line_bytes(item)
    }
    async fn submit(&self, key: &str, items: &[BatchItem]) -> Result<RemoteBatch, BatchError> {
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
    async fn delete_files(&self, batch: &RemoteBatch) -> Result<(), BatchError> {
        self.inner.delete_files(batch).await
    }
}

/// A mock whose batches take `phase` per phase: long enough to stop mid-batch.
async fn slow_server(phase: Duration) -> MockServer {
    let config = MockConfig::default().with_batch_phase(phase).with_seed(5);
    MockServer::start(config).await.unwrap()
}

fn keyed(
    server: &MockServer,
    provider: Provider,
    fingerprint: &'static str,
) -> Arc<dyn BatchBackend> {
    let (inner, _, _) = clients(server, provider);
    Arc::new(Keyed { inner, fingerprint })
}

/// Starts a batcher on `dir`'s journal of run `run` with `backend`.
fn batcher(
    run: &str,
    dir: &std::path::Path,
    backend: Arc<dyn BatchBackend>,
    settings: BatchSettings,
) -> Batcher {
    let journal = Journal::open(dir, run).unwrap();
    Batcher::start(
        run,
        "gpt-4o-mini",
        vec![backend],
        None,
        settings,
        Some(journal),
    )
}

/// Runs `count` dialogs of `turns` calls in the background and stops the batcher
/// once round `round` has a batch open, as a crash would.
async fn run_until_open(
    batcher: &Batcher,
    count: u64,
    turns: usize,
    round: u64,
) -> Vec<afterimage_batch::OpenBatch> {
    let running = {
        let batcher = batcher.clone();
        tokio::spawn(async move { dialogs_of(&batcher, count, turns).await })
    };
    loop {
        let progress = batcher.progress();
        if progress.round == round && !progress.open.is_empty() {
            break;
        }
        assert!(
            !running.is_finished(),
            "the dialogs ended before round {round} opened"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let open = batcher.progress().open;
    let left = batcher.shutdown(false).await;
    let results = running.await.unwrap();
    assert!(
        results.iter().any(Result::is_err),
        "the stop cut nothing off"
    );
    assert_eq!(left.len(), open.len());
    open
}

/// Request ids the journal holds an ok answer for.
fn answered(journal: &Journal) -> Vec<String> {
    journal
        .records()
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            JournalRecord::Response {
                custom_id,
                outcome: afterimage_batch::StoredOutcome::Ok { .. },
                ..
            } => Some(custom_id),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_with_a_batch_open_resumes_without_submitting_any_id_twice() {
    let server = slow_server(Duration::from_millis(80)).await;
    let dir = tempfile::tempdir().unwrap();
    let first = batcher(
        "r20",
        dir.path(),
        keyed(&server, Provider::OpenAi, "kone"),
        fast(),
    );
    let open = run_until_open(&first, 8, 3, 2).await;
    assert_eq!(open[0].backend, "kone");
    assert_eq!(open[0].requests, 8);
    assert!(open[0].local_key.starts_with("r20-round2-"), "{open:?}");
    drop(first);
    let before = answered(&Journal::open(dir.path(), "r20").unwrap());
    assert_eq!(before.len(), 8, "round 1 was journalled: {before:?}");

    let second = batcher(
        "r20",
        dir.path(),
        keyed(&server, Provider::OpenAi, "kone"),
        fast(),
    );
    let results = dialogs_of(&second, 8, 3).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let report = second.report();
    // Round 1 and the batch open at the stop are answered from the journal.
    assert_eq!((report.replayed, report.adopted), (16, 1), "{report:?}");
    assert_eq!(report.requests_submitted, 8, "{report:?}");
    let submissions = server.batch_submissions();
    assert!(submissions.values().all(|&n| n == 1), "{submissions:?}");
    assert_eq!(submissions.len(), 24, "{submissions:?}");
    let keys = per_key(&submissions);
    assert!(
        keys.values().all(|&n| n == 1),
        "a request was asked twice: {keys:?}"
    );
    // Its rounds continue the run's numbering.
    assert_eq!(second.progress().round, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_never_journalled_is_found_again_and_adopted() {
    let server = slow_server(Duration::from_millis(20)).await;
    let dir = tempfile::tempdir().unwrap();
    let backend = keyed(&server, Provider::OpenAi, "kone");
    let journal = Journal::open(dir.path(), "r21").unwrap();
    // What the batcher writes before a create, then the create, then a crash
    // before `submitted` reached the journal.
    let items: Vec<BatchItem> = (0..4)
        .map(|d| {
            let history = vec![
                Message::system("Be brief."),
                Message::user(format!("Hello from {d}")),
            ];
            let request = ChatRequest::new(history).max_tokens(32);
            BatchItem::new(format!("r21-{d:06}-00a-1"), "gpt-4o-mini", request)
        })
        .collect();
    let requests: Vec<JournalRecord> = items
        .iter()
        .map(|i| JournalRecord::Request {
            custom_id: i.custom_id.clone(),
            key: i.custom_id.trim_end_matches("-1").into(),
            attempt: 1,
            hash: request_hash(&i.model, &i.request),
        })
        .collect();
    journal.append(&requests).unwrap();
    journal
        .record_intent("r21-round1-0", "kone", 1, &items)
        .unwrap();
    backend.submit("r21-round1-0", &items).await.unwrap();
    drop(journal);

    let batcher = batcher("r21", dir.path(), backend, fast());
    let results = dialogs_of(&batcher, 4, 1).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let report = batcher.report();
    assert_eq!(
        (report.adopted, report.replayed, report.batches_submitted),
        (1, 4, 0),
        "{report:?}"
    );
    assert_eq!(server.batches_created(), 1);
    assert!(server.batch_submissions().values().all(|&n| n == 1));
    let summary = Journal::summary(dir.path()).unwrap();
    assert!(
        summary.open.is_empty() && summary.unsubmitted.is_empty(),
        "{summary:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_with_no_batch_behind_it_goes_again_under_new_ids() {
    let server = slow_server(Duration::from_millis(20)).await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), "r22").unwrap();
    let items: Vec<BatchItem> = (0..3)
        .map(|d| crate::item(&format!("r22-{d:06}-00a-1"), "gpt-4o-mini", "Hi"))
        .collect();
    let requests: Vec<JournalRecord> = items
        .iter()
        .map(|i| JournalRecord::Request {
            custom_id: i.custom_id.clone(),
            key: i.custom_id.trim_end_matches("-1").into(),
            attempt: 1,
            hash: String::new(),
        })
        .collect();
    journal.append(&requests).unwrap();
    journal
        .record_intent("r22-round1-0", "kone", 1, &items)
        .unwrap();
    drop(journal);

    let batcher = batcher(
        "r22",
        dir.path(),
        keyed(&server, Provider::OpenAi, "kone"),
        fast(),
    );
    let results = dialogs_of(&batcher, 3, 1).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let submissions = server.batch_submissions();
    let ids: Vec<&String> = submissions.keys().collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| id.ends_with("-2")), "{ids:?}");
    assert_eq!(batcher.report().adopted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_pinned_to_a_key_no_longer_configured_fails_naming_the_key() {
    let server = slow_server(Duration::from_millis(150)).await;
    let dir = tempfile::tempdir().unwrap();
    let first = batcher(
        "r23",
        dir.path(),
        keyed(&server, Provider::Anthropic, "kold"),
        fast(),
    );
    run_until_open(&first, 4, 1, 1).await;
    drop(first);

    let settings = BatchSettings {
        max_request_attempts: 1,
        ..fast()
    };
    let second = batcher(
        "r23",
        dir.path(),
        keyed(&server, Provider::Anthropic, "knew"),
        settings,
    );
    let results = dialogs_of(&second, 4, 1).await;
    for result in &results {
        let error = result.as_ref().unwrap_err();
        assert!(!error.is_retryable());
        let message = error.to_string();
        assert!(
            message.contains("kold") && message.contains("not configured"),
            "{message}"
        );
    }
    assert_eq!(server.batches_created(), 1);
    assert!(server.batch_submissions().values().all(|&n| n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_shutdown_cancels_and_a_resume_asks_again_for_what_it_cut_off() {
    let server = slow_server(Duration::from_millis(150)).await;
    let dir = tempfile::tempdir().unwrap();
    let first = batcher(
        "r24",
        dir.path(),
        keyed(&server, Provider::Gemini, "kone"),
        fast(),
    );
    let running = {
        let first = first.clone();
        tokio::spawn(async move { dialogs_of(&first, 5, 1).await })
    };
    while first.progress().open.is_empty() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let left = first.shutdown(true).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].phase, BatchPhase::Cancelling);
    assert!(running.await.unwrap().iter().all(Result::is_err));
    drop(first);

    let second = batcher(
        "r24",
        dir.path(),
        keyed(&server, Provider::Gemini, "kone"),
        fast(),
    );
    let results = dialogs_of(&second, 5, 1).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(server.batch_submissions().values().all(|&n| n == 1));
    assert_eq!(second.report().adopted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_gate_fails_a_round_it_refuses_without_submitting() {
    let server = slow_server(Duration::from_millis(20)).await;
    let (backend, _, model) = clients(&server, Provider::OpenAi);
    let batcher = Batcher::start("r25", model, vec![backend], None, fast(), None);
    batcher.set_round_gate(Arc::new(|requests| {
        Err(format!(
            "the budget does not cover {requests} more requests"
        ))
    }));
    let results = dialogs_of(&batcher, 3, 1).await;
    for result in &results {
        let error = result.as_ref().unwrap_err();
        assert!(!error.is_retryable());
        assert!(
            error.to_string().contains("does not cover 3 more"),
            "{error}"
        );
    }
    assert_eq!(server.batches_created(), 0);
    // The refusal is the gate's stop, not the requests' failure, and no round.
    let report = batcher.report();
    assert_eq!((report.rounds, report.permanent_failures), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_answers_are_marked_batched_and_calls_outside_a_dialog_go_synchronous() {
    let server = slow_server(Duration::from_millis(20)).await;
    let (backend, sync, model) = clients(&server, Provider::OpenAi);
    let settings = BatchSettings {
        min_requests: 2,
        tail: Tail::Sync,
        ..fast()
    };
    let batcher = Batcher::start("r26", model, vec![backend], Some(sync), settings, None);
    let chat = batcher.model(RequestRole::Assistant);
    let ask = |d: u64| {
        let chat = Arc::clone(&chat);
        in_dialog(d, async move {
            chat.chat(ChatRequest::new(vec![Message::user("Hi")])).await
        })
    };
    let guards = (batcher.enter(0), batcher.enter(1));
    let (a, b) = tokio::join!(ask(0), ask(1));
    assert!(a.unwrap().batched && b.unwrap().batched);
    drop(guards);
    // A round of one is below min_requests: the synchronous tail, full price.
    let guard = batcher.enter(2);
    assert!(!ask(2).await.unwrap().batched);
    drop(guard);
    // Outside any dialog (a run's setup): straight to the synchronous model.
    let setup = chat
        .chat(ChatRequest::new(vec![Message::user("Setup")]))
        .await;
    assert!(!setup.unwrap().batched);
    assert_eq!(server.stats().chat_completions, 2);
    assert_eq!(batcher.report().rounds, 2);

    let (backend, _, model) = clients(&server, Provider::OpenAi);
    let no_sync = Batcher::start("r27", model, vec![backend], None, fast(), None);
    let error = no_sync
        .model(RequestRole::User)
        .chat(ChatRequest::new(vec![Message::user("Setup")]))
        .await
        .unwrap_err();
    assert!(matches!(error, ProviderError::Other { .. }), "{error}");
    assert!(error.to_string().contains("outside any dialog"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_batches_rotate_over_the_keys_and_each_stays_pinned_in_the_journal() {
    let server = slow_server(Duration::from_millis(20)).await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), "r28").unwrap();
    let backends = vec![
        keyed(&server, Provider::OpenAi, "ka"),
        keyed(&server, Provider::OpenAi, "kb"),
    ];
    let batcher = Batcher::start("r28", "gpt-4o-mini", backends, None, fast(), Some(journal));
    let results = dialogs_of(&batcher, 3, 4).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let pinned: Vec<String> = Journal::open(dir.path(), "r28")
        .unwrap()
        .records()
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            JournalRecord::Submitted { backend, .. } => Some(backend),
            _ => None,
        })
        .collect();
    assert_eq!(pinned, ["ka", "kb", "ka", "kb"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_candidates_for_an_intent_adopt_none_and_say_possible_duplicate() {
    let server = slow_server(Duration::from_millis(20)).await;
    let dir = tempfile::tempdir().unwrap();
    let backend = keyed(&server, Provider::Anthropic, "kone");
    let journal = Journal::open(dir.path(), "r29").unwrap();
    let items: Vec<BatchItem> = (0..2)
        .map(|d| crate::item(&format!("r29-{d:06}-00a-1"), "claude-sonnet-4-5", "Hi"))
        .collect();
    journal
        .record_intent("r29-round1-0", "kone", 1, &items)
        .unwrap();
    // Anthropic keeps no tag: two batches of the intent's size are both candidates.
    backend.submit("r29-round1-0", &items).await.unwrap();
    backend.submit("r29-round1-0", &items).await.unwrap();
    drop(journal);

    let batcher = batcher("r29", dir.path(), backend, fast());
    let results = dialogs_of(&batcher, 2, 1).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(batcher.report().adopted, 0);
    let reasons: Vec<String> = Journal::open(dir.path(), "r29")
        .unwrap()
        .records()
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            JournalRecord::Abandoned { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0].starts_with("possible duplicate batch: msgbatch_"),
        "{reasons:?}"
    );
    // Submitted again under new ids, never under the ones the candidates hold.
    let submissions = server.batch_submissions();
    assert_eq!(
        submissions.values().filter(|&&n| n == 1).count(),
        2,
        "{submissions:?}"
    );
    assert!(
        submissions.keys().any(|id| id.ends_with("-2")),
        "{submissions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_go_on_while_a_re_attached_batch_is_still_running() {
    let old_server = slow_server(Duration::from_millis(30)).await;
    let new_server = slow_server(Duration::from_millis(10)).await;
    // The mock numbers batch ids per server; a provider's ids are unique. One batch
    // made beforehand keeps the second server's ids apart from the first's.
    let (spare, _, _) = clients(&new_server, Provider::OpenAi);
    let filler = crate::item("filler-1", "gpt-4o-mini", "Hi");
    spare.submit("filler", &[filler]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let old_key = || keyed(&old_server, Provider::OpenAi, "kold");
    let first = batcher("r30", dir.path(), old_key(), fast());
    run_until_open(&first, 3, 1, 1).await;
    drop(first);
    // The batch the stop left open cannot be read for now.
    old_server.stall_batches(afterimage_mock::BatchStall::Poll);

    let journal = Journal::open(dir.path(), "r30").unwrap();
    let backends = vec![keyed(&new_server, Provider::OpenAi, "knew"), old_key()];
    let second = Batcher::start("r30", "gpt-4o-mini", backends, None, fast(), Some(journal));
    // The old dialogs wait on their batch, the new ones go.
    let old = {
        let second = second.clone();
        tokio::spawn(async move { crate::batcher::dialogs_in(&second, 0..3, 1).await })
    };
    let new = crate::batcher::dialogs_in(&second, 3..6, 1);
    let new = tokio::time::timeout(Duration::from_secs(20), new)
        .await
        .expect("the new dialogs waited for the stalled batch");
    assert!(new.iter().all(Result::is_ok), "{new:?}");
    assert!(
        !old.is_finished(),
        "the old dialogs did not wait for their batch"
    );
    assert_eq!(second.progress().open.len(), 1);

    old_server.unstall_batches();
    let old = old.await.unwrap();
    assert!(old.iter().all(Result::is_ok), "{old:?}");
    let report = second.report();
    assert_eq!(
        (report.replayed, report.adopted, report.rounds),
        (3, 1, 1),
        "{report:?}"
    );
    assert_eq!(old_server.batch_submissions().len(), 3);
    assert_eq!(new_server.batch_submissions().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_fatal_outcome_fails_every_later_request_without_another_batch() {
    // Credit for two lines: the first round's other two fail for low credit.
    let config = MockConfig::default()
        .with_batch_phase(Duration::from_millis(20))
        .with_batch_credit(2);
    let server = MockServer::start(config).await.unwrap();
    let (backend, _, model) = clients(&server, Provider::Anthropic);
    let batcher = Batcher::start("r40", model, vec![backend], None, fast(), None);
    let results = dialogs_of(&batcher, 4, 3).await;
    let errors: Vec<&ProviderError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(errors.len(), 10, "{results:?}");
    for error in errors {
        assert!(
            matches!(error, ProviderError::QuotaExhausted { .. }),
            "{error}"
        );
    }
    assert_eq!(server.batches_created(), 1, "no round after the fatal one");
}
