//! Two datasets side by side (`afterimage analyze A --compare B`): the figures of
//! both, and whether each moved the better or the worse way, as JSON and as one HTML
//! page.

use std::fmt::Write;

use serde::Serialize;

use crate::diversity::{EMBEDDING_ABOUT, LOOPS_ABOUT, SCOPE_METRICS, ScopeDiversity};
use crate::report::{STYLE, escape, figure, sampled_text};
use crate::stats::Analysis;

/// Changes smaller than this are shown as the same (the page prints three decimals).
const SAME: f64 = 0.0005;

/// Two analyses and what changed from the first to the second.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The first dataset (the baseline).
    pub a: Compared,
    /// The second dataset.
    pub b: Compared,
    /// Each figure of both, from `a` to `b`.
    pub changes: Vec<Change>,
}

/// One dataset of a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Compared {
    /// Its name (the storage as displayed).
    pub dataset: String,
    /// Its figures.
    pub analysis: Analysis,
}

/// One figure in both datasets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// The figure (`self_bleu`, `looping_rows`, ...).
    pub metric: String,
    /// What it was measured on: `first_questions`, `user_turns`, `assistant_turns`,
    /// or `rows`.
    pub scope: String,
    /// Its value in the first dataset (`None`: nothing to measure).
    pub a: Option<f64>,
    /// Its value in the second.
    pub b: Option<f64>,
    /// `b - a`, when both exist.
    pub change: Option<f64>,
    /// Whether the change is for the better.
    pub verdict: Verdict,
}

/// Which way a figure moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Towards more diverse (or, for the judge's score, higher).
    Better,
    /// Towards less diverse.
    Worse,
    /// By less than 0.0005.
    Same,
    /// No direction is meaningful (a count), or a value is missing.
    Unranked,
}

impl Verdict {
    fn of(a: Option<f64>, b: Option<f64>, higher_is_better: Option<bool>) -> Verdict {
        match (a, b, higher_is_better) {
            (Some(a), Some(b), _) if (b - a).abs() < SAME => Verdict::Same,
            (Some(a), Some(b), Some(higher)) => {
                if (b > a) == higher {
                    Verdict::Better
                } else {
                    Verdict::Worse
                }
            }
            _ => Verdict::Unranked,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::Same => "same",
            Verdict::Unranked => "",
        }
    }
}

fn change(
    metric: &str,
    scope: &str,
    a: Option<f64>,
    b: Option<f64>,
    higher_is_better: Option<bool>,
) -> Change {
    Change {
        metric: metric.to_owned(),
        scope: scope.to_owned(),
        a,
        b,
        change: a.zip(b).map(|(a, b)| b - a),
        verdict: Verdict::of(a, b, higher_is_better),
    }
}

/// Compares `a` (named `a_name`, the baseline) with `b`.
pub fn compare(a: Analysis, a_name: &str, b: Analysis, b_name: &str) -> Comparison {
    let mut changes = vec![
        change(
            "rows",
            "rows",
            Some(a.summary.rows as f64),
            Some(b.summary.rows as f64),
            None,
        ),
        change(
            "mean_exchanges",
            "rows",
            Some(a.summary.mean_turns),
            Some(b.summary.mean_turns),
            None,
        ),
        change(
            "mean_judge_score",
            "rows",
            a.judge.mean_score,
            b.judge.mean_score,
            Some(true),
        ),
        change(
            "distinct_first_question_share",
            "first_questions",
            distinct_share(&a),
            distinct_share(&b),
            Some(true),
        ),
    ];
    let scopes = |x: &Analysis| -> [(&'static str, ScopeDiversity); 3] {
        [
            ("first_questions", x.diversity.first_questions.clone()),
            ("user_turns", x.diversity.user_turns.clone()),
            ("assistant_turns", x.diversity.assistant_turns.clone()),
        ]
    };
    for ((scope, sa), (_, sb)) in scopes(&a).into_iter().zip(scopes(&b)) {
        for metric in &SCOPE_METRICS {
            changes.push(change(
                metric.key,
                scope,
                (metric.get)(&sa).0,
                (metric.get)(&sb).0,
                Some(metric.higher_is_better),
            ));
        }
    }
    let loops = |x: &Analysis| x.diversity.loops.map(|l| l.looping_rows.value);
    changes.push(change(
        "looping_rows",
        "rows",
        loops(&a),
        loops(&b),
        Some(false),
    ));
    let (ea, eb) = (&a.diversity.embedding, &b.diversity.embedding);
    // Cosines of two embedding models are not on one scale.
    let same_model = ea.as_ref().map(|e| &e.model) == eb.as_ref().map(|e| &e.model);
    changes.push(change(
        "embedding_cosine",
        "first_questions",
        ea.as_ref().map(|e| e.mean_cosine.value),
        eb.as_ref().map(|e| e.mean_cosine.value),
        same_model.then_some(false),
    ));
    Comparison {
        a: Compared {
            dataset: a_name.to_owned(),
            analysis: a,
        },
        b: Compared {
            dataset: b_name.to_owned(),
            analysis: b,
        },
        changes,
    }
}

/// Distinct first questions over rows.
fn distinct_share(a: &Analysis) -> Option<f64> {
    (a.summary.rows > 0)
        .then(|| a.diversity.distinct_first_questions as f64 / a.summary.rows as f64)
}

/// The page's name for a figure and the one line explaining it.
fn describe(metric: &str) -> (&'static str, &'static str) {
    if let Some(m) = SCOPE_METRICS.iter().find(|m| m.key == metric) {
        return (m.label, m.about);
    }
    match metric {
        "rows" => ("rows", "rows in the dataset"),
        "mean_exchanges" => ("mean exchanges", "user/assistant exchanges per row"),
        "mean_judge_score" => (
            "mean judge score",
            "the judge's mean final score, where rows were judged; higher is better",
        ),
        "distinct_first_question_share" => (
            "distinct first questions",
            "distinct first questions (lower-cased, punctuation dropped) over rows; higher is better",
        ),
        "looping_rows" => ("looping rows", LOOPS_ABOUT),
        "embedding_cosine" => ("embedding cosine", EMBEDDING_ABOUT),
        _ => ("", ""),
    }
}

/// A figure as the page shows it: counts whole, the rest with three decimals.
fn value(metric: &str, v: Option<f64>) -> String {
    match v {
        Some(v) if metric == "rows" => format!("{v:.0}"),
        v => figure(v),
    }
}

/// The comparison as one self-contained HTML page: both datasets named, every figure
/// side by side with its change marked better or worse, each explained in one line.
pub fn render_comparison_html(c: &Comparison) -> String {
    let mut h = String::with_capacity(32 * 1024);
    let (a, b) = (escape(&c.a.dataset), escape(&c.b.dataset));
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>afterimage comparison: {a} and {b}</title><style>{STYLE}\n.better{{color:#1d7a33;font-weight:600}}.worse{{color:#b3261e;font-weight:600}}</style></head><body><h1>Dataset comparison</h1><p><b>A</b> {a} ({} rows)<br><b>B</b> {b} ({} rows)</p>",
        c.a.analysis.summary.rows, c.b.analysis.summary.rows
    );
    h.push_str("<section id=\"comparison\"><h2>Figures side by side</h2><table><tr><th>figure</th><th>of</th><th>A</th><th>B</th><th>change</th><th></th></tr>");
    for ch in &c.changes {
        let verdict = ch.verdict.as_str();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{verdict}\">{verdict}</td></tr>",
            describe(&ch.metric).0,
            ch.scope.replace('_', " "),
            value(&ch.metric, ch.a),
            value(&ch.metric, ch.b),
            match (ch.verdict, ch.change) {
                (Verdict::Same, _) => "0".to_owned(),
                (_, Some(d)) if ch.metric == "rows" => format!("{d:+.0}"),
                (_, Some(d)) => format!("{d:+.3}"),
                (_, None) => "–".to_owned(),
            }
        );
    }
    h.push_str("</table><ul class=\"muted\">");
    let mut explained: Vec<&str> = Vec::new();
    for ch in &c.changes {
        if !explained.contains(&ch.metric.as_str()) {
            explained.push(&ch.metric);
            let (label, about) = describe(&ch.metric);
            let _ = write!(h, "<li><b>{label}</b>: {about}.</li>");
        }
    }
    h.push_str("</ul>");
    for (name, side) in [("A", &c.a), ("B", &c.b)] {
        let d = &side.analysis.diversity;
        let _ = write!(
            h,
            "<p class=\"muted\">{name}: first questions {}, user turns {}, assistant turns {}; seed {}.</p>",
            sampled_text(d.first_questions.self_bleu),
            sampled_text(d.user_turns.self_bleu),
            sampled_text(d.assistant_turns.self_bleu),
            d.seed
        );
    }
    h.push_str("</section></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AnalyzeOptions, analyze};
    use afterimage_core::ConversationRow;

    fn rows(questions: &[&str]) -> Vec<ConversationRow> {
        questions
            .iter()
            .map(|q| {
                serde_json::from_value(serde_json::json!({"conversations": [
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": format!("An answer to: {q}")},
                ]}))
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_more_varied_dataset_is_marked_better() {
        let same = rows(&["How do I reset my password?"; 4]);
        let varied = rows(&[
            "How do I reset my password?",
            "Why does the app crash when I upload a photo?",
            "Can I export my invoices as CSV files?",
            "What happens to my data when I close the account?",
        ]);
        let options = AnalyzeOptions::default();
        let c = compare(
            analyze(&same, &options),
            "same.jsonl",
            analyze(&varied, &options),
            "<varied>.jsonl",
        );
        let find = |metric: &str, scope: &str| {
            c.changes
                .iter()
                .find(|ch| ch.metric == metric && ch.scope == scope)
                .unwrap()
                .clone()
        };
        let bleu = find("self_bleu", "first_questions");
        assert_eq!(bleu.a, Some(1.0));
        assert_eq!(bleu.verdict, Verdict::Better, "{bleu:?}");
        assert_eq!(find("near_duplicate_pairs", "first_questions").a, Some(1.0));
        assert_eq!(
            find("near_duplicate_pairs", "first_questions").verdict,
            Verdict::Better
        );
        assert_eq!(
            find("compression_ratio", "user_turns").verdict,
            Verdict::Better
        );
        assert_eq!(find("rows", "rows").verdict, Verdict::Same);
        assert_eq!(
            find("embedding_cosine", "first_questions").verdict,
            Verdict::Unranked
        );
        let html = render_comparison_html(&c);
        assert!(html.contains("same.jsonl") && html.contains("&lt;varied&gt;.jsonl"));
        assert!(html.contains("class=\"better\""));
    }
}
