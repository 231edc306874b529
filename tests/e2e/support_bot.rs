//! The library end to end over real HTTP: the support-bot flow against the mock
//! server, through both provider clients.

use std::sync::Arc;

use afterimage::prelude::*;
use afterimage_mock::{MockConfig, MockServer};

async fn run(model: Arc<dyn ChatModel>, path: &std::path::Path, n: u64) -> RunReport {
    let docs = Arc::new(InMemoryDocumentProvider::new([
        "Error 503 means the service is unavailable. Retry after 5 minutes.",
        "To reset your password, click 'Forgot Password' on the login screen.",
    ]));
    ConversationGenerator::builder()
        .respondent_prompt("You are a Tier 1 Technical Support agent.")
        .model(Arc::clone(&model))
        .instruction_generator(Arc::new(ContextualInstructionGenerator::new(model, docs)))
        .respondent_prompt_modifier(Arc::new(WithContextRespondentPromptModifier::new()))
        .storage(Arc::new(JsonlStorage::new(path)))
        .build()
        .unwrap()
        .generate(
            GenerateOptions::new()
                .num_dialogs(n)
                .max_turns(3)
                .max_concurrency(8),
        )
        .await
        .unwrap()
}

fn check_rows(path: &std::path::Path, n: usize) {
    let rows = JsonlStorage::new(path).read_all().unwrap();
    assert_eq!(rows.len(), n);
    for row in rows {
        assert!(row.conversations.len() >= 2 && row.conversations.len() <= 6);
        for (i, message) in row.conversations.iter().enumerate() {
            let want = if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            assert_eq!(message.role, want);
        }
        assert_eq!(row.metadata.context_ids.len(), 1);
        assert_eq!(
            row.response_context.as_deref(),
            Some(row.instruction_context.as_str())
        );
        let generation = row.metadata.generation.unwrap();
        assert_eq!(generation.turns as usize * 2, row.conversations.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_bot_over_openai_and_gemini_wire_formats() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let openai: Arc<dyn ChatModel> = Arc::new(
        OpenAiCompatible::builder(server.openai_base_url())
            .model("mock-model")
            .build()
            .unwrap(),
    );
    let path = dir.path().join("openai.jsonl");
    let report = run(openai, &path, 20).await;
    assert_eq!(report.rows_written, 20);
    check_rows(&path, 20);

    let gemini: Arc<dyn ChatModel> = Arc::new(
        Gemini::builder()
            .base_url(server.gemini_base_url())
            .model("gemini-2.0-flash")
            .build()
            .unwrap(),
    );
    let path = dir.path().join("gemini.jsonl");
    let report = run(gemini, &path, 9).await;
    assert_eq!(report.rows_written, 9);
    check_rows(&path, 9);
    assert!(server.stats().generate_content > 0);
}
