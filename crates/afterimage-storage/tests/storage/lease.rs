//! `PgSlots` statement by statement against the real PostgreSQL: claims never
//! overlap, an expired lease is reclaimed with the next attempt, a stale attempt's
//! completion writes nothing, failures are re-offered until the budget is spent.

use std::collections::HashSet;
use std::time::Duration;

use afterimage_core::{Completion, RunRecord, Slot, Slots, Storage, WorkerReport};
use afterimage_storage::{PgSlots, PostgresStorage, cancel_fleet_run, fleet_status};

use crate::TestDatabase;
use crate::backends::row;

async fn worker(db: &TestDatabase, lease_ms: u64) -> PgSlots {
    PgSlots::connect(&db.url, "fleet", Duration::from_millis(lease_ms), 2)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_exclusive_fenced_and_reclaimed() {
    let db = TestDatabase::new().await;
    let (a, b) = (worker(&db, 400).await, worker(&db, 400).await);
    assert_eq!(a.begin_setup().await.unwrap(), None);
    let record = RunRecord::new("fleet", 7, "you are a user");
    PostgresStorage::connect(&db.url)
        .await
        .unwrap()
        .save_run(&record)
        .await
        .unwrap();
    a.create(&record, 10).await.unwrap();
    // The second worker finds the run the first created.
    assert_eq!(b.begin_setup().await.unwrap().unwrap().run_id, "fleet");
    b.end_setup().await.unwrap();

    // Concurrent claims split the slots.
    let (mine, theirs) = tokio::join!(a.claim(5), b.claim(5));
    let (mine, theirs) = (mine.unwrap(), theirs.unwrap());
    let all: HashSet<u64> = mine.iter().chain(&theirs).map(|s| s.index).collect();
    assert_eq!(all.len(), 10, "{mine:?} {theirs:?}");
    assert!(mine.iter().chain(&theirs).all(|s| s.attempt == 1));
    assert!(a.claim(5).await.unwrap().is_empty());

    // b renews, a does not: a's leases expire and b takes them with attempt 2.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let renewal = b.renew(WorkerReport::default()).await.unwrap();
    assert_eq!(renewal.held.len(), 5);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let taken = b.claim(16).await.unwrap();
    assert_eq!(taken.len(), 5, "{taken:?}");
    assert!(taken.iter().all(|s| s.attempt == 2));
    let renewal = a.renew(WorkerReport::default()).await.unwrap();
    assert!(renewal.held.is_empty(), "a lost every lease: {renewal:?}");
    assert_eq!(renewal.live_workers, 2);

    // a's late completion is refused and writes nothing; b's lands once.
    let stale = mine[0];
    let late = a.complete(stale, &row("fleet", stale.index, None)).await;
    assert_eq!(late.unwrap(), Completion::Fenced);
    let current = Slot {
        index: stale.index,
        attempt: 2,
    };
    let done = b.complete(current, &row("fleet", stale.index, None)).await;
    assert_eq!(done.unwrap(), Completion::Stored);
    let again = b.complete(current, &row("fleet", stale.index, None)).await;
    assert_eq!(again.unwrap(), Completion::Fenced);
    let storage = PostgresStorage::connect(&db.url).await.unwrap();
    assert_eq!(storage.existing_ids().await.unwrap().len(), 1);

    // A failed attempt is re-offered; the second failure spends the budget of 2.
    let failing = theirs[0];
    b.fail(failing, "judge").await.unwrap();
    let retry = b.claim(1).await.unwrap();
    assert_eq!(
        retry,
        vec![Slot {
            index: failing.index,
            attempt: 2
        }]
    );
    b.fail(retry[0], "judge").await.unwrap();
    let counts = b.counts().await.unwrap();
    assert_eq!((counts.done, counts.failed), (1, 1), "{counts:?}");

    // A graceful stop hands the rest back at once; status sees both workers.
    assert_eq!(b.release_all().await.unwrap(), 8);
    assert_eq!(b.counts().await.unwrap().pending, 8);
    let status = fleet_status(&db.url, Some("fleet")).await.unwrap().unwrap();
    assert_eq!(status.workers.len(), 2);
    assert_eq!(status.fenced(), 2);
    assert!(cancel_fleet_run(&db.url, "fleet").await.unwrap());
    assert!(
        a.claim(4).await.unwrap().is_empty(),
        "a cancelled run gives nothing"
    );
    assert!(a.renew(WorkerReport::default()).await.unwrap().cancelled);
    db.drop().await;
}
