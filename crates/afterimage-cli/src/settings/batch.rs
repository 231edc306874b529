//! `batch:` (ours) and `generate --batch`: dialogs through the providers' batch APIs
//! at half price, a round of requests per batch turnaround.

use std::path::{Path, PathBuf};
use std::time::Duration;

use afterimage_batch::{BatchSettings, Tail};
use afterimage_providers::Provider;
use afterimage_storage::StorageSpec;
use serde::Deserialize;

use super::SettingsError;

/// `batch:` as the file says it. Unknown keys are errors naming the key and its line.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSection {
    /// Turn batch mode on (`generate --batch` does too).
    pub enabled: Option<bool>,
    /// The roles whose requests go in batches (default all four).
    pub roles: Option<Vec<BatchRole>>,
    /// A round with fewer requests takes the `tail` path (default 50).
    pub min_requests: Option<usize>,
    /// `sync` (default: a small round goes through the synchronous API at full price)
    /// or `batch` (it waits for a batch anyway).
    pub tail: Option<TailMode>,
    /// Milliseconds without a new request before a round is submitted (default 2000).
    pub linger_ms: Option<u64>,
    /// Batches in flight at once (default 10).
    pub max_open_batches: Option<usize>,
    /// How often a batch is polled.
    pub poll: Option<PollSection>,
    /// Dialogs started per row asked for: `auto` (default) or a factor of at least 1.
    pub oversample: Option<Oversample>,
    /// Submissions of one request before its dialog fails (default 3).
    pub max_request_attempts: Option<u32>,
    /// Keep the round files on disk after their results are applied (default false).
    pub keep_files: Option<bool>,
    /// Cancel open batches on Ctrl-C instead of leaving them running (default false).
    pub cancel_on_exit: Option<bool>,
    /// Where the journal goes (default `<output path>.batch/`; required for a
    /// PostgreSQL output).
    pub dir: Option<String>,
}

/// `batch.poll:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollSection {
    /// Seconds before the first poll of a batch (default 15).
    pub initial_s: Option<f64>,
    /// The longest wait between polls, in seconds (default 300).
    pub max_s: Option<f64>,
}

/// One of `batch.roles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchRole {
    /// The assistant.
    Respondent,
    /// The simulated user.
    Correspondent,
    /// The judge.
    Judge,
    /// Writing the first questions (the instruction generator and its personas): each
    /// draw of a dialog waits a round, and a redraw (a near-duplicate question)
    /// another; without it they stay at full price.
    Instructions,
}

/// `batch.tail`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TailMode {
    /// Small rounds go through the synchronous API.
    Sync,
    /// Small rounds wait for a batch.
    Batch,
}

/// `batch.oversample`: `auto` or a number.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Oversample {
    /// A fixed factor.
    Factor(f64),
    /// A word; only `auto` is valid.
    Word(String),
}

/// Which roles batch mode applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Roles {
    pub(crate) respondent: bool,
    pub(crate) correspondent: bool,
    pub(crate) judge: bool,
    pub(crate) instructions: bool,
}

/// Batch mode, resolved.
#[derive(Debug, Clone)]
pub(crate) struct BatchConfig {
    /// The roles batched.
    pub(crate) roles: Roles,
    /// The batcher's settings.
    pub(crate) settings: BatchSettings,
    /// The fixed oversampling factor, or `None` for `auto`.
    pub(crate) oversample: Option<f64>,
    /// Keep round files after their results are applied.
    pub(crate) keep_files: bool,
    /// Cancel open batches on Ctrl-C.
    pub(crate) cancel_on_exit: bool,
    /// The journal's folder.
    pub(crate) dir: PathBuf,
}

impl BatchConfig {
    /// The oversampling factor the run uses: the fixed one, or for `auto` the
    /// inverse of the pass rate a resumed run `observed` (at most 2), else of an
    /// assumed one (judged dialogs fail sometimes; others hardly).
    pub(crate) fn oversample_factor(&self, judged: bool, observed: Option<f64>) -> f64 {
        match (self.oversample, observed) {
            (Some(factor), _) => factor,
            (None, Some(rate)) if rate > 0.0 => (1.0 / rate).clamp(1.0, 2.0),
            (None, _) if judged => AUTO_JUDGED_OVERSAMPLE,
            (None, _) => 1.0,
        }
    }
}

/// `auto`'s factor for judged runs: 1 / an assumed 87% pass rate.
pub(crate) const AUTO_JUDGED_OVERSAMPLE: f64 = 1.15;

/// What `--batch` and `--cancel-on-exit` add to the file.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BatchFlags {
    /// `--batch`
    pub(crate) enabled: bool,
    /// `--cancel-on-exit`
    pub(crate) cancel_on_exit: bool,
}

/// Resolves `batch:` with the flags: `None` when batch mode is off.
pub(crate) fn resolve(
    section: Option<&BatchSection>,
    flags: BatchFlags,
    provider: Provider,
    base_url: Option<&str>,
    output: &StorageSpec,
) -> Result<Option<BatchConfig>, SettingsError> {
    let empty = BatchSection::default();
    let section = section.unwrap_or(&empty);
    if !(flags.enabled || section.enabled.unwrap_or(false)) {
        return Ok(None);
    }
    check_provider(provider, base_url)?;
    Ok(Some(BatchConfig {
        roles: roles(section.roles.as_deref())?,
        settings: batch_settings(section)?,
        oversample: oversample(section.oversample.as_ref())?,
        keep_files: section.keep_files.unwrap_or(false),
        cancel_on_exit: flags.cancel_on_exit || section.cancel_on_exit.unwrap_or(false),
        dir: dir(section.dir.as_deref(), output)?,
    }))
}

/// Whether `provider` at `base_url` has a batch API this version speaks.
fn check_provider(provider: Provider, base_url: Option<&str>) -> Result<(), SettingsError> {
    match provider {
        Provider::Openai | Provider::Anthropic | Provider::Gemini | Provider::Local => Ok(()),
        // A server of one's own at another URL may serve OpenAI's batch routes.
        Provider::Deepseek | Provider::Openrouter if base_url.is_some() => Ok(()),
        Provider::Deepseek | Provider::Openrouter => Err(SettingsError::new(
            "batch.enabled",
            format!(
                "{} has no batch API: run without --batch (and batch.enabled), or set model.base_url to a server that serves OpenAI's /v1/batches",
                provider.name()
            ),
        )),
    }
}

fn roles(list: Option<&[BatchRole]>) -> Result<Roles, SettingsError> {
    let Some(list) = list else {
        return Ok(Roles {
            respondent: true,
            correspondent: true,
            judge: true,
            instructions: true,
        });
    };
    if list.is_empty() {
        return Err(SettingsError::new(
            "batch.roles",
            "no role is batched: list at least one of respondent, correspondent, judge, instructions (or turn batch mode off)",
        ));
    }
    Ok(Roles {
        respondent: list.contains(&BatchRole::Respondent),
        correspondent: list.contains(&BatchRole::Correspondent),
        judge: list.contains(&BatchRole::Judge),
        instructions: list.contains(&BatchRole::Instructions),
    })
}

fn batch_settings(section: &BatchSection) -> Result<BatchSettings, SettingsError> {
    let defaults = BatchSettings::default();
    let poll = section.poll.as_ref();
    let initial = seconds("batch.poll.initial_s", poll.and_then(|p| p.initial_s))?
        .unwrap_or(defaults.poll_initial);
    let max = seconds("batch.poll.max_s", poll.and_then(|p| p.max_s))?
        .unwrap_or(defaults.poll_max)
        .max(initial);
    let max_open_batches = at_least_one("batch.max_open_batches", section.max_open_batches)?
        .unwrap_or(defaults.max_open_batches);
    let attempts = at_least_one(
        "batch.max_request_attempts",
        section.max_request_attempts.map(|n| n as usize),
    )?
    .map_or(defaults.max_request_attempts, |n| n as u32);
    Ok(BatchSettings {
        min_requests: section.min_requests.unwrap_or(defaults.min_requests),
        tail: match section.tail {
            Some(TailMode::Batch) => Tail::Batch,
            Some(TailMode::Sync) | None => Tail::Sync,
        },
        linger: section
            .linger_ms
            .map_or(defaults.linger, Duration::from_millis),
        max_open_batches,
        poll_initial: initial,
        poll_max: max,
        max_request_attempts: attempts,
        ..defaults
    })
}

/// A count that must be at least 1.
fn at_least_one(key: &str, value: Option<usize>) -> Result<Option<usize>, SettingsError> {
    match value {
        Some(0) => Err(SettingsError::new(key, "is 0: give at least 1")),
        other => Ok(other),
    }
}

/// A positive number of seconds (fractions allowed, for tests against a fast mock).
fn seconds(key: &str, value: Option<f64>) -> Result<Option<Duration>, SettingsError> {
    match value {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(SettingsError::new(
            key,
            format!("is {s}: give a positive number of seconds"),
        )),
    }
}

fn oversample(value: Option<&Oversample>) -> Result<Option<f64>, SettingsError> {
    let key = "batch.oversample";
    match value {
        None => Ok(None),
        Some(Oversample::Word(word)) if word == "auto" => Ok(None),
        Some(Oversample::Word(word)) => Err(SettingsError::new(
            key,
            format!("is `{word}`: give `auto` or a factor of at least 1, such as 1.15"),
        )),
        Some(Oversample::Factor(f)) if f.is_finite() && *f >= 1.0 && *f <= 10.0 => Ok(Some(*f)),
        Some(Oversample::Factor(f)) => Err(SettingsError::new(
            key,
            format!(
                "is {f}: give a factor between 1 and 10 (1 starts one dialog per row; 1.15 starts 15% spares), or `auto`"
            ),
        )),
    }
}

/// The journal's folder: `batch.dir`, else next to a file output.
fn dir(dir: Option<&str>, output: &StorageSpec) -> Result<PathBuf, SettingsError> {
    if let Some(dir) = dir {
        return Ok(PathBuf::from(dir));
    }
    match output {
        StorageSpec::Jsonl(path) | StorageSpec::Sqlite(path) => Ok(beside(path)),
        _ => Err(SettingsError::new(
            "batch.dir",
            "the output is a PostgreSQL database, so the batch journal has no default place: set batch.dir to a folder on this machine",
        )),
    }
}

/// `<path>.batch/`
pub(crate) fn beside(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".batch");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(yaml: &str) -> BatchSection {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn on(yaml: &str) -> Result<Option<BatchConfig>, SettingsError> {
        let output = StorageSpec::parse("out/rows.jsonl");
        let flags = BatchFlags {
            enabled: true,
            cancel_on_exit: false,
        };
        resolve(Some(&section(yaml)), flags, Provider::Openai, None, &output)
    }

    #[test]
    fn defaults_follow_the_reference() {
        let config = on("{}").unwrap().unwrap();
        assert_eq!(config.settings, BatchSettings::default());
        let roles = config.roles;
        assert!(roles.respondent && roles.correspondent && roles.judge && roles.instructions);
        assert_eq!(config.dir, PathBuf::from("out/rows.jsonl.batch"));
        assert_eq!(config.oversample_factor(true, None), AUTO_JUDGED_OVERSAMPLE);
        assert_eq!(config.oversample_factor(false, None), 1.0);
        assert_eq!(config.oversample_factor(true, Some(0.8)), 1.25);
        assert_eq!(config.oversample_factor(true, Some(0.1)), 2.0);
        assert_eq!(config.oversample_factor(false, Some(1.0)), 1.0);
        assert!(!config.cancel_on_exit && !config.keep_files);
        let off = resolve(
            None,
            BatchFlags::default(),
            Provider::Openai,
            None,
            &StorageSpec::parse("x.jsonl"),
        );
        assert!(off.unwrap().is_none());
    }

    #[test]
    fn every_key_is_read() {
        let config = on("roles: [respondent]\nmin_requests: 5\ntail: batch\nlinger_ms: 20\nmax_open_batches: 2\npoll: {initial_s: 0.05, max_s: 0.2}\noversample: 1.5\nmax_request_attempts: 4\nkeep_files: true\ncancel_on_exit: true\ndir: journal\n")
            .unwrap()
            .unwrap();
        let s = &config.settings;
        assert_eq!(
            (s.min_requests, s.tail, s.max_open_batches),
            (5, Tail::Batch, 2)
        );
        assert_eq!(s.linger, Duration::from_millis(20));
        assert_eq!(s.poll_initial, Duration::from_millis(50));
        assert_eq!(s.poll_max, Duration::from_millis(200));
        assert_eq!(s.max_request_attempts, 4);
        assert!(config.roles.respondent && !config.roles.correspondent && !config.roles.judge);
        assert_eq!(config.oversample, Some(1.5));
        assert!(config.keep_files && config.cancel_on_exit);
        assert_eq!(config.dir, PathBuf::from("journal"));
    }

    #[test]
    fn problems_name_the_key_and_the_fix() {
        let key = |yaml: &str| on(yaml).unwrap_err().key().to_owned();
        assert_eq!(key("oversample: 0.5"), "batch.oversample");
        assert_eq!(key("oversample: always"), "batch.oversample");
        assert_eq!(key("max_open_batches: 0"), "batch.max_open_batches");
        assert_eq!(key("max_request_attempts: 0"), "batch.max_request_attempts");
        assert_eq!(key("poll: {initial_s: -1}"), "batch.poll.initial_s");
        assert_eq!(key("roles: []"), "batch.roles");
        let pg = resolve(
            None,
            BatchFlags {
                enabled: true,
                cancel_on_exit: false,
            },
            Provider::Openai,
            None,
            &StorageSpec::parse("postgres://u@h/db"),
        )
        .unwrap_err();
        assert_eq!(pg.key(), "batch.dir");
        let deepseek = resolve(
            Some(&section("enabled: true")),
            BatchFlags::default(),
            Provider::Deepseek,
            None,
            &StorageSpec::parse("x.jsonl"),
        )
        .unwrap_err();
        assert!(deepseek.message().contains("no batch API"), "{deepseek}");
        for typo in [
            "min_request: 3",
            "poll: {initial: 1}",
            "roles: [assistant]",
            "tail: later",
        ] {
            assert!(
                serde_saphyr::from_str::<BatchSection>(typo).is_err(),
                "{typo}"
            );
        }
    }
}
