//! Dialog slots leased to many workers through PostgreSQL: the coordinator of a run
//! that several processes (on any machines) join.
//!
//! Tables, next to the storage's own in the same schema: `fleet_runs` (one per run:
//! its target, lease and failure budget, and whether it was cancelled), `fleet_slots`
//! (one per dialog index: state, attempt, lease), `fleet_workers` (one per process,
//! for status and rate shares). A claim is one `UPDATE … FROM (SELECT … FOR UPDATE
//! SKIP LOCKED)`; a completion is one statement that marks the slot done under the
//! claim's attempt and inserts the row only if that matched, so a worker whose lease
//! was taken over can never store a second row. Leases are compared with the
//! server's `now()` only, so worker clocks never matter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use afterimage_core::{
    Completion, ConversationRow, Renewal, RunRecord, Slot, SlotCounts, Slots, StorageError,
    WorkerReport,
};
use async_trait::async_trait;
use serde::Serialize;
use tokio_postgres::Client;

use crate::RowFields;
use crate::postgres::{backend, connect_client, redact};

const FLEET_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS fleet_runs (
    run_id text PRIMARY KEY,
    target bigint NOT NULL,
    lease_ms bigint NOT NULL,
    max_failures integer NOT NULL,
    state text NOT NULL DEFAULT 'running',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS fleet_slots (
    run_id text NOT NULL,
    idx bigint NOT NULL,
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'leased', 'done', 'failed')),
    attempt integer NOT NULL DEFAULT 0,
    failures integer NOT NULL DEFAULT 0,
    worker_id text,
    lease_until timestamptz,
    last_error text,
    PRIMARY KEY (run_id, idx)
) WITH (fillfactor = 80);
CREATE INDEX IF NOT EXISTS fleet_slots_open ON fleet_slots (run_id, idx)
    WHERE state IN ('pending', 'leased');
CREATE TABLE IF NOT EXISTS fleet_workers (
    worker_id text PRIMARY KEY,
    run_id text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    state text NOT NULL DEFAULT 'running',
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now(),
    in_flight bigint NOT NULL DEFAULT 0,
    rows_stored bigint NOT NULL DEFAULT 0,
    claimed bigint NOT NULL DEFAULT 0,
    fenced bigint NOT NULL DEFAULT 0,
    leases_lost bigint NOT NULL DEFAULT 0,
    cost double precision NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS fleet_workers_run ON fleet_workers (run_id);
";

const CLAIM: &str = "
WITH c AS MATERIALIZED (
    SELECT idx FROM fleet_slots
     WHERE run_id = $1
       AND (state = 'pending' OR (state = 'leased' AND lease_until < now()))
       AND EXISTS (SELECT 1 FROM fleet_runs r WHERE r.run_id = $1 AND r.state = 'running')
     ORDER BY idx LIMIT $2 FOR UPDATE SKIP LOCKED)
UPDATE fleet_slots s
   SET state = 'leased', attempt = s.attempt + 1, worker_id = $3,
       lease_until = now() + make_interval(secs => $4)
  FROM c WHERE s.run_id = $1 AND s.idx = c.idx
RETURNING s.idx, s.attempt";

// One statement is one transaction: the slot is done and the row stored, or neither.
const COMPLETE: &str = "
WITH done AS (
    UPDATE fleet_slots SET state = 'done', worker_id = NULL, lease_until = NULL
     WHERE run_id = $1 AND idx = $2 AND attempt = $3 AND state = 'leased'
    RETURNING idx)
INSERT INTO conversations (id, run_id, row, score, persona)
SELECT $4, $1, $5::text::jsonb, $6, $7 FROM done";

/// How many attempts of one slot may fail before it is given up (the default).
pub const DEFAULT_SLOT_FAILURES: u32 = 5;

/// A run's slots in PostgreSQL, as one worker process sees them.
///
/// Three connections: claims (and the setup lock), completions, heartbeats, so a
/// heartbeat never waits behind a batch of claims.
#[derive(Debug)]
pub struct PgSlots {
    run_id: String,
    worker_id: String,
    location: String,
    lease: Duration,
    max_failures: u32,
    claims: Client,
    commits: Client,
    beats: Client,
    claimed: AtomicU64,
}

impl PgSlots {
    /// Connects to the run `run_id` at `url` (a `postgres://` URL, `schema=NAME`
    /// allowed) as a new worker with a random id; creates the tables if missing.
    pub async fn connect(
        url: &str,
        run_id: &str,
        lease: Duration,
        max_failures: u32,
    ) -> Result<Self, StorageError> {
        let claims = connect_client(url).await?;
        create_tables(&claims).await?;
        let commits = connect_client(url).await?;
        let beats = connect_client(url).await?;
        Ok(PgSlots {
            run_id: run_id.to_owned(),
            worker_id: new_worker_id(),
            location: redact(url),
            lease,
            max_failures: max_failures.max(1),
            claims,
            commits,
            beats,
            claimed: AtomicU64::new(0),
        })
    }

    /// This worker's id (random per process).
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Where the run lives (the URL without its password).
    pub fn location(&self) -> &str {
        &self.location
    }

    fn lease_secs(&self) -> f64 {
        self.lease.as_secs_f64()
    }
}

/// Creates the fleet tables under a lock (concurrent `CREATE … IF NOT EXISTS` can
/// collide in PostgreSQL).
async fn create_tables(client: &Client) -> Result<(), StorageError> {
    client
        .batch_execute(&format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock(hashtext('afterimage fleet migration'));
             {FLEET_SCHEMA}
             COMMIT;"
        ))
        .await
        .map_err(backend)
}

fn new_worker_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mixed = afterimage_core::fnv1a(format!("{nanos}-{}", std::process::id()).as_bytes());
    format!(
        "{}-{}-{:08x}",
        host_name(),
        std::process::id(),
        mixed as u32
    )
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}

fn setup_key(run_id: &str) -> String {
    format!("afterimage run {run_id}")
}

#[async_trait]
impl Slots for PgSlots {
    fn run_id(&self) -> &str {
        &self.run_id
    }

    fn lease(&self) -> Duration {
        self.lease
    }

    async fn begin_setup(&self) -> Result<Option<RunRecord>, StorageError> {
        self.claims
            .execute(
                "SELECT pg_advisory_lock(hashtext($1))",
                &[&setup_key(&self.run_id)],
            )
            .await
            .map_err(backend)?;
        let row = self
            .claims
            .query_opt(
                "SELECT r.record::text FROM runs r JOIN fleet_runs f USING (run_id)
                  WHERE r.run_id = $1",
                &[&self.run_id],
            )
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let text: String = row.get(0);
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StorageError::Corrupt {
                path: self.location.clone(),
                line: 0,
                message: format!("run record of {}: {e}", self.run_id),
            })
    }

    async fn create(&self, record: &RunRecord, count: u64) -> Result<(), StorageError> {
        let created = self.claims.batch_execute("BEGIN").await.map_err(backend);
        let insert = async {
            created?;
            self.claims
                .execute(
                    "INSERT INTO fleet_runs (run_id, target, lease_ms, max_failures)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (run_id) DO NOTHING",
                    &[
                        &record.run_id,
                        &(count as i64),
                        &(self.lease.as_millis() as i64),
                        &(self.max_failures as i32),
                    ],
                )
                .await
                .map_err(backend)?;
            self.claims
                .execute(
                    "INSERT INTO fleet_slots (run_id, idx)
                     SELECT $1, g FROM generate_series(0::bigint, $2::bigint - 1) AS g
                     ON CONFLICT DO NOTHING",
                    &[&record.run_id, &(count as i64)],
                )
                .await
                .map_err(backend)?;
            self.claims.batch_execute("COMMIT").await.map_err(backend)
        };
        let result = insert.await;
        if result.is_err() {
            let _ = self.claims.batch_execute("ROLLBACK").await;
        }
        self.end_setup().await?;
        result
    }

    async fn end_setup(&self) -> Result<(), StorageError> {
        self.claims
            .execute(
                "SELECT pg_advisory_unlock(hashtext($1))",
                &[&setup_key(&self.run_id)],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn claim(&self, max: usize) -> Result<Vec<Slot>, StorageError> {
        let rows = self
            .claims
            .query(
                CLAIM,
                &[
                    &self.run_id,
                    &(max as i64),
                    &self.worker_id,
                    &self.lease_secs(),
                ],
            )
            .await
            .map_err(backend)?;
        self.claimed.fetch_add(rows.len() as u64, Ordering::Relaxed);
        let mut slots: Vec<Slot> = rows
            .iter()
            .map(|row| Slot {
                index: row.get::<_, i64>(0).max(0) as u64,
                attempt: row.get::<_, i32>(1).max(0) as u32,
            })
            .collect();
        slots.sort_by_key(|s| s.index);
        Ok(slots)
    }

    async fn complete(
        &self,
        slot: Slot,
        row: &ConversationRow,
    ) -> Result<Completion, StorageError> {
        let fields = RowFields::of(row)?;
        let stored = self
            .commits
            .execute(
                COMPLETE,
                &[
                    &self.run_id,
                    &(slot.index as i64),
                    &(slot.attempt as i32),
                    &fields.id,
                    &fields.json,
                    &fields.score,
                    &fields.persona,
                ],
            )
            .await
            .map_err(backend)?;
        if stored == 1 {
            return Ok(Completion::Stored);
        }
        self.commits
            .execute(
                "UPDATE fleet_workers SET fenced = fenced + 1 WHERE worker_id = $1",
                &[&self.worker_id],
            )
            .await
            .map_err(backend)?;
        Ok(Completion::Fenced)
    }

    async fn fail(&self, slot: Slot, cause: &str) -> Result<(), StorageError> {
        self.commits
            .execute(
                "UPDATE fleet_slots
                    SET state = CASE WHEN failures + 1 >= $4 THEN 'failed' ELSE 'pending' END,
                        failures = failures + 1, worker_id = NULL, lease_until = NULL,
                        last_error = $5
                  WHERE run_id = $1 AND idx = $2 AND attempt = $3 AND state = 'leased'",
                &[
                    &self.run_id,
                    &(slot.index as i64),
                    &(slot.attempt as i32),
                    &(self.max_failures as i32),
                    &cause,
                ],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn release_all(&self) -> Result<u64, StorageError> {
        let released = self
            .commits
            .execute(
                "UPDATE fleet_slots SET state = 'pending', worker_id = NULL, lease_until = NULL
                  WHERE run_id = $1 AND worker_id = $2 AND state = 'leased'",
                &[&self.run_id, &self.worker_id],
            )
            .await
            .map_err(backend)?;
        self.commits
            .execute(
                "UPDATE fleet_workers SET state = 'stopped', in_flight = 0, last_seen = now()
                  WHERE worker_id = $1",
                &[&self.worker_id],
            )
            .await
            .map_err(backend)?;
        Ok(released)
    }

    async fn renew(&self, report: WorkerReport) -> Result<Renewal, StorageError> {
        let held = self
            .beats
            .query(
                "UPDATE fleet_slots SET lease_until = now() + make_interval(secs => $3)
                  WHERE run_id = $1 AND worker_id = $2 AND state = 'leased'
                 RETURNING idx, attempt",
                &[&self.run_id, &self.worker_id, &self.lease_secs()],
            )
            .await
            .map_err(backend)?;
        self.report_alive(report).await?;
        let fleet = self
            .beats
            .query_one(
                "SELECT coalesce((SELECT state FROM fleet_runs WHERE run_id = $1), 'running'),
                        (SELECT count(*) FROM fleet_workers
                          WHERE run_id = $1 AND last_seen > now() - interval '1 minute'),
                        (SELECT coalesce(sum(cost), 0) FROM fleet_workers
                          WHERE run_id = $1 AND worker_id <> $2)",
                &[&self.run_id, &self.worker_id],
            )
            .await
            .map_err(backend)?;
        Ok(Renewal {
            held: held
                .iter()
                .map(|row| Slot {
                    index: row.get::<_, i64>(0).max(0) as u64,
                    attempt: row.get::<_, i32>(1).max(0) as u32,
                })
                .collect(),
            cancelled: fleet.get::<_, String>(0) != "running",
            live_workers: (fleet.get::<_, i64>(1).max(1)) as u32,
            others_cost: fleet.get(2),
        })
    }

    async fn counts(&self) -> Result<SlotCounts, StorageError> {
        slot_counts(&self.claims, &self.run_id).await
    }

    async fn open(&self) -> Result<u64, StorageError> {
        // The partial index holds only open slots: this stays cheap for huge runs.
        let row = self
            .claims
            .query_one(
                "SELECT count(*) FROM fleet_slots
                  WHERE run_id = $1 AND state IN ('pending', 'leased')",
                &[&self.run_id],
            )
            .await
            .map_err(backend)?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }
}

impl PgSlots {
    async fn report_alive(&self, report: WorkerReport) -> Result<(), StorageError> {
        self.beats
            .execute(
                "INSERT INTO fleet_workers (worker_id, run_id, host, pid, in_flight, rows_stored,
                                            claimed, cost, leases_lost)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (worker_id) DO UPDATE SET last_seen = now(),
                     in_flight = excluded.in_flight, rows_stored = excluded.rows_stored,
                     claimed = excluded.claimed, cost = excluded.cost,
                     leases_lost = excluded.leases_lost",
                &[
                    &self.worker_id,
                    &self.run_id,
                    &host_name(),
                    &(std::process::id() as i32),
                    &(report.in_flight as i64),
                    &(report.rows as i64),
                    &(self.claimed.load(Ordering::Relaxed) as i64),
                    &report.cost,
                    &(report.leases_lost as i64),
                ],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }
}

async fn slot_counts(client: &Client, run_id: &str) -> Result<SlotCounts, StorageError> {
    let rows = client
        .query(
            "SELECT state, count(*) FROM fleet_slots WHERE run_id = $1 GROUP BY state",
            &[&run_id],
        )
        .await
        .map_err(backend)?;
    let mut counts = SlotCounts::default();
    for row in rows {
        let n = row.get::<_, i64>(1).max(0) as u64;
        match row.get::<_, &str>(0) {
            "pending" => counts.pending = n,
            "leased" => counts.leased = n,
            "done" => counts.done = n,
            _ => counts.failed = n,
        }
    }
    Ok(counts)
}

/// One worker of a run, as `afterimage status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    /// The worker's id (host, pid and a random part).
    pub worker_id: String,
    /// `running` or `stopped`.
    pub state: String,
    /// Seconds since its last heartbeat.
    pub last_seen_secs: f64,
    /// Dialogs in flight at its last heartbeat.
    pub in_flight: u64,
    /// Rows it stored.
    pub rows: u64,
    /// Slots it claimed.
    pub claimed: u64,
    /// Its completions refused because its lease had been taken over.
    pub fenced: u64,
    /// Its dialogs cancelled because their lease had been taken over.
    pub leases_lost: u64,
    /// What its requests cost.
    pub cost: f64,
}

/// A shared run as the coordinator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    /// The run's name.
    pub run_id: String,
    /// `running`, `done` (no slot open) or `cancelled`.
    pub state: String,
    /// Rows asked for.
    pub target: u64,
    /// The slots by state.
    pub slots: SlotCounts,
    /// Seconds since the run was created.
    pub age_secs: f64,
    /// Every worker that ever joined.
    pub workers: Vec<WorkerStatus>,
}

impl FleetStatus {
    /// Rows per second since the run started.
    pub fn rate(&self) -> f64 {
        if self.age_secs > 0.0 {
            self.slots.done as f64 / self.age_secs
        } else {
            0.0
        }
    }

    /// Seconds left at the rate so far (`None` before the first row).
    pub fn eta_secs(&self) -> Option<f64> {
        let rate = self.rate();
        (rate > 0.0).then(|| self.slots.open() as f64 / rate)
    }

    /// What all workers reported spending.
    pub fn cost(&self) -> f64 {
        self.workers.iter().map(|w| w.cost).sum()
    }

    /// Dialogs cancelled for a lost lease, over all workers.
    pub fn leases_lost(&self) -> u64 {
        self.workers.iter().map(|w| w.leases_lost).sum()
    }

    /// Completions refused by the fence, over all workers.
    pub fn fenced(&self) -> u64 {
        self.workers.iter().map(|w| w.fenced).sum()
    }
}

/// Reads the shared run `run_id` (the newest shared run when `None`) at `url`;
/// `Ok(None)` when the database holds no shared run of that name.
pub async fn fleet_status(
    url: &str,
    run_id: Option<&str>,
) -> Result<Option<FleetStatus>, StorageError> {
    let client = connect_client(url).await?;
    create_tables(&client).await?;
    let run = client
        .query_opt(
            "SELECT run_id, state, target, extract(epoch FROM now() - created_at)::float8
               FROM fleet_runs WHERE $1::text IS NULL OR run_id = $1
              ORDER BY created_at DESC LIMIT 1",
            &[&run_id],
        )
        .await
        .map_err(backend)?;
    let Some(run) = run else {
        return Ok(None);
    };
    let run_id: String = run.get(0);
    let workers = client
        .query(
            "SELECT worker_id, state, extract(epoch FROM now() - last_seen)::float8, in_flight,
                    rows_stored, claimed, fenced, cost, leases_lost
               FROM fleet_workers WHERE run_id = $1 ORDER BY started_at",
            &[&run_id],
        )
        .await
        .map_err(backend)?
        .iter()
        .map(|row| WorkerStatus {
            worker_id: row.get(0),
            state: row.get(1),
            last_seen_secs: row.get(2),
            in_flight: row.get::<_, i64>(3).max(0) as u64,
            rows: row.get::<_, i64>(4).max(0) as u64,
            claimed: row.get::<_, i64>(5).max(0) as u64,
            fenced: row.get::<_, i64>(6).max(0) as u64,
            cost: row.get(7),
            leases_lost: row.get::<_, i64>(8).max(0) as u64,
        })
        .collect();
    let slots = slot_counts(&client, &run_id).await?;
    let state: String = run.get(1);
    Ok(Some(FleetStatus {
        state: if state == "running" && slots.open() == 0 {
            "done".to_owned()
        } else {
            state
        },
        slots,
        target: run.get::<_, i64>(2).max(0) as u64,
        age_secs: run.get(3),
        run_id,
        workers,
    }))
}

/// Asks the shared run `run_id` at `url` to stop: its workers claim nothing more and
/// finish what they hold. Returns whether such a run exists.
pub async fn cancel_fleet_run(url: &str, run_id: &str) -> Result<bool, StorageError> {
    let client = connect_client(url).await?;
    create_tables(&client).await?;
    let changed = client
        .execute(
            "UPDATE fleet_runs SET state = 'cancelled' WHERE run_id = $1",
            &[&run_id],
        )
        .await
        .map_err(backend)?;
    Ok(changed == 1)
}
