//! JSON Lines storage: one row per line, appended whole.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use afterimage_core::{ConversationRow, PersonaDocument, RunRecord, Storage, StorageError};
use async_trait::async_trait;

use crate::ReadReport;

/// When a [`JsonlStorage`] hands rows to the operating system and forces them to disk.
///
/// A row handed to the OS survives the process being killed (SIGKILL, a panic, Ctrl-C);
/// only `fsync` makes it survive a power cut or kernel crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Hand rows to the OS once this many are buffered (1 = every row at once).
    pub rows: usize,
    /// ... or once the oldest buffered row is this old (checked as rows arrive;
    /// `flush` writes the rest).
    pub interval: Duration,
    /// Also `fsync` the file each time rows are handed over (slower, power-safe).
    pub fsync: bool,
}

impl Default for FlushPolicy {
    /// Every row is written at once, no fsync (the engine's final flush fsyncs).
    fn default() -> Self {
        FlushPolicy {
            rows: 1,
            interval: Duration::ZERO,
            fsync: false,
        }
    }
}

/// Appends rows to a JSON Lines file, one compact JSON object per line.
///
/// Each row is serialised in full and written with one `write_all` (of the row, or of
/// a batch of whole rows under a batching [`FlushPolicy`]) on a file opened in append
/// mode, so concurrent writers in this process never interleave and a crash can at
/// worst leave one unfinished last line. Opening the file repairs that: an
/// unterminated tail is cut off (with a warning) before anything is appended. The run
/// record lives next to the file in `<file>.run.json`, replaced atomically (written to
/// a temporary file, then renamed); no lock files are used. Documents with their
/// personas go to `<file>.documents.jsonl`, one line per save of a document in Python
/// afterimage's documents-file shape; the last line of an id wins.
#[derive(Debug)]
pub struct JsonlStorage {
    path: PathBuf,
    policy: FlushPolicy,
    writer: Mutex<Writer>,
    documents: Mutex<()>,
}

#[derive(Debug, Default)]
struct Writer {
    file: Option<File>,
    buffer: Vec<u8>,
    pending: usize,
    oldest: Option<Instant>,
}

impl JsonlStorage {
    /// Storage appending to `path` (created, with its folder, on first write).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonlStorage {
            path: path.into(),
            policy: FlushPolicy::default(),
            writer: Mutex::new(Writer::default()),
            documents: Mutex::new(()),
        }
    }

    /// Storage writing to `conversations_YYYYmmdd_HHMMSS.jsonl` in the current folder,
    /// the Python library's default name.
    pub fn timestamped() -> Self {
        Self::new(format!("conversations_{}.jsonl", utc_timestamp()))
    }

    /// Sets when rows reach the OS and the disk (default: every row, no fsync).
    pub fn flush_policy(mut self, policy: FlushPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The file rows go to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The run record's file: `<file>.run.json`.
    pub fn run_record_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".run.json");
        PathBuf::from(name)
    }

    /// The documents file: `<file>.documents.jsonl`.
    pub fn documents_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".documents.jsonl");
        PathBuf::from(name)
    }

    /// Reads every row back, in file order; a malformed line is an error naming it.
    pub fn read_all(&self) -> Result<Vec<ConversationRow>, StorageError> {
        read_rows(&self.path)
    }

    /// Reads every row back; malformed lines are reported with their line number and
    /// skipped, or stop the read when `strict`.
    pub fn read_report(&self, strict: bool) -> Result<ReadReport, StorageError> {
        read_report(&self.path, strict)
    }

    /// Appends any serialisable record with an `id` field as one line, under the same
    /// flush policy as conversation rows (rows, and the other shapes
    /// [`Storage::write_record`] takes). Resume reads the ids back with
    /// [`existing_ids`](Storage::existing_ids), whatever the rest of the line holds.
    fn write_serialized<T: serde::Serialize>(
        &self,
        id: &str,
        record: &T,
    ) -> Result<(), StorageError> {
        let mut line = serde_json::to_vec(record).map_err(|e| StorageError::Corrupt {
            path: self.path.display().to_string(),
            line: 0,
            message: format!("row {id} cannot be serialised: {e}"),
        })?;
        line.push(b'\n');
        self.append(&line)
    }

    fn io_error(&self, source: std::io::Error) -> StorageError {
        io_error(&self.path, source)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Writer>, StorageError> {
        self.writer
            .lock()
            .map_err(|_| StorageError::Backend("JSONL writer lock poisoned".into()))
    }

    fn open(&self) -> Result<File, StorageError> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| self.io_error(e))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.io_error(e))?;
        repair_torn_tail(&mut file, &self.path).map_err(|e| self.io_error(e))?;
        Ok(file)
    }

    /// Buffers one whole line and hands the buffer over as the policy says.
    fn append(&self, line: &[u8]) -> Result<(), StorageError> {
        // A row is a few KB going to the page cache: a plain write under a short lock
        // costs microseconds, less than handing it to a blocking thread.
        let mut writer = self.lock()?;
        writer.buffer.extend_from_slice(line);
        writer.pending += 1;
        let oldest = *writer.oldest.get_or_insert_with(Instant::now);
        if writer.pending >= self.policy.rows.max(1) || oldest.elapsed() >= self.policy.interval {
            self.drain(&mut writer, self.policy.fsync)?;
        }
        Ok(())
    }

    /// Hands the buffered rows to the OS in one write (and fsyncs under the policy).
    fn drain(&self, writer: &mut Writer, fsync: bool) -> Result<(), StorageError> {
        if writer.file.is_none() {
            writer.file = Some(self.open()?);
        }
        if let Some(file) = writer.file.as_mut() {
            if !writer.buffer.is_empty() {
                file.write_all(&writer.buffer)
                    .map_err(|e| io_error(&self.path, e))?;
                writer.buffer.clear();
            }
            if fsync {
                file.sync_data().map_err(|e| io_error(&self.path, e))?;
            }
        }
        writer.pending = 0;
        writer.oldest = None;
        Ok(())
    }
}

#[async_trait]
impl Storage for JsonlStorage {
    async fn write(&self, row: &ConversationRow) -> Result<(), StorageError> {
        self.write_serialized(&row.id, row)
    }

    async fn write_record(&self, record: &serde_json::Value) -> Result<(), StorageError> {
        let id = record
            .get("id")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("(no id)");
        self.write_serialized(id, record)
    }

    async fn existing_ids(&self) -> Result<Vec<String>, StorageError> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        // Opening repairs a torn tail first, so resume never counts or keeps half a row.
        {
            let mut writer = self.lock()?;
            if writer.file.is_none() {
                writer.file = Some(self.open()?);
            }
        }
        read_ids(&self.path)
    }

    async fn context_visits(&self) -> Result<HashMap<String, u64>, StorageError> {
        if !self.path.exists() {
            return Ok(HashMap::new());
        }
        read_context_visits(&self.path)
    }

    async fn flush(&self) -> Result<(), StorageError> {
        let mut writer = self.lock()?;
        if writer.file.is_none() && writer.buffer.is_empty() {
            return Ok(());
        }
        self.drain(&mut writer, true)
    }

    async fn load_run(&self) -> Result<Option<RunRecord>, StorageError> {
        let path = self.run_record_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StorageError::Corrupt {
                path: path.display().to_string(),
                line: e.line(),
                message: e.to_string(),
            })
    }

    async fn save_run(&self, run: &RunRecord) -> Result<(), StorageError> {
        let path = self.run_record_path();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
        }
        let text = serde_json::to_vec_pretty(run)
            .map_err(|e| StorageError::Backend(format!("run record: {e}")))?;
        // Write a temporary file and rename it over the record: a crash leaves the old
        // record or the new one, never half of one.
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let result = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(&text)?;
            file.sync_data()?;
            std::fs::rename(&tmp, &path)
        })();
        result.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_error(&path, e)
        })
    }

    async fn save_documents(&self, documents: &[PersonaDocument]) -> Result<(), StorageError> {
        if documents.is_empty() {
            return Ok(());
        }
        let path = self.documents_path();
        let mut lines = Vec::new();
        for document in documents {
            serde_json::to_writer(&mut lines, document).map_err(|e| {
                StorageError::Backend(format!(
                    "document {} cannot be serialised: {e}",
                    document.id
                ))
            })?;
            lines.push(b'\n');
        }
        let _guard = self
            .documents
            .lock()
            .map_err(|_| StorageError::Backend("JSONL documents lock poisoned".into()))?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
        }
        // Saves are rare (one per persona layer of a document), so the file is opened
        // for each; a torn tail left by a crash is cut first, as for rows.
        let result = (|| {
            let mut file = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&path)?;
            repair_torn_tail(&mut file, &path)?;
            file.write_all(&lines)?;
            file.sync_data()
        })();
        result.map_err(|e| io_error(&path, e))
    }

    async fn load_documents(&self) -> Result<Vec<PersonaDocument>, StorageError> {
        let path = self.documents_path();
        let _guard = self
            .documents
            .lock()
            .map_err(|_| StorageError::Backend("JSONL documents lock poisoned".into()))?;
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&path, e)),
        };
        read_documents(&text, &path)
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

/// The documents in a documents file, the last line of each id winning, in the order
/// ids first appear. An unfinished last line (a crash mid-save) is ignored; any other
/// malformed line is an error naming it.
fn read_documents(text: &str, path: &Path) -> Result<Vec<PersonaDocument>, StorageError> {
    let mut documents: Vec<PersonaDocument> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let torn = !text.is_empty() && !text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    for (number, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let document: PersonaDocument = match serde_json::from_str(line) {
            Ok(document) => document,
            Err(_) if torn && number + 1 == lines.len() => {
                tracing::warn!(
                    path = %path.display(),
                    "the last documents line was unfinished (an earlier run stopped mid-write); ignoring it"
                );
                break;
            }
            Err(e) => {
                return Err(StorageError::Corrupt {
                    path: path.display().to_string(),
                    line: number + 1,
                    message: e.to_string(),
                });
            }
        };
        match index.get(&document.id) {
            Some(&at) => documents[at] = document,
            None => {
                index.insert(document.id.clone(), documents.len());
                documents.push(document);
            }
        }
    }
    Ok(documents)
}

fn io_error(path: &Path, source: std::io::Error) -> StorageError {
    StorageError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Cuts an unterminated last line (left by a crash mid-write) so the next row starts
/// on a line of its own.
fn repair_torn_tail(file: &mut File, path: &Path) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    // Find the last newline by scanning backwards in blocks.
    let mut end = len;
    let mut keep = 0;
    let mut block = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(pos) = chunk.iter().rposition(|b| *b == b'\n') {
            keep = start + pos as u64 + 1;
            break;
        }
        end = start;
    }
    tracing::warn!(
        path = %path.display(),
        dropped_bytes = len - keep,
        "the last line was unfinished (an earlier run stopped mid-write); removing it"
    );
    file.set_len(keep)
}

/// Reads every row of a JSONL file; a line that is not a row is an error naming it.
pub fn read_rows(path: &Path) -> Result<Vec<ConversationRow>, StorageError> {
    read_report(path, true).map(|report| report.rows)
}

/// Reads every row of a JSONL file. A malformed line is reported (file and line
/// number) and skipped, or, when `strict`, is the error.
pub fn read_report(path: &Path, strict: bool) -> Result<ReadReport, StorageError> {
    let mut report = ReadReport::default();
    for_each_line(path, |number, line| {
        match serde_json::from_str(line) {
            Ok(row) => report.rows.push(row),
            Err(e) => {
                let problem = StorageError::Corrupt {
                    path: path.display().to_string(),
                    line: number,
                    message: e.to_string(),
                };
                if strict {
                    return Err(problem);
                }
                report.problems.push(problem.to_string());
            }
        }
        Ok(())
    })?;
    Ok(report)
}

/// The `id` of every row, parsing only that field (resume scans 100,000s of rows).
fn read_ids(path: &Path) -> Result<Vec<String>, StorageError> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        #[serde(default)]
        id: String,
    }
    let mut ids = Vec::new();
    for_each_line(path, |number, line| {
        let row: IdOnly = serde_json::from_str(line).map_err(|e| StorageError::Corrupt {
            path: path.display().to_string(),
            line: number,
            message: e.to_string(),
        })?;
        if !row.id.is_empty() {
            ids.push(row.id);
        }
        Ok(())
    })?;
    Ok(ids)
}

/// How many rows name each document in `metadata.context_ids`.
fn read_context_visits(path: &Path) -> Result<HashMap<String, u64>, StorageError> {
    #[derive(serde::Deserialize)]
    struct Contexts {
        #[serde(default)]
        metadata: Metadata,
    }
    #[derive(serde::Deserialize, Default)]
    struct Metadata {
        #[serde(default)]
        context_ids: Vec<String>,
    }
    let mut visits = HashMap::new();
    for_each_line(path, |number, line| {
        let row: Contexts = serde_json::from_str(line).map_err(|e| StorageError::Corrupt {
            path: path.display().to_string(),
            line: number,
            message: e.to_string(),
        })?;
        for id in row.metadata.context_ids {
            *visits.entry(id).or_insert(0) += 1;
        }
        Ok(())
    })?;
    Ok(visits)
}

/// Calls `f` with every non-blank line and its 1-based number.
fn for_each_line(
    path: &Path,
    mut f: impl FnMut(usize, &str) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(|e| io_error(path, e))?;
        if n == 0 {
            return Ok(());
        }
        number += 1;
        if !line.trim().is_empty() {
            f(number, &line)?;
        }
    }
}

/// `YYYYmmdd_HHMMSS` in UTC, without a date-time dependency.
fn utc_timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}{month:02}{day:02}_{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
