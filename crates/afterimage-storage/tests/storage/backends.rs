//! The same contract checked on every backend: a real file, a real SQLite file and the
//! real PostgreSQL server (URL in `AFTERIMAGE_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`; each test in a schema of its own).

use std::sync::Arc;

use afterimage_core::{
    ConversationRow, GenerationInfo, Message, Persona, RowMetadata, RunRecord, RunStatus, Storage,
};
use afterimage_storage::{AnyStorage, StorageSpec};

use crate::TestDatabase;

pub(crate) fn row(run: &str, index: u64, score: Option<f64>) -> ConversationRow {
    ConversationRow {
        conversations: vec![Message::user(format!("q {index}")), Message::assistant("a")],
        metadata: RowMetadata {
            // Every row is about one of four documents; every tenth also about "all".
            context_ids: std::iter::once(format!("doc-{}", index % 4))
                .chain(index.is_multiple_of(10).then(|| "all".to_owned()))
                .collect(),
            generation: Some(GenerationInfo {
                run_id: run.into(),
                index,
                ..GenerationInfo::default()
            }),
            ..RowMetadata::default()
        },
        instruction_context: "ctx".into(),
        response_context: None,
        persona: Some(format!("persona {}", index % 3)),
        evaluation: None,
        final_score: score,
        id: format!("{run}-{index:06}"),
    }
}

async fn contract(spec: &str) {
    let storage = Arc::new(StorageSpec::parse(spec).open().await.unwrap());
    assert!(storage.existing_ids().await.unwrap().is_empty());
    assert!(storage.load_run().await.unwrap().is_none());

    let mut record = RunRecord::new("r1", u64::MAX - 1, "You are a curious user.");
    record.personas = vec![Persona {
        description: "a night-shift nurse".into(),
        generation_depth: Some(0),
    }];
    record.config = serde_json::json!({"num_dialogs": 300});
    storage.save_run(&record).await.unwrap();
    record.status = RunStatus::Done;
    record.rows_written = 300;
    storage.save_run(&record).await.unwrap();
    assert_eq!(storage.load_run().await.unwrap(), Some(record));

    // Concurrent writers: the database backends batch them into transactions.
    let mut tasks = Vec::new();
    for i in 0..300 {
        let storage = Arc::clone(&storage);
        tasks.push(tokio::spawn(async move {
            storage
                .write(&row("r1", i, (i % 2 == 0).then_some(0.5)))
                .await
                .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    storage.flush().await.unwrap();

    // A second handle (as a resumed process would open) sees every row, whole.
    let reopened = StorageSpec::parse(spec).open().await.unwrap();
    let mut ids = reopened.existing_ids().await.unwrap();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 300);
    let read = reopened.read_report(true).await.unwrap();
    assert!(read.problems.is_empty());
    assert_eq!(read.rows.len(), 300);
    let mut back: Vec<_> = read.rows;
    back.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(back[4], row("r1", 4, Some(0.5)));
    assert_eq!(back[5].persona.as_deref(), Some("persona 2"));

    // What a resumed coverage run starts from: stored rows per document.
    let visits = reopened.context_visits().await.unwrap();
    let expected: std::collections::HashMap<String, u64> = (0..4)
        .map(|d| (format!("doc-{d}"), 75))
        .chain([("all".to_owned(), 30)])
        .collect();
    assert_eq!(visits, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_keeps_rows_and_the_run_record() {
    let dir = tempfile::tempdir().unwrap();
    contract(dir.path().join("out.jsonl").to_str().unwrap()).await;
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        ["out.jsonl", "out.jsonl.run.json"],
        "no temp or lock files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_rows_and_the_run_record() {
    let dir = tempfile::tempdir().unwrap();
    contract(&format!("sqlite:{}", dir.path().join("out.db").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_rows_and_the_run_record() {
    let db = TestDatabase::new().await;
    contract(&db.url).await;
    // The columns next to the jsonb row are filled (score and persona are not dropped).
    let (client, connection) = tokio_postgres::connect(&db.base, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), count(score), count(DISTINCT persona), min(run_id) FROM \"{}\".conversations",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 300);
    assert_eq!(row.get::<_, i64>(1), 150);
    assert_eq!(row.get::<_, i64>(2), 3);
    assert_eq!(row.get::<_, String>(3), "r1");
    db.drop().await;
}

#[tokio::test]
async fn malformed_rows_are_named_and_skipped_unless_strict() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let good = serde_json::to_string(&row("r", 0, None)).unwrap();
    std::fs::write(&path, format!("{good}\nnot json\n{good}\n")).unwrap();
    let storage = StorageSpec::parse(path.to_str().unwrap())
        .open()
        .await
        .unwrap();
    let read = storage.read_report(false).await.unwrap();
    assert_eq!(read.rows.len(), 2);
    assert_eq!(read.problems.len(), 1);
    assert!(read.problems[0].contains("line 2"), "{:?}", read.problems);
    let err = storage.read_report(true).await.unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[tokio::test]
async fn resume_scan_cuts_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let good = serde_json::to_string(&row("r", 0, None)).unwrap();
    std::fs::write(&path, format!("{good}\n{{\"conversations\": [{{\"ro")).unwrap();
    let storage = StorageSpec::parse(path.to_str().unwrap())
        .open()
        .await
        .unwrap();
    assert_eq!(storage.existing_ids().await.unwrap(), ["r-000000"]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{good}\n"));
    assert!(matches!(storage, AnyStorage::Jsonl(_)));
}
