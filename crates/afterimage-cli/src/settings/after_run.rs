//! `output.export:` and `analytics:`: what `generate` writes after a successful run.

use std::path::PathBuf;

use afterimage_datasets::{ExportFormat, ExportOptions};
use afterimage_storage::StorageSpec;

use super::SettingsError;
use crate::config::RawConfig;

/// What `generate` writes after a successful run (`output.export`, `analytics`).
#[derive(Debug, Clone, Default)]
pub struct AfterRun {
    /// Export formats and options, when `output.export.formats` names any.
    pub export: Option<AutoExport>,
    /// The HTML report's path, when `analytics.auto_analyze` is on.
    pub analyze: Option<PathBuf>,
}

/// `output.export`, resolved.
#[derive(Debug, Clone)]
pub struct AutoExport {
    /// Formats, filters (none), shuffle and split.
    pub options: ExportOptions,
    /// Where the files go (`None`: the output file's folder).
    pub out_dir: Option<PathBuf>,
}

/// Checks `output.export` and `analytics` before the run, so a typo in a format name
/// fails at once instead of after an hour of generation.
pub(super) fn after_run(raw: &RawConfig, output: &StorageSpec) -> Result<AfterRun, SettingsError> {
    let export = match &raw.output.export {
        Some(section) if !section.formats.is_empty() => {
            let formats = section
                .formats
                .iter()
                .map(|f| f.parse::<ExportFormat>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| SettingsError::new("output.export.formats", e.to_string()))?;
            if let Some(split) = section.split
                && !(split > 0.0 && split < 1.0)
            {
                return Err(SettingsError::new(
                    "output.export.split",
                    format!("must be between 0 and 1 (exclusive), got {split}"),
                ));
            }
            Some(AutoExport {
                options: ExportOptions {
                    formats,
                    shuffle: section.shuffle,
                    seed: section.seed,
                    split: section.split,
                    ..ExportOptions::default()
                },
                // Relative to the working directory, like output.path.
                out_dir: section.output_dir.as_ref().map(PathBuf::from),
            })
        }
        _ => None,
    };
    let analyze = raw.analytics.auto_analyze.then(|| {
        raw.analytics.output_path.as_ref().map_or_else(
            || match output {
                StorageSpec::Jsonl(path) | StorageSpec::Sqlite(path) => path.with_extension("html"),
                _ => PathBuf::from("afterimage_report.html"),
            },
            PathBuf::from,
        )
    });
    Ok(AfterRun { export, analyze })
}
