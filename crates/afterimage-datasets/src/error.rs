//! The one error type of this crate.

use afterimage_core::StorageError;

/// Why reading, exporting or reporting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// The input names a backend this build cannot read yet.
    #[error(
        "{input}: sqlite:/postgres: inputs need the storage backends (not in this build yet); export the rows to JSONL first"
    )]
    UnsupportedInput {
        /// The input as given.
        input: String,
    },
    /// Reading the stored rows failed.
    #[error("reading rows: {0}")]
    Storage(#[from] StorageError),
    /// Writing an output file failed.
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An option is out of range or unknown.
    #[error("{0}")]
    Invalid(String),
}

impl DatasetError {
    /// The input is a backend that needs the storage backends.
    pub fn is_unsupported_input(&self) -> bool {
        matches!(self, DatasetError::UnsupportedInput { .. })
    }

    /// The caller asked for something invalid (a user error, not a failure of the run).
    pub fn is_invalid(&self) -> bool {
        matches!(
            self,
            DatasetError::Invalid(_) | DatasetError::UnsupportedInput { .. }
        )
    }

    /// Reading or writing a file failed.
    pub fn is_io(&self) -> bool {
        matches!(self, DatasetError::Write { .. } | DatasetError::Storage(_))
    }
}
