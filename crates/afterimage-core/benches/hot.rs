//! Micro-benchmarks of the core's hot pure functions: row serialisation (once per stored
//! dialog) and `parse_lenient` (once per structured model answer).
//!
//! `cargo bench -p afterimage-core` runs them (divan).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use afterimage_core::{ConversationRow, parse_lenient};
use divan::{Bencher, black_box};
use serde::Deserialize;

fn main() {
    divan::main();
}

/// A three-turn row in the stored shape, with realistic text lengths.
fn row() -> ConversationRow {
    let answer = "To rotate your API keys safely, create the new key first, deploy it to every \
                  service that needs it, confirm traffic uses it, and only then revoke the old \
                  one. Error 503 means the upstream is overloaded; retry with backoff. "
        .repeat(3);
    let mut conversations = Vec::new();
    for turn in 0..3 {
        conversations.push(serde_json::json!({
            "role": "user",
            "content": format!("Question {turn}: how do I rotate my API keys without downtime?"),
            "reasoning_content": null,
        }));
        conversations.push(serde_json::json!({
            "role": "assistant", "content": answer, "reasoning_content": null,
        }));
    }
    let context = "Error 503 means the service is temporarily unavailable. ".repeat(20);
    serde_json::from_value(serde_json::json!({
        "conversations": conversations,
        "metadata": {
            "context_id": "/abs/docs/errors.txt", "context_ids": ["/abs/docs/errors.txt"],
            "persona_name": null, "persona_generation_depth": null,
            "generation": {"run_id": "3f9c2a1b7d04", "index": 0,
                "respondent_model": "gemini-2.0-flash", "correspondent_model": "gemini-2.0-flash",
                "turns": 3, "attempts": 1, "requests": 6,
                "usage": {"input_tokens": 512, "output_tokens": 140},
                "finished_at_ms": 1764070000000u64, "elapsed_ms": 1830, "seed": 42}
        },
        "instruction_context": context,
        "response_context": context,
        "persona": null,
        "id": "3f9c2a1b7d04-000000"
    }))
    .expect("a valid row")
}

#[divan::bench]
fn row_to_jsonl_line(bencher: Bencher) {
    let row = row();
    bencher.bench_local(|| {
        let mut line = serde_json::to_vec(black_box(&row)).unwrap();
        line.push(b'\n');
        line
    });
}

#[divan::bench]
fn row_from_jsonl_line(bencher: Bencher) {
    let line = serde_json::to_string(&row()).unwrap();
    bencher.bench_local(|| serde_json::from_str::<ConversationRow>(black_box(&line)).unwrap());
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Instructions {
    instructions: Vec<String>,
}

const PLAIN: &str = r#"{"instructions": ["How do I reset my password?", "What does error 503 mean?", "Can I rotate keys without downtime?"]}"#;

#[divan::bench(args = ["plain", "fenced", "embedded"])]
fn parse_lenient_instructions(bencher: Bencher, shape: &str) {
    let text = match shape {
        "plain" => PLAIN.to_string(),
        "fenced" => format!("Sure! Here they are:\n```json\n{PLAIN}\n```\nHope this helps."),
        _ => format!("Here you go: {PLAIN} and a stray {{ brace."),
    };
    bencher.bench_local(|| parse_lenient::<Instructions>(black_box(&text)).unwrap());
}
