//! RAG end to end over real HTTP: chunks embedded by the mock server through both
//! embedding clients, retrieved by meaning, and put into the assistant's prompt of a
//! whole generation run; and the embedding retriever's own requests, seen by a
//! wiremock server.

use std::sync::Arc;

use afterimage::prelude::*;
use afterimage::providers::{GeminiEmbedder, OpenAiEmbedder};
use afterimage::strategies::{
    Bm25Retriever, EmbeddingRetriever, NO_RETRIEVED_CONTEXT, WithRagRespondentPromptModifier,
};
use afterimage_core::{Embedder, Retriever};
use afterimage_mock::{MockConfig, MockServer};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

fn chunks() -> Vec<Document> {
    vec![
        Document::with_id("refunds", "Refunds reach the original card within 30 days."),
        Document::with_id("shipping", "Shipping takes two business days."),
        Document::with_id("warranty", "The battery warranty lasts one year."),
        Document::with_id(
            "passwords",
            "Reset a password with the Forgot Password link.",
        ),
    ]
}

async fn find(retriever: &dyn Retriever, query: &str) -> String {
    retriever.retrieve(query, 1).await.unwrap()[0].id.clone()
}

#[tokio::test]
async fn both_embedders_retrieve_by_shared_words_against_the_mock() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let openai: Arc<dyn Embedder> = Arc::new(
        OpenAiEmbedder::new("", "text-embedding-3-small").base_url(server.openai_base_url()),
    );
    let gemini: Arc<dyn Embedder> = Arc::new(
        GeminiEmbedder::new("key", "gemini-embedding-001").base_url(server.gemini_base_url()),
    );
    for embedder in [openai, gemini] {
        let retriever = EmbeddingRetriever::build(embedder, chunks(), 3)
            .await
            .unwrap();
        assert_eq!(retriever.dimensions(), 64);
        assert_eq!(
            find(&retriever, "when do refunds reach my card").await,
            "refunds"
        );
        assert_eq!(
            find(&retriever, "does the battery warranty cover me").await,
            "warranty"
        );
    }
    // Two batches per build, one request per query, for each of the two embedders.
    assert_eq!(server.stats().embeddings, 2 * (2 + 2));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_rag_stores_the_retrieved_context() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rag.jsonl");
    let model: Arc<dyn ChatModel> = Arc::new(
        OpenAiCompatible::builder(server.openai_base_url())
            .model("mock-model")
            .build()
            .unwrap(),
    );
    let documents = Arc::new(InMemoryDocumentProvider::new(
        chunks().into_iter().map(|d| d.text),
    ));
    let retriever = Arc::new(Bm25Retriever::new(chunks()).unwrap());
    ConversationGenerator::builder()
        .respondent_prompt("You are a support agent for an online shop.")
        .model(Arc::clone(&model))
        .instruction_generator(Arc::new(ContextualInstructionGenerator::new(
            model, documents,
        )))
        .respondent_prompt_modifier(Arc::new(
            WithRagRespondentPromptModifier::new(retriever).top_k(2),
        ))
        .storage(Arc::new(JsonlStorage::new(&path)))
        .build()
        .unwrap()
        .generate(
            GenerateOptions::new()
                .seed(7)
                .num_dialogs(6)
                .max_turns(2)
                .max_concurrency(1),
        )
        .await
        .unwrap();
    let rows = JsonlStorage::new(&path).read_all().unwrap();
    assert_eq!(rows.len(), 6);
    let texts: Vec<String> = chunks().into_iter().map(|d| d.text).collect();
    let mut found = 0;
    for row in rows {
        let retrieval = &row.metadata.extra["retrieval"];
        assert_eq!(retrieval["retriever"], "bm25");
        assert_eq!(retrieval["top_k"], 2);
        let hits = retrieval["hits"].as_array().unwrap();
        assert!(hits.len() <= 2);
        found += hits.len();
        let context = row.response_context.clone().unwrap();
        for hit in hits {
            assert_eq!(hit["turn"], 1);
            let id = hit["id"].as_str().unwrap();
            let text = &chunks().into_iter().find(|d| d.id == id).unwrap().text;
            assert!(context.contains(text.as_str()), "{context}");
        }
        if !hits.is_empty() {
            // Only retrieved chunks reach the assistant.
            let shown = texts
                .iter()
                .filter(|t| context.contains(t.as_str()))
                .count();
            assert_eq!(shown, hits.len());
        }
    }
    // The mock reuses some words of the documents in its questions; one dialog at a
    // time keeps its answers, and so the hits, the same on every run.
    assert!(found >= 1, "no hits in 6 rows");
    // Rows without hits say so instead of carrying made-up context.
    for row in JsonlStorage::new(&path).read_all().unwrap() {
        if row.metadata.extra["retrieval"]["hits"]
            .as_array()
            .unwrap()
            .is_empty()
        {
            assert_eq!(row.response_context.as_deref(), Some(NO_RETRIEVED_CONTEXT));
        }
    }
    server.shutdown().await;
}

/// Answers OpenAI embeddings requests with one axis per keyword of each input.
struct KeywordEmbeddings;

impl Respond for KeywordEmbeddings {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let data: Vec<Value> = body["input"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let text = t.as_str().unwrap();
                let vector: Vec<f32> = ["refund", "ship"]
                    .iter()
                    .map(|k| if text.contains(k) { 1.0 } else { 0.0 })
                    .collect();
                json!({"object": "embedding", "index": i, "embedding": vector})
            })
            .collect();
        ResponseTemplate::new(200).set_body_json(json!({"object": "list", "data": data}))
    }
}

async fn bodies(server: &wiremock::MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn the_embedding_retriever_batches_chunks_and_embeds_the_query() {
    let server = wiremock::MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(KeywordEmbeddings)
        .mount(&server)
        .await;
    let chunks = vec![
        Document::with_id("refunds", "A refund takes 30 days."),
        Document::with_id("shipping", "We ship in two days."),
        Document::with_id("hours", "Open nine to five."),
    ];
    let embedder = Arc::new(
        OpenAiEmbedder::new("key", "text-embedding-3-small")
            .base_url(format!("{}/v1", server.uri()))
            .timeout(std::time::Duration::from_secs(5))
            .batch_size(2),
    );
    let retriever = EmbeddingRetriever::build(embedder, chunks, 2)
        .await
        .unwrap();
    // Two batches of chunks.
    assert_eq!(bodies(&server).await.len(), 2);
    let hits = retriever
        .retrieve("when does my refund arrive?", 3)
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, "refunds");
    assert!((hits[0].score - 1.0).abs() < 1e-6);
    let last = bodies(&server).await.pop().unwrap();
    assert_eq!(last["input"], json!(["when does my refund arrive?"]));
}
