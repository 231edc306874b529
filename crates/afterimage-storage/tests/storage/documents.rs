//! Documents with their personas, saved and loaded on every backend: a real file, a
//! real SQLite file and the real PostgreSQL server (URL in
//! `AFTERIMAGE_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`).

use afterimage_core::{PersonaDocument, PersonaLayer, PersonaLayerInfo, Storage};
use afterimage_storage::StorageSpec;

use crate::TestDatabase;

fn document(id: &str, layers: &[&[&str]]) -> PersonaDocument {
    PersonaDocument {
        id: id.into(),
        text: format!("text of {id}"),
        personas: layers
            .iter()
            .enumerate()
            .map(|(depth, descriptions)| PersonaLayer {
                descriptions: descriptions.iter().map(|d| (*d).to_owned()).collect(),
                metadata: PersonaLayerInfo {
                    generation_depth: depth as u32,
                },
            })
            .collect(),
        metadata: serde_json::Map::new(),
    }
}

fn sorted(mut documents: Vec<PersonaDocument>) -> Vec<PersonaDocument> {
    documents.sort_by(|a, b| a.id.cmp(&b.id));
    documents
}

async fn contract(spec: &str) {
    let storage = StorageSpec::parse(spec).open().await.unwrap();
    assert!(storage.load_documents().await.unwrap().is_empty());
    let a0 = document("a", &[&["a nurse", "a porter"]]);
    let b0 = document("b", &[&["a baker"]]);
    storage
        .save_documents(&[a0.clone(), b0.clone()])
        .await
        .unwrap();
    assert_eq!(
        sorted(storage.load_documents().await.unwrap()),
        [a0.clone(), b0.clone()]
    );

    // A deeper layer for `a` replaces its earlier save; `b` stays as it was.
    let mut a1 = document("a", &[&["a nurse", "a porter"], &["a ward sister"]]);
    a1.metadata
        .insert("source".into(), serde_json::json!("ward.md"));
    storage
        .save_documents(std::slice::from_ref(&a1))
        .await
        .unwrap();
    // The same id twice in one save: the last one wins.
    let b1 = document("b", &[&["a pastry chef"]]);
    storage
        .save_documents(&[document("b", &[&["stale"]]), b1.clone()])
        .await
        .unwrap();
    let expected = [a1, b1];
    assert_eq!(sorted(storage.load_documents().await.unwrap()), expected);

    // A second handle, as a resumed run opens it, sees the same.
    let reopened = StorageSpec::parse(spec).open().await.unwrap();
    assert_eq!(sorted(reopened.load_documents().await.unwrap()), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_documents_round_trip_in_pythons_shape() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    contract(out.to_str().unwrap()).await;
    let sidecar = dir.path().join("out.jsonl.documents.jsonl");
    let text = std::fs::read_to_string(&sidecar).unwrap();
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        r#"{"id":"a","text":"text of a","personas":[{"descriptions":["a nurse","a porter"],"metadata":{"generation_depth":0}}],"metadata":{}}"#
    );
    // Three saves appended five lines (one per document saved); no rows were written.
    assert_eq!(text.lines().count(), 5);
    assert!(!out.exists(), "no rows were written");
}

#[tokio::test]
async fn jsonl_documents_ignore_a_torn_last_line_and_repair_it_on_save() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let sidecar = dir.path().join("out.jsonl.documents.jsonl");
    let good = serde_json::to_string(&document("a", &[&["a nurse"]])).unwrap();
    std::fs::write(&sidecar, format!("{good}\n{{\"id\":\"b\",\"te")).unwrap();
    let storage = StorageSpec::parse(out.to_str().unwrap())
        .open()
        .await
        .unwrap();
    let loaded = storage.load_documents().await.unwrap();
    assert_eq!(loaded, [document("a", &[&["a nurse"]])]);
    let b = document("b", &[&["a baker"]]);
    storage
        .save_documents(std::slice::from_ref(&b))
        .await
        .unwrap();
    let loaded = storage.load_documents().await.unwrap();
    assert_eq!(loaded, [document("a", &[&["a nurse"]]), b]);
    assert_eq!(
        std::fs::read_to_string(&sidecar).unwrap().lines().count(),
        2
    );

    // A malformed line in the middle is an error naming it.
    std::fs::write(&sidecar, format!("{good}\nnot json\n{good}\n")).unwrap();
    let err = storage.load_documents().await.unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_documents_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    contract(&format!("sqlite:{}", dir.path().join("out.db").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_documents_round_trip() {
    let db = TestDatabase::new().await;
    contract(&db.url).await;
    let (client, connection) = tokio_postgres::connect(&db.base, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let kind: String = client
        .query_one(
            "SELECT data_type FROM information_schema.columns
             WHERE table_schema = $1 AND table_name = 'documents' AND column_name = 'body'",
            &[&db.schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kind, "jsonb");
    db.drop().await;
}
