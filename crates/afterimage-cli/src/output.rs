//! What the user sees: a progress bar while running, a summary at the end.

use std::time::Duration;

use afterimage_core::RunProgress;
use afterimage_engine::{Price, RunReport};
use afterimage_providers::{KeyStats, ThrottleStats};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub(crate) struct Progress {
    bar: ProgressBar,
    price: Option<Price>,
}

impl Progress {
    /// Starts a bar counting up to `total` rows (a spinner when there is no count).
    pub(crate) fn start(total: Option<u64>, price: Option<Price>, visible: bool) -> Progress {
        let bar = match total {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::no_length(),
        };
        if visible {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            let template = if total.is_some() {
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} dialogs  {per_sec}  ETA {eta}  {msg}"
            } else {
                "{spinner} [{elapsed_precise}] {pos} dialogs  {per_sec}  {msg}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
        } else {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        Progress { bar, price }
    }

    /// The engine callback that moves the bar.
    pub(crate) fn callback(&self) -> impl Fn(&RunProgress) + Send + Sync + 'static {
        let bar = self.bar.clone();
        let price = self.price;
        move |progress: &RunProgress| {
            bar.set_position(progress.rows_written);
            let cost = price
                .map(|p| format!("  cost {:.4}", p.cost(progress.usage)))
                .unwrap_or_default();
            bar.set_message(format!(
                "{} failed  {} requests{cost}",
                progress.dialogs_failed, progress.requests
            ));
        }
    }

    /// Removes the bar.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Prints the report as a table, or as one JSON object with `--json` (with a `keys`
/// list when several API keys rotated, and how the pacing moved).
pub(crate) fn print_report(
    report: &RunReport,
    keys: &[KeyStats],
    pacing: &[ThrottleStats],
    json: bool,
) {
    if json {
        let mut value = serde_json::to_value(report).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
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
        println!("{value}");
        return;
    }
    println!("{}", table(report));
    for p in pacing.iter().filter(|p| p.decreases > 0 || p.paced > 0) {
        println!(
            "pacing: limit {} in flight (lowest {}, lowered {} times), {} requests waited for rate limits",
            p.concurrency_limit, p.lowest_limit, p.decreases, p.paced
        );
    }
    for key in keys {
        println!(
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
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}
