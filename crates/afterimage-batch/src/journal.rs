//! The batch journal: an append-only, fsynced record of every request that joined a
//! round, every batch intended, submitted, ended and applied, and every answer, so a
//! run that crashed resumes without submitting any request id twice and without
//! paying again for answers it already has.
//!
//! `dir/journal.jsonl` holds one JSON object per line; the first names the run.
//! `dir/requests/<local_key>.jsonl` keeps the requests of each batch (so a batch
//! found again after a crash can be decoded), `dir/results/<local_key>.jsonl` its raw
//! results, each written and fsynced before the journal line that points to it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::{BatchError, BatchItem};

mod state;
mod stored;

pub(crate) use state::{Intent, JournalState, Submitted};
pub use state::{JournalBatch, JournalIntent, JournalSummary};
use stored::StoredRequest;
pub use stored::{StoredOutcome, StoredResponse, request_hash};

const JOURNAL_FILE: &str = "journal.jsonl";
const RESULTS_DIR: &str = "results";
const REQUESTS_DIR: &str = "requests";

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JournalRecord {
    /// The first line: which run the journal belongs to.
    Run {
        /// The run's id.
        run_id: String,
        /// When the journal was created (Unix milliseconds).
        created_at_ms: u64,
    },
    /// A request joined a round under `custom_id` (`{key}-{attempt}`).
    Request {
        /// The id it is submitted under.
        custom_id: String,
        /// The id without the attempt: the same for every attempt.
        key: String,
        /// The attempt, from 1.
        attempt: u32,
        /// FNV-1a of the serialized request, hex: tells a changed request apart.
        hash: String,
    },
    /// A batch is about to be created (written before the create call).
    Intent {
        /// The local key sent with it (OpenAI metadata, Gemini display name).
        local_key: String,
        /// The fingerprint of the key that creates it.
        backend: String,
        /// The ids it holds.
        custom_ids: Vec<String>,
        /// When the intent was written (Unix milliseconds).
        created_at_ms: u64,
        /// The run's round number it belongs to.
        #[serde(default)]
        round: u64,
    },
    /// The provider created the batch.
    Submitted {
        /// The intent's local key.
        local_key: String,
        /// The provider's batch id.
        batch_id: String,
        /// The fingerprint of the key that created it (and alone may read it).
        backend: String,
    },
    /// The batch ended and its raw results are on disk.
    Terminal {
        /// The provider's batch id.
        batch_id: String,
        /// How it ended (`completed`, `failed`, `expired`, `cancelled`).
        phase: String,
        /// The raw results, relative to the journal's directory.
        results: String,
    },
    /// The answer to one request id.
    Response {
        /// The request's id.
        custom_id: String,
        /// The request's hash, as in its `request` record.
        hash: String,
        /// What came back.
        outcome: StoredOutcome,
    },
    /// An intent a resume found no batch for (or several): its ids are never
    /// submitted again; their requests go under new attempts.
    Abandoned {
        /// The intent's local key.
        local_key: String,
        /// Why (no batch found, or several that may be duplicates).
        reason: String,
    },
    /// Every answer of the batch is journalled.
    Applied {
        /// The provider's batch id.
        batch_id: String,
    },
}

/// The journal of one run's batches, opened for appending. Cheap to clone: clones
/// share the file.
///
/// ```no_run
/// use afterimage_batch::{Journal, JournalRecord};
///
/// # fn main() -> Result<(), afterimage_batch::BatchError> {
/// let journal = Journal::open("out/batch".as_ref(), "r3f9c2a1")?;
/// journal.append(&[JournalRecord::Applied { batch_id: "batch_1".into() }])?;
/// let summary = Journal::summary("out/batch".as_ref())?;
/// println!("{} open batches of run {}", summary.open.len(), summary.run_id);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
    run_id: String,
    file: Arc<Mutex<File>>,
}

impl Journal {
    /// Creates `dir` (with `results/` and `requests/`) and its journal for run
    /// `run_id`, or reopens it. A journal of another run is refused
    /// ([`BatchError::OtherRun`]); a last line torn by a crash is cut off.
    pub fn open(dir: &Path, run_id: &str) -> Result<Journal, BatchError> {
        for sub in [
            dir.to_path_buf(),
            dir.join(RESULTS_DIR),
            dir.join(REQUESTS_DIR),
        ] {
            std::fs::create_dir_all(&sub).map_err(|e| io_error(&sub, &e))?;
        }
        let path = dir.join(JOURNAL_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error(&path, &e))?;
        let text = cut_torn_tail(&mut file, &path)?;
        let journal = Journal {
            dir: dir.to_path_buf(),
            run_id: run_id.to_owned(),
            file: Arc::new(Mutex::new(file)),
        };
        match parse_lines(&text, &path)?.first() {
            Some(JournalRecord::Run { run_id: found, .. }) if found != run_id => {
                Err(BatchError::OtherRun {
                    dir: dir.display().to_string(),
                    journal_run: found.clone(),
                    run: run_id.to_owned(),
                })
            }
            Some(_) => Ok(journal),
            None => {
                let created_at_ms = now_ms();
                let run_id = run_id.to_owned();
                journal.append(&[JournalRecord::Run {
                    run_id,
                    created_at_ms,
                }])?;
                Ok(journal)
            }
        }
    }

    /// What the journal in `dir` says, read without changing anything.
    pub fn summary(dir: &Path) -> Result<JournalSummary, BatchError> {
        let path = dir.join(JOURNAL_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BatchError::Journal {
                path: path.display().to_string(),
                message: "no batch journal here: give the output of a run made with batch mode"
                    .into(),
            },
            _ => io_error(&path, &e),
        })?;
        let state = JournalState::from_records(parse_lines(&text, &path)?);
        Ok(state.summary())
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The run it belongs to.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Appends `records`, one line each, and waits until they are on disk
    /// (`sync_data`) before returning: the step they guard may then proceed.
    pub fn append(&self, records: &[JournalRecord]) -> Result<(), BatchError> {
        let mut bytes = Vec::new();
        for record in records {
            let line = serde_json::to_vec(record).map_err(|e| self.error(&e))?;
            bytes.extend(line);
            bytes.push(b'\n');
        }
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(&bytes).map_err(|e| self.error(&e))?;
        file.sync_data().map_err(|e| self.error(&e))
    }

    /// Every record so far, in order (a torn last line left out).
    pub fn records(&self) -> Result<Vec<JournalRecord>, BatchError> {
        let path = self.dir.join(JOURNAL_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, &e))?;
        parse_lines(&text, &path)
    }

    /// The folded state, for the batcher's resume.
    pub(crate) fn state(&self) -> Result<JournalState, BatchError> {
        Ok(JournalState::from_records(self.records()?))
    }

    /// Records that a batch of `items` is about to be created under `local_key` with
    /// the key whose fingerprint is `backend`, in round `round`: first the items to
    /// `requests/<local_key>.jsonl` (so a resume can decode the batch), then the
    /// `intent` record, both on disk before this returns. Call it before the create.
    pub fn record_intent(
        &self,
        local_key: &str,
        backend: &str,
        round: u64,
        items: &[BatchItem],
    ) -> Result<(), BatchError> {
        self.write_requests(local_key, items)?;
        self.append(&[JournalRecord::Intent {
            local_key: local_key.to_owned(),
            backend: backend.to_owned(),
            custom_ids: items.iter().map(|i| i.custom_id.clone()).collect(),
            created_at_ms: now_ms(),
            round,
        }])
    }

    /// Writes and fsyncs `items` to `requests/<local_key>.jsonl`.
    fn write_requests(&self, local_key: &str, items: &[BatchItem]) -> Result<(), BatchError> {
        let mut bytes = Vec::new();
        for item in items {
            let stored = StoredRequest::new(&item.custom_id, &item.model, &item.request);
            bytes.extend(serde_json::to_vec(&stored).map_err(|e| self.error(&e))?);
            bytes.push(b'\n');
        }
        write_synced(&self.requests_path(local_key), &bytes)
    }

    /// The items of the batch created for `local_key`, as written before its create.
    pub(crate) fn read_requests(&self, local_key: &str) -> Result<Vec<BatchItem>, BatchError> {
        let path = self.requests_path(local_key);
        let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, &e))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                serde_json::from_str::<StoredRequest>(line)
                    .map(StoredRequest::into_item)
                    .map_err(|e| io_error(&path, &e))
            })
            .collect()
    }

    /// Writes and fsyncs a batch's raw results; returns their path relative to the
    /// journal's directory, for the `terminal` record.
    pub(crate) fn write_results(&self, local_key: &str, raw: &[u8]) -> Result<String, BatchError> {
        let relative = format!("{RESULTS_DIR}/{}.jsonl", file_name(local_key));
        write_synced(&self.dir.join(&relative), raw)?;
        Ok(relative)
    }

    /// The raw results a `terminal` record points to, if they are still there.
    pub(crate) fn read_results(&self, relative: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join(relative)).ok()
    }

    fn requests_path(&self, local_key: &str) -> PathBuf {
        self.dir
            .join(REQUESTS_DIR)
            .join(format!("{}.jsonl", file_name(local_key)))
    }

    fn error(&self, error: &dyn std::fmt::Display) -> BatchError {
        io_error(&self.dir.join(JOURNAL_FILE), error)
    }
}

/// A local key as a file name: keys are `[A-Za-z0-9-]` already; anything else
/// becomes `_` so no key can name a path outside the directory.
fn file_name(local_key: &str) -> String {
    local_key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), BatchError> {
    let mut file = File::create(path).map_err(|e| io_error(path, &e))?;
    file.write_all(bytes).map_err(|e| io_error(path, &e))?;
    file.sync_data().map_err(|e| io_error(path, &e))
}

/// Reads the whole journal and cuts off a last line without its newline (a write a
/// crash interrupted), so the next record starts on a line of its own.
fn cut_torn_tail(file: &mut File, path: &Path) -> Result<String, BatchError> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(&mut text))
        .map_err(|e| io_error(path, &e))?;
    if text.is_empty() || text.ends_with('\n') {
        return Ok(text);
    }
    let keep = text.rfind('\n').map_or(0, |i| i + 1);
    tracing::warn!(journal = %path.display(), "the journal's last line was torn by a crash; it is dropped");
    file.set_len(keep as u64)
        .and_then(|()| file.sync_data())
        .map_err(|e| io_error(path, &e))?;
    text.truncate(keep);
    Ok(text)
}

/// The records of `text`; a last line that does not parse (torn by a crash) is left
/// out, any other bad line is an error naming it.
fn parse_lines(text: &str, path: &Path) -> Result<Vec<JournalRecord>, BatchError> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut records = Vec::with_capacity(lines.len());
    for (n, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(record) => records.push(record),
            Err(_) if n + 1 == lines.len() => {}
            Err(e) => {
                return Err(BatchError::Journal {
                    path: path.display().to_string(),
                    message: format!(
                        "line {} is not a journal record ({e}); the file was changed by hand or damaged",
                        n + 1
                    ),
                });
            }
        }
    }
    Ok(records)
}

fn io_error(path: &Path, error: &dyn std::fmt::Display) -> BatchError {
    BatchError::Journal {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
