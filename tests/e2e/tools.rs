//! Tool-calling dialogs end to end over real HTTP: the mock server calls the offered
//! tools and answers in prose after their results, through both provider clients.

use std::sync::Arc;

use afterimage::prelude::*;
use afterimage_mock::{MockConfig, MockServer};
use afterimage_strategies::{parse_tool_specs, validate_tool_call};

fn tools() -> Vec<ToolSpec> {
    parse_tool_specs(&serde_json::json!([
        {"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["c", "f"]}
                },
                "required": ["city"],
                "additionalProperties": false
            }
        }},
        {"name": "book_table", "description": "Books a restaurant table.",
         "parameters": {"type": "object",
                        "properties": {"people": {"type": "integer", "minimum": 1}},
                        "required": ["people"]}}
    ]))
    .unwrap()
}

async fn run(model: Arc<dyn ChatModel>, path: &std::path::Path, n: u64) -> RunReport {
    ConversationGenerator::builder()
        .respondent_prompt("You are a concierge assistant.")
        .model(Arc::clone(&model))
        .instruction_generator(Arc::new(ToolCallingInstructionGenerator::new(
            model,
            tools(),
        )))
        .tools(tools())
        .storage(Arc::new(JsonlStorage::new(path)))
        .build()
        .unwrap()
        .generate(
            GenerateOptions::new()
                .num_dialogs(n)
                .max_turns(2)
                .max_concurrency(4)
                .seed(5),
        )
        .await
        .unwrap()
}

/// Every call is valid and answered, in order, before the assistant speaks again.
fn check_rows(path: &std::path::Path, n: usize) -> usize {
    let rows = JsonlStorage::new(path).read_all().unwrap();
    assert_eq!(rows.len(), n);
    let specs = tools();
    let mut calls = 0;
    for row in rows {
        let messages = &row.conversations;
        assert_eq!(messages[0].role, Role::User);
        assert_eq!(messages.last().unwrap().role, Role::Assistant);
        assert!(!messages.last().unwrap().content.is_empty());
        let mut pending: Vec<String> = Vec::new();
        for message in messages {
            match message.role {
                Role::Tool => {
                    let id = message.tool_call_id.clone().unwrap();
                    assert_eq!(pending.first(), Some(&id));
                    pending.remove(0);
                }
                _ => assert!(pending.is_empty(), "a call went unanswered"),
            }
            for call in &message.tool_calls {
                assert!(validate_tool_call(&specs, call).is_ok(), "{call:?}");
                pending.push(call.id.clone());
                calls += 1;
            }
        }
        let sampled = row.metadata.extra["tools"].as_array().unwrap();
        assert_eq!(sampled.len(), 2);
    }
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_dialogs_over_openai_and_gemini_wire_formats() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let openai: Arc<dyn ChatModel> = Arc::new(
        OpenAiCompatible::builder(server.openai_base_url())
            .model("mock-model")
            .build()
            .unwrap(),
    );
    let path = dir.path().join("openai.jsonl");
    assert_eq!(run(openai, &path, 6).await.rows_written, 6);
    assert!(
        check_rows(&path, 6) >= 6,
        "the mock should call a tool every turn"
    );

    let gemini: Arc<dyn ChatModel> = Arc::new(
        Gemini::builder()
            .base_url(server.gemini_base_url())
            .model("gemini-2.0-flash")
            .build()
            .unwrap(),
    );
    let path = dir.path().join("gemini.jsonl");
    assert_eq!(run(gemini, &path, 4).await.rows_written, 4);
    assert!(check_rows(&path, 4) >= 4);
}
