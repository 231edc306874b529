//! Golden files: every export format over a hand-built input, compared byte for byte.
//! `AFTERIMAGE_UPDATE_GOLDEN=1 cargo test -p afterimage-datasets --test datasets golden`
//! rewrites them (then read the diff before committing).

use std::path::{Path, PathBuf};

use afterimage_datasets::{
    ExportFormat, ExportOptions, FormatOptions, RowFilter, SkipReason, export,
};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn input() -> String {
    golden_dir().join("input.jsonl").display().to_string()
}

fn check(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("AFTERIMAGE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (set AFTERIMAGE_UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(actual, expected, "{name} differs from its golden file");
}

/// Exports the golden input in one format, unshuffled, and returns the file's text.
fn run(
    format: ExportFormat,
    options: FormatOptions,
) -> (String, afterimage_datasets::ExportReport) {
    let rows = afterimage_storage::read_rows(Path::new(&input())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = export(
        &rows,
        dir.path(),
        "golden",
        &ExportOptions {
            formats: vec![format],
            format: options,
            shuffle: false,
            ..Default::default()
        },
    )
    .unwrap();
    let text = std::fs::read_to_string(&report.formats[0].files[0].path).unwrap();
    (text, report)
}

#[test]
fn openai_keeps_tool_calls_and_skips_rows_without_a_reply() {
    let (text, report) = run(ExportFormat::OpenAi, FormatOptions::default());
    check("openai.jsonl", &text);
    assert_eq!(report.formats[0].records, 3);
    assert_eq!(report.formats[0].skipped[&SkipReason::NoAssistantReply], 1);
    assert!(text.contains(r#""tool_calls":[{"id":"call_1","type":"function""#));
    assert!(text.contains(
        r#"{"role":"tool","content":"{\"temp_c\":18,\"sky\":\"clear\"}","tool_call_id":"call_1"}"#
    ));
}

#[test]
fn openai_with_a_system_prompt() {
    let (text, _) = run(
        ExportFormat::OpenAi,
        FormatOptions {
            system_prompt: Some("You are a support agent.".into()),
            split_turns: false,
            min_score_gap: None,
        },
    );
    check("openai_system.jsonl", &text);
    assert!(text.lines().all(|l| {
        l.starts_with(r#"{"messages":[{"role":"system","content":"You are a support agent."}"#)
    }));
}

#[test]
fn sharegpt_maps_tool_calls_to_function_call_and_observation() {
    let (text, report) = run(ExportFormat::ShareGpt, FormatOptions::default());
    check("sharegpt.jsonl", &text);
    assert_eq!(report.formats[0].records, 3);
    assert!(text.contains(r#"{"from":"function_call","value":"{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}"}"#));
    assert!(text.contains(r#"{"from":"observation","value":"{\"temp_c\":18,\"sky\":\"clear\"}"}"#));
}

#[test]
fn alpaca_first_turn_skips_tool_rows() {
    let (text, report) = run(ExportFormat::Alpaca, FormatOptions::default());
    check("alpaca.jsonl", &text);
    assert_eq!(report.formats[0].records, 2);
    assert_eq!(report.formats[0].skipped[&SkipReason::ToolCalls], 1);
    assert_eq!(report.formats[0].skipped[&SkipReason::NoAssistantReply], 1);
}

#[test]
fn alpaca_split_turns_writes_one_record_per_exchange() {
    let (text, report) = run(
        ExportFormat::Alpaca,
        FormatOptions {
            system_prompt: None,
            split_turns: true,
            min_score_gap: None,
        },
    );
    check("alpaca_split_turns.jsonl", &text);
    assert_eq!(report.formats[0].records, 3);
}

#[test]
fn llama_factory_keeps_history_and_system() {
    let (text, _) = run(ExportFormat::LlamaFactory, FormatOptions::default());
    check("llama_factory.jsonl", &text);
    assert!(text.contains(r#""history":[["How do I reset my password?","Click 'Forgot Password' on the login screen."]]"#));
    assert!(text.contains(r#""system":"Answer briefly.""#));
}

#[test]
fn raw_writes_every_row_unchanged() {
    let (text, report) = run(ExportFormat::Raw, FormatOptions::default());
    check("raw.jsonl", &text);
    assert_eq!(report.formats[0].records, 4);
    let input = std::fs::read_to_string(golden_dir().join("input.jsonl")).unwrap();
    for (a, b) in text.lines().zip(input.lines()) {
        let a: serde_json::Value = serde_json::from_str(a).unwrap();
        let b: serde_json::Value = serde_json::from_str(b).unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn split_and_filters_are_consistent_across_formats() {
    let mut rows = afterimage_storage::read_rows(Path::new(&input())).unwrap();
    // Twenty copies with distinct ids, so the split has something to split.
    let base = rows.clone();
    for i in 0..4 {
        rows.extend(base.iter().cloned().map(|mut r| {
            r.id = format!("{}-{i}", r.id);
            r
        }));
    }
    let dir = tempfile::tempdir().unwrap();
    let options = ExportOptions {
        formats: vec![ExportFormat::Raw, ExportFormat::OpenAi],
        split: Some(0.25),
        filter: RowFilter {
            min_score: Some(0.5),
            ..Default::default()
        },
        ..Default::default()
    };
    let report = export(&rows, dir.path(), "ds", &options).unwrap();
    // Scores 0.85 and 0.62 pass; 10 rows kept, 2 for validation.
    assert_eq!(report.rows_filtered_out, 10);
    assert_eq!((report.rows_train, report.rows_val), (8, 2));
    let ids = |name: &str| -> Vec<String> {
        std::fs::read_to_string(dir.path().join(name))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
            .collect()
    };
    assert_eq!(ids("ds_raw_val.jsonl").len(), 2);
    assert!(dir.path().join("ds_openai_train.jsonl").exists());
    // The same seed gives the same split.
    let again = tempfile::tempdir().unwrap();
    export(&rows, again.path(), "ds", &options).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ds_raw_val.jsonl")).unwrap(),
        std::fs::read_to_string(again.path().join("ds_raw_val.jsonl")).unwrap()
    );
    // Only tool rows.
    let tools = export(
        &rows,
        dir.path(),
        "tools",
        &ExportOptions {
            formats: vec![ExportFormat::Raw],
            filter: RowFilter {
                with_tools: true,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(tools.rows_train, 5);
    // Persona and turn filters.
    let persona = RowFilter {
        persona: Some("NERVOUS".into()),
        max_turns: Some(1),
        ..Default::default()
    };
    assert_eq!(rows.iter().filter(|r| persona.accepts(r)).count(), 5);
}

#[test]
fn bad_options_are_invalid() {
    let rows = afterimage_storage::read_rows(Path::new(&input())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = export(&rows, dir.path(), "x", &ExportOptions::default()).unwrap_err();
    assert!(err.is_invalid());
    let err = export(
        &rows,
        dir.path(),
        "x",
        &ExportOptions {
            formats: vec![ExportFormat::Raw],
            split: Some(1.5),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.is_invalid(), "{err}");
    assert!(
        "nope"
            .parse::<ExportFormat>()
            .unwrap_err()
            .to_string()
            .contains("sharegpt")
    );
}
