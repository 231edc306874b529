//! SQLite storage: one file, WAL mode, rows committed in batched transactions by a
//! dedicated writer thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use afterimage_core::{
    ConversationRow, PersonaDocument, RunRecord, Storage, StorageError, unix_ms,
};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::{ReadReport, RowFields};

/// The schema version this code writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

/// Rows committed in one transaction at most.
const MAX_BATCH: usize = 1024;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    seed TEXT NOT NULL,
    status TEXT NOT NULL,
    rows_requested INTEGER,
    rows_written INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    row TEXT NOT NULL,
    score REAL,
    persona TEXT,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_run_id ON conversations (run_id);
CREATE INDEX IF NOT EXISTS conversations_score ON conversations (score);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
";

/// Stores rows in one SQLite file (tables `runs` and `conversations`; documents with
/// their personas in `documents`, one JSON body per id).
///
/// A dedicated writer thread owns the writing connection. Rows that arrive while it
/// commits are gathered into the next transaction (group commit), and
/// [`write`](Storage::write) returns once the row's transaction has committed: a row
/// reported written survives the process being killed. The file is in WAL mode with
/// `synchronous=NORMAL`, so the last commits may be lost on a power cut, not on a crash.
#[derive(Debug)]
pub struct SqliteStorage {
    path: PathBuf,
    commands: Mutex<mpsc::Sender<Command>>,
    reader: Arc<Mutex<Connection>>,
}

enum Command {
    Write(RowFields, oneshot::Sender<Result<(), String>>),
}

impl SqliteStorage {
    /// Opens (creating or migrating) the database file at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let path = path.into();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StorageError::Io {
                path: parent.display().to_string(),
                source,
            })?;
        }
        let writer = connect(&path)?;
        migrate(&writer, &path)?;
        let reader = connect(&path)?;
        let (sender, receiver) = mpsc::channel();
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("afterimage-sqlite-writer".into())
            .spawn(move || writer_loop(writer, receiver, &thread_path))
            .map_err(|e| StorageError::Backend(format!("cannot start the SQLite writer: {e}")))?;
        Ok(SqliteStorage {
            path,
            commands: Mutex::new(sender),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every row back in insertion order; a malformed row is reported with its
    /// rowid and skipped, or, when `strict`, is the error.
    pub async fn read_report(&self, strict: bool) -> Result<ReadReport, StorageError> {
        let path = self.location();
        self.with_reader(move |conn| {
            let mut report = ReadReport::default();
            let mut statement = conn
                .prepare("SELECT rowid, row FROM conversations ORDER BY rowid")
                .map_err(backend)?;
            let mut rows = statement.query([]).map_err(backend)?;
            while let Some(row) = rows.next().map_err(backend)? {
                let rowid: i64 = row.get(0).map_err(backend)?;
                let text: String = row.get(1).map_err(backend)?;
                match serde_json::from_str(&text) {
                    Ok(parsed) => report.rows.push(parsed),
                    Err(e) => {
                        let problem = StorageError::Corrupt {
                            path: path.clone(),
                            line: rowid as usize,
                            message: e.to_string(),
                        };
                        if strict {
                            return Err(problem);
                        }
                        report.problems.push(problem.to_string());
                    }
                }
            }
            Ok(report)
        })
        .await
    }

    /// Runs `f` on the reading connection on a blocking thread.
    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let conn = reader
                .lock()
                .map_err(|_| StorageError::Backend("SQLite reader lock poisoned".into()))?;
            f(&conn)
        })
        .await
        .map_err(|e| StorageError::Backend(format!("SQLite reader task: {e}")))?
    }
}

impl SqliteStorage {
    /// Hands one row's columns to the writer and waits for its commit.
    async fn send(&self, fields: RowFields) -> Result<(), StorageError> {
        let (ack, done) = oneshot::channel();
        self.commands
            .lock()
            .map_err(|_| StorageError::Backend("SQLite writer lock poisoned".into()))?
            .send(Command::Write(fields, ack))
            .map_err(|_| StorageError::Backend("the SQLite writer has stopped".into()))?;
        done.await
            .map_err(|_| StorageError::Backend("the SQLite writer has stopped".into()))?
            .map_err(|e| StorageError::Backend(format!("{}: {e}", self.path.display())))
    }
}

#[async_trait]
impl Storage for SqliteStorage {
    async fn write(&self, row: &ConversationRow) -> Result<(), StorageError> {
        self.send(RowFields::of(row)?).await
    }

    async fn write_record(&self, record: &serde_json::Value) -> Result<(), StorageError> {
        self.send(RowFields::of_record(record)?).await
    }

    async fn existing_ids(&self) -> Result<Vec<String>, StorageError> {
        self.with_reader(|conn| {
            let mut statement = conn
                .prepare("SELECT id FROM conversations")
                .map_err(backend)?;
            let ids = statement
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)?;
            Ok(ids)
        })
        .await
    }

    async fn context_visits(&self) -> Result<HashMap<String, u64>, StorageError> {
        self.with_reader(|conn| {
            let mut statement = conn
                .prepare(
                    "SELECT ids.value, COUNT(*) FROM conversations, \
                     json_each(json_extract(conversations.row, '$.metadata.context_ids')) AS ids \
                     GROUP BY ids.value",
                )
                .map_err(backend)?;
            let visits = statement
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?.max(0) as u64,
                    ))
                })
                .map_err(backend)?
                .collect::<Result<HashMap<_, _>, _>>()
                .map_err(backend)?;
            Ok(visits)
        })
        .await
    }

    async fn flush(&self) -> Result<(), StorageError> {
        // Every write has committed before it returned; WAL checkpoints are SQLite's.
        Ok(())
    }

    async fn load_run(&self) -> Result<Option<RunRecord>, StorageError> {
        let path = self.location();
        self.with_reader(move |conn| {
            let text: Option<String> = conn
                .query_row(
                    "SELECT record FROM runs ORDER BY updated_at_ms DESC LIMIT 1",
                    [],
                    |row| row.get(0),
                )
                .optional()
                .map_err(backend)?;
            text.map(|text| {
                serde_json::from_str(&text).map_err(|e| StorageError::Corrupt {
                    path,
                    line: 0,
                    message: format!("run record: {e}"),
                })
            })
            .transpose()
        })
        .await
    }

    async fn save_run(&self, run: &RunRecord) -> Result<(), StorageError> {
        let record = serde_json::to_string(run)
            .map_err(|e| StorageError::Backend(format!("run record: {e}")))?;
        let run = run.clone();
        self.with_reader(move |conn| {
            conn.execute(
                "INSERT INTO runs (run_id, seed, status, rows_requested, rows_written,
                                   created_at_ms, updated_at_ms, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (run_id) DO UPDATE SET status = excluded.status,
                     rows_requested = excluded.rows_requested,
                     rows_written = excluded.rows_written,
                     updated_at_ms = excluded.updated_at_ms, record = excluded.record",
                params![
                    run.run_id,
                    run.seed.to_string(),
                    run.status.as_str(),
                    run.rows_requested.map(|n| n as i64),
                    run.rows_written as i64,
                    run.created_at_ms as i64,
                    run.updated_at_ms as i64,
                    record,
                ],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn save_documents(&self, documents: &[PersonaDocument]) -> Result<(), StorageError> {
        let bodies = documents
            .iter()
            .map(|d| {
                serde_json::to_string(d)
                    .map(|body| (d.id.clone(), body))
                    .map_err(|e| StorageError::Backend(format!("document {}: {e}", d.id)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if bodies.is_empty() {
            return Ok(());
        }
        self.with_reader(move |conn| {
            let tx = conn.unchecked_transaction().map_err(backend)?;
            {
                let mut upsert = tx
                    .prepare_cached(
                        "INSERT INTO documents (id, body) VALUES (?1, ?2)
                         ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                    )
                    .map_err(backend)?;
                for (id, body) in &bodies {
                    upsert.execute(params![id, body]).map_err(backend)?;
                }
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn load_documents(&self) -> Result<Vec<PersonaDocument>, StorageError> {
        let path = self.location();
        self.with_reader(move |conn| {
            let mut statement = conn
                .prepare("SELECT rowid, body FROM documents ORDER BY rowid")
                .map_err(backend)?;
            let mut rows = statement.query([]).map_err(backend)?;
            let mut documents = Vec::new();
            while let Some(row) = rows.next().map_err(backend)? {
                let rowid: i64 = row.get(0).map_err(backend)?;
                let body: String = row.get(1).map_err(backend)?;
                documents.push(
                    serde_json::from_str(&body).map_err(|e| StorageError::Corrupt {
                        path: format!("{path} (documents)"),
                        line: rowid as usize,
                        message: e.to_string(),
                    })?,
                );
            }
            Ok(documents)
        })
        .await
    }

    fn location(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }
}

fn backend(e: rusqlite::Error) -> StorageError {
    StorageError::Backend(format!("sqlite: {e}"))
}

fn connect(path: &Path) -> Result<Connection, StorageError> {
    let conn = Connection::open(path).map_err(|e| {
        StorageError::Backend(format!("cannot open SQLite file {}: {e}", path.display()))
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(backend)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(backend)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(backend)?;
    Ok(conn)
}

/// Creates the tables, or checks that the file's schema is one this code knows.
fn migrate(conn: &Connection, path: &Path) -> Result<(), StorageError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(backend)?;
    if version > SCHEMA_VERSION {
        return Err(StorageError::Backend(format!(
            "{} has schema version {version}, newer than this afterimage knows ({SCHEMA_VERSION}); upgrade afterimage",
            path.display()
        )));
    }
    conn.execute_batch(SCHEMA).map_err(backend)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(backend)?;
    Ok(())
}

/// Commits rows in batches: waits for one, takes whatever else is queued, commits
/// them in one transaction and acknowledges each. Ends when the storage is dropped.
fn writer_loop(mut conn: Connection, commands: mpsc::Receiver<Command>, path: &Path) {
    while let Ok(first) = commands.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        let result = commit(&mut conn, &batch).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(path = %path.display(), "SQLite commit failed: {e}");
        }
        for Command::Write(_, ack) in batch {
            let _ = ack.send(result.clone());
        }
    }
}

fn commit(conn: &mut Connection, batch: &[Command]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO conversations (id, run_id, row, score, persona, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let now = unix_ms() as i64;
        for Command::Write(row, _) in batch {
            insert.execute(params![
                row.id,
                row.run_id,
                row.json,
                row.score,
                row.persona,
                now
            ])?;
        }
    }
    tx.commit()
}
