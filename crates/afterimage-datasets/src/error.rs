//! The one error type of this crate.

use afterimage_core::{ProviderError, StorageError};

/// Why reading, exporting or reporting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// The storage holds no rows.
    #[error(
        "{location} holds no rows: check that it is the right storage, or generate into it first"
    )]
    Empty {
        /// The storage, as it is displayed (without a password).
        location: String,
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
    /// Embedding texts for a similarity figure failed.
    #[error("embedding first questions with {model}: {source}")]
    Embedding {
        /// The embedding model.
        model: String,
        /// The cause.
        #[source]
        source: ProviderError,
    },
    /// An option is out of range or unknown.
    #[error("{0}")]
    Invalid(String),
}

impl DatasetError {
    /// The caller asked for something invalid (a user error, not a failure of the run).
    pub fn is_invalid(&self) -> bool {
        matches!(self, DatasetError::Invalid(_) | DatasetError::Empty { .. })
    }

    /// Reading or writing a file failed.
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            DatasetError::Write { .. } | DatasetError::Storage(_) | DatasetError::Embedding { .. }
        )
    }
}
