//! Shared runs from the command line: the `--run`/`--join`/`--lease` flags of
//! `generate`, `afterimage status` and `afterimage cancel`.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use afterimage_core::{RunRecord, Storage};
use afterimage_engine::{GenerateOptions, SharedRun};
use afterimage_providers::Throttle;
use afterimage_storage::{
    DEFAULT_SLOT_FAILURES, FleetStatus, PgSlots, StorageSpec, cancel_fleet_run, fleet_status,
};
use anyhow::{Context, anyhow};
use clap::Args;

use crate::Failure;

/// `generate`'s shared-run flags.
#[derive(Debug, Args, Clone)]
pub(crate) struct FleetArgs {
    /// The run's name. With --join, the shared run that every worker started with the
    /// same command works on; without, the id of the new run.
    #[arg(long, value_name = "NAME")]
    pub(crate) run: Option<String>,
    /// Join the shared run --run NAME in the PostgreSQL output (--out postgres://...):
    /// the first worker creates it, every other one takes dialogs from it, and the run
    /// ends with exactly num_dialogs rows whichever workers die.
    #[arg(long, requires = "run")]
    pub(crate) join: bool,
    /// Seconds a worker's claim on a dialog lasts without a heartbeat (shared runs):
    /// how long a dead worker's dialogs wait before another worker takes them.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "AFTERIMAGE_LEASE_SECS",
        default_value_t = 30.0
    )]
    pub(crate) lease: f64,
}

/// Applies the shared-run flags to the options: a run id, or a shared run whose
/// workers split the endpoints' rate limits (`throttles`) between them.
pub(crate) async fn apply(
    args: &FleetArgs,
    output: &StorageSpec,
    throttles: &[Arc<Throttle>],
    options: GenerateOptions,
) -> Result<GenerateOptions, Failure> {
    let Some(name) = &args.run else {
        return Ok(options);
    };
    check_name(name)?;
    if !args.join {
        return Ok(options.run_id(name.clone()));
    }
    let StorageSpec::Postgres(url) = output else {
        return Err(Failure::Usage(anyhow!(
            "--join needs a PostgreSQL output (--out postgres://...), where the workers share the run; {output} is for one process: drop --join, or write to PostgreSQL"
        )));
    };
    if !(0.5..=3600.0).contains(&args.lease) {
        return Err(Failure::Usage(anyhow!(
            "--lease is {}: give between 0.5 and 3600 seconds (30 is a good default)",
            args.lease
        )));
    }
    let slots = PgSlots::connect(
        url,
        name,
        Duration::from_secs_f64(args.lease),
        DEFAULT_SLOT_FAILURES,
    )
    .await
    .with_context(|| format!("joining run {name} in {output}"))
    .map_err(Failure::Usage)?;
    tracing::info!(worker = slots.worker_id(), run = %name, "joining the shared run");
    let throttles = throttles.to_vec();
    let shared = SharedRun::new(Arc::new(slots)).on_share(Arc::new(move |workers| {
        for throttle in &throttles {
            throttle.share_limits(workers);
        }
    }));
    Ok(options.shared(shared))
}

fn check_name(name: &str) -> Result<(), Failure> {
    let fine = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if fine {
        return Ok(());
    }
    Err(Failure::Usage(anyhow!(
        "--run {name:?}: use 1 to 100 letters, digits, '_', '.' or '-' (it prefixes every row id)"
    )))
}

/// `afterimage status`
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Where the run is: FILE.jsonl, sqlite:FILE or postgres://...
    #[arg(value_name = "OUTPUT")]
    pub(crate) output: String,
    /// The run (default: the newest in the output).
    #[arg(long, value_name = "NAME")]
    pub(crate) run: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `afterimage cancel`
#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// Where the shared run is: postgres://...
    #[arg(value_name = "OUTPUT")]
    pub(crate) output: String,
    /// The shared run to stop.
    #[arg(long, value_name = "NAME")]
    pub(crate) run: String,
}

/// Runs `status`: a shared run's fleet from PostgreSQL, else what the run record says.
pub(crate) async fn status(args: StatusArgs) -> Result<(), Failure> {
    let spec = StorageSpec::parse(&args.output);
    if let StorageSpec::Postgres(url) = &spec {
        let fleet = fleet_status(url, args.run.as_deref())
            .await
            .with_context(|| format!("reading the shared runs in {spec}"))
            .map_err(Failure::Run)?;
        if let Some(fleet) = fleet {
            print_fleet(&fleet, args.json);
            return Ok(());
        }
    }
    let storage = spec
        .open_existing()
        .await
        .with_context(|| format!("opening {spec}"))
        .map_err(Failure::Usage)?;
    let record = storage
        .load_run()
        .await
        .with_context(|| format!("reading the run record in {spec}"))
        .map_err(Failure::Run)?;
    let Some(record) = record.filter(|r| args.run.as_ref().is_none_or(|n| *n == r.run_id)) else {
        return Err(Failure::Usage(anyhow!(
            "{spec} holds no run record{}: check the output and the run name",
            args.run
                .as_ref()
                .map(|n| format!(" of run {n}"))
                .unwrap_or_default()
        )));
    };
    print_record(&record, args.json);
    Ok(())
}

/// Runs `cancel`.
pub(crate) async fn cancel(args: CancelArgs) -> Result<(), Failure> {
    let spec = StorageSpec::parse(&args.output);
    let StorageSpec::Postgres(url) = &spec else {
        return Err(Failure::Usage(anyhow!(
            "cancel stops a shared run in PostgreSQL; {spec} is a single process's output: stop that process with Ctrl-C (or SIGTERM)"
        )));
    };
    let found = cancel_fleet_run(url, &args.run)
        .await
        .with_context(|| format!("cancelling run {} in {spec}", args.run))
        .map_err(Failure::Run)?;
    if !found {
        return Err(Failure::Usage(anyhow!(
            "{spec} holds no shared run {}: see the runs with afterimage status {}",
            args.run,
            args.output
        )));
    }
    line(&format!(
        "run {} cancelled: its workers claim no more dialogs and finish those in flight",
        args.run
    ));
    Ok(())
}

fn line(text: &str) {
    // A closed stdout (status | head) is no error worth a panic.
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn print_fleet(fleet: &FleetStatus, json: bool) {
    if json {
        let mut value = serde_json::to_value(fleet).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.insert("rows_per_sec".into(), fleet.rate().into());
            object.insert("eta_secs".into(), fleet.eta_secs().into());
            object.insert("cost".into(), fleet.cost().into());
            object.insert("fenced".into(), fleet.fenced().into());
            object.insert("leases_lost".into(), fleet.leases_lost().into());
        }
        line(&value.to_string());
        return;
    }
    let s = &fleet.slots;
    line(&format!(
        "run {} ({}): {} of {} done, {} in flight, {} pending, {} failed",
        fleet.run_id, fleet.state, s.done, fleet.target, s.leased, s.pending, s.failed
    ));
    let eta = fleet
        .eta_secs()
        .map_or("unknown".to_owned(), |e| format!("{e:.0}s"));
    line(&format!(
        "rate {:.2} rows/s, ETA {eta}, cost {:.4}, leases lost {}, late completions refused {}",
        fleet.rate(),
        fleet.cost(),
        fleet.leases_lost(),
        fleet.fenced()
    ));
    line(
        "worker                                  state     heartbeat  in flight  rows  claimed  fenced  cost",
    );
    for w in &fleet.workers {
        line(&format!(
            "{:<39} {:<9} {:>8.1}s  {:>9}  {:>4}  {:>7}  {:>6}  {:.4}",
            w.worker_id,
            w.state,
            w.last_seen_secs,
            w.in_flight,
            w.rows,
            w.claimed,
            w.fenced,
            w.cost
        ));
    }
}

fn print_record(record: &RunRecord, json: bool) {
    if json {
        let value = serde_json::json!({
            "run_id": record.run_id,
            "status": record.status.as_str(),
            "rows_written": record.rows_written,
            "rows_requested": record.rows_requested,
            "updated_at_ms": record.updated_at_ms,
            "failures": record.failures,
        });
        line(&value.to_string());
        return;
    }
    let requested = record
        .rows_requested
        .map_or("no count".to_owned(), |n| n.to_string());
    line(&format!(
        "run {} ({}): {} of {requested} rows written (as of the record's last save; one process, no fleet)",
        record.run_id,
        record.status.as_str(),
        record.rows_written
    ));
    if let Some(failures) = &record.failures {
        let total: u64 = failures.values().sum();
        line(&format!("failed dialogs: {total}"));
    }
}
