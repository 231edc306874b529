//! `output:` (or `--out`): where rows go.

use std::path::PathBuf;

use afterimage_storage::StorageSpec;

use super::{Overrides, SettingsError};
use crate::config::{OutputSection, StorageKind};

/// `--out` when given, else what `output.storage` and `output.path` say.
pub(super) fn resolve(
    section: &OutputSection,
    overrides: &Overrides,
) -> Result<StorageSpec, SettingsError> {
    match &overrides.out {
        Some(out) => Ok(StorageSpec::parse(out)),
        None => output_spec(section.storage, &section.path),
    }
}

/// Where `output.storage` and `output.path` send rows.
fn output_spec(kind: StorageKind, path: &str) -> Result<StorageSpec, SettingsError> {
    let parsed = StorageSpec::parse(path);
    match kind {
        StorageKind::Jsonl => Ok(parsed),
        StorageKind::Sqlite => Ok(match parsed {
            StorageSpec::Sqlite(file) => StorageSpec::Sqlite(file),
            _ => StorageSpec::Sqlite(PathBuf::from(path)),
        }),
        StorageKind::Postgres => match parsed {
            spec @ StorageSpec::Postgres(_) => Ok(spec),
            _ => Err(SettingsError::new(
                "output.path",
                format!(
                    "output.storage is postgres, so output.path must be a postgres:// URL, not {path:?}"
                ),
            )),
        },
        StorageKind::Sql => match parsed {
            spec @ StorageSpec::Postgres(_) => Ok(spec),
            // SQLAlchemy spells a SQLite file `sqlite:///FILE`.
            StorageSpec::Sqlite(file) => Ok(StorageSpec::Sqlite(PathBuf::from(
                file.to_string_lossy().trim_start_matches('/').to_owned(),
            ))),
            _ => Err(SettingsError::new(
                "output.path",
                format!(
                    "output.storage is sql, so output.path must be a database URL (postgres://... or sqlite:///FILE), not {path:?}"
                ),
            )),
        },
    }
}
