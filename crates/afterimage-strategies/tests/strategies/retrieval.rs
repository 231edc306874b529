//! Retrieval for RAG: BM25 ranking, the embedding retriever's checks, and the RAG
//! respondent prompt modifier.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use afterimage_core::{
    Document, Embedder, GeneratedInstructions, Instruction, ProviderError,
    RespondentPromptModifier, Retriever, StrategyError,
};
use afterimage_strategies::{
    Bm25Retriever, CONTEXT_SEPARATOR, EmbeddingRetriever, NO_RETRIEVED_CONTEXT,
    WithRagRespondentPromptModifier,
};

// ---------------------------------------------------------------- BM25

fn fruit() -> Bm25Retriever {
    Bm25Retriever::new(vec![
        Document::with_id("d0", "Apple banana."),
        Document::with_id("d1", "apple, CHERRY"),
        Document::with_id("d2", "apple apple durian"),
    ])
    .unwrap()
}

/// BM25 by hand for the fruit corpus: N = 3, lengths 2, 2, 3, average 7/3, k1 = 1.2,
/// b = 0.75, IDF = ln(1 + (N - n + 0.5) / (n + 0.5)).
fn term(tf: f64, len: f64, n: f64) -> f64 {
    let idf = (1.0 + (3.0 - n + 0.5) / (n + 0.5)).ln();
    let norm = 1.0 - 0.75 + 0.75 * len / (7.0 / 3.0);
    idf * tf * 2.2 / (tf + 1.2 * norm)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[tokio::test]
async fn bm25_ranks_as_computed_by_hand() {
    let hits = fruit().retrieve("apple durian", 10).await.unwrap();
    let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    // d0 and d1 tie (one "apple" in two words each): index order breaks the tie.
    assert_eq!(ids, ["d2", "d0", "d1"]);
    assert!(close(
        hits[0].score,
        term(2.0, 3.0, 3.0) + term(1.0, 3.0, 1.0)
    ));
    assert!(close(hits[1].score, term(1.0, 2.0, 3.0)));
    assert!(close(hits[2].score, hits[1].score));
    assert_eq!(hits[0].text, "apple apple durian");

    // A rare term outweighs a common one said twice.
    let hits = fruit().retrieve("apple cherry", 10).await.unwrap();
    assert_eq!(hits[0].id, "d1");
    assert!(close(
        hits[0].score,
        term(1.0, 2.0, 3.0) + term(1.0, 2.0, 1.0)
    ));
    assert!(hits[0].score > 3.0 * hits[1].score);
    // Repeating a query word does not change the ranking or the scores.
    let twice = fruit().retrieve("cherry cherry apple", 10).await.unwrap();
    assert_eq!(twice, hits);
}

#[tokio::test]
async fn bm25_respects_the_limit_and_returns_only_matches() {
    let retriever = fruit();
    assert_eq!(retriever.retrieve("apple", 2).await.unwrap().len(), 2);
    assert_eq!(retriever.retrieve("apple", 0).await.unwrap().len(), 0);
    assert!(retriever.retrieve("zebra", 5).await.unwrap().is_empty());
    // Stop words alone match nothing.
    assert!(
        retriever
            .retrieve("what is the", 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(retriever.name(), "bm25");
    let hits = retriever.retrieve("BANANA!", 5).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, "d0");
}

#[tokio::test]
async fn bm25_parameters_change_the_scores() {
    // With k1 = 0 neither term frequency nor length matters: every "apple" scores its IDF.
    let hits = fruit().k1(0.0).b(0.0).retrieve("apple", 3).await.unwrap();
    assert!(close(hits[0].score, hits[2].score));
    let hits = fruit().retrieve("apple", 3).await.unwrap();
    assert_eq!(hits[0].id, "d2");
    assert!(hits[0].score > hits[1].score);
}

#[tokio::test]
async fn bm25_finds_japanese_and_chinese() {
    let retriever = Bm25Retriever::new(vec![
        Document::with_id("refund", "返金は三十日以内に可能です。"),
        Document::with_id("shipping", "配送には二日かかります。"),
        Document::with_id("zh", "退货需要原包装和收据。"),
    ])
    .unwrap();
    let hits = retriever.retrieve("返金できますか", 3).await.unwrap();
    assert_eq!(hits[0].id, "refund");
    let hits = retriever.retrieve("如何退货？", 3).await.unwrap();
    assert_eq!(hits[0].id, "zh");
}

#[test]
fn bm25_refuses_an_empty_corpus() {
    let error = Bm25Retriever::new(Vec::new()).unwrap_err();
    assert!(
        matches!(error, StrategyError::NoDocuments { .. }),
        "{error}"
    );
}

#[test]
fn bm25_scales_to_many_chunks() {
    let chunks: Vec<Document> = (0..20_000)
        .map(|i| Document::with_id(format!("c{i}"), format!("word{} common text {i}", i % 97)))
        .collect();
    let retriever = Bm25Retriever::new(chunks).unwrap();
    let hits = retriever.search("word5 19402", 3);
    // The number is in one chunk only, so its IDF beats "word5" (in ~206 chunks).
    assert_eq!(hits[0].id, "c19402");
    assert_eq!(hits.len(), 3);
}

// ---------------------------------------------------------------- embeddings

/// Answers with what it is told to, counting calls.
#[derive(Debug)]
struct Fixed {
    vectors: fn(&[String]) -> Vec<Vec<f32>>,
}

#[async_trait::async_trait]
impl Embedder for Fixed {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        Ok((self.vectors)(texts))
    }
}

/// One axis per keyword: "refund", "ship", "warranty".
fn axes(texts: &[String]) -> Vec<Vec<f32>> {
    texts
        .iter()
        .map(|t| {
            ["refund", "ship", "warranty"]
                .iter()
                .map(|k| if t.contains(k) { 3.0 } else { 0.0 })
                .collect()
        })
        .collect()
}

fn shop() -> Vec<Document> {
    vec![
        Document::with_id("refunds", "A refund takes 30 days."),
        Document::with_id("shipping", "We ship in two days."),
        Document::with_id("both", "A refund of the ship fee."),
        Document::with_id("warranty", "The warranty lasts one year."),
    ]
}

#[tokio::test]
async fn embedding_retriever_ranks_by_cosine() {
    let embedder = Arc::new(Fixed { vectors: axes });
    let retriever = EmbeddingRetriever::build(embedder, shop(), 3)
        .await
        .unwrap();
    assert_eq!(retriever.dimensions(), 3);
    assert_eq!(retriever.len(), 4);
    let hits = retriever.retrieve("my refund?", 4).await.unwrap();
    let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    // Orthogonal chunks (shipping, warranty) do not match at all.
    assert_eq!(ids, ["refunds", "both"]);
    assert!((hits[0].score - 1.0).abs() < 1e-6);
    assert!((hits[1].score - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    assert_eq!(retriever.name(), "embedding");
}

#[tokio::test]
async fn embedding_retriever_names_what_the_embedder_got_wrong() {
    fn short(texts: &[String]) -> Vec<Vec<f32>> {
        axes(texts).into_iter().skip(1).collect()
    }
    fn ragged(texts: &[String]) -> Vec<Vec<f32>> {
        texts
            .iter()
            .map(|t| vec![1.0; if t.contains("ship") { 2 } else { 3 }])
            .collect()
    }
    let error = EmbeddingRetriever::build(Arc::new(Fixed { vectors: short }), shop(), 2)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("returned 1 vectors for 2 texts"),
        "{error}"
    );
    let error = EmbeddingRetriever::build(Arc::new(Fixed { vectors: ragged }), shop(), 2)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("inconsistent embedding dimensions"),
        "{error}"
    );
    let error = EmbeddingRetriever::build(Arc::new(Fixed { vectors: axes }), Vec::new(), 2)
        .await
        .unwrap_err();
    assert!(matches!(error, StrategyError::NoDocuments { .. }));
    let error = EmbeddingRetriever::build(Arc::new(Fixed { vectors: axes }), shop(), 0)
        .await
        .unwrap_err();
    assert!(matches!(error, StrategyError::Config(_)));
}

// ---------------------------------------------------------------- the RAG modifier

fn corpus() -> Arc<Bm25Retriever> {
    Arc::new(
        Bm25Retriever::new(vec![
            Document::with_id(
                "refunds",
                "Refunds are issued within 30 days to the original card.",
            ),
            Document::with_id("shipping", "Shipping takes two business days."),
            Document::with_id(
                "warranty",
                "The warranty covers battery defects for a year.",
            ),
            Document::with_id("returns", "Returns need the original box and the receipt."),
        ])
        .unwrap(),
    )
}

fn instruction(question: &str, context: &str) -> Instruction {
    Instruction::split(GeneratedInstructions {
        instructions: vec![question.into()],
        context: context.into(),
        ..GeneratedInstructions::default()
    })
    .remove(0)
}

const BASE: &str = "You are a support agent.";

fn hits(prompt: &afterimage_core::ModifiedPrompt) -> Vec<(String, f64, u64)> {
    prompt.metadata["retrieval"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["id"].as_str().unwrap().to_owned(),
                h["score"].as_f64().unwrap(),
                h["turn"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_right_chunk_reaches_the_prompt() {
    let retriever = corpus();
    let modifier = WithRagRespondentPromptModifier::new(retriever.clone()).top_k(1);
    let question = instruction("Will refunds go back to my card?", "Some sampled document.");
    let prompt = modifier.modify(BASE, &question).await.unwrap();
    let refunds = "Refunds are issued within 30 days to the original card.";
    assert_eq!(prompt.response_context.as_deref(), Some(refunds));
    assert!(prompt.system_prompt.starts_with(BASE));
    assert!(prompt.system_prompt.contains(refunds));
    assert!(!prompt.system_prompt.contains("Some sampled document."));
    let expected = retriever.search("Will refunds go back to my card?", 1)[0].score;
    assert_eq!(hits(&prompt), [("refunds".to_owned(), expected, 1)]);
    let retrieval = &prompt.metadata["retrieval"];
    assert_eq!(retrieval["retriever"], "bm25");
    assert_eq!(retrieval["top_k"], 1);
    // Without per-turn retrieval, follow-ups keep the first prompt.
    let next = modifier
        .follow_up(BASE, &question, &prompt, "And shipping?")
        .await
        .unwrap();
    assert!(next.is_none());
}

#[tokio::test]
async fn min_score_drops_weak_hits_and_nothing_found_is_said_plainly() {
    let retriever = corpus();
    let query = "original card refunds";
    let all = retriever.search(query, 3);
    assert_eq!(all.len(), 2, "{all:?}");
    let floor = (all[0].score + all[1].score) / 2.0;
    let modifier = WithRagRespondentPromptModifier::new(retriever.clone()).min_score(floor);
    let prompt = modifier
        .modify(BASE, &instruction(query, ""))
        .await
        .unwrap();
    assert_eq!(hits(&prompt).len(), 1);
    assert_eq!(hits(&prompt)[0].0, "refunds");

    let prompt = WithRagRespondentPromptModifier::new(retriever)
        .modify(BASE, &instruction("zebra stripes?", ""))
        .await
        .unwrap();
    assert_eq!(
        prompt.response_context.as_deref(),
        Some(NO_RETRIEVED_CONTEXT)
    );
    assert!(prompt.system_prompt.contains(NO_RETRIEVED_CONTEXT));
    assert!(hits(&prompt).is_empty());
}

#[tokio::test]
async fn per_turn_retrieval_accumulates_distinct_chunks() {
    let modifier = WithRagRespondentPromptModifier::new(corpus())
        .top_k(1)
        .per_turn(true);
    let question = instruction("Will refunds go back to my card?", "");
    let first = modifier.modify(BASE, &question).await.unwrap();
    let second = modifier
        .follow_up(BASE, &question, &first, "How long does shipping take?")
        .await
        .unwrap()
        .unwrap();
    let refunds = "Refunds are issued within 30 days to the original card.";
    let shipping = "Shipping takes two business days.";
    let warranty = "The warranty covers battery defects for a year.";
    assert_eq!(
        second.response_context.as_deref(),
        Some(format!("{refunds}{CONTEXT_SEPARATOR}{shipping}").as_str())
    );
    // A question whose best chunk is already there adds nothing to the context.
    let again = modifier
        .follow_up(BASE, &question, &second, "Is shipping really two days?")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.response_context, second.response_context);
    let third = modifier
        .follow_up(BASE, &question, &again, "What does the warranty cover?")
        .await
        .unwrap()
        .unwrap();
    let context = third.response_context.clone().unwrap();
    assert_eq!(
        context,
        [refunds, shipping, warranty].join(CONTEXT_SEPARATOR)
    );
    assert!(third.system_prompt.contains(&context));
    assert_eq!(third.system_prompt.matches(shipping).count(), 1);
    let turns: Vec<(String, u64)> = hits(&third).into_iter().map(|(id, _, t)| (id, t)).collect();
    assert_eq!(
        turns,
        [
            ("refunds".to_owned(), 1),
            ("shipping".to_owned(), 2),
            ("shipping".to_owned(), 3),
            ("warranty".to_owned(), 4)
        ]
    );
}

#[tokio::test]
async fn per_turn_replaces_the_nothing_found_note() {
    let modifier = WithRagRespondentPromptModifier::new(corpus())
        .top_k(1)
        .per_turn(true)
        .include_instruction_context(true);
    let question = instruction("Hello there", "Store hours: 9 to 5.");
    let first = modifier.modify(BASE, &question).await.unwrap();
    let first_context = first.response_context.clone().unwrap();
    assert!(first_context.starts_with("Store hours: 9 to 5.\n\n"));
    assert!(first_context.ends_with(NO_RETRIEVED_CONTEXT));
    let next = modifier
        .follow_up(BASE, &question, &first, "And the warranty?")
        .await
        .unwrap()
        .unwrap();
    let context = next.response_context.unwrap();
    assert!(context.starts_with("Store hours: 9 to 5.\n\n"));
    assert!(context.ends_with("The warranty covers battery defects for a year."));
    assert!(!context.contains(NO_RETRIEVED_CONTEXT));
}

#[tokio::test]
async fn a_template_without_context_is_refused() {
    let error = WithRagRespondentPromptModifier::new(corpus())
        .template("{prompt} only")
        .modify(BASE, &instruction("refunds?", ""))
        .await
        .unwrap_err();
    assert!(matches!(error, StrategyError::Config(_)), "{error}");
    let prompt = WithRagRespondentPromptModifier::new(corpus())
        .template("{prompt}\nKNOW:{context}")
        .top_k(1)
        .modify(BASE, &instruction("refunds?", ""))
        .await
        .unwrap();
    assert_eq!(
        prompt.system_prompt,
        format!("{BASE}\nKNOW:{}", prompt.response_context.unwrap())
    );
}

/// Answers slowly (later batches faster than earlier ones) and counts calls in flight.
#[derive(Debug, Default)]
struct Slow {
    calls: std::sync::atomic::AtomicUsize,
    in_flight: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Embedder for Slow {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        use std::sync::atomic::Ordering::SeqCst;
        let call = self.calls.fetch_add(1, SeqCst);
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(
            40u64.saturating_sub(3 * call as u64),
        ))
        .await;
        self.in_flight.fetch_sub(1, SeqCst);
        Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
    }
}

#[tokio::test]
async fn the_index_embeds_a_few_batches_at_once_and_keeps_their_order() {
    let chunks: Vec<Document> = (0..12)
        .map(|i| Document::with_id(format!("c{i}"), "x".repeat(i + 1)))
        .collect();
    let embedder = Arc::new(Slow::default());
    let retriever = EmbeddingRetriever::build(embedder.clone(), chunks, 1)
        .await
        .unwrap();
    assert_eq!(retriever.len(), 12);
    let most = embedder.most.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=4).contains(&most), "{most} calls in flight");
    // Each chunk kept its own vector: the query for "xxxxx" finds c4 first.
    let hits = retriever.retrieve("xxxxx", 1).await.unwrap();
    assert_eq!(hits[0].id, "c4");
}
