//! `StorageSpec::read` and `open_existing` on every backend: rows, the run record with
//! its failures, and the saved documents come back; a missing file is not created.

use std::collections::BTreeMap;

use afterimage_core::{PersonaDocument, RunRecord, Storage, StorageError};
use afterimage_storage::StorageSpec;

use crate::TestDatabase;
use crate::backends::row;

async fn everything_comes_back(spec: &str) {
    let spec = StorageSpec::parse(spec);
    let storage = spec.open().await.unwrap();
    let mut record = RunRecord::new("r1", 7, "You are a user.");
    record.add_failures(&BTreeMap::from([("timeout".to_owned(), 2)]));
    storage.save_run(&record).await.unwrap();
    for i in 0..5 {
        storage.write(&row("r1", i, Some(0.5))).await.unwrap();
    }
    let document = PersonaDocument {
        id: "doc-1".into(),
        text: "text".into(),
        metadata: Default::default(),
        personas: Vec::new(),
    };
    storage.save_documents(&[document]).await.unwrap();
    storage.flush().await.unwrap();
    drop(storage);

    let stored = spec.read(true).await.unwrap();
    assert!(stored.problems.is_empty(), "{:?}", stored.problems);
    let ids: Vec<&str> = stored.rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), 5);
    assert!(ids.contains(&"r1-000004"), "{ids:?}");
    let run = stored.run.unwrap();
    assert_eq!(run.failures.unwrap()["timeout"], 2);
    assert_eq!(stored.documents.len(), 1);
    assert_eq!(stored.documents[0].id, "doc-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_reads_back_rows_run_and_documents() {
    let dir = tempfile::tempdir().unwrap();
    everything_comes_back(dir.path().join("out.jsonl").to_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reads_back_rows_run_and_documents() {
    let dir = tempfile::tempdir().unwrap();
    everything_comes_back(&format!("sqlite:{}", dir.path().join("out.db").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reads_back_rows_run_and_documents() {
    let db = TestDatabase::new().await;
    everything_comes_back(&db.url).await;
    db.drop().await;
}

#[tokio::test]
async fn a_missing_file_is_not_found_and_not_created() {
    let dir = tempfile::tempdir().unwrap();
    for spec in [
        format!("sqlite:{}", dir.path().join("none.db").display()),
        dir.path().join("none.jsonl").display().to_string(),
    ] {
        let err = StorageSpec::parse(&spec).read(false).await.unwrap_err();
        assert!(matches!(err, StorageError::NotFound { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("{spec} does not exist"))
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_malformed_run_record_is_a_problem_unless_strict() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let good = serde_json::to_string(&row("r", 0, None)).unwrap();
    std::fs::write(&path, format!("{good}\n")).unwrap();
    std::fs::write(dir.path().join("out.jsonl.run.json"), "{not json").unwrap();
    let spec = StorageSpec::Jsonl(path);
    let stored = spec.read(false).await.unwrap();
    assert_eq!(stored.rows.len(), 1);
    assert!(stored.run.is_none());
    assert!(
        stored.problems[0].starts_with("run record: "),
        "{:?}",
        stored.problems
    );
    assert!(spec.read(true).await.is_err());
}
