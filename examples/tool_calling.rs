//! Tool-calling dialogs from Rust: users in a persona's voice ask for things that need
//! the thermostat tools, the assistant calls them, one tool is answered by a Rust
//! function and the others by a model playing the tool. Rows hold the `tool_calls`
//! and `tool` messages in OpenAI's shape.
//!
//! ```sh
//! OPENAI_API_KEY=... cargo run --example tool_calling
//! ```
//!
//! Offline, against the bundled mock server:
//!
//! ```sh
//! cargo xtask mock --port 8089 &
//! OPENAI_BASE_URL=http://127.0.0.1:8089/v1 cargo run --example tool_calling
//! ```

use std::sync::Arc;

use afterimage::prelude::*;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // OpenAI itself needs a key; another OpenAI-compatible server (the mock, vLLM,
    // Ollama) may not.
    let mut client = match std::env::var("OPENAI_BASE_URL") {
        Ok(url) => OpenAiCompatible::local().base_url(url),
        Err(_) => OpenAiCompatible::openai(),
    }
    .model("gpt-4o-mini");
    if let Ok(key) = std::env::var("OPENAI_API_KEY") {
        client = client.api_key(key);
    }
    let model: Arc<dyn ChatModel> = Arc::new(client.build()?);

    // 1. The tools, as OpenAI function specs (the same file the YAML example uses).
    let specs: serde_json::Value =
        serde_json::from_str(include_str!("tools/thermostat-tools.json"))?;
    let tools = parse_tool_specs(&specs)?;

    // 2. Who asks, about what: personas drawn from the documents, questions that need
    //    two of the tools each.
    let documents = Arc::new(DirectoryDocumentProvider::new("examples/thermostat-docs"));
    let storage = Arc::new(JsonlStorage::new("tool_calling.jsonl"));
    let personas = Arc::new(PersonaGenerator::new(Arc::clone(&model)).store(storage.clone()));
    let questions = ToolCallingInstructionGenerator::new(Arc::clone(&model), tools.clone())
        .documents(documents)
        .personas(personas)
        .num_tools_to_sample(2);

    // 3. Who answers the calls: a Rust function for the device status (arguments were
    //    checked against the schema already), a model playing every other tool.
    let executor = ToolHandlers::new()
        .handler("get_device_status", |arguments| {
            let serial = arguments["serial_number"].as_str().unwrap_or_default();
            Ok(json!({"serial_number": serial, "celsius": 19.5, "set_point": 21, "mode": "heat", "error": null}))
        })
        .fallback(Arc::new(LlmToolSimulator::new(Arc::clone(&model))));

    // 4. The generator: the respondent is given the tools.
    let generator = ConversationGenerator::builder()
        .respondent_prompt(
            "You are the support assistant of Kestrel thermostats. Use the tools to look things up and make changes; never invent device data.",
        )
        .model(model)
        .instruction_generator(Arc::new(questions))
        .tools(tools)
        .tool_executor(Arc::new(executor))
        .max_tool_rounds(3)
        .storage(storage)
        .build()?;

    let report = generator
        .generate(GenerateOptions::new().num_dialogs(8).max_turns(2))
        .await?;
    println!(
        "Done: {} dialogs in {:.1}s, saved to {} ({:?} rejected by cause).",
        report.rows_written, report.elapsed_secs, report.output, report.rejections
    );
    Ok(())
}
