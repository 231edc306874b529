//! Cutting a round into batches under tiny limits, measured on the real lines.

use afterimage_batch::{BatchBackend, BatchError, BatchLimits, IdRule, OpenAiBatch, split};
use afterimage_core::ApiKey;
use afterimage_providers::OpenAiCompatible;

use crate::item;

fn backend() -> OpenAiBatch {
    let client = OpenAiCompatible::builder("http://127.0.0.1:9/v1")
        .api_key(ApiKey::new("sk-x"))
        .model("gpt-4o-mini")
        .build()
        .unwrap();
    OpenAiBatch::new(client)
}

fn ids(batches: &[Vec<afterimage_batch::BatchItem>]) -> Vec<Vec<&str>> {
    batches
        .iter()
        .map(|b| b.iter().map(|i| i.custom_id.as_str()).collect())
        .collect()
}

#[test]
fn count_limit_cuts_every_n_requests() {
    let backend = backend();
    let limits = BatchLimits {
        max_requests: 2,
        ..backend.limits()
    };
    let items = (1..=5).map(|n| item(&format!("r{n}"), "m", "q")).collect();
    let batches = split(items, &limits, |i| backend.line_bytes(i)).unwrap();
    assert_eq!(
        ids(&batches),
        [vec!["r1", "r2"], vec!["r3", "r4"], vec!["r5"]]
    );
}

#[test]
fn byte_limit_is_measured_on_the_serialized_lines() {
    let backend = backend();
    let short = item("s1", "m", "q");
    let line = backend.line_bytes(&short).unwrap() + 1;
    // Room for two short lines, not three; the long one goes alone.
    let limits = BatchLimits {
        max_bytes: 2 * line + line / 2,
        ..backend.limits()
    };
    let long = item("l1", "m", &"x".repeat(line));
    assert!(backend.line_bytes(&long).unwrap() < limits.max_bytes);
    let items = vec![
        short,
        item("s2", "m", "q"),
        item("s3", "m", "q"),
        long,
        item("s4", "m", "q"),
    ];
    let batches = split(items, &limits, |i| backend.line_bytes(i)).unwrap();
    assert_eq!(
        ids(&batches),
        [vec!["s1", "s2"], vec!["s3"], vec!["l1"], vec!["s4"]]
    );
    for batch in &batches {
        let bytes: usize = batch
            .iter()
            .map(|i| backend.line_bytes(i).unwrap() + 1)
            .sum();
        assert!(bytes <= limits.max_bytes);
    }
}

#[test]
fn one_model_per_openai_batch_keeps_order_within_a_model() {
    let backend = backend();
    let items = vec![
        item("a1", "gpt-4o-mini", "q"),
        item("b1", "gpt-4o", "q"),
        item("a2", "gpt-4o-mini", "q"),
    ];
    let batches = split(items, &backend.limits(), |i| backend.line_bytes(i)).unwrap();
    assert_eq!(ids(&batches), [vec!["a1", "a2"], vec!["b1"]]);
    let mixed = BatchLimits {
        one_model_per_batch: false,
        ..backend.limits()
    };
    let items = vec![item("a1", "gpt-4o-mini", "q"), item("b1", "gpt-4o", "q")];
    assert_eq!(
        ids(&split(items, &mixed, |i| backend.line_bytes(i)).unwrap()),
        [vec!["a1", "b1"]]
    );
}

#[test]
fn an_item_over_the_byte_limit_and_bad_or_repeated_ids_are_refused() {
    let backend = backend();
    let tiny = BatchLimits {
        max_bytes: 10,
        ..backend.limits()
    };
    let error = split(vec![item("a", "m", "q")], &tiny, |i| backend.line_bytes(i)).unwrap_err();
    assert!(
        matches!(error, BatchError::Invalid(ref m) if m.contains("bytes")),
        "{error}"
    );
    let strict = BatchLimits {
        id_rule: IdRule::Alphanumeric64,
        ..backend.limits()
    };
    let error = split(vec![item("d1:t2", "m", "q")], &strict, |i| {
        backend.line_bytes(i)
    })
    .unwrap_err();
    assert!(
        matches!(error, BatchError::Invalid(ref m) if m.contains("d1:t2")),
        "{error}"
    );
    let twice = vec![item("a", "m", "q"), item("a", "m", "q")];
    let error = split(twice, &backend.limits(), |i| backend.line_bytes(i)).unwrap_err();
    assert!(
        matches!(error, BatchError::Invalid(ref m) if m.contains("twice")),
        "{error}"
    );
    assert!(!IdRule::Alphanumeric64.accepts(&"a".repeat(65)));
    assert!(IdRule::Alphanumeric64.accepts("r3f9c2a1-000123-07a-1"));
}
