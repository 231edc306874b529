//! Micro-benchmark of near-duplicate detection (MinHash with banded LSH): checking one
//! first question against those already seen, as every dialog does with `dedup` on.
//!
//! `cargo bench -p afterimage-strategies --bench dedup` runs it (divan).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use afterimage_strategies::NearDuplicates;
use divan::{Bencher, black_box};

fn main() {
    divan::main();
}

/// A question built from a counter: distinct word sequences, similar lengths.
fn question(i: usize) -> String {
    const WORDS: [&str; 16] = [
        "thermostat",
        "schedule",
        "error",
        "wifi",
        "warranty",
        "install",
        "heating",
        "away",
        "mode",
        "energy",
        "report",
        "battery",
        "display",
        "wire",
        "reset",
        "app",
    ];
    let mut words = vec!["how", "do", "i", "fix", "the"];
    let mut n = i;
    for _ in 0..8 {
        words.push(WORDS[n % 16]);
        n = n / 16 + i;
    }
    words.push("today?");
    words.join(" ")
}

#[divan::bench(args = [1_000, 10_000, 100_000])]
fn insert_a_new_question(bencher: Bencher, seen: usize) {
    let index = NearDuplicates::new(0.8);
    for i in 0..seen {
        index.insert(&question(i));
    }
    let mut next = seen;
    bencher.bench_local(|| {
        next += 1;
        black_box(index.insert(&question(next)))
    });
}
