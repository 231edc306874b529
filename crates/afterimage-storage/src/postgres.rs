//! PostgreSQL storage: a real server by URL; rows committed in batched inserts.

use std::collections::HashMap;
use std::sync::Arc;

use afterimage_core::{ConversationRow, PersonaDocument, RunRecord, Storage, StorageError};
use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, NoTls};

use crate::{ReadReport, RowFields};

/// The schema version this code writes (table `afterimage_schema`).
const SCHEMA_VERSION: i32 = 1;

/// Rows inserted in one statement at most.
const MAX_BATCH: usize = 1024;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS afterimage_schema (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id text PRIMARY KEY,
    seed text NOT NULL,
    status text NOT NULL,
    config jsonb NOT NULL DEFAULT 'null',
    correspondent_prompt text NOT NULL DEFAULT '',
    personas jsonb NOT NULL DEFAULT '[]',
    rows_requested bigint,
    rows_written bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    record jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS conversations (
    id text PRIMARY KEY,
    run_id text NOT NULL,
    row jsonb NOT NULL,
    score double precision,
    persona text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS conversations_run_id ON conversations (run_id);
CREATE INDEX IF NOT EXISTS conversations_score ON conversations (score);
CREATE TABLE IF NOT EXISTS documents (
    id text PRIMARY KEY,
    body jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
";

/// Stores rows in a PostgreSQL database (tables `runs` and `conversations`; documents
/// with their personas in `documents`, one `jsonb` body per id).
///
/// The URL is a libpq-style `postgres://user@host:port/db`; an extra `schema=NAME`
/// query parameter puts the tables in that schema (created if missing). A writer task
/// gathers rows that arrive while it commits and inserts them with one statement
/// (one transaction); [`write`](Storage::write) returns once its row has committed.
/// The schema is created, or checked, when the storage connects.
#[derive(Debug)]
pub struct PostgresStorage {
    location: String,
    client: Arc<Client>,
    commands: mpsc::UnboundedSender<(RowFields, oneshot::Sender<Result<(), String>>)>,
}

impl PostgresStorage {
    /// Connects to `url`, creating or checking the schema.
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        let client = Arc::new(connect_client(url).await?);
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(writer_loop(Arc::clone(&client), receiver));
        Ok(PostgresStorage {
            location: redact(url),
            client,
            commands,
        })
    }

    /// Reads every row back in insertion order; a row that is not a valid row is
    /// reported (by id) and skipped, or, when `strict`, is the error.
    pub async fn read_report(&self, strict: bool) -> Result<ReadReport, StorageError> {
        let rows = self
            .client
            .query(
                "SELECT id, row::text FROM conversations ORDER BY created_at, id",
                &[],
            )
            .await
            .map_err(backend)?;
        let mut report = ReadReport::default();
        for (number, row) in rows.iter().enumerate() {
            let id: String = row.get(0);
            let text: String = row.get(1);
            match serde_json::from_str(&text) {
                Ok(parsed) => report.rows.push(parsed),
                Err(e) => {
                    let problem = StorageError::Corrupt {
                        path: format!("{} (row {id})", self.location),
                        line: number + 1,
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
    }
}

impl PostgresStorage {
    /// Hands one row's columns to the writer and waits for its commit.
    async fn send(&self, fields: RowFields) -> Result<(), StorageError> {
        let (ack, done) = oneshot::channel();
        self.commands
            .send((fields, ack))
            .map_err(|_| StorageError::Backend("the PostgreSQL writer has stopped".into()))?;
        done.await
            .map_err(|_| StorageError::Backend("the PostgreSQL writer has stopped".into()))?
            .map_err(|e| StorageError::Backend(format!("{}: {e}", self.location)))
    }
}

#[async_trait]
impl Storage for PostgresStorage {
    async fn write(&self, row: &ConversationRow) -> Result<(), StorageError> {
        self.send(RowFields::of(row)?).await
    }

    async fn write_record(&self, record: &serde_json::Value) -> Result<(), StorageError> {
        self.send(RowFields::of_record(record)?).await
    }

    async fn existing_ids(&self) -> Result<Vec<String>, StorageError> {
        let rows = self
            .client
            .query("SELECT id FROM conversations", &[])
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn context_visits(&self) -> Result<HashMap<String, u64>, StorageError> {
        let rows = self
            .client
            .query(
                "SELECT ctx.value, COUNT(*) FROM conversations, \
                 jsonb_array_elements_text(row->'metadata'->'context_ids') AS ctx(value) \
                 GROUP BY ctx.value",
                &[],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1).max(0) as u64))
            .collect())
    }

    async fn load_run(&self) -> Result<Option<RunRecord>, StorageError> {
        let row = self
            .client
            .query_opt(
                "SELECT record::text FROM runs ORDER BY updated_at DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(backend)?;
        row.map(|row| {
            let text: String = row.get(0);
            serde_json::from_str(&text).map_err(|e| StorageError::Corrupt {
                path: self.location.clone(),
                line: 0,
                message: format!("run record: {e}"),
            })
        })
        .transpose()
    }

    async fn save_run(&self, run: &RunRecord) -> Result<(), StorageError> {
        let record = to_json(run)?;
        let config = to_json(&run.config)?;
        let personas = to_json(&run.personas)?;
        self.client
            .execute(
                "INSERT INTO runs (run_id, seed, status, config, correspondent_prompt, personas,
                                   rows_requested, rows_written, record)
                 VALUES ($1, $2, $3, $4::text::jsonb, $5, $6::text::jsonb, $7, $8, $9::text::jsonb)
                 ON CONFLICT (run_id) DO UPDATE SET status = excluded.status,
                     config = excluded.config, personas = excluded.personas,
                     correspondent_prompt = excluded.correspondent_prompt,
                     rows_requested = excluded.rows_requested,
                     rows_written = excluded.rows_written,
                     updated_at = now(), record = excluded.record",
                &[
                    &run.run_id,
                    &run.seed.to_string(),
                    &run.status.as_str(),
                    &config,
                    &run.correspondent_prompt,
                    &personas,
                    &run.rows_requested.map(|n| n as i64),
                    &(run.rows_written as i64),
                    &record,
                ],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn save_documents(&self, documents: &[PersonaDocument]) -> Result<(), StorageError> {
        if documents.is_empty() {
            return Ok(());
        }
        // PostgreSQL's upsert refuses to touch one id twice in a statement: the last
        // save of a repeated id wins, as in the other backends.
        let mut latest: Vec<&PersonaDocument> = Vec::with_capacity(documents.len());
        for document in documents {
            match latest.iter_mut().find(|d| d.id == document.id) {
                Some(slot) => *slot = document,
                None => latest.push(document),
            }
        }
        let ids: Vec<&str> = latest.iter().map(|d| d.id.as_str()).collect();
        let bodies = latest
            .iter()
            .map(|d| {
                serde_json::to_string(d)
                    .map_err(|e| StorageError::Backend(format!("document {}: {e}", d.id)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // One statement is one transaction: the whole save lands or none of it.
        self.client
            .execute(
                "INSERT INTO documents (id, body)
                 SELECT id, body::jsonb FROM unnest($1::text[], $2::text[]) AS t (id, body)
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_at = now()",
                &[&ids, &bodies],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn load_documents(&self) -> Result<Vec<PersonaDocument>, StorageError> {
        let rows = self
            .client
            .query("SELECT id, body::text FROM documents ORDER BY id", &[])
            .await
            .map_err(backend)?;
        rows.iter()
            .enumerate()
            .map(|(number, row)| {
                let id: String = row.get(0);
                let text: String = row.get(1);
                serde_json::from_str(&text).map_err(|e| StorageError::Corrupt {
                    path: format!("{} (document {id})", self.location),
                    line: number + 1,
                    message: e.to_string(),
                })
            })
            .collect()
    }

    fn location(&self) -> String {
        self.location.clone()
    }
}

/// Connects to `url` (its `schema=NAME` applied) and creates or checks the schema.
pub(crate) async fn connect_client(url: &str) -> Result<Client, StorageError> {
    let (url_without_schema, schema) = split_schema(url);
    let (client, connection) = tokio_postgres::connect(&url_without_schema, NoTls)
        .await
        .map_err(|e| {
            StorageError::Backend(format!(
                "cannot connect to {}: {e}; check that the server runs and that the URL's host, port, user and database are right",
                redact(url)
            ))
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::error!("PostgreSQL connection closed: {e}");
        }
    });
    migrate(&client, schema.as_deref()).await?;
    Ok(client)
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StorageError> {
    serde_json::to_string(value).map_err(|e| StorageError::Backend(format!("run record: {e}")))
}

pub(crate) fn backend(e: tokio_postgres::Error) -> StorageError {
    StorageError::Backend(format!("postgres: {e}"))
}

/// Creates the schema and tables, or checks their version. Processes that start at
/// once (a run and a `stats` reading it) take turns on an advisory lock, because
/// concurrent `CREATE TABLE IF NOT EXISTS` can still collide in PostgreSQL.
async fn migrate(client: &Client, schema: Option<&str>) -> Result<(), StorageError> {
    let namespace = match schema {
        Some(schema) => {
            let quoted = quote_ident(schema);
            format!("CREATE SCHEMA IF NOT EXISTS {quoted}; SET search_path TO {quoted};")
        }
        None => String::new(),
    };
    client
        .batch_execute(&format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock(hashtext('afterimage schema migration'));
             {namespace}
             {SCHEMA}
             INSERT INTO afterimage_schema (version)
                 SELECT {SCHEMA_VERSION} WHERE NOT EXISTS (SELECT 1 FROM afterimage_schema);
             COMMIT;"
        ))
        .await
        .map_err(backend)?;
    let version: Option<i32> = client
        .query_opt("SELECT max(version) FROM afterimage_schema", &[])
        .await
        .map_err(backend)?
        .and_then(|row| row.get(0));
    if let Some(v) = version.filter(|v| *v > SCHEMA_VERSION) {
        return Err(StorageError::Backend(format!(
            "the database has afterimage schema version {v}, newer than this afterimage knows ({SCHEMA_VERSION}); upgrade afterimage"
        )));
    }
    Ok(())
}

type Ack = oneshot::Sender<Result<(), String>>;

/// Inserts rows in batches: waits for one, takes whatever else is queued, inserts them
/// with one statement and acknowledges each. Ends when the storage is dropped.
async fn writer_loop(client: Arc<Client>, mut commands: mpsc::UnboundedReceiver<(RowFields, Ack)>) {
    while let Some(first) = commands.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        let result = insert(&client, &batch)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!("PostgreSQL insert failed: {e}");
        }
        for (_, ack) in batch {
            let _ = ack.send(result.clone());
        }
    }
}

async fn insert(client: &Client, batch: &[(RowFields, Ack)]) -> Result<u64, tokio_postgres::Error> {
    let ids: Vec<&str> = batch.iter().map(|(r, _)| r.id.as_str()).collect();
    let runs: Vec<&str> = batch.iter().map(|(r, _)| r.run_id.as_str()).collect();
    let rows: Vec<&str> = batch.iter().map(|(r, _)| r.json.as_str()).collect();
    let scores: Vec<Option<f64>> = batch.iter().map(|(r, _)| r.score).collect();
    let personas: Vec<Option<&str>> = batch.iter().map(|(r, _)| r.persona.as_deref()).collect();
    // One statement is one transaction: the whole batch commits or none of it.
    client
        .execute(
            "INSERT INTO conversations (id, run_id, row, score, persona)
             SELECT id, run_id, row::jsonb, score, persona
             FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::text[])
                  AS t (id, run_id, row, score, persona)
             ON CONFLICT (id) DO NOTHING",
            &[&ids, &runs, &rows, &scores, &personas],
        )
        .await
}

/// Splits an optional `schema=NAME` query parameter (ours) off a PostgreSQL URL.
fn split_schema(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("schema=") {
            Some(name) if !name.is_empty() => {
                schema = Some(name.to_owned());
                false
            }
            _ => !pair.is_empty(),
        })
        .collect();
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, schema)
}

/// The URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_once('/').map_or((rest, ""), |(a, t)| (a, t));
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_owned(),
    };
    if rest.contains('/') {
        format!("{scheme}://{authority}/{tail}")
    } else {
        format!("{scheme}://{authority}")
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_parameter_and_password_stay_out() {
        assert_eq!(
            split_schema("postgres://u@h/db?schema=s1&application_name=x"),
            (
                "postgres://u@h/db?application_name=x".into(),
                Some("s1".into())
            )
        );
        assert_eq!(
            split_schema("postgres://u@h/db"),
            ("postgres://u@h/db".into(), None)
        );
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
