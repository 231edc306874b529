//! A deterministic prompt cache per server, so clients and ledgers see cached tokens
//! the way each provider reports them.
//!
//! Prefixes end at message (or content part) boundaries and are measured with the
//! mock's own token estimate. A prefix counts as cached when an earlier request of the
//! same format and model had it and it is at least
//! [`MockConfig::prompt_cache_min_tokens`](crate::MockConfig::prompt_cache_min_tokens)
//! long. OpenAI and Gemini cache every prompt implicitly; Anthropic only writes the
//! prefixes a request marks with `cache_control`, and reads any earlier written prefix
//! that ends at or before the request's last mark (its look-back).

use std::collections::HashSet;
use std::sync::Mutex;

use crate::reply::Prompt;

/// Remembered prefixes beyond which the cache starts over, so a long benchmark does not
/// grow the mock without bound (real caches evict too).
const CAPACITY: usize = 1 << 20;

/// The prefixes seen so far, as hashes (format and model included).
#[derive(Debug)]
pub(crate) struct PromptCache {
    min_tokens: u64,
    seen: Mutex<HashSet<u64>>,
}

/// What a request read from and wrote to the cache, in tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CacheUse {
    /// The prompt's tokens read from the cache.
    pub(crate) read: u64,
    /// The prompt's tokens written to it (Anthropic's explicit caching only).
    pub(crate) written: u64,
}

impl PromptCache {
    pub(crate) fn new(min_tokens: u64) -> Self {
        PromptCache {
            min_tokens,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// OpenAI, DeepSeek and Gemini: the longest prefix an earlier request had is read;
    /// every prefix of this prompt is remembered.
    pub(crate) fn implicit(&self, scope: &str, prompt: &Prompt<'_>) -> CacheUse {
        let prefixes = self.cacheable(scope, prompt);
        let mut seen = self.lock();
        let read = hits(&seen, &prefixes, usize::MAX);
        seen.extend(prefixes.iter().map(|p| p.hash));
        CacheUse { read, written: 0 }
    }

    /// Anthropic: the longest earlier written prefix ending at or before the last mark
    /// is read; the marked prefixes beyond it are written.
    pub(crate) fn explicit(&self, scope: &str, prompt: &Prompt<'_>) -> CacheUse {
        let prefixes = self.cacheable(scope, prompt);
        let marked: Vec<&Prefix> = prefixes
            .iter()
            .filter(|p| prompt.is_marked(p.parts))
            .collect();
        let Some(last) = marked.last() else {
            return CacheUse::default();
        };
        let mut seen = self.lock();
        let read = hits(&seen, &prefixes, last.parts);
        seen.extend(marked.iter().map(|p| p.hash));
        CacheUse {
            read,
            written: last.tokens - read,
        }
    }

    /// The prompt's prefixes long enough to be cached.
    fn cacheable(&self, scope: &str, prompt: &Prompt<'_>) -> Vec<Prefix> {
        prompt
            .prefixes(scope)
            .filter(|&(_, tokens, _)| tokens >= self.min_tokens && tokens > 0)
            .map(|(parts, tokens, hash)| Prefix {
                parts,
                tokens,
                hash,
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        // A poisoned lock only means another request panicked mid-insert; keep caching.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > CAPACITY {
            seen.clear();
        }
        seen
    }
}

/// A prompt's first `parts` parts: their tokens and hash.
#[derive(Debug)]
struct Prefix {
    parts: usize,
    tokens: u64,
    hash: u64,
}

/// The tokens of the longest prefix in `seen` that ends at or before part `until`.
fn hits(seen: &HashSet<u64>, prefixes: &[Prefix], until: usize) -> u64 {
    prefixes
        .iter()
        .rev()
        .filter(|p| p.parts <= until)
        .find(|p| seen.contains(&p.hash))
        .map_or(0, |p| p.tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::Role;

    fn prompt<'a>(parts: &[&'a str]) -> Prompt<'a> {
        let mut prompt = Prompt::default();
        for (i, text) in parts.iter().enumerate() {
            prompt.push(if i == 0 { Role::System } else { Role::User }, text);
        }
        prompt
    }

    #[test]
    fn implicit_caching_reads_the_longest_shared_prefix_once_long_enough() {
        let cache = PromptCache::new(4);
        let first = prompt(&["one two three", "four five six", "seven"]);
        assert_eq!(cache.implicit("m", &first), CacheUse::default());
        let second = prompt(&["one two three", "four five six", "eight"]);
        // Six words are 8 tokens by the mock's estimate.
        assert_eq!(cache.implicit("m", &second).read, 8);
        assert_eq!(cache.implicit("other model", &second).read, 0);
        // "one two three" is 4 tokens: long enough alone too.
        let third = prompt(&["one two three", "nine"]);
        assert_eq!(cache.implicit("m", &third).read, 4);
        let short = PromptCache::new(100);
        short.implicit("m", &first);
        assert_eq!(short.implicit("m", &first).read, 0);
    }

    #[test]
    fn explicit_caching_writes_marks_and_reads_them_back() {
        let cache = PromptCache::new(1);
        let mut first = prompt(&["system text here", "question one"]);
        first.mark();
        // Unmarked up to the end: only the system prompt (4 tokens) is written.
        let mut turn = prompt(&["system text here"]);
        turn.mark();
        assert_eq!(
            cache.explicit("m", &turn),
            CacheUse {
                read: 0,
                written: 4
            }
        );
        // The whole first prompt (5 words, 6 tokens) is marked: 4 read, 2 written.
        assert_eq!(
            cache.explicit("m", &first),
            CacheUse {
                read: 4,
                written: 2
            }
        );
        assert_eq!(
            cache.explicit("m", &first),
            CacheUse {
                read: 6,
                written: 0
            }
        );
        let unmarked = prompt(&["system text here", "question one"]);
        assert_eq!(cache.explicit("m", &unmarked), CacheUse::default());
    }
}
