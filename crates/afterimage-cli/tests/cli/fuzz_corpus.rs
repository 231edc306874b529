//! The fuzz corpora replayed through the fuzz targets' own entry points, so every
//! committed input (seeds and the crashes once found) keeps being checked by
//! `cargo test`, where cargo-fuzz and its nightly flags are absent.

use std::path::Path;

// The entry points live with the fuzz targets (`fuzz/src/lib.rs`), outside the
// workspace; this crate's dependencies are a superset of theirs.
#[allow(unreachable_pub, dead_code)]
#[path = "../../../../fuzz/src/lib.rs"]
mod targets;

/// Every file of `fuzz/corpus/<target>/` through the target; a panic names the file.
fn replay(target: &str) {
    let (_, entry) = targets::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let outcome = std::panic::catch_unwind(|| entry(&data));
        assert!(outcome.is_ok(), "{target} panicked on {}", file.display());
    }
}

#[test]
fn every_target_has_a_corpus_and_a_test() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/fuzz_targets");
    let mut binaries: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_owned()))
        .collect();
    binaries.sort();
    let mut listed: Vec<String> = targets::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    listed.sort();
    assert_eq!(binaries, listed);
}

#[test]
fn openai_response_corpus() {
    replay("openai_response");
}

#[test]
fn gemini_response_corpus() {
    replay("gemini_response");
}

#[test]
fn anthropic_response_corpus() {
    replay("anthropic_response");
}

#[test]
fn error_body_corpus() {
    replay("error_body");
}

#[test]
fn tool_arguments_corpus() {
    replay("tool_arguments");
}

#[test]
fn jsonl_rows_corpus() {
    replay("jsonl_rows");
}

#[test]
fn config_corpus() {
    replay("config");
}
