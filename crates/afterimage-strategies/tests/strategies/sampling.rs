//! Document sampling: balance, weights, visit targets, determinism, and the contextual
//! generator running out of documents.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;

use afterimage_core::testing::ScriptedModel;
use afterimage_core::{
    ChatResponse, Document, InstructionGenerator, InstructionRequest, StrategyError,
};
use afterimage_strategies::{
    ContextualInstructionGenerator, DocumentPool, DocumentSampler, InMemoryDocumentProvider,
};

fn documents(n: usize) -> Vec<Document> {
    (0..n)
        .map(|i| Document::with_id(format!("d{i}"), format!("text {i}")))
        .collect()
}

fn uses(sampler: &DocumentSampler) -> Vec<u64> {
    sampler
        .documents()
        .iter()
        .map(|d| sampler.uses(&d.id))
        .collect()
}

fn ids(docs: &[Document]) -> Vec<String> {
    docs.iter().map(|d| d.id.clone()).collect()
}

#[test]
fn every_document_is_used_k_times_after_k_rounds() {
    for batch in [1, 2, 3, 7] {
        // 7 takes of `batch` documents: each of the 7 documents used `batch` times.
        let sampler = DocumentSampler::new(documents(7));
        for seed in 0..7 {
            let picked = sampler.take(batch, seed);
            assert_eq!(picked.len(), batch);
            // Never a document's (n+1)-th use while another is below n.
            let counts = uses(&sampler);
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(
                max - min <= 1,
                "batch {batch}, after take {seed}: {counts:?}"
            );
        }
        assert_eq!(uses(&sampler), vec![batch as u64; 7], "batch {batch}");
        assert_eq!(sampler.covered(batch as u64), 7);
        assert!(!sampler.exhausted());
    }
}

#[test]
fn history_from_record_use_is_balanced_out() {
    let sampler = DocumentSampler::new(documents(4));
    sampler.record_use(["d0", "d0", "d0", "d1"]);
    let mut picked = Vec::new();
    for seed in 0..5 {
        picked.extend(ids(&sampler.take(1, seed)));
    }
    picked.sort();
    assert_eq!(picked, ["d1", "d2", "d2", "d3", "d3"]);
    assert_eq!(uses(&sampler), [3, 2, 2, 2]);
}

#[test]
fn weight_three_is_picked_three_times_as_often() {
    let weights = HashMap::from([("d0".to_owned(), 3.0), ("d2".to_owned(), 0.5)]);
    let sampler = DocumentSampler::new(documents(3)).weights(weights);
    for seed in 0..9_000 {
        sampler.take(1, seed);
    }
    // Shares 3 : 1 : 0.5 of 9000 picks.
    assert_eq!(uses(&sampler), [6_000, 2_000, 1_000]);
}

#[test]
fn weights_from_metadata_and_zero_weight_exclusion() {
    let mut docs = documents(3);
    docs[1].metadata.insert("weight".to_owned(), 2.into());
    let sampler = DocumentSampler::new(docs.clone());
    for seed in 0..400 {
        sampler.take(1, seed);
    }
    assert_eq!(uses(&sampler), [100, 200, 100]);

    // An explicit map replaces the metadata; zero and negative weights are never picked.
    let sampler = DocumentSampler::new(docs).weights(HashMap::from([
        ("d0".to_owned(), 0.0),
        ("d2".to_owned(), -2.0),
    ]));
    for seed in 0..10 {
        assert_eq!(ids(&sampler.take(3, seed)), ["d1"]);
    }
    assert_eq!(uses(&sampler), [0, 10, 0]);
}

#[test]
fn target_visits_caps_uses_then_takes_nothing() {
    let sampler = DocumentSampler::new(documents(5)).target_visits(Some(2));
    assert_eq!(sampler.target(), Some(2));
    let mut total = 0;
    for seed in 0..100 {
        let picked = sampler.take(3, seed);
        if picked.is_empty() {
            break;
        }
        total += picked.len();
        assert!(uses(&sampler).iter().all(|u| *u <= 2));
    }
    assert_eq!(total, 10);
    assert_eq!(uses(&sampler), [2; 5]);
    assert_eq!(sampler.covered(2), 5);
    assert_eq!(sampler.covered(3), 0);
    assert!(sampler.exhausted());
    assert!(sampler.take(1, 1).is_empty());
    assert!(sampler.sample(1, 1).is_empty());
}

#[test]
fn same_seeds_and_history_give_the_same_picks() {
    let run = |first_seed: u64| {
        let sampler =
            DocumentSampler::new(documents(10)).weights(HashMap::from([("d3".to_owned(), 2.5)]));
        sampler.record_use(["d5"]);
        (first_seed..first_seed + 50)
            .map(|seed| ids(&sampler.take(3, seed)))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(0), run(0));
    assert_ne!(run(0), run(1000));
}

/// A model that always proposes one question.
fn model() -> Arc<ScriptedModel> {
    Arc::new(ScriptedModel::new("scripted", |_request| async {
        Ok(ChatResponse::text(
            r#"{"instructions": ["What is this about?"]}"#,
        ))
    }))
}

#[tokio::test]
async fn contextual_generator_is_exhausted_once_every_document_reached_its_target() {
    let model = model();
    let source = InMemoryDocumentProvider::new(vec![
        Document::with_id("a", "Alpha text."),
        Document::with_id("b", "Beta text."),
        Document::with_id("c", "Gamma text."),
    ]);
    let generator = ContextualInstructionGenerator::new(model.clone(), Arc::new(source))
        .n_instructions(1)
        .target_visits(Some(2))
        .weights(HashMap::from([("c".to_owned(), 0.0)]));
    let mut contexts = Vec::new();
    for seed in 0..4 {
        let batch = generator
            .generate(&InstructionRequest::new("A curious reader.", seed))
            .await
            .unwrap();
        contexts.push(batch.context);
    }
    contexts.sort();
    assert_eq!(
        contexts,
        ["Alpha text.", "Alpha text.", "Beta text.", "Beta text."]
    );

    let err = generator
        .generate(&InstructionRequest::new("A curious reader.", 9))
        .await
        .unwrap_err();
    assert!(err.is_exhausted(), "{err:?}");
    assert_eq!(
        err.to_string(),
        "exhausted: every document with a positive weight reached target_visits = 2 (2 of 3 document(s))"
    );
    assert_eq!(model.calls(), 4);
    let sampler = generator.sampler().await.unwrap();
    assert_eq!(
        (sampler.uses("a"), sampler.uses("b"), sampler.uses("c")),
        (2, 2, 0)
    );
}

#[tokio::test]
async fn contextual_generator_without_any_positive_weight_is_a_config_error() {
    let source = InMemoryDocumentProvider::new(vec![Document::with_id("a", "Alpha text.")]);
    let generator = ContextualInstructionGenerator::new(model(), Arc::new(source))
        .weights(HashMap::from([("a".to_owned(), 0.0)]));
    let err = generator
        .generate(&InstructionRequest::new("A curious reader.", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StrategyError::Config(_)), "{err:?}");
}

#[test]
fn visits_count_dialogs_pending_and_stored() {
    let sampler = DocumentSampler::new(documents(1)).target_visits(Some(2));
    let id = vec!["d0".to_owned()];
    // A batch of three questions reaches the target of two while it is pending.
    assert_eq!(ids(&sampler.take_expecting(1, 0, 3)), ["d0"]);
    assert!(sampler.take_expecting(1, 0, 3).is_empty());
    // The batch held one question: one pending visit remains, so one more fits.
    sampler.settle(&id, 3, 1);
    assert_eq!(sampler.covered(2), 0);
    assert_eq!(ids(&sampler.take(1, 0)), ["d0"]);
    assert!(sampler.exhausted());
    // A dialog that was not stored frees its visit; a stored one keeps it.
    sampler.finish(&id, false);
    assert!(!sampler.exhausted());
    sampler.finish(&id, true);
    assert_eq!(ids(&sampler.take(1, 0)), ["d0"]);
    sampler.finish(&id, true);
    assert!(sampler.exhausted());
    assert!(!sampler.has_pending());
    assert_eq!(sampler.covered(2), 1);
}

#[tokio::test]
async fn a_pick_says_to_wait_while_dialogs_in_flight_hold_the_visits() {
    let pool = DocumentPool::new(Arc::new(InMemoryDocumentProvider::new(documents(1))))
        .target_visits(Some(1));
    let request = InstructionRequest::new("a user", 1).reporting_outcomes();
    let first = pool.take(1, &request, 1).await.unwrap().confirm(1);
    assert_eq!(ids(&first), ["d0"]);

    // Without outcome reports nothing can free the visit: exhausted at once.
    let plain = InstructionRequest::new("a user", 1);
    assert!(pool.take(1, &plain, 1).await.unwrap_err().is_exhausted());

    // With them, the caller is told to wait; the dialog failing frees the visit.
    assert!(pool.take(1, &request, 1).await.unwrap_err().is_waiting());
    pool.finish(&ids(&first), false);
    let second = pool.take(1, &request, 1).await.unwrap().confirm(1);
    assert_eq!(ids(&second), ["d0"]);

    // Stored: the target is met for good, and the next pick says so.
    pool.finish(&ids(&second), true);
    let error = pool.take(1, &request, 1).await.unwrap_err();
    assert!(error.is_exhausted(), "{error}");
    assert!(error.to_string().contains("target_visits = 1"), "{error}");
}

#[tokio::test]
async fn a_pick_whose_batch_fails_frees_its_visits() {
    let pool = DocumentPool::new(Arc::new(InMemoryDocumentProvider::new(documents(1))))
        .target_visits(Some(3));
    let request = InstructionRequest::new("a user", 1);
    // Reserved for three dialogs, then dropped unconfirmed (the model call failed).
    drop(pool.take(1, &request, 3).await.unwrap());
    let again = pool.take(1, &request, 3).await.unwrap();
    assert_eq!(ids(again.documents()), ["d0"]);
}
