//! Reading a dataset back from any storage backend, for export and analysis.

use afterimage_storage::{StorageSpec, Stored};

use crate::DatasetError;

/// Reads a dataset back from `spec` (a JSONL file, a SQLite file or a PostgreSQL
/// database): every row, the run record and the saved documents. A malformed row is
/// an error naming it, so an export never silently drops one; a storage that does
/// not exist is [`StorageError::NotFound`](afterimage_core::StorageError::NotFound)
/// and one without rows is [`DatasetError::Empty`].
pub async fn read_dataset(spec: &StorageSpec) -> Result<Stored, DatasetError> {
    let stored = spec.read(true).await?;
    if stored.rows.is_empty() {
        return Err(DatasetError::Empty {
            location: spec.to_string(),
        });
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use afterimage_core::StorageError;

    #[tokio::test]
    async fn missing_and_empty_storages_are_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = StorageSpec::Sqlite(dir.path().join("runs.db"));
        let err = read_dataset(&missing).await.unwrap_err();
        assert!(
            matches!(err, DatasetError::Storage(StorageError::NotFound { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("runs.db does not exist"), "{err}");
        assert!(
            !dir.path().join("runs.db").exists(),
            "a read created the file"
        );

        let empty = StorageSpec::Jsonl(dir.path().join("empty.jsonl"));
        std::fs::write(dir.path().join("empty.jsonl"), "").unwrap();
        let err = read_dataset(&empty).await.unwrap_err();
        assert!(err.is_invalid(), "{err}");
        assert!(err.to_string().contains("holds no rows"), "{err}");

        let rows = StorageSpec::Jsonl(dir.path().join("rows.jsonl"));
        std::fs::write(
            dir.path().join("rows.jsonl"),
            "{\"conversations\":[{\"role\":\"user\",\"content\":\"q\"}]}\n",
        )
        .unwrap();
        let stored = read_dataset(&rows).await.unwrap();
        assert_eq!(stored.rows.len(), 1);
        assert!(stored.run.is_none());
    }
}
