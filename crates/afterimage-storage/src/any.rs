//! Choosing a backend from a string, and the backend-agnostic handle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use afterimage_core::{
    ConversationRow, PersonaDocument, RunRecord, Storage, StorageError, split_row_id,
};
use async_trait::async_trait;

use crate::{JsonlStorage, PostgresStorage, SqliteStorage};

/// Which backend and where: parsed from `FILE.jsonl`, `sqlite:FILE` or `postgres://...`.
///
/// [`open`](Self::open) is for writing (it creates what is missing);
/// [`open_existing`](Self::open_existing) and [`read`](Self::read) are for reading a
/// storage back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageSpec {
    /// A JSON Lines file.
    Jsonl(PathBuf),
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://` or `postgresql://`, optional `?schema=NAME`).
    Postgres(String),
}

impl StorageSpec {
    /// `sqlite:FILE` is SQLite, `postgres://...` / `postgresql://...` is PostgreSQL,
    /// anything else is a JSONL path.
    pub fn parse(text: &str) -> StorageSpec {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            StorageSpec::Postgres(text.to_owned())
        } else if let Some(path) = text.strip_prefix("sqlite:") {
            StorageSpec::Sqlite(PathBuf::from(path.strip_prefix("//").unwrap_or(path)))
        } else {
            StorageSpec::Jsonl(PathBuf::from(text))
        }
    }

    /// Opens the backend (connecting and creating the schema for databases).
    pub async fn open(&self) -> Result<AnyStorage, StorageError> {
        Ok(match self {
            StorageSpec::Jsonl(path) => AnyStorage::Jsonl(JsonlStorage::new(path)),
            StorageSpec::Sqlite(path) => AnyStorage::Sqlite(SqliteStorage::open(path)?),
            StorageSpec::Postgres(url) => {
                AnyStorage::Postgres(PostgresStorage::connect(url).await?)
            }
        })
    }

    /// Opens a storage that should already hold rows, to read it: a JSONL or SQLite
    /// file that does not exist is [`StorageError::NotFound`] instead of being created
    /// empty, as [`open`](Self::open) would for a run about to write.
    pub async fn open_existing(&self) -> Result<AnyStorage, StorageError> {
        if let Some(path) = self.file()
            && !path.exists()
        {
            return Err(StorageError::NotFound {
                location: self.to_string(),
            });
        }
        self.open().await
    }

    /// Reads back everything the storage holds: every row in write order, the run
    /// record and the saved documents (see [`AnyStorage::read`]).
    pub async fn read(&self, strict: bool) -> Result<Stored, StorageError> {
        self.open_existing().await?.read(strict).await
    }

    /// The file of a JSONL or SQLite storage (`None` for PostgreSQL).
    pub fn file(&self) -> Option<&Path> {
        match self {
            StorageSpec::Jsonl(path) | StorageSpec::Sqlite(path) => Some(path),
            StorageSpec::Postgres(_) => None,
        }
    }

    /// A short name for files made from the storage (exports, reports): the file
    /// stem for JSONL and SQLite, `dataset` for PostgreSQL.
    pub fn stem(&self) -> String {
        self.file()
            .and_then(Path::file_stem)
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "dataset".to_owned())
    }
}

impl std::fmt::Display for StorageSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageSpec::Jsonl(path) => write!(f, "{}", path.display()),
            StorageSpec::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            // The password never reaches a message or a run record.
            StorageSpec::Postgres(url) => f.write_str(&crate::postgres::redact(url)),
        }
    }
}

/// Any of the built-in backends, for code that picks one at run time.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyStorage {
    /// JSON Lines.
    Jsonl(JsonlStorage),
    /// SQLite.
    Sqlite(SqliteStorage),
    /// PostgreSQL.
    Postgres(PostgresStorage),
}

impl AnyStorage {
    /// Every row back, in write order; malformed rows are reported and skipped, or
    /// stop the read when `strict`.
    pub async fn read_report(&self, strict: bool) -> Result<ReadReport, StorageError> {
        match self {
            AnyStorage::Jsonl(s) => s.read_report(strict),
            AnyStorage::Sqlite(s) => s.read_report(strict).await,
            AnyStorage::Postgres(s) => s.read_report(strict).await,
        }
    }

    /// Reads back everything the storage holds: the rows as
    /// [`read_report`](Self::read_report) does, the run record
    /// ([`load_run`](Storage::load_run)) and the saved documents
    /// ([`load_documents`](Storage::load_documents)). Unless `strict`, a malformed run
    /// record or documents store is reported in [`Stored::problems`] like a malformed
    /// row, and the rest is still read.
    pub async fn read(&self, strict: bool) -> Result<Stored, StorageError> {
        let ReadReport { rows, mut problems } = self.read_report(strict).await?;
        let run = lenient(self.load_run().await, strict, "run record", &mut problems)?.flatten();
        let documents = lenient(
            self.load_documents().await,
            strict,
            "documents",
            &mut problems,
        )?
        .unwrap_or_default();
        Ok(Stored {
            rows,
            problems,
            run,
            documents,
        })
    }

    fn inner(&self) -> &dyn Storage {
        match self {
            AnyStorage::Jsonl(s) => s,
            AnyStorage::Sqlite(s) => s,
            AnyStorage::Postgres(s) => s,
        }
    }
}

#[async_trait]
impl Storage for AnyStorage {
    async fn write(&self, row: &ConversationRow) -> Result<(), StorageError> {
        self.inner().write(row).await
    }

    async fn write_record(&self, record: &serde_json::Value) -> Result<(), StorageError> {
        self.inner().write_record(record).await
    }

    async fn existing_ids(&self) -> Result<Vec<String>, StorageError> {
        self.inner().existing_ids().await
    }

    async fn context_visits(&self) -> Result<HashMap<String, u64>, StorageError> {
        self.inner().context_visits().await
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.inner().flush().await
    }

    async fn load_run(&self) -> Result<Option<RunRecord>, StorageError> {
        self.inner().load_run().await
    }

    async fn save_run(&self, run: &RunRecord) -> Result<(), StorageError> {
        self.inner().save_run(run).await
    }

    async fn save_documents(&self, documents: &[PersonaDocument]) -> Result<(), StorageError> {
        self.inner().save_documents(documents).await
    }

    async fn load_documents(&self) -> Result<Vec<PersonaDocument>, StorageError> {
        self.inner().load_documents().await
    }

    fn location(&self) -> String {
        self.inner().location()
    }
}

/// Rows read back from a storage, and the malformed ones skipped.
#[derive(Debug, Default)]
pub struct ReadReport {
    /// The rows that parsed, in write order.
    pub rows: Vec<ConversationRow>,
    /// One message per malformed row (where it is and what is wrong).
    pub problems: Vec<String>,
}

/// `result`, or, unless `strict`, `None` with the error noted in `problems`.
fn lenient<T>(
    result: Result<T, StorageError>,
    strict: bool,
    what: &str,
    problems: &mut Vec<String>,
) -> Result<Option<T>, StorageError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if !strict => {
            problems.push(format!("{what}: {e}"));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Everything a storage holds, read back by [`StorageSpec::read`].
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Stored {
    /// The rows that parsed, in write order.
    pub rows: Vec<ConversationRow>,
    /// One message per malformed row, run record or documents store that was skipped.
    pub problems: Vec<String>,
    /// The run record (of the latest run in a database), when one was saved.
    pub run: Option<RunRecord>,
    /// The documents saved with their personas (empty for runs without personas).
    pub documents: Vec<PersonaDocument>,
}

/// The columns the database backends store next to the row's JSON.
#[derive(Debug)]
pub(crate) struct RowFields {
    pub(crate) id: String,
    pub(crate) run_id: String,
    pub(crate) json: String,
    pub(crate) score: Option<f64>,
    pub(crate) persona: Option<String>,
}

impl RowFields {
    /// The columns of a record that is not a dialog row (a preference pair): its `id`,
    /// the run in it, `metadata.chosen_score` as the score, `metadata.persona`.
    pub(crate) fn of_record(record: &serde_json::Value) -> Result<RowFields, StorageError> {
        let id = record
            .get("id")
            .and_then(serde_json::Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                StorageError::Backend("a record without an `id` cannot be stored".into())
            })?;
        let metadata = record.get("metadata");
        Ok(RowFields {
            id: id.to_owned(),
            run_id: split_row_id(id)
                .map(|(run, _)| run.to_owned())
                .unwrap_or_default(),
            json: record.to_string(),
            score: metadata
                .and_then(|m| m.get("chosen_score"))
                .and_then(serde_json::Value::as_f64),
            persona: metadata
                .and_then(|m| m.get("persona"))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
        })
    }

    pub(crate) fn of(row: &ConversationRow) -> Result<RowFields, StorageError> {
        let json = serde_json::to_string(row).map_err(|e| {
            StorageError::Backend(format!("row {} cannot be serialised: {e}", row.id))
        })?;
        let run_id = match &row.metadata.generation {
            Some(generation) => generation.run_id.clone(),
            None => split_row_id(&row.id)
                .map(|(run, _)| run.to_owned())
                .unwrap_or_default(),
        };
        Ok(RowFields {
            id: row.id.clone(),
            run_id,
            json,
            score: row.final_score,
            persona: row.persona.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(
            StorageSpec::parse("out.jsonl"),
            StorageSpec::Jsonl("out.jsonl".into())
        );
        assert_eq!(
            StorageSpec::parse("sqlite:a/b.db"),
            StorageSpec::Sqlite("a/b.db".into())
        );
        assert_eq!(
            StorageSpec::parse("sqlite://b.db"),
            StorageSpec::Sqlite("b.db".into())
        );
        assert_eq!(
            StorageSpec::parse("postgres://u@h/db"),
            StorageSpec::Postgres("postgres://u@h/db".into())
        );
        assert_eq!(StorageSpec::parse("sqlite:x.db").to_string(), "sqlite:x.db");
        assert_eq!(StorageSpec::parse("out/a.jsonl").stem(), "a");
        assert_eq!(StorageSpec::parse("sqlite:out/runs.db").stem(), "runs");
        assert_eq!(StorageSpec::parse("postgres://u@h/db").stem(), "dataset");
        assert_eq!(StorageSpec::parse("sqlite:").stem(), "dataset");
        assert_eq!(
            StorageSpec::parse("postgres://u:pw@h/db").to_string(),
            "postgres://u:***@h/db"
        );
    }
}
