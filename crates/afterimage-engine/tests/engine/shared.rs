//! A shared run's scheduler against an in-memory slot pool that plays the other
//! workers: a failed dialog is offered again with a new attempt, a completion whose
//! slot was taken over is refused without failing the run, and a dialog whose lease
//! another worker took is cancelled at the next heartbeat.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use afterimage_core::testing::ScriptedModel;
use afterimage_core::{
    ChatResponse, Completion, ConversationRow, GeneratedInstructions, InstructionGenerator,
    InstructionRequest, ProviderError, Renewal, RunRecord, Slot, SlotCounts, Slots, StorageError,
    StrategyError, Usage, WorkerReport,
};
use afterimage_engine::{ConversationGenerator, GenerateOptions, SharedRun};
use afterimage_storage::JsonlStorage;

/// Four numbered questions per call.
#[derive(Debug, Default)]
struct Questions {
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl InstructionGenerator for Questions {
    async fn generate(
        &self,
        _request: &InstructionRequest,
    ) -> Result<GeneratedInstructions, StrategyError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(GeneratedInstructions {
            instructions: (0..4)
                .map(|i| format!("How do I fix problem {call}.{i}?"))
                .collect(),
            usage: Usage::new(10, 5),
            requests: 1,
            ..Default::default()
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Pending,
    Mine,
    Done,
}

/// N slots in memory; "other workers" take the slots listed in `steal_on_claim` the
/// moment this worker claims them, and those in `steal_on_renew` at a heartbeat
/// (finishing them at once).
#[derive(Debug, Default)]
pub(crate) struct MemorySlots {
    lease: Duration,
    slots: Mutex<Vec<(State, u32)>>,
    rows: Mutex<Vec<(u64, u32)>>,
    record: Mutex<Option<RunRecord>>,
    steal_on_claim: HashSet<u64>,
    steal_on_renew: Mutex<HashSet<u64>>,
    failures: Mutex<Vec<Slot>>,
}

impl MemorySlots {
    pub(crate) fn new(lease: Duration) -> Self {
        MemorySlots {
            lease,
            ..MemorySlots::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(State, u32)>> {
        self.slots.lock().unwrap()
    }
}

#[async_trait::async_trait]
impl Slots for MemorySlots {
    fn run_id(&self) -> &str {
        "shared"
    }

    fn lease(&self) -> Duration {
        self.lease
    }

    async fn begin_setup(&self) -> Result<Option<RunRecord>, StorageError> {
        Ok(self.record.lock().unwrap().clone())
    }

    async fn create(&self, record: &RunRecord, count: u64) -> Result<(), StorageError> {
        *self.record.lock().unwrap() = Some(record.clone());
        *self.lock() = vec![(State::Pending, 0); count as usize];
        Ok(())
    }

    async fn end_setup(&self) -> Result<(), StorageError> {
        Ok(())
    }

    async fn claim(&self, max: usize) -> Result<Vec<Slot>, StorageError> {
        let mut slots = self.lock();
        let mut claimed = Vec::new();
        for (index, (state, attempt)) in slots.iter_mut().enumerate() {
            if claimed.len() == max {
                break;
            }
            if *state == State::Pending {
                *attempt += 1;
                *state = State::Mine;
                claimed.push(Slot {
                    index: index as u64,
                    attempt: *attempt,
                });
                if self.steal_on_claim.contains(&(index as u64)) {
                    // Another worker took it over and stored it.
                    *attempt += 1;
                    *state = State::Done;
                }
            }
        }
        Ok(claimed)
    }

    async fn complete(
        &self,
        slot: Slot,
        _row: &ConversationRow,
    ) -> Result<Completion, StorageError> {
        let mut slots = self.lock();
        let entry = &mut slots[slot.index as usize];
        if *entry != (State::Mine, slot.attempt) {
            return Ok(Completion::Fenced);
        }
        entry.0 = State::Done;
        self.rows.lock().unwrap().push((slot.index, slot.attempt));
        Ok(Completion::Stored)
    }

    async fn fail(&self, slot: Slot, _cause: &str) -> Result<(), StorageError> {
        self.failures.lock().unwrap().push(slot);
        let mut slots = self.lock();
        let entry = &mut slots[slot.index as usize];
        if *entry == (State::Mine, slot.attempt) {
            entry.0 = State::Pending;
        }
        Ok(())
    }

    async fn release_all(&self) -> Result<u64, StorageError> {
        let mut released = 0;
        for entry in self.lock().iter_mut().filter(|e| e.0 == State::Mine) {
            entry.0 = State::Pending;
            released += 1;
        }
        Ok(released)
    }

    async fn renew(&self, _report: WorkerReport) -> Result<Renewal, StorageError> {
        let steal: Vec<u64> = self.steal_on_renew.lock().unwrap().drain().collect();
        let mut slots = self.lock();
        for index in steal {
            slots[index as usize] = (State::Done, slots[index as usize].1 + 1);
        }
        let held = slots
            .iter()
            .enumerate()
            .filter(|(_, (state, _))| *state == State::Mine)
            .map(|(index, (_, attempt))| Slot {
                index: index as u64,
                attempt: *attempt,
            })
            .collect();
        Ok(Renewal {
            held,
            live_workers: 2,
            ..Renewal::default()
        })
    }

    async fn counts(&self) -> Result<SlotCounts, StorageError> {
        let slots = self.lock();
        let count = |s: State| slots.iter().filter(|e| e.0 == s).count() as u64;
        Ok(SlotCounts {
            pending: count(State::Pending),
            leased: count(State::Mine),
            done: count(State::Done),
            failed: 0,
        })
    }
}

fn generator(model: Arc<ScriptedModel>, dir: &std::path::Path) -> ConversationGenerator {
    ConversationGenerator::builder()
        .respondent_prompt("You are a support agent.")
        .correspondent_prompt("You are a customer.")
        .model(model)
        .instruction_generator(Arc::new(Questions::default()))
        .instruction_checks(false)
        .storage(Arc::new(JsonlStorage::new(dir.join("local.jsonl"))))
        .build()
        .unwrap()
}

#[tokio::test]
async fn failures_are_offered_again_and_taken_over_slots_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    // Every fifth answer is a server error: that dialog fails and its slot comes back.
    let model = Arc::new(ScriptedModel::new("scripted", move |_request| {
        let call = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if call % 5 == 4 {
                return Err(ProviderError::Server {
                    status: 500,
                    message: "overloaded".into(),
                });
            }
            Ok(ChatResponse::text("an answer"))
        }
    }));
    let mut pool = MemorySlots::new(Duration::from_secs(30));
    pool.steal_on_claim = HashSet::from([3]);
    let pool = Arc::new(pool);
    let shared = SharedRun::new(Arc::clone(&pool) as Arc<dyn Slots>);
    let counters = shared.counters();
    let report = generator(model, dir.path())
        .generate(
            GenerateOptions::new()
                .num_dialogs(20)
                .max_turns(1)
                .max_concurrency(4)
                .failure_backoff(Duration::ZERO)
                .shared(shared),
        )
        .await
        .unwrap();
    let rows = pool.rows.lock().unwrap().clone();
    let indices: HashSet<u64> = rows.iter().map(|(i, _)| *i).collect();
    // 19 stored here, slot 3 by the "other worker": all 20 done, none twice.
    assert_eq!(rows.len(), 19, "{rows:?}");
    assert_eq!(indices.len(), 19);
    assert!(!indices.contains(&3));
    assert_eq!(pool.counts().await.unwrap().done, 20);
    assert_eq!(counters.fenced.load(Ordering::SeqCst), 1);
    let failures = pool.failures.lock().unwrap().clone();
    assert!(!failures.is_empty(), "no dialog failed");
    // A failed slot was made again under a later attempt.
    let attempts: HashMap<u64, u32> = rows.into_iter().collect();
    for failed in &failures {
        assert!(attempts[&failed.index] > failed.attempt, "{failed:?}");
    }
    assert_eq!(report.rows_written, 19);
    assert_eq!(report.dialogs_failed, failures.len() as u64);
    assert!(
        report.stop_reason.contains("20 of 20 slots done"),
        "{}",
        report.stop_reason
    );
}

#[tokio::test]
async fn a_dialog_whose_lease_was_taken_over_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    // Slow answers: the dialogs are still running at the first heartbeats.
    let model = Arc::new(ScriptedModel::new("scripted", |_request| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(ChatResponse::text("an answer"))
    }));
    let pool = Arc::new(MemorySlots::new(Duration::from_millis(150)));
    let shared = SharedRun::new(Arc::clone(&pool) as Arc<dyn Slots>);
    let counters = shared.counters();
    // The first heartbeat runs before any claim; steal at the second one.
    let stealer = Arc::clone(&pool);
    let steal = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stealer.steal_on_renew.lock().unwrap().insert(1);
    });
    let report = generator(model, dir.path())
        .generate(
            GenerateOptions::new()
                .num_dialogs(4)
                .max_turns(1)
                .max_concurrency(4)
                .shared(shared),
        )
        .await
        .unwrap();
    steal.await.unwrap();
    let rows = pool.rows.lock().unwrap().clone();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|(index, _)| *index != 1));
    assert_eq!(counters.leases_lost.load(Ordering::SeqCst), 1);
    assert_eq!(report.dialogs_failed, 0);
    assert_eq!(pool.counts().await.unwrap().done, 4);
}
