//! What the user sees: a progress bar while running, a summary at the end.

/// Like `println!`, but a closed stdout (`afterimage ... | head`) is not a panic: the
/// reader has what it wanted, and the rows are already stored.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

use std::time::Duration;

use afterimage_core::RunProgress;
use afterimage_engine::{LedgerSummary, RunReport};
use afterimage_providers::{KeyStats, StructuredOutputState, ThrottleStats};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub(crate) struct Progress {
    bar: ProgressBar,
    total: Option<u64>,
    /// What the ended attempts that wrote nothing are called.
    failed: &'static str,
}

impl Progress {
    /// Starts a bar counting up to `total` rows (a spinner when there is no count).
    pub(crate) fn start(total: Option<u64>, visible: bool) -> Progress {
        Self::counting(total, visible, "dialogs", "failed")
    }

    /// Starts a bar counting `unit` (`pairs`), the attempts that wrote nothing shown
    /// as `failed` (`not kept`).
    pub(crate) fn counting(
        total: Option<u64>,
        visible: bool,
        unit: &str,
        failed: &'static str,
    ) -> Progress {
        let bar = match total {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::no_length(),
        };
        if visible {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            let template = if total.is_some() {
                format!(
                    "{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit}  {{rate}}  ETA {{eta}}  {{msg}}"
                )
            } else {
                format!("{{spinner}} [{{elapsed_precise}}] {{pos}} {unit}  {{rate}}  {{msg}}")
            };
            if let Ok(style) = ProgressStyle::with_template(&template) {
                // indicatif's own `{per_sec}` shows four decimals (`56.6072/s`).
                let style = style.with_key(
                    "rate",
                    |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = w.write_str(&rate(state.per_sec()));
                    },
                );
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
        } else {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        Progress { bar, total, failed }
    }

    /// The engine callback that moves the bar.
    pub(crate) fn callback(&self) -> impl Fn(&RunProgress) + Send + Sync + 'static {
        let bar = self.bar.clone();
        let (total, failed) = (self.total, self.failed);
        move |progress: &RunProgress| {
            bar.set_position(progress.rows_written);
            // The ledger's: every request paid for, failed ones and earlier sessions'
            // included.
            let cost = progress
                .cost
                .map(|spent| {
                    // The whole run at the cost per row so far.
                    let projected = match total {
                        Some(n) if progress.rows_written > 0 => format!(
                            " (run ~{:.4})",
                            spent / progress.rows_written as f64 * n as f64
                        ),
                        _ => String::new(),
                    };
                    format!("  cost {spent:.4}{projected}")
                })
                .unwrap_or_default();
            bar.set_message(format!(
                "{} {failed}  {} requests{cost}",
                progress.dialogs_failed, progress.ledger.requests
            ));
        }
    }

    /// Prints a line above the bar (on stderr as is when the bar is hidden), so that
    /// lines printed while it runs do not break it.
    pub(crate) fn printer(&self) -> impl Fn(&str) + Send + Sync + 'static {
        let bar = self.bar.clone();
        move |line: &str| {
            if bar.is_hidden() {
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr(), "{line}");
            } else {
                bar.println(line);
            }
        }
    }

    /// Removes the bar.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Dialogs per second as the progress bar shows them: `56.6/s`.
fn rate(per_sec: f64) -> String {
    format!("{per_sec:.1}/s")
}

/// Prints the report as a table, or as one JSON object with `--json` (with a `keys`
/// list when several API keys rotated, and how the pacing moved).
pub(crate) fn print_report(
    report: &RunReport,
    keys: &[KeyStats],
    pacing: &[ThrottleStats],
    structured: Option<&StructuredOutputState>,
    prices: Option<&str>,
    json: bool,
    batch: Option<&crate::batch::BatchSummary>,
) {
    if json {
        let mut value = serde_json::to_value(report).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            if let Some(batch) = batch {
                object.insert(
                    "batch".into(),
                    serde_json::to_value(batch).unwrap_or_default(),
                );
            }
            if let Some(source) = prices {
                object.insert("prices".into(), source.into());
            }
            if let Some(state) = structured {
                object.insert("structured_output".into(), structured_json(state));
            }
            if !keys.is_empty() {
                object.insert(
                    "keys".into(),
                    serde_json::to_value(keys).unwrap_or_default(),
                );
            }
            object.insert(
                "pacing".into(),
                serde_json::to_value(pacing).unwrap_or_default(),
            );
        }
        out!("{value}");
        return;
    }
    out!("{}", table(report));
    for line in batch.map(|b| b.lines()).unwrap_or_default() {
        out!("{line}");
    }
    if let Some(source) = prices {
        out!("prices: {source}");
    }
    if let Some(state) = structured {
        out!("{}", structured_line(state));
    }
    for p in pacing.iter().filter(|p| p.decreases > 0 || p.paced > 0) {
        out!(
            "pacing: limit {} in flight (lowest {}, lowered {} times), {} requests waited for rate limits",
            p.concurrency_limit,
            p.lowest_limit,
            p.decreases,
            p.paced
        );
    }
    for key in keys {
        out!(
            "{}  {} requests, {} rate limited, {} tokens in, {} out{}",
            key.key,
            key.requests,
            key.rate_limited,
            key.input_tokens,
            key.output_tokens,
            if key.retired {
                ", retired (refused)"
            } else {
                ""
            }
        );
    }
}

/// The run's diversity in one line of the summary: first questions' Self-BLEU and
/// near-duplicate pairs, assistant turns' distinct-2 and compression ratio, looping
/// rows (`afterimage analyze` has the rest).
pub(crate) fn diversity_line(d: &afterimage_datasets::Diversity) -> String {
    let pct = |x: Option<f64>| x.map_or_else(|| "–".to_owned(), |v| format!("{:.1}%", v * 100.0));
    let num = |x: Option<f64>| x.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}"));
    let value = |s: Option<afterimage_datasets::Sampled>| s.map(|s| s.value);
    format!(
        "diversity: first questions self-BLEU {}, near-duplicate pairs {}; answers distinct-2 {}, compression {}; looping rows {}",
        num(value(d.first_questions.self_bleu)),
        pct(value(d.first_questions.near_duplicate_pairs)),
        num((d.assistant_turns.texts > 0).then_some(d.assistant_turns.distinct_2)),
        num(value(d.assistant_turns.compression_ratio)),
        pct(d.loops.map(|l| l.looping_rows.value)),
    )
}

/// The structured output mode in one line: the mode, and why it is not the first one
/// tried.
fn structured_line(state: &StructuredOutputState) -> String {
    let mode = state.mode();
    match state.changes().last() {
        None if state.is_auto() => format!("structured output: {mode} (auto)"),
        None => format!("structured output: {mode}"),
        Some(change) => format!(
            "structured output: {mode} (auto; the server rejected {}: {}; a --resume starts from {mode})",
            change.from, change.message
        ),
    }
}

/// The structured output mode for `--json`: `{mode, configured, changes: [{from, to,
/// message}]}`.
fn structured_json(state: &StructuredOutputState) -> serde_json::Value {
    let changes: Vec<serde_json::Value> = state
        .changes()
        .iter()
        .map(|c| serde_json::json!({"from": c.from, "to": c.to, "message": c.message}))
        .collect();
    serde_json::json!({
        "mode": state.mode(),
        "configured": state.configured(),
        "changes": changes,
    })
}

/// The summary table.
pub(crate) fn table(report: &RunReport) -> String {
    let mut rows: Vec<(String, String)> = vec![
        ("run".into(), report.run_id.clone()),
        ("output".into(), report.output.clone()),
        (
            "rows written".into(),
            match report.rows_requested {
                Some(n) => format!("{} of {n}", report.rows_written),
                None => report.rows_written.to_string(),
            },
        ),
        ("rows resumed".into(), report.rows_resumed.to_string()),
        ("dialogs failed".into(), report.dialogs_failed.to_string()),
    ];
    for (cause, count) in &report.failures {
        rows.push((format!("  {cause}"), count.to_string()));
    }
    if report.regenerations > 0 || !report.rejections.is_empty() || report.unjudged > 0 {
        rows.push(("regenerations".into(), report.regenerations.to_string()));
        for (cause, count) in &report.rejections {
            rows.push((format!("  rejected: {cause}"), count.to_string()));
        }
        if report.unjudged > 0 {
            rows.push(("  unjudged".into(), report.unjudged.to_string()));
        }
    }
    if let Some(summary) = report.instructions_rejected_summary() {
        rows.push(("instructions rejected".into(), summary));
    }
    rows.extend([
        ("requests".into(), report.requests.to_string()),
        ("tokens in".into(), report.input_tokens.to_string()),
        ("tokens out".into(), report.output_tokens.to_string()),
        (
            "elapsed".into(),
            format!(
                "{:.1} s ({:.2} dialogs/s)",
                report.elapsed_secs, report.dialogs_per_sec
            ),
        ),
        ("stopped".into(), report.stop_reason.clone()),
    ]);
    if let Some(cost) = report.cost {
        rows.push(("cost".into(), format!("{cost:.4}")));
    }
    rows.extend(ledger_rows(&report.ledger, report.rows_resumed > 0));
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The ledger's lines of the summary table: what the run paid for (all sessions, when
/// it was resumed), by model and role, its cost, the cost per row and where it is
/// heading, and the models whose cost is unknown.
fn ledger_rows(ledger: &LedgerSummary, resumed: bool) -> Vec<(String, String)> {
    let total = &ledger.total;
    let whole = if resumed {
        "ledger (all sessions)"
    } else {
        "ledger"
    };
    let mut rows = vec![(whole.to_owned(), spend_line(total.requests, total))];
    for (model, spend) in &ledger.by_model {
        rows.push((
            format!("  {model}"),
            spend_line(spend.total.requests, &spend.total),
        ));
        for (role, figures) in &spend.by_role {
            rows.push((format!("    {role}"), spend_line(figures.requests, figures)));
        }
    }
    if let Some(cost) = total.cost {
        rows.push(("spent".into(), format!("{cost:.4}")));
    }
    if let Some(per_row) = ledger.cost_per_row {
        rows.push(("cost per row".into(), format!("{per_row:.6}")));
    }
    if let Some(projected) = ledger.projected_cost {
        rows.push(("projected (run)".into(), format!("{projected:.4}")));
    }
    for model in &ledger.unpriced {
        rows.push((
            "cost unknown".into(),
            format!("cost unknown for {model} (no price)"),
        ));
    }
    rows
}

/// `N requests, N in (N cached), N out, cost X`.
fn spend_line(requests: u64, figures: &afterimage_engine::SpendFigures) -> String {
    let mut line = format!("{requests} requests, {} in", figures.input_tokens);
    if figures.cached_input_tokens > 0 {
        line.push_str(&format!(" ({} cached)", figures.cached_input_tokens));
    }
    if figures.cache_write_tokens > 0 {
        line.push_str(&format!(
            " ({} written to cache)",
            figures.cache_write_tokens
        ));
    }
    line.push_str(&format!(", {} out", figures.output_tokens));
    if let Some(cost) = figures.cost {
        line.push_str(&format!(", cost {cost:.4}"));
    }
    line
}

/// What `afterimage stats` reports about stored rows.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Stats {
    /// Rows read (malformed ones excluded).
    pub(crate) rows: u64,
    /// Distinct row ids (rows without an id are not counted).
    pub(crate) distinct_ids: u64,
    /// Rows whose id appeared earlier.
    pub(crate) duplicate_ids: u64,
    /// Malformed rows skipped.
    pub(crate) malformed: u64,
    /// Distinct run ids.
    pub(crate) runs: u64,
    /// Rows by number of assistant replies.
    pub(crate) turns: std::collections::BTreeMap<usize, u64>,
    /// Distinct personas.
    pub(crate) personas: u64,
    /// Distinct documents the questions were drawn from.
    pub(crate) documents: u64,
    /// Judged rows and their scores.
    pub(crate) scores: ScoreStats,
    /// Prompt tokens recorded in the rows.
    pub(crate) input_tokens: u64,
    /// Completion tokens recorded in the rows.
    pub(crate) output_tokens: u64,
    /// Every request the run paid for, from its run record (when the store has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ledger: Option<LedgerSummary>,
    /// Why the run's last session ended, from its run record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stop_reason: Option<String>,
}

/// The distribution of `final_score`.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct ScoreStats {
    /// Rows with a score.
    pub(crate) judged: u64,
    /// Lowest score.
    pub(crate) min: Option<f64>,
    /// Mean score.
    pub(crate) mean: Option<f64>,
    /// Highest score.
    pub(crate) max: Option<f64>,
    /// Rows per grade band (`perfect`, `good`, ...).
    pub(crate) grades: std::collections::BTreeMap<String, u64>,
}

impl Stats {
    /// Summarises what was read.
    pub(crate) fn of(read: &afterimage_storage::ReadReport) -> Stats {
        use std::collections::HashSet;
        let mut stats = Stats {
            malformed: read.problems.len() as u64,
            ..Stats::default()
        };
        let (mut ids, mut runs, mut personas, mut documents) = (
            HashSet::new(),
            HashSet::new(),
            HashSet::new(),
            HashSet::new(),
        );
        let mut score_sum = 0.0;
        for row in &read.rows {
            stats.rows += 1;
            if !row.id.is_empty() && !ids.insert(row.id.as_str()) {
                stats.duplicate_ids += 1;
            }
            let replies = row
                .conversations
                .iter()
                .filter(|m| m.role == afterimage_core::Role::Assistant)
                .count();
            *stats.turns.entry(replies).or_default() += 1;
            if let Some(persona) = row.persona.as_ref().or(row.metadata.persona_name.as_ref()) {
                personas.insert(persona.as_str());
            }
            documents.extend(row.metadata.context_ids.iter().map(String::as_str));
            if let Some(generation) = &row.metadata.generation {
                runs.insert(generation.run_id.as_str());
                stats.input_tokens += generation.usage.input_tokens;
                stats.output_tokens += generation.usage.output_tokens;
            }
            if let Some(score) = row.final_score {
                let scores = &mut stats.scores;
                scores.judged += 1;
                score_sum += score;
                scores.min = Some(scores.min.map_or(score, |m| m.min(score)));
                scores.max = Some(scores.max.map_or(score, |m| m.max(score)));
                let grade = serde_json::to_value(afterimage_core::Grade::from_score(score))
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                *scores.grades.entry(grade).or_default() += 1;
            }
        }
        if stats.scores.judged > 0 {
            stats.scores.mean = Some(score_sum / stats.scores.judged as f64);
        }
        stats.distinct_ids = ids.len() as u64;
        stats.runs = runs.len() as u64;
        stats.personas = personas.len() as u64;
        stats.documents = documents.len() as u64;
        stats
    }
}

/// Prints stats as a table, or as one JSON object with `--json`.
pub(crate) fn print_stats(stats: &Stats, json: bool) {
    if json {
        match serde_json::to_string(stats) {
            Ok(line) => out!("{line}"),
            Err(e) => eprintln!("error: the stats could not be encoded as JSON: {e}"),
        }
        return;
    }
    let turns = stats
        .turns
        .iter()
        .map(|(turns, rows)| format!("{turns}: {rows}"))
        .collect::<Vec<_>>()
        .join(", ");
    let scores = &stats.scores;
    let score_line = match (scores.min, scores.mean, scores.max) {
        (Some(min), Some(mean), Some(max)) => format!(
            "{} judged, min {min:.2}, mean {mean:.2}, max {max:.2} ({})",
            scores.judged,
            scores
                .grades
                .iter()
                .map(|(grade, n)| format!("{grade}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => "none judged".into(),
    };
    let rows: Vec<(&str, String)> = vec![
        ("rows", stats.rows.to_string()),
        ("distinct ids", stats.distinct_ids.to_string()),
        ("duplicate ids", stats.duplicate_ids.to_string()),
        ("malformed rows", stats.malformed.to_string()),
        ("runs", stats.runs.to_string()),
        ("turns (replies: rows)", turns),
        ("personas", stats.personas.to_string()),
        ("documents", stats.documents.to_string()),
        ("scores", score_line),
        ("tokens in", stats.input_tokens.to_string()),
        ("tokens out", stats.output_tokens.to_string()),
    ];
    let mut rows: Vec<(String, String)> =
        rows.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    if let Some(reason) = &stats.stop_reason {
        rows.push(("stopped".to_owned(), reason.clone()));
    }
    if let Some(ledger) = &stats.ledger {
        rows.extend(ledger_rows(ledger, false));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        out!("{k:<width$}  {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_counts_rejected_questions_by_cause() {
        let mut report = RunReport::default();
        assert!(!table(&report).contains("instructions rejected"));
        for (cause, n) in [("too_short", 7), ("mime_type", 3), ("echo", 2)] {
            report.instructions_rejected.insert(cause.into(), n);
        }
        let line = table(&report)
            .lines()
            .find(|l| l.starts_with("instructions rejected"))
            .map(str::to_owned);
        assert_eq!(
            line.as_deref()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")),
            Some("instructions rejected 12 (too_short 7, mime_type 3, echo 2)".to_owned())
        );
    }

    #[test]
    fn the_rate_shows_one_decimal() {
        assert_eq!(rate(56.6072), "56.6/s");
        assert_eq!(rate(0.04), "0.0/s");
        assert_eq!(rate(3.0), "3.0/s");
    }
}
