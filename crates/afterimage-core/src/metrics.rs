//! Live counters for a fleet's dashboards: a registry of plain atomics that renders the
//! Prometheus text format.
//!
//! Providers, the engine and the CLI register their series in the process-wide
//! [`Metrics::global`] registry and keep the handle: an update is then one atomic
//! operation, with no lock and no allocation. Serving the text over HTTP is the CLI's
//! job (`--metrics-addr`); this module has no I/O.
//!
//! Names follow Prometheus conventions: `afterimage_` first, the unit in the name,
//! `_total` on counters. The series afterimage keeps:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `afterimage_requests_total` | counter | `provider`, `status` (`ok` or the error kind) |
//! | `afterimage_requests_in_flight` | gauge | `provider` |
//! | `afterimage_retries_total` | counter | `kind` (the error retried) |
//! | `afterimage_rate_limit_waits_total` | counter | `source` (`pacing`: our own limits; `server`: a 429) |
//! | `afterimage_concurrency_limit` | gauge | `model` (the adaptive limit, summed over its throttles) |
//! | `afterimage_tokens_total` | counter | `kind` (`input`, `output`; `cached_input`, `cache_write` are parts of `input`, `reasoning` of `output`) |
//! | `afterimage_dialogs_total` | counter | `outcome` (`written`, `failed`, `cancelled`) |
//! | `afterimage_dialogs_in_flight` | gauge | |
//! | `afterimage_cost_usd_total` | counter | (priced models only) |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// A registry of counters and gauges, rendered in the Prometheus text format.
///
/// ```
/// use afterimage_core::Metrics;
///
/// let metrics = Metrics::new();
/// let claimed = metrics.counter("afterimage_slots_claimed_total", "Dialog slots claimed.", &[]);
/// claimed.inc();
/// let ok = metrics.counter(
///     "afterimage_requests_total",
///     "Model requests by provider and outcome.",
///     &[("provider", "openai"), ("status", "ok")],
/// );
/// ok.add(2.0);
/// let text = metrics.render();
/// assert!(text.contains("# TYPE afterimage_slots_claimed_total counter\nafterimage_slots_claimed_total 1\n"));
/// assert!(text.contains("afterimage_requests_total{provider=\"openai\",status=\"ok\"} 2\n"));
/// ```
#[derive(Debug, Default)]
pub struct Metrics {
    families: Mutex<BTreeMap<String, Family>>,
}

#[derive(Debug)]
struct Family {
    help: String,
    kind: Kind,
    /// Rendered label sets (`{a="b"}`, or empty) and their values.
    series: BTreeMap<String, Arc<AtomicU64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A value that only goes up (a float, as Prometheus has it). Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

/// A value that goes up and down. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicU64>);

/// Adds `delta` to the float stored as bits in `cell`.
fn add_f64(cell: &AtomicU64, delta: f64) {
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
        Some((f64::from_bits(bits) + delta).to_bits())
    });
}

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        add_f64(&self.0, 1.0);
    }

    /// Adds `amount`; a negative or NaN amount is ignored (a counter never goes down).
    pub fn add(&self, amount: f64) {
        if amount > 0.0 {
            add_f64(&self.0, amount);
        }
    }

    /// The value now.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

impl Gauge {
    /// Sets the value.
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    /// Adds `delta` (negative to take away).
    pub fn add(&self, delta: f64) {
        add_f64(&self.0, delta);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1.0);
    }

    /// Takes one away.
    pub fn dec(&self) {
        self.add(-1.0);
    }

    /// The value now.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

impl Metrics {
    /// An empty registry (tests, or a library user's own); the process-wide one is
    /// [`Metrics::global`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The registry every afterimage crate counts in, which `--metrics-addr` serves.
    pub fn global() -> &'static Metrics {
        static GLOBAL: OnceLock<Metrics> = OnceLock::new();
        GLOBAL.get_or_init(Metrics::new)
    }

    /// The counter `name` with these labels, registered (at 0) on first use; `help`
    /// says what it counts (the first registration's text is kept). A name or label
    /// that breaks Prometheus' rules, or a name already registered as a gauge, gives
    /// a counter that is never rendered.
    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Counter {
        Counter(self.series(name, help, Kind::Counter, labels))
    }

    /// The gauge `name` with these labels, as [`counter`](Self::counter) does it.
    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Gauge {
        Gauge(self.series(name, help, Kind::Gauge, labels))
    }

    fn series(
        &self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[(&str, &str)],
    ) -> Arc<AtomicU64> {
        if !valid_name(name, true) || !labels.iter().all(|(l, _)| valid_name(l, false)) {
            return Arc::default();
        }
        let key = render_labels(labels);
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let family = families.entry(name.to_owned()).or_insert_with(|| Family {
            help: help.to_owned(),
            kind,
            series: BTreeMap::new(),
        });
        if family.kind != kind {
            return Arc::default();
        }
        Arc::clone(family.series.entry(key).or_default())
    }

    /// Every family in the Prometheus text exposition format (version 0.0.4), sorted
    /// by name: `# HELP`, `# TYPE`, then one line per label set.
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::new();
        for (name, family) in families.iter() {
            let help = family.help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(text, "# HELP {name} {help}");
            let _ = writeln!(text, "# TYPE {name} {}", family.kind.name());
            for (labels, value) in &family.series {
                let value = f64::from_bits(value.load(Ordering::Relaxed));
                let _ = writeln!(text, "{name}{labels} {}", render_value(value));
            }
        }
        text
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` for metric names; label names have no colons and do
/// not start with `__` (reserved).
fn valid_name(name: &str, metric: bool) -> bool {
    let allowed = |c: char, first: bool| {
        c.is_ascii_alphabetic()
            || c == '_'
            || (metric && c == ':')
            || (!first && c.is_ascii_digit())
    };
    let mut chars = name.chars();
    chars.next().is_some_and(|c| allowed(c, true))
        && chars.all(|c| allowed(c, false))
        && (metric || !name.starts_with("__"))
}

/// `{a="x",b="y"}` with values escaped, or nothing without labels.
fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = labels
        .iter()
        .map(|(name, value)| {
            let value = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{name}=\"{value}\"")
        })
        .collect();
    format!("{{{}}}", pairs.join(","))
}

/// A sample value as the text format spells it (`+Inf`, `-Inf`, `NaN`).
fn render_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_share_a_family_and_render_sorted_and_escaped() {
        let metrics = Metrics::new();
        let gauge = metrics.gauge("afterimage_dialogs_in_flight", "Dialogs\nrunning.", &[]);
        gauge.add(3.0);
        gauge.dec();
        let cost = metrics.counter("afterimage_cost_usd_total", "Spent.", &[]);
        cost.add(0.25);
        cost.add(-5.0);
        let odd = metrics.counter("x_total", "odd", &[("v", "a\"b\\c\nd")]);
        odd.inc();
        // The same series again is the same value; another label set is its own.
        metrics
            .counter("x_total", "ignored", &[("v", "a\"b\\c\nd")])
            .inc();
        metrics.counter("x_total", "ignored", &[("v", "other")]);
        assert_eq!(odd.get(), 2.0);
        assert_eq!(
            metrics.render(),
            "# HELP afterimage_cost_usd_total Spent.\n\
             # TYPE afterimage_cost_usd_total counter\n\
             afterimage_cost_usd_total 0.25\n\
             # HELP afterimage_dialogs_in_flight Dialogs\\nrunning.\n\
             # TYPE afterimage_dialogs_in_flight gauge\n\
             afterimage_dialogs_in_flight 2\n\
             # HELP x_total odd\n\
             # TYPE x_total counter\n\
             x_total{v=\"a\\\"b\\\\c\\nd\"} 2\n\
             x_total{v=\"other\"} 0\n"
        );
    }

    #[test]
    fn broken_names_and_kind_clashes_are_never_rendered() {
        let metrics = Metrics::new();
        metrics.counter("9lives", "bad name", &[]).inc();
        metrics
            .counter("ok_total", "bad label", &[("__reserved", "x")])
            .inc();
        metrics
            .counter("ok_total", "bad label", &[("a-b", "x")])
            .inc();
        metrics.gauge("clash", "first a gauge", &[]).set(1.0);
        metrics.counter("clash", "then a counter", &[]).inc();
        assert_eq!(
            metrics.render(),
            "# HELP clash first a gauge\n# TYPE clash gauge\nclash 1\n"
        );
        assert_eq!(render_value(f64::INFINITY), "+Inf");
        assert_eq!(render_value(f64::NAN), "NaN");
    }
}
