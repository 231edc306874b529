//! Document sources against real files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;

use afterimage_core::{Document, DocumentSource, StrategyError, content_id};
use afterimage_strategies::{
    DirectoryDocumentProvider, FileGlobDocumentProvider, InMemoryDocumentProvider,
    JsonlDocumentProvider,
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

fn pattern(dir: &Path, rest: &str) -> String {
    format!("{}/{rest}", dir.display())
}

#[tokio::test]
async fn glob_reads_matching_files_in_path_order_with_absolute_ids() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("docs/b.md"), "B body");
    write(&root.join("docs/a.md"), "A body");
    write(&root.join("docs/deep/er/c.md"), "C body");
    write(&root.join("docs/notes.txt"), "not markdown");
    write(&root.join("docs/empty.md"), " \n");
    write(&root.join("docs/short.md"), "tiny");
    write(&root.join("docs/latin1.md"), [0x63, 0x61, 0x66, 0xe9]);
    write(&root.join("docs/.hidden.md"), "hidden body");
    write(&root.join("other/d.md"), "D body");

    let docs = FileGlobDocumentProvider::new(pattern(root, "docs/**/*.md"))
        .min_length(5)
        .load()
        .await
        .unwrap();
    let got: Vec<(String, String)> = docs.into_iter().map(|d| (d.id, d.text)).collect();
    assert_eq!(
        got,
        vec![
            (abs(&root.join("docs/a.md")), "A body".to_owned()),
            (abs(&root.join("docs/b.md")), "B body".to_owned()),
            (abs(&root.join("docs/deep/er/c.md")), "C body".to_owned()),
        ]
    );

    // `*` does not cross folders.
    let ids: Vec<String> = FileGlobDocumentProvider::new(pattern(root, "docs/*.md"))
        .load()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(
        ids,
        [
            abs(&root.join("docs/a.md")),
            abs(&root.join("docs/b.md")),
            abs(&root.join("docs/short.md")),
        ]
    );
}

#[tokio::test]
async fn glob_ids_match_the_directory_provider() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("x/one.txt"), "one");
    write(&dir.path().join("x/two.md"), "two");
    let from_glob = FileGlobDocumentProvider::new(pattern(dir.path(), "x/*"))
        .load()
        .await
        .unwrap();
    let from_dir = DirectoryDocumentProvider::new(dir.path().join("x"))
        .load()
        .await
        .unwrap();
    assert_eq!(from_glob, from_dir);
}

#[tokio::test]
async fn glob_without_usable_files_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let absolute = pattern(dir.path(), "*.md");
    let err = FileGlobDocumentProvider::new(&absolute)
        .load()
        .await
        .unwrap_err();
    assert!(matches!(err, StrategyError::NoDocuments { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("no usable documents: the pattern `{absolute}` matches no file; check the path")
    );

    write(&dir.path().join("blank.md"), "\n\n");
    let err = FileGlobDocumentProvider::new(&absolute)
        .load()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no usable documents: the pattern `{absolute}` matches 1 file(s), none with at least 1 character(s) of UTF-8 text; check the path"
        )
    );

    let err = FileGlobDocumentProvider::new("no-such-folder-here/**/*.md")
        .load()
        .await
        .unwrap_err();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "no usable documents: the pattern `no-such-folder-here/**/*.md` matches no file; check the path; a relative pattern is relative to the current directory ({})",
            cwd.display()
        )
    );
}

#[tokio::test]
async fn glob_relative_pattern_resolves_against_the_current_directory() {
    // The crate's own manifest folder is the test's current directory.
    let docs = FileGlobDocumentProvider::new("Cargo.tom[l]")
        .load()
        .await
        .unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].id, abs(Path::new("Cargo.toml")));
    assert!(docs[0].text.contains("afterimage-strategies"));
}

#[tokio::test]
async fn invalid_glob_is_a_config_error() {
    let err = FileGlobDocumentProvider::new("docs/[*.md")
        .load()
        .await
        .unwrap_err();
    assert!(matches!(err, StrategyError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("docs/[*.md"), "{err}");
}

#[tokio::test]
async fn jsonl_accepts_a_glob_of_files() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("part-2.jsonl"), r#"{"text": "second"}"#);
    write(
        &dir.path().join("part-1.jsonl"),
        "{\"text\": \"first\"}\n{\"text\": \"also first\"}\n",
    );
    write(&dir.path().join("other.json"), r#"{"text": "ignored"}"#);
    let docs = JsonlDocumentProvider::new(pattern(dir.path(), "part-*.jsonl"))
        .load()
        .await
        .unwrap();
    assert_eq!(
        docs,
        vec![
            Document::new("first"),
            Document::new("also first"),
            Document::new("second")
        ]
    );

    let missing = pattern(dir.path(), "nothing-*.jsonl");
    let err = JsonlDocumentProvider::new(&missing)
        .load()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no usable documents: the pattern `{missing}` matches no file; check the path")
    );

    write(&dir.path().join("bad-1.jsonl"), "nope");
    write(&dir.path().join("bad-2.jsonl"), r#"{"text": ""}"#);
    let bad = pattern(dir.path(), "bad-*.jsonl");
    let err = JsonlDocumentProvider::new(&bad).load().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no usable documents: none of the 2 files matching {bad} has a line with a string `text` field of at least 1 character(s)"
        )
    );
}

#[tokio::test]
async fn jsonl_reads_weights_into_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = jsonl(
        dir.path(),
        &[
            r#"{"text": "nested", "metadata": {"weight": 2.5}}"#,
            r#"{"text": "top", "weight": 3}"#,
            r#"{"text": "bad", "metadata": {"weight": -1}}"#,
            r#"{"text": "word", "metadata": {"weight": "heavy"}}"#,
            r#"{"text": "priority", "priority": 4, "metadata": {"weight": 9}}"#,
        ],
    );
    let weights = |docs: Vec<Document>| {
        docs.into_iter()
            .map(|d| (d.text, d.metadata.get("weight").cloned()))
            .collect::<Vec<_>>()
    };
    let docs = JsonlDocumentProvider::new(&path).load().await.unwrap();
    assert_eq!(
        weights(docs),
        [
            ("nested".to_owned(), Some(json!(2.5))),
            ("top".to_owned(), None),
            ("bad".to_owned(), None),
            ("word".to_owned(), None),
            ("priority".to_owned(), Some(json!(9))),
        ]
    );

    let docs = JsonlDocumentProvider::new(&path)
        .weight_field("weight")
        .load()
        .await
        .unwrap();
    assert_eq!(
        weights(docs),
        [
            ("nested".to_owned(), Some(json!(2.5))),
            ("top".to_owned(), Some(json!(3))),
            ("bad".to_owned(), None),
            ("word".to_owned(), None),
            ("priority".to_owned(), Some(json!(9))),
        ]
    );

    let docs = JsonlDocumentProvider::new(&path)
        .weight_field("priority")
        .load()
        .await
        .unwrap();
    assert_eq!(docs[4].metadata.get("weight"), Some(&json!(4)));
    assert_eq!(docs[0].metadata.get("weight"), None);
}
