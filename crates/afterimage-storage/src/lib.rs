//! Where afterimage's conversation rows go, and how a run is resumed from them.
//!
//! Three backends implement [`afterimage_core::Storage`], each keeping the rows and the
//! run's [`RunRecord`](afterimage_core::RunRecord) (run id, seed, correspondent prompt,
//! personas) so a killed run can be resumed exactly:
//!
//! - [`JsonlStorage`] (the default): one JSON object per line, in the Python afterimage
//!   row format; the run record in `<file>.run.json`.
//! - [`SqliteStorage`]: one file, WAL mode, batched transactions.
//! - [`PostgresStorage`]: a server by URL, rows as `jsonb`, batched inserts.
//!
//! Each also keeps the run's documents with their generated personas
//! ([`save_documents`](afterimage_core::Storage::save_documents)): JSONL in
//! `<file>.documents.jsonl` (Python afterimage's documents-file shape), the databases
//! in a `documents` table upserted by id.
//!
//! [`StorageSpec`] parses the CLI's output strings (`FILE.jsonl`, `sqlite:FILE`,
//! `postgres://...`) and [`StorageSpec::open`] gives an [`AnyStorage`] to write to.
//! Reading back is the storage's too: [`StorageSpec::read`] returns every row (a
//! malformed one reported in [`Stored::problems`], or the error when strict), the run
//! record and the saved documents, from whichever backend; a file that does not
//! exist is [`StorageError::NotFound`](afterimage_core::StorageError::NotFound)
//! rather than created empty.
//!
//! ```no_run
//! use afterimage_core::Storage;
//! use afterimage_storage::StorageSpec;
//!
//! # async fn demo() -> Result<(), afterimage_core::StorageError> {
//! let storage = StorageSpec::parse("sqlite:out/dialogs.db").open().await?;
//! let done = storage.existing_ids().await?;
//! println!("{} rows already in {}", done.len(), storage.location());
//!
//! let stored = StorageSpec::parse("sqlite:out/dialogs.db").read(false).await?;
//! let failures = stored.run.and_then(|run| run.failures).unwrap_or_default();
//! println!("{} rows, {} causes of failure", stored.rows.len(), failures.len());
//! # Ok(())
//! # }
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub use crate::{
    any::{AnyStorage, ReadReport, StorageSpec, Stored},
    jsonl::{FlushPolicy, JsonlStorage, read_report, read_rows},
    lease::{
        DEFAULT_SLOT_FAILURES, FleetStatus, PgSlots, WorkerStatus, cancel_fleet_run, fleet_status,
    },
    postgres::PostgresStorage,
    sqlite::SqliteStorage,
};

pub(crate) use crate::any::RowFields;

mod any;
mod jsonl;
mod lease;
mod postgres;
mod sqlite;
