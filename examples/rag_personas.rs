//! Persona-driven questions answered from retrieved chunks (RAG), from Rust: the
//! documents are cut into chunks and indexed by BM25, people generated for each
//! document ask about it, and the assistant sees only the chunks found for each of
//! their messages. The run stops once every document was the source of three dialogs.
//!
//! ```sh
//! GEMINI_API_KEY=... cargo run --example rag_personas
//! ```
//!
//! Offline, against the bundled mock server:
//!
//! ```sh
//! cargo xtask mock --port 8089 &
//! GEMINI_BASE_URL=http://127.0.0.1:8089/v1beta cargo run --example rag_personas
//! ```

use std::sync::Arc;

use afterimage::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut gemini = Gemini::builder().model("gemini-2.0-flash");
    if let Ok(key) = std::env::var("GEMINI_API_KEY") {
        gemini = gemini.api_key(key);
    }
    if let Ok(url) = std::env::var("GEMINI_BASE_URL") {
        gemini = gemini.base_url(url);
    }
    let model: Arc<dyn ChatModel> = Arc::new(gemini.build()?);

    // 1. The documents, read once: the questions are drawn from them, and the
    //    retriever searches their chunks.
    let documents = DirectoryDocumentProvider::new("examples/thermostat-docs")
        .load()
        .await?;
    let count = documents.len();

    // 2. Who asks: personas generated per document, saved next to the rows.
    let storage = Arc::new(JsonlStorage::new("rag_personas.jsonl"));
    let personas = Arc::new(
        PersonaGenerator::new(Arc::clone(&model))
            .target_per_document(Some(3))
            .store(storage.clone()),
    );
    let questions = ContextualInstructionGenerator::new(
        Arc::clone(&model),
        Arc::new(InMemoryDocumentProvider::new(documents.clone())),
    )
    .personas(personas)
    .n_instructions(1)
    .target_visits(Some(3));

    // 3. What the assistant knows: the chunks BM25 finds for every user message.
    let chunks = chunk_documents(
        &documents,
        &ChunkOptions {
            size: 600,
            overlap: 80,
        },
    )?;
    let rag = WithRagRespondentPromptModifier::new(Arc::new(Bm25Retriever::new(chunks)?))
        .top_k(3)
        .per_turn(true);

    // 4. Run until every document was the source of three stored dialogs.
    let report = ConversationGenerator::builder()
        .respondent_prompt(
            "You are the support assistant of Kestrel, a maker of smart thermostats.",
        )
        .model(model)
        .instruction_generator(Arc::new(questions))
        .respondent_prompt_modifier(Arc::new(rag))
        .storage(storage)
        .build()?
        .generate(
            GenerateOptions::new()
                .max_turns(3)
                .max_concurrency(4)
                .stopping_criterion(Arc::new(ContextCoverage {
                    documents: count,
                    target_visits: 3,
                    coverage_threshold: 1.0,
                })),
        )
        .await?;
    println!(
        "Done: {} dialogs in {:.1}s ({}), saved to {}.",
        report.rows_written, report.elapsed_secs, report.stop_reason, report.output
    );
    Ok(())
}
