//! Chunking on real-looking texts: boundaries, sizes, overlap, multibyte text, ids.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use afterimage_core::{Document, StrategyError};
use afterimage_strategies::{ChunkOptions, chunk_documents, chunk_text};
use serde_json::json;

/// Sentences of varied length, in paragraphs of varied size.
fn english() -> String {
    let mut paragraphs = Vec::new();
    for p in 0..12 {
        let mut sentences = Vec::new();
        for s in 0..(3 + p % 4) {
            let words: Vec<String> = (0..(4 + (p * 7 + s * 3) % 11))
                .map(|w| format!("w{p}x{s}x{w}"))
                .collect();
            let end = [".", "!", "?"][(p + s) % 3];
            sentences.push(format!("{}{end}", words.join(" ")));
        }
        paragraphs.push(sentences.join(" "));
    }
    paragraphs.join("\n\n")
}

fn japanese() -> String {
    let mut text = String::new();
    for i in 0..40 {
        text.push_str(&format!("これは{i}番目の文です🙂、猫が好き。"));
        if i % 9 == 8 {
            text.push_str("\n\n");
        }
    }
    text
}

fn len(s: &str) -> usize {
    s.chars().count()
}

/// Every chunk is a piece of `text` at or after the previous chunk's start, and
/// together they cover every non-whitespace character.
fn assert_covers(text: &str, chunks: &[String]) {
    let mut covered = vec![false; text.len()];
    let mut from = 0;
    for chunk in chunks {
        let at = from
            + text[from..].find(chunk.as_str()).unwrap_or_else(|| {
                panic!("chunk not found in order: {chunk:?}");
            });
        covered[at..at + chunk.len()]
            .iter_mut()
            .for_each(|c| *c = true);
        from = at + chunk.chars().next().map_or(0, char::len_utf8);
    }
    for (i, c) in text.char_indices() {
        assert!(
            c.is_whitespace() || covered[i],
            "character {c:?} at byte {i} is in no chunk"
        );
    }
}

/// The overlap between consecutive chunks: the longest tail of `a` that starts `b`.
fn shared(a: &str, b: &str) -> usize {
    a.char_indices()
        .map(|(i, _)| &a[i..])
        .find(|tail| b.starts_with(tail))
        .map_or(0, len)
}

#[test]
fn chunks_respect_size_sentences_and_overlap() {
    let text = english();
    let options = ChunkOptions::new(300, 80);
    let chunks = chunk_text(&text, &options);
    assert!(chunks.len() > 5, "{}", chunks.len());
    assert_covers(&text, &chunks);
    for chunk in &chunks {
        assert!(len(chunk) <= 300, "{} chars: {chunk:?}", len(chunk));
        assert_eq!(chunk.trim(), chunk);
        // Every sentence is shorter than a chunk, so every chunk ends a sentence.
        assert!(
            chunk.ends_with(['.', '!', '?']),
            "ends mid-sentence: {chunk:?}"
        );
    }
    let (mut overlapping, mut at_sentence) = (0, 0);
    for pair in chunks.windows(2) {
        let n = shared(&pair[0], &pair[1]);
        assert!(n <= 80, "{n}");
        if n > 0 {
            overlapping += 1;
            // The repeated tail starts a word of the previous chunk, and a sentence
            // when one starts within the overlap.
            let tail: String = pair[0].chars().skip(len(&pair[0]) - n).collect();
            let before = &pair[0][..pair[0].len() - tail.len()];
            assert!(
                before.ends_with(char::is_whitespace),
                "overlap {tail:?} starts mid-word"
            );
            let sentence_inside = tail.contains(". ") || tail.contains("! ") || tail.contains("? ");
            if before.trim_end().ends_with(['.', '!', '?']) {
                at_sentence += 1;
            } else {
                assert!(!sentence_inside, "overlap {tail:?} skips a sentence start");
            }
        }
    }
    assert!(at_sentence > 0);
    assert!(
        overlapping * 2 >= chunks.len() - 1,
        "{overlapping} of {} pairs overlap",
        chunks.len() - 1
    );
}

#[test]
fn paragraphs_are_kept_whole_when_they_fit() {
    let paragraph = |tag: &str| {
        (0..8)
            .map(|i| format!("{tag} sentence number {i} ends here."))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (a, b, c) = (paragraph("Alpha"), paragraph("Beta"), paragraph("Gamma"));
    let text = format!("{a}\n\n{b}\n\n{c}\n");
    assert!(len(&a) + len(&b) + 2 <= 700 && len(&a) + len(&b) + len(&c) > 700);
    let chunks = chunk_text(&text, &ChunkOptions::new(700, 0));
    assert_eq!(chunks, [format!("{a}\n\n{b}"), c]);
}

#[test]
fn words_split_only_when_a_sentence_is_too_long() {
    let long_sentence = (0..60)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let text = format!("Short one. {long_sentence}. Another short one.");
    let chunks = chunk_text(&text, &ChunkOptions::new(100, 0));
    assert_covers(&text, &chunks);
    for chunk in &chunks {
        assert!(len(chunk) <= 100);
        // Cut between words, never inside one.
        let last = chunk.split_whitespace().last().unwrap();
        assert!(
            text.split_whitespace().any(|w| w == last),
            "{last:?} is cut"
        );
    }
    assert_eq!(chunks[0].split_whitespace().next(), Some("Short"));
    assert!(chunks.last().unwrap().ends_with("Another short one."));
}

#[test]
fn a_word_longer_than_a_chunk_is_cut_on_characters() {
    // 25 different two-byte letters, à to ø.
    let word: String = (0xE0..0xF9).filter_map(char::from_u32).collect();
    let text = format!("start {word} end");
    let chunks = chunk_text(&text, &ChunkOptions::new(10, 3));
    assert_covers(&text, &chunks);
    assert_eq!(chunks, ["start", "àáâãäåæçèé", "êëìíîïðñòó", "ôõö÷ø end"]);
}

#[test]
fn multibyte_text_is_cut_on_characters_and_japanese_sentences() {
    let text = japanese();
    let chunks = chunk_text(&text, &ChunkOptions::new(60, 20));
    assert_covers(&text, &chunks);
    for chunk in &chunks {
        assert!(len(chunk) <= 60, "{chunk}");
        assert!(chunk.ends_with('。'), "ends mid-sentence: {chunk}");
        assert!(chunk.starts_with("これは"), "starts mid-sentence: {chunk}");
    }
    assert!(chunks.windows(2).all(|p| shared(&p[0], &p[1]) > 0));

    let emoji = "🙂".repeat(7);
    assert_eq!(
        chunk_text(&emoji, &ChunkOptions::new(3, 1)),
        ["🙂🙂🙂", "🙂🙂🙂", "🙂"]
    );
}

#[test]
fn short_text_is_one_trimmed_chunk_and_blank_is_none() {
    let options = ChunkOptions::default();
    assert_eq!(options, ChunkOptions::new(1000, 150));
    assert_eq!(
        chunk_text("  \n Hello there. \n", &options),
        ["Hello there."]
    );
    assert!(chunk_text(" \n\t", &options).is_empty());
    let exact = "x".repeat(1000);
    assert_eq!(chunk_text(&exact, &options), vec![exact]);
}

#[test]
fn documents_get_stable_ids_and_metadata() {
    let mut doc = Document::with_id("/data/guide.md", english());
    doc.metadata.insert("lang".to_owned(), json!("en"));
    let docs = vec![
        doc,
        Document::with_id("small", "Just one."),
        Document::with_id("blank", " "),
    ];
    let options = ChunkOptions::new(400, 50);
    let chunks = chunk_documents(&docs, &options).unwrap();
    let texts = chunk_text(&docs[0].text, &options);
    assert_eq!(chunks.len(), texts.len() + 1);
    for (n, (chunk, text)) in chunks.iter().zip(&texts).enumerate() {
        assert_eq!(chunk.id, format!("/data/guide.md#{n}"));
        assert_eq!(&chunk.text, text);
        assert_eq!(
            serde_json::Value::Object(chunk.metadata.clone()),
            json!({"lang": "en", "source_id": "/data/guide.md", "chunk_index": n})
        );
    }
    let last = chunks.last().unwrap();
    assert_eq!(
        (last.id.as_str(), last.text.as_str()),
        ("small#0", "Just one.")
    );
    assert_eq!(chunk_documents(&docs, &options).unwrap(), chunks);
}

#[test]
fn bad_options_are_config_errors() {
    let docs = [Document::new("text")];
    for (size, overlap) in [(0, 0), (100, 100), (100, 150)] {
        let err = chunk_documents(&docs, &ChunkOptions::new(size, overlap)).unwrap_err();
        assert!(matches!(err, StrategyError::Config(_)), "{err:?}");
    }
}
