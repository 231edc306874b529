//! JsonlStorage against real files.

use std::sync::Arc;

use afterimage_core::{ConversationRow, Message, RowMetadata, Storage};
use afterimage_storage::JsonlStorage;

fn row(id: &str) -> ConversationRow {
    ConversationRow {
        conversations: vec![Message::user(format!("q {id}")), Message::assistant("a")],
        metadata: RowMetadata::default(),
        instruction_context: "ctx".into(),
        response_context: None,
        persona: None,
        evaluation: None,
        final_score: None,
        id: id.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_produce_whole_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/out.jsonl");
    let storage = Arc::new(JsonlStorage::new(&path));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let storage = Arc::clone(&storage);
        tasks.push(tokio::spawn(async move {
            storage.write(&row(&format!("run-{i}"))).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    storage.flush().await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 200);
    assert!(text.ends_with('\n'));
    let mut ids = storage.existing_ids().await.unwrap();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
    for line in text.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["conversations"][0]["role"], "user");
    }
}

#[tokio::test]
async fn a_torn_last_line_is_cut_before_appending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let good = serde_json::to_string(&row("run-0")).unwrap();
    std::fs::write(&path, format!("{good}\n{{\"conversations\": [{{\"role\"")).unwrap();
    let storage = JsonlStorage::new(&path);
    storage.write(&row("run-1")).await.unwrap();
    let rows = storage.read_all().unwrap();
    let ids: Vec<_> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["run-0", "run-1"]);
}

#[tokio::test]
async fn appends_to_existing_rows_and_reads_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    JsonlStorage::new(&path).write(&row("a")).await.unwrap();
    let storage = JsonlStorage::new(&path);
    assert_eq!(storage.existing_ids().await.unwrap(), ["a"]);
    storage.write(&row("b")).await.unwrap();
    assert_eq!(storage.read_all().unwrap(), vec![row("a"), row("b")]);
}

#[tokio::test]
async fn a_missing_file_has_no_ids_and_a_corrupt_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.jsonl");
    assert!(
        JsonlStorage::new(&path)
            .existing_ids()
            .await
            .unwrap()
            .is_empty()
    );
    std::fs::write(&path, "{\"conversations\": []}\nnot json\n").unwrap();
    let err = JsonlStorage::new(&path).existing_ids().await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("none.jsonl"), "{message}");
}

#[tokio::test]
async fn an_unwritable_path_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let storage = JsonlStorage::new(blocker.join("out.jsonl"));
    let err = storage.write(&row("a")).await.unwrap_err();
    assert!(err.to_string().contains("file"), "{err}");
}
