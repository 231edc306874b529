//! Where afterimage's conversation rows go.
//!
//! [`JsonlStorage`] (the default) appends one JSON object per line, in the Python
//! afterimage row format, and reads rows back so a run can resume. Every backend
//! implements [`afterimage_core::Storage`].
//!
//! ```no_run
//! use afterimage_core::Storage;
//! use afterimage_storage::JsonlStorage;
//!
//! # async fn demo() -> Result<(), afterimage_core::StorageError> {
//! let storage = JsonlStorage::new("out/dialogs.jsonl");
//! let done = storage.existing_ids().await?;
//! println!("{} rows already in {}", done.len(), storage.location());
//! # Ok(())
//! # }
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub use crate::jsonl::{JsonlStorage, read_rows};

mod jsonl;
