//! Filtering, shuffling, splitting and writing rows in the export formats.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use afterimage_core::{ConversationRow, Role};
use serde::Serialize;

use crate::DatasetError;
use crate::format::{ExportFormat, FormatOptions, SkipReason, convert};

/// Which rows to export.
#[derive(Debug, Clone, Default)]
pub struct RowFilter {
    /// Keep rows whose `final_score` is at least this (unscored rows are dropped).
    pub min_score: Option<f64>,
    /// Keep rows whose persona contains this text (case-insensitive).
    pub persona: Option<String>,
    /// Keep rows with at most this many exchanges.
    pub max_turns: Option<u32>,
    /// Keep only rows with tool calls.
    pub with_tools: bool,
}

impl RowFilter {
    /// Whether `row` passes every filter.
    pub fn accepts(&self, row: &ConversationRow) -> bool {
        if let Some(min) = self.min_score
            && !row.final_score.is_some_and(|s| s >= min)
        {
            return false;
        }
        if let Some(wanted) = &self.persona {
            let wanted = wanted.to_lowercase();
            let matches = [row.metadata.persona_name.as_deref(), row.persona.as_deref()]
                .into_iter()
                .flatten()
                .any(|p| p.to_lowercase().contains(&wanted));
            if !matches {
                return false;
            }
        }
        if let Some(max) = self.max_turns
            && turns(row) > max
        {
            return false;
        }
        !self.with_tools || has_tool_calls(row)
    }
}

/// The exchanges in a row: the generator's count, or the user messages for rows
/// from elsewhere.
pub fn turns(row: &ConversationRow) -> u32 {
    row.metadata
        .generation
        .as_ref()
        .map(|g| g.turns)
        .unwrap_or_else(|| {
            let users = row
                .conversations
                .iter()
                .filter(|m| m.role == Role::User)
                .count();
            u32::try_from(users).unwrap_or(u32::MAX)
        })
}

/// Whether any message calls a tool.
pub fn has_tool_calls(row: &ConversationRow) -> bool {
    row.conversations.iter().any(|m| !m.tool_calls.is_empty())
}

/// Everything `export` needs to know.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The formats to write (at least one).
    pub formats: Vec<ExportFormat>,
    /// Per-format choices (system prompt, Alpaca turn splitting).
    pub format: FormatOptions,
    /// Which rows to keep.
    pub filter: RowFilter,
    /// Shuffle the rows (with `seed`) before writing and splitting.
    pub shuffle: bool,
    /// The shuffle's seed (42, as upstream).
    pub seed: u64,
    /// The share of rows for a `_val` file (0 < split < 1); `None` writes one file.
    pub split: Option<f64>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            formats: Vec::new(),
            format: FormatOptions::default(),
            filter: RowFilter::default(),
            shuffle: true,
            seed: 42,
            split: None,
        }
    }
}

/// What `export` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// Rows read.
    pub rows_read: u64,
    /// Rows the filters dropped.
    pub rows_filtered_out: u64,
    /// Rows in the training part (all kept rows without a split).
    pub rows_train: u64,
    /// Rows in the validation part.
    pub rows_val: u64,
    /// One entry per format.
    pub formats: Vec<FormatReport>,
}

/// What one format wrote.
#[derive(Debug, Clone, Serialize)]
pub struct FormatReport {
    /// The format's name.
    pub format: String,
    /// The files, with their record counts.
    pub files: Vec<WrittenFile>,
    /// Records written (more than rows for Alpaca with `split_turns`).
    pub records: u64,
    /// Rows left out, by reason.
    pub skipped: BTreeMap<SkipReason, u64>,
}

/// One written file.
#[derive(Debug, Clone, Serialize)]
pub struct WrittenFile {
    /// Where.
    pub path: PathBuf,
    /// Records in it.
    pub records: u64,
}

/// Writes `rows` to `out_dir` as `<stem>_<format>.jsonl` per format (or `_train` and
/// `_val` files with a split). The rows are filtered, shuffled and split once, so
/// every format holds the same dialogs in the same part.
pub fn export(
    rows: &[ConversationRow],
    out_dir: &Path,
    stem: &str,
    options: &ExportOptions,
) -> Result<ExportReport, DatasetError> {
    if options.formats.is_empty() {
        return Err(DatasetError::Invalid(
            "no export format given; see --list-formats".into(),
        ));
    }
    if let Some(split) = options.split
        && !(split > 0.0 && split < 1.0)
    {
        return Err(DatasetError::Invalid(format!(
            "split must be between 0 and 1 (exclusive), got {split}"
        )));
    }
    let mut kept: Vec<&ConversationRow> =
        rows.iter().filter(|r| options.filter.accepts(r)).collect();
    let filtered_out = rows.len() - kept.len();
    if options.formats.contains(&ExportFormat::Dpo) && !kept.iter().any(|r| r.final_score.is_some())
    {
        return Err(DatasetError::Invalid(crate::pairs::NO_SCORES.to_owned()));
    }
    if options.shuffle {
        shuffle(&mut kept, options.seed);
    }
    let n_val = val_count(kept.len(), options.split);
    let (train, val) = kept.split_at(kept.len() - n_val);
    std::fs::create_dir_all(out_dir).map_err(|source| DatasetError::Write {
        path: out_dir.display().to_string(),
        source,
    })?;

    let mut formats: Vec<ExportFormat> = Vec::new();
    for format in &options.formats {
        if !formats.contains(format) {
            formats.push(*format);
        }
    }
    let mut reports = Vec::new();
    for format in formats {
        if format == ExportFormat::Dpo {
            let report =
                crate::pairs::write_dpo(&kept, out_dir, stem, &options.format, options.split)?;
            reports.push(report);
            continue;
        }
        let mut report = FormatReport {
            format: format.name().to_owned(),
            files: Vec::new(),
            records: 0,
            skipped: BTreeMap::new(),
        };
        let parts: Vec<(&str, &[&ConversationRow])> = if options.split.is_some() {
            vec![("_train", train), ("_val", val)]
        } else {
            vec![("", train)]
        };
        for (suffix, part) in parts {
            let path = out_dir.join(format!("{stem}_{}{suffix}.jsonl", format.name()));
            let records = write_part(&path, part, format, &options.format, &mut report.skipped)?;
            report.records += records;
            report.files.push(WrittenFile { path, records });
        }
        reports.push(report);
    }
    Ok(ExportReport {
        rows_read: rows.len() as u64,
        rows_filtered_out: filtered_out as u64,
        rows_train: train.len() as u64,
        rows_val: val.len() as u64,
        formats: reports,
    })
}

/// How many of `len` records go to the `_val` part: upstream's rule (at least one),
/// but always leaving one to train on.
pub(crate) fn val_count(len: usize, split: Option<f64>) -> usize {
    match split {
        Some(split) if len >= 2 => ((len as f64 * split) as usize).clamp(1, len - 1),
        _ => 0,
    }
}

/// Writes one file through a temporary name, so a failed export never leaves a
/// half-written file where a training job would pick it up.
fn write_part(
    path: &Path,
    rows: &[&ConversationRow],
    format: ExportFormat,
    options: &FormatOptions,
    skipped: &mut BTreeMap<SkipReason, u64>,
) -> Result<u64, DatasetError> {
    let tmp = path.with_extension("jsonl.tmp");
    let written = write_records(&tmp, rows, format, options, skipped)
        .and_then(|records| std::fs::rename(&tmp, path).map(|()| records));
    written.map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        DatasetError::Write {
            path: path.display().to_string(),
            source,
        }
    })
}

fn write_records(
    tmp: &Path,
    rows: &[&ConversationRow],
    format: ExportFormat,
    options: &FormatOptions,
    skipped: &mut BTreeMap<SkipReason, u64>,
) -> std::io::Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(tmp)?);
    let mut records = 0;
    for row in rows {
        match convert(format, row, options) {
            Ok(lines) => {
                for line in lines {
                    out.write_all(line.as_bytes())?;
                    out.write_all(b"\n")?;
                    records += 1;
                }
            }
            Err(reason) => *skipped.entry(reason).or_default() += 1,
        }
    }
    out.flush()?;
    Ok(records)
}

/// Fisher-Yates with SplitMix64: the same seed gives the same order on every
/// platform and version, which a library RNG does not promise.
pub(crate) fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the output file should go makes the final rename fail.
        std::fs::create_dir(dir.path().join("x_raw.jsonl")).unwrap();
        let row: ConversationRow = serde_json::from_str(
            r#"{"conversations":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}"#,
        )
        .unwrap();
        let options = ExportOptions {
            formats: vec![ExportFormat::Raw],
            ..Default::default()
        };
        let err = export(&[row], dir.path(), "x", &options).unwrap_err();
        assert!(err.is_io(), "{err}");
        assert!(!dir.path().join("x_raw.jsonl.tmp").exists());
    }

    #[test]
    fn shuffle_is_seeded_and_a_permutation() {
        let mut a: Vec<u32> = (0..50).collect();
        let mut b = a.clone();
        shuffle(&mut a, 42);
        shuffle(&mut b, 42);
        assert_eq!(a, b);
        assert_ne!(a, (0..50).collect::<Vec<_>>());
        let mut c = (0..50).collect::<Vec<u32>>();
        shuffle(&mut c, 7);
        assert_ne!(a, c);
        a.sort();
        assert_eq!(a, (0..50).collect::<Vec<_>>());
    }
}
