//! `dpo`: preference pairs from judged dialogs. Rows are grouped by their first user
//! message; in each group the highest `final_score` is chosen and the lowest rejected,
//! when the two differ by at least the minimum gap (upstream's rule and default, 0.2).
//! Records are in the conversational shape TRL's `DPOTrainer` and Hugging Face
//! `datasets` read: `{prompt, chosen, rejected}` as message lists, plus both scores
//! and row ids.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use afterimage_core::{ConversationRow, Role};
use serde::Serialize;
use serde_json::Value;

use crate::{DatasetError, ExportFormat, FormatOptions, FormatReport, SkipReason, WrittenFile};

/// Upstream's minimum score difference between the chosen and the rejected dialog.
pub const DEFAULT_MIN_SCORE_GAP: f64 = 0.2;

/// What `export --format dpo` says when no row was judged.
pub(crate) const NO_SCORES: &str = "the dpo format pairs judged dialogs by their final_score, and no row has one: generate with quality.auto_improve: true (the judge scores every dialog), or choose another format";

/// One pair.
#[derive(Serialize)]
struct DpoRecord {
    prompt: Vec<Value>,
    chosen: Vec<Value>,
    rejected: Vec<Value>,
    chosen_score: f64,
    rejected_score: f64,
    chosen_id: String,
    rejected_id: String,
}

/// The pairs of `rows` as JSON lines, and the rows left out by reason.
pub(crate) fn dpo_pairs(
    rows: &[&ConversationRow],
    options: &FormatOptions,
) -> (Vec<String>, BTreeMap<SkipReason, u64>) {
    let gap = options.min_score_gap.unwrap_or(DEFAULT_MIN_SCORE_GAP);
    let mut skipped: BTreeMap<SkipReason, u64> = BTreeMap::new();
    // Groups in order of first appearance, so a shuffled input gives shuffled pairs.
    let mut order: Vec<&str> = Vec::new();
    let mut groups: HashMap<&str, Vec<(&ConversationRow, f64)>> = HashMap::new();
    for row in rows {
        let Some(score) = row.final_score else {
            *skipped.entry(SkipReason::NoScore).or_default() += 1;
            continue;
        };
        let Some(first) = row.conversations.iter().find(|m| m.role == Role::User) else {
            *skipped.entry(SkipReason::NoAssistantReply).or_default() += 1;
            continue;
        };
        let key = first.content.trim();
        let group = groups.entry(key).or_default();
        if group.is_empty() {
            order.push(key);
        }
        group.push((row, score));
    }
    let mut records = Vec::new();
    for key in order {
        let group = &groups[key];
        let best = group
            .iter()
            .fold(group[0], |a, b| if b.1 > a.1 { *b } else { a });
        let worst = group
            .iter()
            .fold(group[0], |a, b| if b.1 < a.1 { *b } else { a });
        // A group of one pairs with nothing; in larger ones, all but the ends sit out.
        let unused = match group.len() {
            1 => 1,
            n => n as u64 - 2,
        };
        if unused > 0 {
            *skipped.entry(SkipReason::Unpaired).or_default() += unused;
        }
        if group.len() < 2 {
            continue;
        }
        if best.1 - worst.1 < gap {
            *skipped.entry(SkipReason::SmallGap).or_default() += 2;
            continue;
        }
        match pair(best, worst, options) {
            Some(record) => records.push(serde_json::to_string(&record).unwrap_or_default()),
            None => *skipped.entry(SkipReason::NoAssistantReply).or_default() += 2,
        }
    }
    (records, skipped)
}

/// The pair of two dialogs with the same first question: the shared prompt (system
/// messages and that question) and each dialog's continuation.
fn pair(
    (best, best_score): (&ConversationRow, f64),
    (worst, worst_score): (&ConversationRow, f64),
    options: &FormatOptions,
) -> Option<DpoRecord> {
    let (prompt, chosen) = split_messages(best, options)?;
    let (_, rejected) = split_messages(worst, options)?;
    Some(DpoRecord {
        prompt,
        chosen,
        rejected,
        chosen_score: best_score,
        rejected_score: worst_score,
        chosen_id: best.id.clone(),
        rejected_id: worst.id.clone(),
    })
}

/// The row's messages in OpenAI shape (tool calls kept), cut after the first user
/// message; `None` when nothing follows it.
fn split_messages(
    row: &ConversationRow,
    options: &FormatOptions,
) -> Option<(Vec<Value>, Vec<Value>)> {
    let line = crate::convert(ExportFormat::OpenAi, row, options).ok()?;
    let record: Value = serde_json::from_str(line.first()?).ok()?;
    let mut messages = record.get("messages")?.as_array()?.clone();
    let first_user = messages.iter().position(|m| m["role"] == "user")?;
    let rest = messages.split_off(first_user + 1);
    (!rest.is_empty()).then_some((messages, rest))
}

/// Writes the pairs of `rows` as `<stem>_dpo.jsonl` (or `_train`/`_val` with a split
/// of the pairs at `split`), each file through a temporary name.
pub(crate) fn write_dpo(
    rows: &[&ConversationRow],
    out_dir: &Path,
    stem: &str,
    options: &FormatOptions,
    split: Option<f64>,
) -> Result<FormatReport, DatasetError> {
    let (records, skipped) = dpo_pairs(rows, options);
    let n_val = crate::export::val_count(records.len(), split);
    let (train, val) = records.split_at(records.len() - n_val);
    let parts: Vec<(&str, &[String])> = if split.is_some() {
        vec![("_train", train), ("_val", val)]
    } else {
        vec![("", train)]
    };
    let mut report = FormatReport {
        format: ExportFormat::Dpo.name().to_owned(),
        files: Vec::new(),
        records: records.len() as u64,
        skipped,
    };
    for (suffix, lines) in parts {
        let path = out_dir.join(format!("{stem}_dpo{suffix}.jsonl"));
        write_lines(&path, lines)?;
        report.files.push(WrittenFile {
            path,
            records: lines.len() as u64,
        });
    }
    Ok(report)
}

fn write_lines(path: &Path, lines: &[String]) -> Result<(), DatasetError> {
    let tmp = path.with_extension("jsonl.tmp");
    let written = (|| {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for line in lines {
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        drop(out);
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        DatasetError::Write {
            path: path.display().to_string(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use afterimage_core::Message;

    use super::*;

    fn row(id: &str, question: &str, answer: &str, score: Option<f64>) -> ConversationRow {
        let mut row: ConversationRow = serde_json::from_value(serde_json::json!({
            "conversations": [], "metadata": {}, "instruction_context": "", "id": id,
        }))
        .unwrap();
        row.conversations = vec![Message::user(question), Message::assistant(answer)];
        row.final_score = score;
        row
    }

    #[test]
    fn best_and_worst_of_each_question_pair_up_when_the_gap_is_wide_enough() {
        let rows = [
            row(
                "r-0",
                "How do I reset?",
                "Click Forgot Password.",
                Some(0.9),
            ),
            row("r-1", "How do I reset?", "No idea.", Some(0.3)),
            row("r-2", "How do I reset?", "Try the login page.", Some(0.6)),
            row("r-3", "What is 503?", "Unavailable.", Some(0.8)),
            row("r-4", "What is 503?", "Unavailable, retry.", Some(0.7)),
            row("r-5", "Alone?", "Yes.", Some(0.5)),
            row("r-6", "Unjudged?", "Yes.", None),
        ];
        let refs: Vec<&ConversationRow> = rows.iter().collect();
        let (records, skipped) = dpo_pairs(&refs, &FormatOptions::default());
        assert_eq!(records.len(), 1);
        let record: Value = serde_json::from_str(&records[0]).unwrap();
        assert_eq!(record["prompt"][0]["content"], "How do I reset?");
        assert_eq!(record["chosen"][0]["content"], "Click Forgot Password.");
        assert_eq!(record["rejected"][0]["content"], "No idea.");
        assert_eq!(
            (record["chosen_id"].as_str(), record["rejected_id"].as_str()),
            (Some("r-0"), Some("r-1"))
        );
        assert_eq!(skipped[&SkipReason::SmallGap], 2, "0.8 vs 0.7 is below 0.2");
        assert_eq!(skipped[&SkipReason::Unpaired], 2, "r-2 between, r-5 alone");
        assert_eq!(skipped[&SkipReason::NoScore], 1);

        let narrow = FormatOptions {
            min_score_gap: Some(0.05),
            ..FormatOptions::default()
        };
        assert_eq!(dpo_pairs(&refs, &narrow).0.len(), 2);
    }
}
