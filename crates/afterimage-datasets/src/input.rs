//! Where rows are read from. Today a JSONL path; the seam for the SQLite and
//! PostgreSQL backends, which another branch adds, is [`read_input`].

use std::path::{Path, PathBuf};

use afterimage_core::ConversationRow;

use crate::DatasetError;

/// A parsed input location.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// A JSONL file.
    Jsonl(PathBuf),
    /// `sqlite:FILE` (read once the storage backends land).
    Sqlite(String),
    /// `postgres://...` (read once the storage backends land).
    Postgres(String),
}

impl Input {
    /// Parses `IN` as the CLI takes it: a path, `sqlite:FILE` or `postgres://...`.
    pub fn parse(input: &str) -> Input {
        if input.starts_with("sqlite:") {
            Input::Sqlite(input.to_owned())
        } else if input.starts_with("postgres://") || input.starts_with("postgresql://") {
            Input::Postgres(input.to_owned())
        } else {
            Input::Jsonl(PathBuf::from(input))
        }
    }

    /// A short name for output files: the file stem, or `dataset` for a database.
    pub fn stem(&self) -> String {
        match self {
            Input::Jsonl(path) => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "dataset".to_owned()),
            Input::Sqlite(_) | Input::Postgres(_) => "dataset".to_owned(),
        }
    }
}

/// Reads every row of `input` (see [`Input::parse`]).
pub fn read_input(input: &str) -> Result<Vec<ConversationRow>, DatasetError> {
    match Input::parse(input) {
        Input::Jsonl(path) => read_jsonl(&path),
        // The storage branch adds these backends; the lead wires them here.
        Input::Sqlite(_) | Input::Postgres(_) => Err(DatasetError::UnsupportedInput {
            input: input.to_owned(),
        }),
    }
}

fn read_jsonl(path: &Path) -> Result<Vec<ConversationRow>, DatasetError> {
    Ok(afterimage_storage::read_rows(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(
            Input::parse("out/a.jsonl"),
            Input::Jsonl("out/a.jsonl".into())
        );
        assert_eq!(Input::parse("out/a.jsonl").stem(), "a");
        assert!(matches!(Input::parse("sqlite:x.db"), Input::Sqlite(_)));
        assert!(matches!(
            Input::parse("postgres://u@h/db"),
            Input::Postgres(_)
        ));
        let err = read_input("sqlite:x.db").unwrap_err();
        assert!(err.is_unsupported_input());
        assert!(
            err.to_string()
                .contains("sqlite:/postgres: inputs need the storage backends"),
            "{err}"
        );
    }
}
