//! A crash at each point a batch can hang (the mock's stall points: upload, create
//! before and after the batch exists, poll, results download) on each protocol,
//! then a resume on the same journal: every dialog finishes, no id is submitted
//! twice, and no request is asked twice where the journal can tell it was asked.
//! A crash after the results were kept on disk reads them from there.

use std::time::Duration;

use afterimage_batch::{Batcher, Journal};
use afterimage_mock::{BatchStall, MockConfig, MockServer};

use crate::batcher::{Provider, clients, dialogs_of, fast, per_key};

const DIALOGS: u64 = 4;
const TURNS: usize = 2;

/// Waits (bounded) until `ready` holds.
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("never saw: {what}");
}

fn start(server: &MockServer, provider: Provider, dir: &std::path::Path) -> Batcher {
    let (backend, _, model) = clients(server, provider);
    let journal = Journal::open(dir, "crash").unwrap();
    Batcher::start("crash", model, vec![backend], None, fast(), Some(journal))
}

/// Runs the dialogs until a batch request hangs at `point`, kills the batcher
/// there, and finishes the run with a new one; returns the second's report.
async fn crash_at(provider: Provider, point: BatchStall) -> afterimage_batch::BatchReport {
    let config = MockConfig::default()
        .with_batch_phase(Duration::from_millis(10))
        .with_seed(3);
    let server = MockServer::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    server.stall_batches(point);
    let first = start(&server, provider, dir.path());
    let running = {
        let first = first.clone();
        tokio::spawn(async move { dialogs_of(&first, DIALOGS, TURNS).await })
    };
    until("a request hanging", || server.batch_stalled() > 0).await;
    first.shutdown(false).await;
    drop(first);
    assert!(running.await.unwrap().iter().any(Result::is_err));
    // The mock lets go of the killed request before anything is served again.
    until("the killed request dropped", || server.batch_stalled() == 0).await;
    server.unstall_batches();

    let second = start(&server, provider, dir.path());
    let results = dialogs_of(&second, DIALOGS, TURNS).await;
    let what = format!("{provider:?} at {point:?}");
    assert!(results.iter().all(Result::is_ok), "{what}: {results:?}");
    let submissions = server.batch_submissions();
    assert!(
        submissions.values().all(|&n| n == 1),
        "{what}: {submissions:?}"
    );
    let keys = per_key(&submissions);
    assert_eq!(keys.len(), (DIALOGS as usize) * TURNS, "{what}: {keys:?}");
    assert!(
        keys.values().all(|&n| n == 1),
        "{what}: asked twice: {keys:?}"
    );
    second.report()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_survives_a_crash_at_every_stall_point() {
    for (point, adopted) in [
        (BatchStall::Upload, 0),
        (BatchStall::CreateBefore, 0),
        (BatchStall::CreateAfter, 1),
        (BatchStall::Poll, 1),
        (BatchStall::Results, 1),
    ] {
        let report = crash_at(Provider::OpenAi, point).await;
        assert_eq!(report.adopted, adopted, "{point:?}: {report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_survives_a_crash_at_every_stall_point() {
    for (point, adopted) in [
        (BatchStall::CreateBefore, 0),
        (BatchStall::CreateAfter, 1),
        (BatchStall::Poll, 1),
        (BatchStall::Results, 1),
    ] {
        let report = crash_at(Provider::Anthropic, point).await;
        assert_eq!(report.adopted, adopted, "{point:?}: {report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_survives_a_crash_at_every_stall_point() {
    for (point, adopted) in [
        (BatchStall::CreateBefore, 0),
        (BatchStall::CreateAfter, 1),
        (BatchStall::Poll, 1),
    ] {
        let report = crash_at(Provider::Gemini, point).await;
        assert_eq!(report.adopted, adopted, "{point:?}: {report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_keeping_the_results_and_applying_them_reads_them_from_disk() {
    let config = MockConfig::default()
        .with_batch_phase(Duration::from_millis(10))
        .with_seed(3);
    let server = MockServer::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = start(&server, Provider::Anthropic, dir.path());
    assert!(
        dialogs_of(&first, DIALOGS, 1)
            .await
            .iter()
            .all(Result::is_ok)
    );
    drop(first);
    // Cut the journal after `terminal`, as a crash there would have left it.
    let path = dir.path().join("journal.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let terminal = text.find(r#"{"type":"terminal""#).unwrap();
    let end = terminal + text[terminal..].find('\n').unwrap() + 1;
    std::fs::write(&path, &text[..end]).unwrap();
    // Polling the batch (or downloading its results) would hang: the kept results
    // are all it takes.
    server.stall_batches(BatchStall::Poll);

    let second = start(&server, Provider::Anthropic, dir.path());
    let results = dialogs_of(&second, DIALOGS, 1);
    let results = tokio::time::timeout(Duration::from_secs(20), results)
        .await
        .expect("the results were downloaded again");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let report = second.report();
    assert_eq!(
        (report.replayed, report.adopted, report.requests_submitted),
        (4, 1, 0)
    );
    assert!(server.batch_submissions().values().all(|&n| n == 1));
}
