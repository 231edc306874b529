//! JSON Lines storage: one row per line, appended whole.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use afterimage_core::{ConversationRow, Storage, StorageError};
use async_trait::async_trait;

/// Appends rows to a JSON Lines file, one compact JSON object per line.
///
/// Each row is serialised in full before a single `write_all` on a file opened in
/// append mode, so concurrent writers in this process never interleave and a
/// crash can at worst leave one unfinished last line. Opening the file repairs that:
/// an unterminated tail is cut off (with a warning) before anything is appended.
#[derive(Debug)]
pub struct JsonlStorage {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl JsonlStorage {
    /// Storage appending to `path` (created, with its folder, on first write).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonlStorage {
            path: path.into(),
            file: Mutex::new(None),
        }
    }

    /// Storage writing to `conversations_YYYYmmdd_HHMMSS.jsonl` in the current folder,
    /// the Python library's default name.
    pub fn timestamped() -> Self {
        Self::new(format!("conversations_{}.jsonl", utc_timestamp()))
    }

    /// The file rows go to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every row back, in file order.
    pub fn read_all(&self) -> Result<Vec<ConversationRow>, StorageError> {
        read_rows(&self.path)
    }

    fn io_error(&self, source: std::io::Error) -> StorageError {
        StorageError::Io {
            path: self.path.display().to_string(),
            source,
        }
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
}

#[async_trait]
impl Storage for JsonlStorage {
    async fn write(&self, row: &ConversationRow) -> Result<(), StorageError> {
        let mut line = serde_json::to_vec(row).map_err(|e| StorageError::Corrupt {
            path: self.path.display().to_string(),
            line: 0,
            message: format!("row {} cannot be serialised: {e}", row.id),
        })?;
        line.push(b'\n');
        // A row is a few KB going to the page cache: a plain write under a short lock
        // costs microseconds, less than handing it to a blocking thread.
        let mut guard = self
            .file
            .lock()
            .map_err(|_| StorageError::Backend("JSONL writer lock poisoned".into()))?;
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        if let Some(file) = guard.as_mut() {
            file.write_all(&line).map_err(|e| self.io_error(e))?;
        }
        Ok(())
    }

    async fn existing_ids(&self) -> Result<Vec<String>, StorageError> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        Ok(read_rows(&self.path)?
            .into_iter()
            .map(|row| row.id)
            .filter(|id| !id.is_empty())
            .collect())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        let guard = self
            .file
            .lock()
            .map_err(|_| StorageError::Backend("JSONL writer lock poisoned".into()))?;
        if let Some(file) = guard.as_ref() {
            file.sync_data().map_err(|e| self.io_error(e))?;
        }
        Ok(())
    }

    fn location(&self) -> String {
        self.path.display().to_string()
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
    let display = || path.display().to_string();
    let file = File::open(path).map_err(|source| StorageError::Io {
        path: display(),
        source,
    })?;
    let mut rows = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| StorageError::Io {
            path: display(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let row = serde_json::from_str(&line).map_err(|e| StorageError::Corrupt {
            path: display(),
            line: index + 1,
            message: e.to_string(),
        })?;
        rows.push(row);
    }
    Ok(rows)
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
