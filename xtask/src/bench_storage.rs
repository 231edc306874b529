//! `cargo xtask bench-storage`: rows per second written by each storage backend
//! (concurrent writers, so the database backends batch), and the time of resume's scan
//! of the stored ids.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use afterimage_core::{ConversationRow, GenerationInfo, Message, RowMetadata, Storage, Usage};
use afterimage_storage::{AnyStorage, FlushPolicy, JsonlStorage, StorageSpec};
use anyhow::{Context, Result};

use crate::Flags;

const USAGE: &str = "\
Usage: cargo xtask bench-storage [options]

Writes ROWS rows (about 1.5 KB each, three turns) to each backend from WRITERS
concurrent tasks, then times resume's scan of the stored ids.

Options:
  --rows N         Rows per backend [default: 100000]
  --writers N      Concurrent writing tasks [default: 64]
  --postgres URL   PostgreSQL server [default: $AFTERIMAGE_TEST_POSTGRES_URL or
                   postgres://postgres@127.0.0.1:5432/test]; a fresh schema, dropped after
  --skip-postgres  Only the file backends";

/// Runs the storage benchmark.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let flags = Flags::parse(
        args,
        &["--rows", "--writers", "--postgres"],
        &["--skip-postgres"],
    )?;
    if flags.help {
        println!("{USAGE}");
        return Ok(());
    }
    let rows: u64 = flags.value("--rows")?.unwrap_or(100_000);
    let writers: u64 = flags.value("--writers")?.unwrap_or(64);
    let postgres = match flags.value::<String>("--postgres")? {
        Some(url) => url,
        None => std::env::var("AFTERIMAGE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
    };
    let postgres = (!flags.switch("--skip-postgres")).then_some(postgres);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(bench_all(rows, writers, postgres.as_deref()))
}

/// Benchmarks each backend in turn, in a scratch folder removed after; PostgreSQL only
/// with a server URL.
async fn bench_all(rows: u64, writers: u64, postgres: Option<&str>) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("afterimage-bench-storage-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!("{rows} rows per backend, {writers} concurrent writers\n");
    println!("{:<34} {:>12} {:>14}", "backend", "rows/s", "resume scan");
    let jsonl = dir.join("rows.jsonl");
    bench(
        "jsonl (a write per row)",
        AnyStorage::Jsonl(JsonlStorage::new(&jsonl)),
        rows,
        writers,
    )
    .await?;
    let batched = dir.join("batched.jsonl");
    bench(
        "jsonl (batched, 256 rows)",
        AnyStorage::Jsonl(JsonlStorage::new(&batched).flush_policy(FlushPolicy {
            rows: 256,
            interval: std::time::Duration::from_millis(200),
            fsync: false,
        })),
        rows,
        writers,
    )
    .await?;
    let sqlite = StorageSpec::Sqlite(dir.join("rows.db")).open().await?;
    bench("sqlite (WAL, group commit)", sqlite, rows, writers).await?;
    if let Some(postgres) = postgres {
        bench_postgres(postgres, rows, writers).await?;
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Benchmarks PostgreSQL in a fresh schema, dropped after even if the run failed.
async fn bench_postgres(postgres: &str, rows: u64, writers: u64) -> Result<()> {
    let schema = format!("afterimage_bench_{}", std::process::id());
    let separator = if postgres.contains('?') { '&' } else { '?' };
    let url = format!("{postgres}{separator}schema={schema}");
    let storage = StorageSpec::Postgres(url)
        .open()
        .await
        .with_context(|| format!("PostgreSQL at {postgres} (or pass --skip-postgres)"))?;
    let result = bench("postgres (batched unnest insert)", storage, rows, writers).await;
    let (client, connection) = tokio_postgres::connect(postgres, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    result
}

async fn bench(name: &str, storage: AnyStorage, rows: u64, writers: u64) -> Result<()> {
    let storage = Arc::new(storage);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..writers {
        let storage = Arc::clone(&storage);
        let next = Arc::clone(&next);
        tasks.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= rows {
                    return anyhow::Ok(());
                }
                storage.write(&row(index)).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    storage.flush().await?;
    let write = started.elapsed();
    let started = Instant::now();
    let ids = storage.existing_ids().await?;
    let scan = started.elapsed();
    anyhow::ensure!(
        ids.len() as u64 == rows,
        "{name}: {} ids, not {rows}",
        ids.len()
    );
    println!(
        "{name:<34} {:>12.0} {:>11.0} ms",
        rows as f64 / write.as_secs_f64(),
        scan.as_secs_f64() * 1000.0
    );
    Ok(())
}

fn row(index: u64) -> ConversationRow {
    let text = "Error 503 means the service is unavailable; retry after five minutes. ".repeat(3);
    ConversationRow {
        conversations: vec![
            Message::user(format!("Why do I get error 503 ({index})?")),
            Message::assistant(text.clone()),
            Message::user("And after that?"),
            Message::assistant(text.clone()),
            Message::user("Thanks, anything else?"),
            Message::assistant(text.clone()),
        ],
        metadata: RowMetadata {
            context_id: Some("docs/errors.txt".into()),
            context_ids: vec!["docs/errors.txt".into()],
            generation: Some(GenerationInfo {
                run_id: "bench".into(),
                index,
                respondent_model: "mock-model".into(),
                correspondent_model: "mock-model".into(),
                turns: 3,
                attempts: vec![afterimage_core::AttemptInfo::default()],
                requests: 6,
                usage: Usage::new(900, 300),
                ..GenerationInfo::default()
            }),
            ..RowMetadata::default()
        },
        instruction_context: text.clone(),
        response_context: Some(text),
        persona: None,
        evaluation: None,
        final_score: Some(0.8),
        id: format!("bench-{index:06}"),
    }
}
