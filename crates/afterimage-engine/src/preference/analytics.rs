//! What a preference run kept and discarded: score gaps, win rates per variant, and
//! the warnings that say a dataset teaches little.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use super::PreferencePair;
use super::format::round;

/// A label winning this share of the pairs or more makes a warning.
const DOMINANT_SHARE: f64 = 0.75;

/// A discard rate above this makes a warning.
const HIGH_DISCARD_RATE: f64 = 0.40;

/// The analytics of one preference run (this session's pairs; resumed ones are only
/// counted).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PreferenceAnalytics {
    /// Pairs written by this session.
    pub pairs_kept: u64,
    /// Attempts that wrote no pair, by cause (`score_gap_too_small`, and failures such
    /// as `respondent: timeout`).
    pub discarded: BTreeMap<String, u64>,
    /// Discarded attempts over all attempts that ended.
    pub discard_rate: f64,
    /// Chosen minus rejected score over the kept pairs.
    pub score_gap: GapStats,
    /// How often each variant label was chosen and rejected, and its win rate
    /// (chosen over kept pairs).
    pub win_rates: BTreeMap<String, LabelWins>,
    /// Upstream's warnings: one label wins 75% of pairs or more; over 40% of attempts
    /// discarded.
    pub warnings: Vec<String>,
}

/// The score gap distribution.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GapStats {
    /// Smallest gap.
    pub min: f64,
    /// Mean gap.
    pub mean: f64,
    /// Median gap.
    pub median: f64,
    /// Largest gap.
    pub max: f64,
    /// Counts in bins of 0.1 (`"0.1-0.2": 4`).
    pub histogram: BTreeMap<String, u64>,
}

/// One variant label's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LabelWins {
    /// Pairs it was chosen in.
    pub chosen: u64,
    /// Pairs it was rejected in.
    pub rejected: u64,
    /// `chosen` over the kept pairs.
    pub win_rate: f64,
}

/// Collects what the pair tasks report while the run goes.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    inner: Mutex<Collected>,
}

#[derive(Debug, Default)]
struct Collected {
    gaps: Vec<f64>,
    chosen: BTreeMap<String, u64>,
    rejected: BTreeMap<String, u64>,
}

impl Collector {
    /// A pair was written.
    pub(crate) fn kept(&self, pair: &PreferencePair) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        c.gaps.push(pair.gap());
        *c.chosen.entry(pair.chosen().label.clone()).or_default() += 1;
        *c.rejected.entry(pair.rejected().label.clone()).or_default() += 1;
    }

    /// The analytics, given the attempts that wrote nothing by cause.
    pub(crate) fn analytics(&self, discarded: BTreeMap<String, u64>) -> PreferenceAnalytics {
        let c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let kept = c.gaps.len() as u64;
        let dropped: u64 = discarded.values().sum();
        let discard_rate = if kept + dropped == 0 {
            0.0
        } else {
            round(dropped as f64 / (kept + dropped) as f64)
        };
        let mut labels: Vec<&String> = c.chosen.keys().chain(c.rejected.keys()).collect();
        labels.sort();
        labels.dedup();
        let win_rates: BTreeMap<String, LabelWins> = labels
            .into_iter()
            .map(|label| {
                let chosen = c.chosen.get(label).copied().unwrap_or(0);
                let wins = LabelWins {
                    chosen,
                    rejected: c.rejected.get(label).copied().unwrap_or(0),
                    win_rate: if kept == 0 {
                        0.0
                    } else {
                        round(chosen as f64 / kept as f64)
                    },
                };
                (label.clone(), wins)
            })
            .collect();
        let warnings = warnings(&win_rates, discard_rate, kept);
        PreferenceAnalytics {
            pairs_kept: kept,
            discarded,
            discard_rate,
            score_gap: gap_stats(&c.gaps),
            win_rates,
            warnings,
        }
    }
}

fn warnings(wins: &BTreeMap<String, LabelWins>, discard_rate: f64, kept: u64) -> Vec<String> {
    let mut out = Vec::new();
    if kept > 0
        && let Some((label, w)) = wins.iter().find(|(_, w)| w.win_rate >= DOMINANT_SHARE)
    {
        out.push(format!(
            "`{label}` wins {:.0}% of the pairs: the model may learn the variant's style rather than quality; mix strategies or raise num_responses",
            w.win_rate * 100.0
        ));
    }
    if discard_rate > HIGH_DISCARD_RATE {
        out.push(format!(
            "{:.0}% of the attempts were discarded: lower min_score_gap or make the candidates differ more (strategy: combined)",
            discard_rate * 100.0
        ));
    }
    out
}

fn gap_stats(gaps: &[f64]) -> GapStats {
    if gaps.is_empty() {
        return GapStats::default();
    }
    let mut sorted = gaps.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    let mut histogram = BTreeMap::new();
    for gap in &sorted {
        let bin = ((gap * 10.0).floor() as i64).clamp(0, 9);
        let key = format!("{:.1}-{:.1}", bin as f64 / 10.0, (bin + 1) as f64 / 10.0);
        *histogram.entry(key).or_default() += 1;
    }
    GapStats {
        min: round(sorted[0]),
        mean: round(sorted.iter().sum::<f64>() / n as f64),
        median: round(median),
        max: round(sorted[n - 1]),
        histogram,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_bin_by_tenths_and_the_median_is_exact() {
        let stats = gap_stats(&[0.05, 0.15, 0.25, 0.35]);
        assert_eq!(stats.median, 0.2);
        assert_eq!(stats.min, 0.05);
        assert_eq!(stats.histogram["0.0-0.1"], 1);
        assert_eq!(stats.histogram.len(), 4);
    }

    #[test]
    fn warns_on_a_dominant_label_and_many_discards() {
        let mut wins = BTreeMap::new();
        wins.insert(
            "enhanced".to_owned(),
            LabelWins {
                chosen: 8,
                rejected: 0,
                win_rate: 0.8,
            },
        );
        let w = warnings(&wins, 0.5, 10);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("enhanced"));
        assert!(warnings(&wins, 0.4, 10).len() == 1);
    }
}
