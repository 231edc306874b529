//! The technical-support example as a Rust program: two documents, contextual
//! instructions, and the documents in the assistant's system prompt.
//!
//! ```sh
//! GEMINI_API_KEY=... cargo run --example support_bot
//! ```
//!
//! Offline, against the bundled mock server:
//!
//! ```sh
//! cargo xtask mock --port 8089 &
//! GEMINI_BASE_URL=http://127.0.0.1:8089/v1beta cargo run --example support_bot
//! ```

use std::sync::Arc;

use afterimage::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The model both sides use. A key is only required for Google's own endpoint.
    let mut gemini = Gemini::builder().model("gemini-2.0-flash");
    if let Ok(key) = std::env::var("GEMINI_API_KEY") {
        gemini = gemini.api_key(key);
    }
    if let Ok(url) = std::env::var("GEMINI_BASE_URL") {
        gemini = gemini.base_url(url);
    }
    let model: Arc<dyn ChatModel> = Arc::new(gemini.build()?);

    // 1. The knowledge base.
    let docs = Arc::new(InMemoryDocumentProvider::new([
        "Error 503 means the service is unavailable. Retry after 5 minutes.",
        "To reset your password, click 'Forgot Password' on the login screen.",
    ]));

    // 2. What the user asks: questions about a sampled document.
    let instructions = ContextualInstructionGenerator::new(Arc::clone(&model), docs);

    // 3. What the assistant knows: the sampled document, in its system prompt.
    let modifier = WithContextRespondentPromptModifier::new();

    // 4. The generator.
    let generator = ConversationGenerator::builder()
        .respondent_prompt("You are a Tier 1 Technical Support agent.")
        .model(model)
        .instruction_generator(Arc::new(instructions))
        .respondent_prompt_modifier(Arc::new(modifier))
        .storage(Arc::new(JsonlStorage::new("support_bot.jsonl")))
        // Judge every dialog; regenerate weak ones, at most three attempts each.
        .auto_improve(true)
        .build()?;

    // 5. Run.
    println!("Starting generation...");
    let report = generator
        .generate(GenerateOptions::new().num_dialogs(10).max_turns(3))
        .await?;
    println!(
        "Done: {} dialogs in {:.1}s, saved to {}.",
        report.rows_written, report.elapsed_secs, report.output
    );
    Ok(())
}
