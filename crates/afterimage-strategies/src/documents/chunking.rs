//! Splitting long documents into overlapping chunks that end on natural boundaries.
//!
//! Sizes are in characters (Unicode scalar values), not bytes. A text is cut at blank
//! lines where that is enough, then at sentence ends, then at whitespace, and only as
//! a last resort inside a word; the pieces are then packed greedily into chunks of at
//! most [`ChunkOptions::size`] characters. Each chunk after the first repeats up to
//! [`ChunkOptions::overlap`] characters of the previous chunk's tail, starting at a
//! sentence start if one is close enough, else at a word start.

use afterimage_core::{Document, StrategyError};
use serde_json::Value;

/// How long chunks are and how much consecutive chunks share, in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// The most characters in a chunk (after trimming).
    pub size: usize,
    /// The most characters a chunk repeats from the end of the previous one.
    pub overlap: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions {
            size: 1000,
            overlap: 150,
        }
    }
}

impl ChunkOptions {
    /// Chunks of at most `size` characters sharing up to `overlap` characters.
    pub fn new(size: usize, overlap: usize) -> Self {
        ChunkOptions { size, overlap }
    }

    /// An error unless `size` is positive and `overlap` smaller than `size`.
    pub fn validate(&self) -> Result<(), StrategyError> {
        if self.size == 0 {
            return Err(StrategyError::Config(
                "chunk size must be at least 1 character".to_owned(),
            ));
        }
        if self.overlap >= self.size {
            return Err(StrategyError::Config(format!(
                "chunk overlap ({}) must be smaller than the chunk size ({})",
                self.overlap, self.size
            )));
        }
        Ok(())
    }
}

/// Splits every document into chunks: chunk `n` of document `id` gets the id
/// `"{id}#{n}"` (from 0) and the document's metadata plus `source_id` (the document's
/// id) and `chunk_index` (`n`). Blank documents give no chunk.
///
/// Fails only on bad options (see [`ChunkOptions::validate`]).
pub fn chunk_documents(
    documents: &[Document],
    options: &ChunkOptions,
) -> Result<Vec<Document>, StrategyError> {
    options.validate()?;
    let mut chunks = Vec::new();
    for document in documents {
        for (index, text) in chunk_text(&document.text, options).into_iter().enumerate() {
            let mut chunk = Document::with_id(format!("{}#{index}", document.id), text);
            chunk.metadata = document.metadata.clone();
            chunk
                .metadata
                .insert("source_id".to_owned(), Value::from(document.id.as_str()));
            chunk
                .metadata
                .insert("chunk_index".to_owned(), Value::from(index));
            chunks.push(chunk);
        }
    }
    Ok(chunks)
}

/// The chunks of `text`, each trimmed; a text of at most `size` characters (once
/// trimmed) is one chunk, a blank text none.
///
/// Bad options are made usable rather than refused: a `size` of 0 counts as 1 and an
/// `overlap` of `size` or more as `size - 1`.
pub fn chunk_text(text: &str, options: &ChunkOptions) -> Vec<String> {
    let size = options.size.max(1);
    let overlap = options.overlap.min(size - 1);
    let chunker = Chunker::new(text, size, overlap);
    chunker
        .chunks()
        .into_iter()
        .map(|(start, end)| chunker.chars[start..end].iter().collect())
        .collect()
}

/// How strongly a position separates what comes before from what comes after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Boundary {
    /// Inside a word (or at the very start).
    None,
    /// The first character after whitespace.
    Word,
    /// The first character of a sentence.
    Sentence,
    /// The first character after a blank line.
    Paragraph,
}

/// Characters that may close a sentence before its terminator is followed by space:
/// quotes and brackets.
const CLOSERS: &[char] = &['"', '\'', '”', '’', ')', ']', '»', '」', '』', '）'];

/// Terminators that end a sentence even without a following space (CJK scripts write
/// none).
const CJK_TERMINATORS: &[char] = &['。', '！', '？'];

/// A text as characters, with the boundary strength at each position.
struct Chunker {
    chars: Vec<char>,
    /// `boundaries[i]`: what starts at character `i`.
    boundaries: Vec<Boundary>,
    size: usize,
    overlap: usize,
}

impl Chunker {
    fn new(text: &str, size: usize, overlap: usize) -> Self {
        let chars: Vec<char> = text.chars().collect();
        let boundaries = boundaries(&chars);
        Chunker {
            chars,
            boundaries,
            size,
            overlap,
        }
    }

    /// `start..end` without leading and trailing whitespace.
    fn trim(&self, mut start: usize, mut end: usize) -> (usize, usize) {
        while start < end && self.chars[start].is_whitespace() {
            start += 1;
        }
        while end > start && self.chars[end - 1].is_whitespace() {
            end -= 1;
        }
        (start, end)
    }

    /// The length of `start..end` once trimmed.
    fn trimmed_len(&self, start: usize, end: usize) -> usize {
        let (start, end) = self.trim(start, end);
        end - start
    }

    /// The chunks as trimmed character ranges.
    fn chunks(&self) -> Vec<(usize, usize)> {
        let mut pieces = Vec::new();
        self.segment(0, self.chars.len(), Boundary::Paragraph, &mut pieces);
        let mut chunks: Vec<(usize, usize)> = Vec::new();
        let mut next = 0;
        while next < pieces.len() {
            let (mut start, mut end) = pieces[next];
            if let Some(&(previous_start, previous_end)) = chunks.last()
                && let Some(from) = self.overlap_start(previous_start, previous_end, end)
            {
                start = from;
            }
            next += 1;
            while next < pieces.len() && self.trimmed_len(start, pieces[next].1) <= self.size {
                end = pieces[next].1;
                next += 1;
            }
            let (start, end) = self.trim(start, end);
            if start < end {
                chunks.push((start, end));
            }
        }
        chunks
    }

    /// Cuts `start..end` into pieces of at most `size` characters, at boundaries of
    /// `level` or stronger, going down a level for pieces still too long.
    fn segment(&self, start: usize, end: usize, level: Boundary, pieces: &mut Vec<(usize, usize)>) {
        if self.trimmed_len(start, end) <= self.size {
            if start < end {
                pieces.push((start, end));
            }
            return;
        }
        let finer = match level {
            Boundary::Paragraph => Boundary::Sentence,
            Boundary::Sentence => Boundary::Word,
            Boundary::Word => Boundary::None,
            Boundary::None => {
                self.hard_split(start, end, pieces);
                return;
            }
        };
        let mut from = start;
        for cut in start + 1..end {
            if self.boundaries[cut] >= level {
                self.segment(from, cut, finer, pieces);
                from = cut;
            }
        }
        self.segment(from, end, finer, pieces);
    }

    /// Cuts `start..end` every `size` characters, whatever they are.
    fn hard_split(&self, start: usize, end: usize, pieces: &mut Vec<(usize, usize)>) {
        let (first, last) = self.trim(start, end);
        let mut from = start;
        let mut cut = first + self.size;
        while cut < last {
            pieces.push((from, cut));
            from = cut;
            cut += self.size;
        }
        pieces.push((from, end));
    }

    /// Where the chunk after `previous_start..previous_end` begins so that it repeats
    /// at most `overlap` characters of it and its first piece (ending at `first_end`)
    /// still fits: the earliest sentence start that qualifies, else the earliest word
    /// start, else none.
    fn overlap_start(
        &self,
        previous_start: usize,
        previous_end: usize,
        first_end: usize,
    ) -> Option<usize> {
        if self.overlap == 0 {
            return None;
        }
        let earliest = (previous_start + 1).max(previous_end.saturating_sub(self.overlap));
        let fits = |at: usize| self.trimmed_len(at, first_end) <= self.size;
        let find = |level: Boundary| {
            (earliest..previous_end).find(|&at| self.boundaries[at] >= level && fits(at))
        };
        find(Boundary::Sentence).or_else(|| find(Boundary::Word))
    }
}

/// What starts at each character of `chars`.
fn boundaries(chars: &[char]) -> Vec<Boundary> {
    let mut kinds = vec![Boundary::None; chars.len()];
    // Where the whitespace run ending just before the current character began.
    let mut run_start = 0;
    for (i, &c) in chars.iter().enumerate() {
        if c.is_whitespace() {
            if i == 0 || !chars[i - 1].is_whitespace() {
                run_start = i;
            }
            continue;
        }
        if i == 0 {
            continue;
        }
        let before = chars[i - 1];
        kinds[i] = if before.is_whitespace() {
            let newlines = chars[run_start..i].iter().filter(|&&c| c == '\n').count();
            if newlines >= 2 {
                Boundary::Paragraph
            } else if ends_sentence(&chars[..run_start]) {
                Boundary::Sentence
            } else {
                Boundary::Word
            }
        } else if CJK_TERMINATORS.contains(&before) {
            Boundary::Sentence
        } else {
            Boundary::None
        };
    }
    kinds
}

/// Whether `text` ends with a sentence terminator, perhaps followed by closing quotes
/// or brackets.
fn ends_sentence(text: &[char]) -> bool {
    let mut end = text.len();
    while end > 0 && CLOSERS.contains(&text[end - 1]) {
        end -= 1;
    }
    end > 0 && matches!(text[end - 1], '.' | '!' | '?' | '…' | '。' | '！' | '？')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(char, Boundary)> {
        let chars: Vec<char> = text.chars().collect();
        chars
            .iter()
            .copied()
            .zip(boundaries(&chars))
            .filter(|(_, b)| *b != Boundary::None)
            .collect()
    }

    #[test]
    fn boundaries_are_classified() {
        assert_eq!(
            kinds("A b. C\n\nD (e!) F 日本。語"),
            [
                ('b', Boundary::Word),
                ('C', Boundary::Sentence),
                ('D', Boundary::Paragraph),
                ('(', Boundary::Word),
                ('F', Boundary::Sentence),
                ('日', Boundary::Word),
                ('語', Boundary::Sentence),
            ]
        );
    }

    #[test]
    fn bad_options_are_refused_or_clamped() {
        assert!(ChunkOptions::new(0, 0).validate().is_err());
        assert!(ChunkOptions::new(10, 10).validate().is_err());
        assert!(ChunkOptions::new(10, 9).validate().is_ok());
        assert!(ChunkOptions::default().validate().is_ok());
        assert_eq!(chunk_text("abc", &ChunkOptions::new(0, 5)), ["a", "b", "c"]);
    }

    #[test]
    fn hard_split_when_nothing_else_fits() {
        let chunks = chunk_text("abcdefghij", &ChunkOptions::new(4, 0));
        assert_eq!(chunks, ["abcd", "efgh", "ij"]);
    }
}
