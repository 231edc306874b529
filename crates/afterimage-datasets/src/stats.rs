//! The figures of the analysis report, computed from rows (and, when given, the list
//! of documents the run could draw from and the run record's failures).

use std::collections::{BTreeMap, HashMap, HashSet};

use afterimage_core::{ConversationRow, Message, Role};
use serde::Serialize;

use crate::diversity::{
    EmbeddingSimilarity, Loops, NEAR_DUPLICATE_THRESHOLD, SAMPLE_SEED, ScopeDiversity, measure,
};
use crate::export::{has_tool_calls, turns};

/// What the analysis may know beyond the rows.
#[derive(Debug, Clone, Default)]
pub struct AnalyzeOptions {
    /// Every document id the run could draw from, so the report can list those never
    /// used. Without it only documents seen in rows are known.
    pub documents: Option<Vec<String>>,
    /// Failed dialogs by cause, from the run record. The hook for the storage
    /// backends' run record: rows alone do not hold failures.
    pub run_failures: Option<BTreeMap<String, u64>>,
}

/// Every figure of the report; `--json` prints this.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// Totals.
    pub summary: Summary,
    /// Dialogs per number of exchanges.
    pub turns: Vec<Bucket>,
    /// Message lengths in characters.
    pub lengths: Lengths,
    /// Personas.
    pub personas: Personas,
    /// Which documents were used how often.
    pub documents: Coverage,
    /// The judge's grades and per-criterion scores.
    pub judge: Judge,
    /// Lexical diversity.
    pub diversity: Diversity,
    /// The lowest-scoring dialogs, in full (at most five).
    pub lowest: Vec<LowDialog>,
}

/// One histogram bar or count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    /// What the bar stands for.
    pub label: String,
    /// How many.
    pub count: u64,
}

/// The totals.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Rows read.
    pub rows: u64,
    /// Messages in all rows.
    pub messages: u64,
    /// User/assistant exchanges in all rows.
    pub turns: u64,
    /// Mean exchanges per row.
    pub mean_turns: f64,
    /// Rows with at least one tool call.
    pub rows_with_tool_calls: u64,
    /// Tool calls in all rows.
    pub tool_calls: u64,
    /// Rows that record token usage.
    pub rows_with_usage: u64,
    /// Prompt tokens recorded in rows.
    pub input_tokens: u64,
    /// Completion tokens recorded in rows.
    pub output_tokens: u64,
    /// Cost in US dollars; `None` until a price table exists.
    pub cost_usd: Option<f64>,
    /// Respondent models and their row counts.
    pub models: Vec<Bucket>,
    /// Rows generated more than once (after failures or quality regeneration).
    pub regenerated_rows: u64,
    /// Attempts beyond the first, summed over rows.
    pub extra_attempts: u64,
    /// Failed dialogs by cause, from the run record (`None`: no run record given).
    pub failures: Option<BTreeMap<String, u64>>,
}

/// Length histograms.
#[derive(Debug, Clone, Serialize)]
pub struct Lengths {
    /// User messages.
    pub user: LengthStats,
    /// Assistant messages.
    pub assistant: LengthStats,
}

/// One side's message lengths.
#[derive(Debug, Clone, Serialize)]
pub struct LengthStats {
    /// Messages measured.
    pub messages: u64,
    /// Mean characters.
    pub mean: f64,
    /// Median characters.
    pub median: u64,
    /// Longest.
    pub max: u64,
    /// Histogram over ten equal-width bins.
    pub histogram: Vec<Bucket>,
}

/// Persona use.
#[derive(Debug, Clone, Serialize)]
pub struct Personas {
    /// Rows with a persona.
    pub rows_with_persona: u64,
    /// Distinct personas.
    pub distinct: u64,
    /// The most used personas (at most 20), most used first.
    pub top: Vec<Bucket>,
    /// Rows per persona generation depth.
    pub depth: Vec<Bucket>,
}

/// Document coverage.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    /// Rows that name no document.
    pub rows_without_document: u64,
    /// Documents seen in rows, most used first.
    pub used: Vec<Bucket>,
    /// How many documents the run could draw from (`None`: not given).
    pub known: Option<u64>,
    /// Known documents no row used (`None`: the document list was not given).
    pub never_used: Option<Vec<String>>,
}

/// The judge's verdicts.
#[derive(Debug, Clone, Serialize)]
pub struct Judge {
    /// Rows with a `final_score`.
    pub scored_rows: u64,
    /// Mean `final_score`.
    pub mean_score: Option<f64>,
    /// Rows per overall grade.
    pub grades: Vec<Bucket>,
    /// Mean, lowest and count per criterion.
    pub criteria: Vec<CriterionStats>,
    /// `final_score` over ten bins of 0.1.
    pub score_histogram: Vec<Bucket>,
}

/// One criterion across rows.
#[derive(Debug, Clone, Serialize)]
pub struct CriterionStats {
    /// The criterion.
    pub name: String,
    /// Rows that scored it.
    pub count: u64,
    /// Mean score.
    pub mean: f64,
    /// Lowest score.
    pub min: f64,
}

/// Lexical diversity.
#[derive(Debug, Clone, Serialize)]
pub struct Diversity {
    /// User messages.
    pub user: TextDiversity,
    /// Assistant messages.
    pub assistant: TextDiversity,
    /// Distinct first questions.
    pub distinct_first_questions: u64,
    /// First questions asked more than once (normalised), most repeated first.
    pub repeated_first_questions: Vec<Bucket>,
    /// The seed of the samples below.
    pub seed: u64,
    /// The MinHash similarity from which two texts count as near duplicates (the
    /// generator's).
    pub near_duplicate_threshold: f64,
    /// The first user message of each row.
    pub first_questions: ScopeDiversity,
    /// Every user message.
    pub user_turns: ScopeDiversity,
    /// Every assistant message with text.
    pub assistant_turns: ScopeDiversity,
    /// Rows whose turns repeat themselves (`None` without rows).
    pub loops: Option<Loops>,
    /// Mean cosine of first-question embeddings; `None` unless an embedder was given
    /// ([`embedding_similarity`](crate::embedding_similarity)).
    pub embedding: Option<EmbeddingSimilarity>,
}

/// Diversity of one side's words.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TextDiversity {
    /// Words.
    pub tokens: u64,
    /// Distinct words.
    pub types: u64,
    /// types / tokens.
    pub type_token_ratio: f64,
    /// Distinct unigrams / unigrams (= type-token ratio).
    pub distinct_1: f64,
    /// Distinct bigrams / bigrams.
    pub distinct_2: f64,
    /// Distinct trigrams / trigrams.
    pub distinct_3: f64,
}

/// A low-scoring dialog, in full.
#[derive(Debug, Clone, Serialize)]
pub struct LowDialog {
    /// The row id.
    pub id: String,
    /// Its score.
    pub final_score: f64,
    /// Its grade, when judged.
    pub grade: Option<String>,
    /// The judge's feedback per criterion.
    pub feedback: Vec<(String, f64, String)>,
    /// The messages.
    pub conversations: Vec<Message>,
}

/// Computes every figure.
pub fn analyze(rows: &[ConversationRow], options: &AnalyzeOptions) -> Analysis {
    Analysis {
        summary: summary(rows, options),
        turns: count_by(rows.iter().map(turns), |t| t.to_string()),
        lengths: Lengths {
            user: lengths(rows, Role::User),
            assistant: lengths(rows, Role::Assistant),
        },
        personas: personas(rows),
        documents: coverage(rows, options),
        judge: judge(rows),
        diversity: diversity(rows),
        lowest: lowest(rows, 5),
    }
}

fn summary(rows: &[ConversationRow], options: &AnalyzeOptions) -> Summary {
    let mut s = Summary {
        rows: rows.len() as u64,
        messages: 0,
        turns: 0,
        mean_turns: 0.0,
        rows_with_tool_calls: 0,
        tool_calls: 0,
        rows_with_usage: 0,
        input_tokens: 0,
        output_tokens: 0,
        cost_usd: None,
        models: Vec::new(),
        regenerated_rows: 0,
        extra_attempts: 0,
        failures: options.run_failures.clone(),
    };
    let mut models = Vec::new();
    for row in rows {
        s.messages += row.conversations.len() as u64;
        s.turns += u64::from(turns(row));
        if has_tool_calls(row) {
            s.rows_with_tool_calls += 1;
        }
        s.tool_calls += row
            .conversations
            .iter()
            .map(|m| m.tool_calls.len() as u64)
            .sum::<u64>();
        if let Some(g) = &row.metadata.generation {
            s.rows_with_usage += 1;
            s.input_tokens += g.usage.input_tokens;
            s.output_tokens += g.usage.output_tokens;
            if g.attempts.len() > 1 {
                s.regenerated_rows += 1;
                s.extra_attempts += (g.attempts.len() - 1) as u64;
            }
            models.push(g.respondent_model.clone());
        }
    }
    s.mean_turns = ratio(s.turns, s.rows);
    s.models = ranked(models, usize::MAX);
    s
}

fn lengths(rows: &[ConversationRow], role: Role) -> LengthStats {
    let mut lens: Vec<u64> = rows
        .iter()
        .flat_map(|r| &r.conversations)
        // A message that only calls a tool has no text to measure.
        .filter(|m| m.role == role && (!m.content.is_empty() || m.tool_calls.is_empty()))
        .map(|m| m.content.chars().count() as u64)
        .collect();
    lens.sort_unstable();
    let max = lens.last().copied().unwrap_or(0);
    let width = nice_width(max.div_ceil(10).max(1));
    let mut histogram: Vec<Bucket> = Vec::new();
    if !lens.is_empty() {
        let bins = (max / width + 1) as usize;
        let mut counts = vec![0u64; bins];
        for len in &lens {
            counts[(len / width) as usize] += 1;
        }
        histogram = counts
            .into_iter()
            .enumerate()
            .map(|(i, count)| {
                let low = i as u64 * width;
                Bucket {
                    label: format!("{low}-{}", low + width - 1),
                    count,
                }
            })
            .collect();
    }
    LengthStats {
        messages: lens.len() as u64,
        mean: ratio(lens.iter().sum(), lens.len() as u64),
        median: lens.get(lens.len() / 2).copied().unwrap_or(0),
        max,
        histogram,
    }
}

/// Rounds a bin width up to 1, 2 or 5 times a power of ten, for readable labels.
fn nice_width(raw: u64) -> u64 {
    let mut power = 1u64;
    loop {
        for step in [1, 2, 5] {
            if step * power >= raw {
                return step * power;
            }
        }
        power = power.saturating_mul(10);
    }
}

fn personas(rows: &[ConversationRow]) -> Personas {
    let names: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            r.metadata
                .persona_name
                .clone()
                .or_else(|| r.persona.clone())
        })
        .collect();
    let distinct = names.iter().collect::<HashSet<_>>().len() as u64;
    Personas {
        rows_with_persona: names.len() as u64,
        distinct,
        top: ranked(names, 20),
        depth: count_by(
            rows.iter()
                .filter_map(|r| r.metadata.persona_generation_depth),
            |d| d.to_string(),
        ),
    }
}

fn coverage(rows: &[ConversationRow], options: &AnalyzeOptions) -> Coverage {
    let mut used = Vec::new();
    let mut without = 0;
    for row in rows {
        let mut ids: Vec<&String> = row.metadata.context_ids.iter().collect();
        if ids.is_empty() {
            ids.extend(row.metadata.context_id.as_ref());
        }
        if ids.is_empty() {
            without += 1;
        }
        used.extend(ids.into_iter().cloned());
    }
    let seen: HashSet<&String> = used.iter().collect();
    let never_used = options.documents.as_ref().map(|docs| {
        docs.iter()
            .filter(|d| !seen.contains(d))
            .cloned()
            .collect::<Vec<_>>()
    });
    Coverage {
        rows_without_document: without,
        known: options.documents.as_ref().map(|d| d.len() as u64),
        never_used,
        used: ranked(used, usize::MAX),
    }
}

fn judge(rows: &[ConversationRow]) -> Judge {
    let scores: Vec<f64> = rows.iter().filter_map(|r| r.final_score).collect();
    let grades = rows.iter().filter_map(|r| {
        r.evaluation
            .as_ref()
            .map(|e| serde_json::to_value(e.overall_grade).ok())
            .and_then(|v| v.and_then(|v| v.as_str().map(str::to_owned)))
    });
    let mut criteria: BTreeMap<String, (u64, f64, f64)> = BTreeMap::new();
    for eval in rows.iter().filter_map(|r| r.evaluation.as_ref()) {
        for (name, c) in &eval.criteria {
            let entry = criteria.entry(name.clone()).or_insert((0, 0.0, f64::MAX));
            entry.0 += 1;
            entry.1 += c.score;
            entry.2 = entry.2.min(c.score);
        }
    }
    let mut bins = vec![0u64; 10];
    for s in &scores {
        bins[((s.clamp(0.0, 1.0) * 10.0) as usize).min(9)] += 1;
    }
    Judge {
        scored_rows: scores.len() as u64,
        mean_score: (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64),
        grades: ranked(grades.collect(), usize::MAX),
        criteria: criteria
            .into_iter()
            .map(|(name, (count, sum, min))| CriterionStats {
                name,
                count,
                mean: sum / count as f64,
                min,
            })
            .collect(),
        score_histogram: bins
            .into_iter()
            .enumerate()
            .map(|(i, count)| Bucket {
                label: format!("{:.1}-{:.1}", i as f64 / 10.0, (i + 1) as f64 / 10.0),
                count,
            })
            .collect(),
    }
}

pub(crate) fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

pub(crate) fn text_diversity<'a>(texts: impl Iterator<Item = &'a str>) -> TextDiversity {
    // Words become small integers once, so n-grams are hashed as tuples of ids
    // rather than as joined strings (several times faster on large datasets).
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut bigrams: HashSet<(u32, u32)> = HashSet::new();
    let mut trigrams: HashSet<(u32, u32, u32)> = HashSet::new();
    let (mut tokens, mut total_2, mut total_3) = (0u64, 0u64, 0u64);
    let mut ws: Vec<u32> = Vec::new();
    for text in texts {
        // n-grams never span two messages.
        ws.clear();
        for word in words(text) {
            let next = ids.len() as u32;
            ws.push(*ids.entry(word).or_insert(next));
        }
        tokens += ws.len() as u64;
        for w in ws.windows(2) {
            bigrams.insert((w[0], w[1]));
            total_2 += 1;
        }
        for w in ws.windows(3) {
            trigrams.insert((w[0], w[1], w[2]));
            total_3 += 1;
        }
    }
    let types = ids.len() as u64;
    TextDiversity {
        tokens,
        types,
        type_token_ratio: ratio(types, tokens),
        distinct_1: ratio(types, tokens),
        distinct_2: ratio(bigrams.len() as u64, total_2),
        distinct_3: ratio(trigrams.len() as u64, total_3),
    }
}

fn diversity(rows: &[ConversationRow]) -> Diversity {
    let firsts: Vec<String> = rows
        .iter()
        .filter_map(|r| r.conversations.iter().find(|m| m.role == Role::User))
        .map(|m| words(&m.content).collect::<Vec<_>>().join(" "))
        .collect();
    let distinct = firsts.iter().collect::<HashSet<_>>().len() as u64;
    let repeated = ranked(firsts, usize::MAX)
        .into_iter()
        .filter(|b| b.count > 1)
        .take(10)
        .collect();
    let measured = measure(rows);
    Diversity {
        user: measured.user_words,
        assistant: measured.assistant_words,
        distinct_first_questions: distinct,
        repeated_first_questions: repeated,
        seed: SAMPLE_SEED,
        near_duplicate_threshold: NEAR_DUPLICATE_THRESHOLD,
        first_questions: measured.first_questions,
        user_turns: measured.user_turns,
        assistant_turns: measured.assistant_turns,
        loops: measured.loops,
        embedding: None,
    }
}

fn lowest(rows: &[ConversationRow], n: usize) -> Vec<LowDialog> {
    let mut scored: Vec<(&ConversationRow, f64)> = rows
        .iter()
        .filter_map(|r| r.final_score.map(|s| (r, s)))
        .collect();
    scored.sort_by(|a, b| a.1.total_cmp(&b.1));
    scored
        .into_iter()
        .take(n)
        .map(|(row, score)| LowDialog {
            id: row.id.clone(),
            final_score: score,
            grade: row.evaluation.as_ref().and_then(|e| {
                serde_json::to_value(e.overall_grade)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
            }),
            feedback: row
                .evaluation
                .as_ref()
                .map(|e| {
                    e.criteria
                        .iter()
                        .map(|(k, c)| (k.clone(), c.score, c.feedback.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            conversations: row.conversations.clone(),
        })
        .collect()
}

/// Counts by key, most frequent first (ties by label), at most `limit`.
fn ranked(items: Vec<String>, limit: usize) -> Vec<Bucket> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for item in items {
        *counts.entry(item).or_default() += 1;
    }
    let mut buckets: Vec<Bucket> = counts
        .into_iter()
        .map(|(label, count)| Bucket { label, count })
        .collect();
    buckets.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.label.cmp(&b.label)));
    buckets.truncate(limit);
    buckets
}

/// Counts by an ordered key, in key order.
fn count_by<K: Ord>(items: impl Iterator<Item = K>, label: impl Fn(&K) -> String) -> Vec<Bucket> {
    let mut counts: BTreeMap<K, u64> = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, &count)| Bucket {
            label: label(k),
            count,
        })
        .collect()
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_widths() {
        assert_eq!(nice_width(1), 1);
        assert_eq!(nice_width(3), 5);
        assert_eq!(nice_width(13), 20);
        assert_eq!(nice_width(51), 100);
    }

    #[test]
    fn diversity_counts_ngrams_within_messages() {
        let d = text_diversity(["a b a b", "c"].into_iter());
        assert_eq!(d.tokens, 5);
        assert_eq!(d.types, 3);
        assert!((d.distinct_2 - 2.0 / 3.0).abs() < 1e-9);
    }
}
