//! Steering: what the engine tells an instruction generator so that a run's first
//! questions do not repeat themselves (the kind of question to ask, questions already
//! asked about the same documents, how hard questions repeat lately).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// A kind of first question ("how-to", "troubleshooting", ...): its short name, which
/// rows record as `metadata.question_type`, and what the writer is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuestionType {
    /// The short name (`how_to`).
    pub name: String,
    /// What to ask for, as the instruction writer reads it.
    pub description: String,
}

impl QuestionType {
    /// A question type with this name and description.
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        QuestionType {
            name: name.into(),
            description: description.into(),
        }
    }
}

/// Questions already asked in a run, by document id, kept to a bounded number per
/// document (the newest), so a generator can be shown a compact sample of them.
///
/// Questions of a batch without documents are kept under the empty id.
#[derive(Debug)]
pub struct AskedQuestions {
    keep: usize,
    by_document: Mutex<HashMap<String, VecDeque<String>>>,
}

impl AskedQuestions {
    /// A memory keeping the newest `keep` questions of each document.
    pub fn new(keep: usize) -> Self {
        AskedQuestions {
            keep: keep.max(1),
            by_document: Mutex::new(HashMap::new()),
        }
    }

    /// Remembers `question` as asked about each of `documents` (none: the empty id).
    pub fn record(&self, documents: &[String], question: &str) {
        let Ok(mut map) = self.by_document.lock() else {
            return;
        };
        let empty = [String::new()];
        let ids = if documents.is_empty() {
            &empty[..]
        } else {
            documents
        };
        for id in ids {
            let asked = map.entry(id.clone()).or_default();
            if asked.len() == self.keep {
                asked.pop_front();
            }
            asked.push_back(question.to_owned());
        }
    }

    /// Up to `count` questions asked about `documents`, at most `chars` characters in
    /// all: a seeded sample, newest first among those drawn, each at most once.
    pub fn sample(
        &self,
        documents: &[String],
        count: usize,
        chars: usize,
        seed: u64,
    ) -> Vec<String> {
        let Ok(map) = self.by_document.lock() else {
            return Vec::new();
        };
        let empty = [String::new()];
        let ids = if documents.is_empty() {
            &empty[..]
        } else {
            documents
        };
        let mut seen = std::collections::HashSet::new();
        let mut pool: Vec<&String> = ids
            .iter()
            .filter_map(|id| map.get(id))
            .flat_map(|asked| asked.iter().rev())
            .filter(|q| seen.insert(*q))
            .collect();
        // A partial Fisher-Yates shuffle driven by a splitmix64 stream: a different
        // sample each call, the same one for the same seed.
        let mut state = seed;
        let mut out = Vec::new();
        let mut used = 0;
        for i in 0..pool.len() {
            if out.len() >= count {
                break;
            }
            let j = i + (splitmix(&mut state) % (pool.len() - i) as u64) as usize;
            pool.swap(i, j);
            let question = pool[i];
            let len = question.chars().count();
            if used + len > chars {
                continue;
            }
            used += len;
            out.push(question.clone());
        }
        out
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// How an instruction generator is steered for one batch (see
/// [`InstructionRequest::steering`](crate::InstructionRequest)). A generator that
/// ignores it keeps working as before; the built-in ones ask for the question type,
/// show the questions to avoid, raise their temperature with the pressure and show a
/// random section of a long document.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Steering {
    /// The kind of question to ask for in this batch (`None`: any kind).
    pub question_type: Option<QuestionType>,
    /// Questions already asked, to be shown (a sample) as what not to ask again;
    /// `None` while questions do not repeat yet.
    pub asked: Option<Arc<AskedQuestions>>,
    /// Most questions to show as asked already.
    pub avoid_count: usize,
    /// Most characters of questions to show as asked already.
    pub avoid_chars: usize,
    /// How hard questions repeat lately: 0 (not at all) to 1 (every question drawn
    /// was a near duplicate).
    pub pressure: f32,
    /// The highest temperature the pressure may raise the writer's to.
    pub max_temperature: f32,
    /// A document longer than this many characters is shown as a random section of
    /// about this size rather than whole (`None`: whole documents).
    pub section_chars: Option<usize>,
}

impl Default for Steering {
    fn default() -> Self {
        Steering {
            question_type: None,
            asked: None,
            avoid_count: 8,
            avoid_chars: 1200,
            pressure: 0.0,
            max_temperature: 1.0,
            section_chars: None,
        }
    }
}

impl Steering {
    /// Steering asking for `question_type` (`None`: any kind), with nothing to avoid.
    pub fn new(question_type: Option<QuestionType>) -> Self {
        Steering {
            question_type,
            ..Steering::default()
        }
    }

    /// Shows questions from `asked` (at most `count`, `chars` characters in all).
    pub fn avoiding(mut self, asked: Arc<AskedQuestions>, count: usize, chars: usize) -> Self {
        self.asked = Some(asked);
        self.avoid_count = count;
        self.avoid_chars = chars;
        self
    }

    /// Sets how hard questions repeat (clamped to 0..=1) and the temperature bound.
    pub fn pressure(mut self, pressure: f32, max_temperature: f32) -> Self {
        self.pressure = pressure.clamp(0.0, 1.0);
        self.max_temperature = max_temperature;
        self
    }

    /// Shows long documents as random sections of about `chars` characters.
    pub fn sections(mut self, chars: Option<usize>) -> Self {
        self.section_chars = chars;
        self
    }

    /// The questions to avoid for a batch about `documents` (their ids), sampled with
    /// `seed`; empty when there is nothing to avoid.
    pub fn avoid(&self, documents: &[String], seed: u64) -> Vec<String> {
        match &self.asked {
            Some(asked) if self.avoid_count > 0 => {
                asked.sample(documents, self.avoid_count, self.avoid_chars, seed)
            }
            _ => Vec::new(),
        }
    }

    /// The temperature to ask with, from the generator's own `base`: raised towards
    /// [`max_temperature`](Self::max_temperature) as the pressure grows, never lowered.
    pub fn temperature(&self, base: f32) -> f32 {
        let top = self.max_temperature.max(base);
        base + (top - base) * self.pressure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asked_questions_are_bounded_and_sampled_per_document() {
        let asked = AskedQuestions::new(3);
        let a = ["a".to_owned()];
        for i in 0..5 {
            asked.record(&a, &format!("question number {i}"));
        }
        asked.record(&["b".to_owned()], "about b");
        let sample = asked.sample(&a, 10, 10_000, 1);
        assert_eq!(
            sample.len(),
            3,
            "only the newest three are kept: {sample:?}"
        );
        assert!(!sample.iter().any(|q| q.ends_with('0') || q.ends_with('1')));
        assert!(!sample.contains(&"about b".to_owned()));
        // Count and characters both bound the sample.
        assert_eq!(asked.sample(&a, 2, 10_000, 1).len(), 2);
        assert_eq!(asked.sample(&a, 10, 20, 1).len(), 1);
        assert_eq!(asked.sample(&a, 10, 20, 1), asked.sample(&a, 10, 20, 1));
        // A batch without documents keeps its questions under the empty id.
        asked.record(&[], "no document");
        assert_eq!(asked.sample(&[], 5, 100, 0), ["no document"]);
    }

    #[test]
    fn temperature_rises_with_pressure_within_bounds() {
        let calm = Steering::default().pressure(0.0, 1.2);
        assert_eq!(calm.temperature(0.7), 0.7);
        let hot = Steering::default().pressure(5.0, 1.2);
        assert!((hot.temperature(0.7) - 1.2).abs() < 1e-6);
        let half = Steering::default().pressure(0.5, 1.1);
        assert!((half.temperature(0.7) - 0.9).abs() < 1e-6);
        // Never below the generator's own temperature.
        assert_eq!(hot.temperature(1.5), 1.5);
    }
}
