//! Document sources against real files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;

use afterimage_core::{Document, DocumentSource, StrategyError, content_id};
use afterimage_strategies::{
    DirectoryDocumentProvider, InMemoryDocumentProvider, JsonlDocumentProvider,
};
use serde_json::json;

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

fn abs(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[tokio::test]
async fn in_memory_takes_texts_and_documents_and_skips_blank_ones() {
    let docs = InMemoryDocumentProvider::new(["alpha", "  ", "beta"])
        .load()
        .await
        .unwrap();
    assert_eq!(docs, vec![Document::new("alpha"), Document::new("beta")]);
    assert_eq!(docs[0].id, content_id("alpha"));

    let docs = InMemoryDocumentProvider::new(vec![Document::with_id("x", "gamma")])
        .load()
        .await
        .unwrap();
    assert_eq!(docs, vec![Document::with_id("x", "gamma")]);

    let owned: Vec<String> = vec!["short".into(), "long enough".into()];
    let docs = InMemoryDocumentProvider::new(&owned)
        .min_length(6)
        .load()
        .await
        .unwrap();
    assert_eq!(docs, vec![Document::new("long enough")]);

    let err = InMemoryDocumentProvider::new(["", " \n"])
        .load()
        .await
        .unwrap_err();
    assert!(matches!(err, StrategyError::NoDocuments { .. }));
    assert_eq!(
        err.to_string(),
        "no usable documents: none of the 2 in-memory documents has at least 1 character(s) of text"
    );
}

#[tokio::test]
async fn directory_reads_txt_and_md_recursively_in_path_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("b.md"), "# B\nbody");
    write(&root.join("a.txt"), "A text\n");
    write(&root.join("sub/deeper/c.TXT"), "C text");
    write(&root.join("sub/d.md"), "D text");
    write(&root.join("notes.json"), "{\"text\": \"ignored\"}");
    write(&root.join("script.py"), "print('ignored')");
    write(&root.join("sub/empty.txt"), "");
    write(&root.join("sub/blank.md"), " \n\t\n");
    write(
        &root.join("latin1.txt"),
        [0x63, 0x61, 0x66, 0xe9, 0xff, 0xfe],
    );

    let docs = DirectoryDocumentProvider::new(root).load().await.unwrap();
    let got: Vec<(String, String)> = docs.into_iter().map(|d| (d.id, d.text)).collect();
    assert_eq!(
        got,
        vec![
            (abs(&root.join("a.txt")), "A text\n".to_owned()),
            (abs(&root.join("b.md")), "# B\nbody".to_owned()),
            (abs(&root.join("sub/d.md")), "D text".to_owned()),
            (abs(&root.join("sub/deeper/c.TXT")), "C text".to_owned()),
        ]
    );
}

#[tokio::test]
async fn directory_options_extensions_recursion_and_min_length() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("a.txt"), "tiny");
    write(&root.join("b.rst"), "restructured text");
    write(&root.join("sub/c.rst"), "nested rst");

    let ids = |docs: Vec<Document>| docs.into_iter().map(|d| d.id).collect::<Vec<_>>();
    let docs = DirectoryDocumentProvider::new(root)
        .extensions([".RST"])
        .load()
        .await
        .unwrap();
    assert_eq!(
        ids(docs),
        [abs(&root.join("b.rst")), abs(&root.join("sub/c.rst"))]
    );

    let docs = DirectoryDocumentProvider::new(root)
        .extensions(["rst"])
        .recursive(false)
        .load()
        .await
        .unwrap();
    assert_eq!(ids(docs), [abs(&root.join("b.rst"))]);

    let docs = DirectoryDocumentProvider::new(root)
        .extensions(["txt", "rst"])
        .min_length(11)
        .load()
        .await
        .unwrap();
    assert_eq!(ids(docs), [abs(&root.join("b.rst"))]);
}

#[tokio::test]
async fn directory_without_usable_files_is_no_documents() {
    let dir = tempfile::tempdir().unwrap();
    let err = DirectoryDocumentProvider::new(dir.path())
        .load()
        .await
        .unwrap_err();
    assert!(matches!(err, StrategyError::NoDocuments { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "no usable documents: {} holds no *.txt or *.md file (subfolders included) with at least 1 character(s) of UTF-8 text",
            dir.path().display()
        )
    );

    write(&dir.path().join("only.csv"), "a,b");
    write(&dir.path().join("empty.md"), "\n");
    let err = DirectoryDocumentProvider::new(dir.path())
        .load()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "no_documents");
}

#[tokio::test]
async fn missing_directory_is_io_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = DirectoryDocumentProvider::new(&missing)
        .load()
        .await
        .unwrap_err();
    match &err {
        StrategyError::Io { path, source } => {
            assert_eq!(path, &missing.display().to_string());
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(err.to_string().starts_with(&missing.display().to_string()));
}

fn jsonl(dir: &Path, lines: &[&str]) -> std::path::PathBuf {
    let path = dir.join("docs.jsonl");
    write(&path, lines.join("\n"));
    path
}

#[tokio::test]
async fn jsonl_reads_the_text_field_and_skips_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = jsonl(
        dir.path(),
        &[
            r#"{"text": "first", "id": "a"}"#,
            "not json",
            "",
            r#"{"body": "no text field"}"#,
            r#"{"text": 42}"#,
            r#"["text"]"#,
            r#"{"text": "   "}"#,
            "{\"text\": \"second\"}\r",
        ],
    );
    let docs = JsonlDocumentProvider::new(&path).load().await.unwrap();
    assert_eq!(docs, vec![Document::new("first"), Document::new("second")]);
}

#[tokio::test]
async fn jsonl_custom_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = jsonl(
        dir.path(),
        &[r#"{"content": "from content", "text": "not this"}"#],
    );
    let docs = JsonlDocumentProvider::new(&path)
        .text_field("content")
        .load()
        .await
        .unwrap();
    assert_eq!(docs, vec![Document::new("from content")]);
}

#[tokio::test]
async fn jsonl_preserves_ids_from_id_or_context_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = jsonl(
        dir.path(),
        &[
            r#"{"text": "one", "id": "doc-1", "metadata": {"context_id": "ignored"}}"#,
            r#"{"text": "two", "metadata": {"context_id": "ctx-2"}}"#,
            r#"{"text": "three", "id": 3}"#,
            r#"{"text": "four", "id": ""}"#,
        ],
    );
    let ids: Vec<String> = JsonlDocumentProvider::new(&path)
        .preserve_ids(true)
        .load()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, ["doc-1", "ctx-2", "3", &content_id("four")]);

    let ids: Vec<String> = JsonlDocumentProvider::new(&path)
        .load()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(
        ids,
        [
            content_id("one"),
            content_id("two"),
            content_id("three"),
            content_id("four")
        ]
    );
}

#[tokio::test]
async fn jsonl_includes_metadata_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = jsonl(
        dir.path(),
        &[
            r#"{"text": "one", "id": "a", "lang": "en", "metadata": {"source": "wiki", "lang": "fr"}}"#,
        ],
    );
    let doc = JsonlDocumentProvider::new(&path)
        .include_metadata(true)
        .load()
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        serde_json::Value::Object(doc.metadata),
        json!({"id": "a", "lang": "fr", "source": "wiki"})
    );

    let doc = JsonlDocumentProvider::new(&path)
        .load()
        .await
        .unwrap()
        .remove(0);
    assert!(doc.metadata.is_empty());
}

#[tokio::test]
async fn jsonl_without_usable_lines_is_no_documents_and_missing_file_is_io() {
    let dir = tempfile::tempdir().unwrap();
    let path = jsonl(
        dir.path(),
        &["nope", r#"{"text": ""}"#, r#"{"other": "x"}"#],
    );
    let err = JsonlDocumentProvider::new(&path).load().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no usable documents: {} has no line with a string `text` field of at least 1 character(s)",
            path.display()
        )
    );

    let missing = dir.path().join("missing.jsonl");
    let err = JsonlDocumentProvider::new(&missing)
        .load()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StrategyError::Io { path, .. } if *path == missing.display().to_string()),
        "{err:?}"
    );
}
