//! The fuzz targets' entry points: one function per parser of input afterimage does
//! not control (provider responses and error bodies, tool calls, JSONL rows, configs).
//!
//! Each takes arbitrary bytes and must return, whatever they are: a panic is a bug.
//! The binaries in `fuzz_targets/` call them under libFuzzer (`cargo xtask fuzz`), and
//! the CLI's tests replay the committed corpora in `fuzz/corpus/<target>/` through them
//! (`crates/afterimage-cli/tests/cli/fuzz_corpus.rs`), so the corpora keep being run
//! where cargo-fuzz is not installed. That test includes this file as a module, so it
//! only uses what the CLI crate's tests can reach.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use afterimage_core::{ChatRequest, JsonSchema, Message, ProviderError, ToolCall};
use afterimage_providers::{Provider, decode_chat_response, decode_error};
use serde_json::Value;

/// A target's entry point: arbitrary bytes in, a panic the only failure.
pub type Entry = fn(&[u8]);

/// Every target, by the name of its binary and corpus folder.
pub const TARGETS: [(&str, Entry); 7] = [
    ("openai_response", openai_response),
    ("gemini_response", gemini_response),
    ("anthropic_response", anthropic_response),
    ("error_body", error_body),
    ("tool_arguments", tool_arguments),
    ("jsonl_rows", jsonl_rows),
    ("config", config),
];

/// A chat completion body from an OpenAI-compatible server.
pub fn openai_response(data: &[u8]) {
    chat_response(Provider::Openai, data);
}

/// A `generateContent` body from Gemini.
pub fn gemini_response(data: &[u8]) {
    chat_response(Provider::Gemini, data);
}

/// A Messages API body from Anthropic.
pub fn anthropic_response(data: &[u8]) {
    chat_response(Provider::Anthropic, data);
}

/// An error answer: the first two bytes are the HTTP status (big-endian), the rest
/// the body.
pub fn error_body(data: &[u8]) {
    let (status, body) = match data {
        [high, low, body @ ..] => (u16::from_be_bytes([*high, *low]), body),
        _ => (500, data),
    };
    let provider = Provider::ALL[usize::from(status) % Provider::ALL.len()];
    let error = decode_error(provider, "fuzz-model", status, body);
    check_error(&error);
}

/// A JSON Schema, a newline, then a tool call's arguments: the schema is read as tool
/// specs too, and the arguments checked against it and against every spec.
pub fn tool_arguments(data: &[u8]) {
    let (schema, arguments) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(schema) = serde_json::from_slice::<Value>(schema) else {
        return;
    };
    let parsed_arguments = serde_json::from_slice::<Value>(arguments).ok();
    if let Some(arguments) = &parsed_arguments {
        check_validation(afterimage_strategies::validate_arguments(
            &schema, arguments,
        ));
    }
    let Ok(specs) = afterimage_strategies::parse_tool_specs(&schema) else {
        return;
    };
    let text = String::from_utf8_lossy(arguments);
    for spec in &specs {
        if let Some(arguments) = &parsed_arguments {
            check_validation(afterimage_strategies::validate_arguments(
                &spec.parameters,
                arguments,
            ));
        }
        let call = ToolCall::function("call_0", spec.name.clone(), text.clone());
        if let Ok((tool, _)) = afterimage_strategies::validate_tool_call(&specs, &call) {
            assert_eq!(tool.name, spec.name);
        }
    }
}

/// A JSONL output file, read as `afterimage read` reads it (leniently, then strictly).
pub fn jsonl_rows(data: &[u8]) {
    let file = ScratchFile::new(data);
    let lines = data.split(|&b| b == b'\n').count();
    if let Ok(report) = afterimage_storage::read_report(&file.0, false) {
        assert!(report.rows.len() + report.problems.len() <= lines);
    }
    if let Ok(rows) = afterimage_storage::read_rows(&file.0) {
        assert!(rows.len() <= lines);
    }
}

/// A YAML config file.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(message) = afterimage_cli::parse_config(&text) {
        assert!(!message.is_empty());
    }
}

fn chat_response(provider: Provider, body: &[u8]) {
    let plain = ChatRequest::new(vec![Message::user("Hi")]);
    let mut structured = plain.clone();
    structured.response_schema = Some(JsonSchema::new(
        "answer",
        serde_json::json!({"type": "object"}),
    ));
    for request in [plain, structured] {
        match decode_chat_response(provider, &request, body) {
            Ok(reply) => {
                let _ = serde_json::to_string(&reply.message);
            }
            Err(error) => check_error(&error),
        }
    }
}

fn check_error(error: &ProviderError) {
    assert!(!error.to_string().is_empty());
    assert!(!error.kind().is_empty());
    let _ = error.is_retryable();
}

fn check_validation(result: Result<(), Vec<String>>) {
    if let Err(errors) = result {
        assert!(!errors.is_empty());
    }
}

/// A file holding the input, removed when dropped; the JSONL reader reads paths.
struct ScratchFile(PathBuf);

impl ScratchFile {
    fn new(data: &[u8]) -> ScratchFile {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "afterimage-fuzz-{}-{}.jsonl",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        if let Err(error) = std::fs::write(&path, data) {
            // Not an input's fault: the fuzzer cannot go on without a scratch file.
            panic!("cannot write {}: {error}", path.display());
        }
        ScratchFile(path)
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
