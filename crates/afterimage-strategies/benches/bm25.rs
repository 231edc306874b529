//! Micro-benchmarks of BM25 retrieval: indexing ~20k chunks, and scoring a query
//! over them (once per dialog, or per turn with per-turn RAG).
//!
//! `cargo bench -p afterimage-strategies` runs them (divan).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use afterimage_core::Document;
use afterimage_strategies::Bm25Retriever;
use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

const CHUNKS: usize = 20_000;

/// A vocabulary of 5,000 made-up words, so term frequencies follow a skewed spread.
fn word(i: usize) -> String {
    const SYLLABLES: [&str; 10] = ["ka", "ro", "mi", "te", "su", "la", "po", "ne", "vi", "da"];
    let mut out = String::new();
    let mut n = i;
    loop {
        out.push_str(SYLLABLES[n % 10]);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out
}

/// ~120-word chunks drawn from the vocabulary with a fixed linear congruential stream.
fn chunks() -> Vec<Document> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    (0..CHUNKS)
        .map(|i| {
            let words: Vec<String> = (0..120)
                .map(|_| {
                    // Squaring skews draws towards the low, common words.
                    let r = next() % 5_000;
                    word(r * r / 5_000)
                })
                .collect();
            Document::with_id(format!("chunk-{i}"), words.join(" "))
        })
        .collect()
}

#[divan::bench(sample_count = 10)]
fn index_20k_chunks(bencher: Bencher) {
    let chunks = chunks();
    bencher
        .with_inputs(|| chunks.clone())
        .bench_values(|chunks| Bm25Retriever::new(chunks).unwrap());
}

#[divan::bench]
fn query_20k_chunks(bencher: Bencher) {
    let retriever = Bm25Retriever::new(chunks()).unwrap();
    let query = format!(
        "How do I {} the {} when {} fails?",
        word(12),
        word(480),
        word(3_100)
    );
    bencher.bench(|| retriever.search(black_box(&query), black_box(5)));
}
