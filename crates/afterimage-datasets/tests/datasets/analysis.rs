//! The analysis of the golden input: the figures, and the HTML page built from them.

use std::collections::BTreeMap;
use std::path::Path;

use afterimage_datasets::{AnalyzeOptions, SECTIONS, analyze, render_html};

fn rows() -> Vec<afterimage_core::ConversationRow> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/input.jsonl");
    afterimage_storage::read_rows(&path).unwrap()
}

#[test]
fn figures_of_the_golden_input() {
    let a = analyze(
        &rows(),
        &AnalyzeOptions {
            documents: Some(vec![
                "docs/password.md".into(),
                "docs/errors.txt".into(),
                "docs/billing.md".into(),
            ]),
            run_failures: None,
        },
    );
    let s = &a.summary;
    assert_eq!((s.rows, s.messages, s.turns), (4, 12, 5));
    assert_eq!((s.rows_with_tool_calls, s.tool_calls), (1, 1));
    assert_eq!(
        (s.input_tokens, s.output_tokens, s.rows_with_usage),
        (400, 90, 1)
    );
    assert_eq!((s.regenerated_rows, s.extra_attempts), (1, 1));
    assert!(s.cost_usd.is_none() && s.failures.is_none());
    assert_eq!(
        a.turns
            .iter()
            .map(|b| (b.label.as_str(), b.count))
            .collect::<Vec<_>>(),
        [("1", 3), ("2", 1)]
    );
    assert_eq!(a.personas.rows_with_persona, 2);
    assert_eq!(a.personas.depth.len(), 2);
    assert_eq!(a.documents.used[0].label, "docs/errors.txt");
    assert_eq!(a.documents.used[0].count, 2);
    assert_eq!(a.documents.rows_without_document, 1);
    assert_eq!(
        a.documents.never_used.as_deref().unwrap(),
        ["docs/billing.md".to_string()]
    );
    assert_eq!(a.judge.scored_rows, 3);
    assert_eq!(a.judge.criteria.len(), 2);
    assert!((a.judge.criteria[0].mean - 0.8).abs() < 1e-9);
    assert_eq!(
        a.judge.score_histogram.iter().map(|b| b.count).sum::<u64>(),
        3
    );
    assert_eq!(a.lowest.len(), 3);
    assert_eq!(a.lowest[0].id, "r1-000003");
    assert_eq!(a.diversity.distinct_first_questions, 4);
    assert!(a.diversity.assistant.type_token_ratio > 0.5);
    // The JSON holds the same figures.
    let json = serde_json::to_value(&a).unwrap();
    assert_eq!(json["summary"]["rows"], 4);
    assert_eq!(json["documents"]["never_used"][0], "docs/billing.md");
    // The literature's figures, per kind of text, each saying what it sampled.
    let d = &json["diversity"];
    for scope in ["first_questions", "user_turns", "assistant_turns"] {
        for key in ["self_bleu", "compression_ratio", "near_duplicate_pairs"] {
            let figure = &d[scope][key];
            assert!(figure["value"].is_f64(), "{scope}.{key}: {figure}");
            assert_eq!(figure["sampled"], figure["of"], "{scope}.{key}: {figure}");
        }
    }
    assert_eq!(d["first_questions"]["texts"], 4);
    assert_eq!(d["loops"]["looping_rows"]["of"], 4);
    assert_eq!(d["seed"], 42);
    assert!(d["embedding"].is_null());
}

#[test]
fn html_has_every_section_and_escapes_dialog_text() {
    let mut failures = BTreeMap::new();
    failures.insert("timeout".to_string(), 2);
    let a = analyze(
        &rows(),
        &AnalyzeOptions {
            documents: None,
            run_failures: Some(failures),
        },
    );
    let html = render_html(&a, "golden <input>.jsonl");
    for id in SECTIONS {
        assert!(
            html.contains(&format!("<section id=\"{id}\">")),
            "missing {id}"
        );
    }
    assert!(html.contains("What does &lt;error 503&gt; mean &amp; why?"));
    assert!(!html.contains("<error 503>"));
    assert!(html.contains("answers &lt;b&gt;it&lt;/b&gt;"));
    assert!(html.contains("A &quot;nervous&quot; student"));
    assert!(html.contains("golden &lt;input&gt;.jsonl"));
    assert!(html.contains("timeout"));
    assert!(html.contains("→ get_weather"));
    // Self-contained: no script, no external fetches.
    assert!(!html.contains("<script"));
    assert!(!html.contains("src="));
    assert!(!html.contains("href="));
    assert!(html.contains("<svg"));
    assert!(html.contains("--documents DIR"));
    // Each diversity figure is explained, and the page says what it sampled.
    for label in [
        "Self-BLEU",
        "compression ratio",
        "near-duplicate pairs",
        "looping rows",
    ] {
        assert!(html.contains(&format!("<li><b>{label}</b>: ")), "{label}");
    }
    assert!(html.contains("sampled: 4 of 4"));
}

#[test]
fn an_empty_dataset_still_renders() {
    let a = analyze(&[], &AnalyzeOptions::default());
    let html = render_html(&a, "empty");
    for id in SECTIONS {
        assert!(html.contains(&format!("<section id=\"{id}\">")));
    }
}
