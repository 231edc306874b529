//! `preference:` (upstream's section, same keys and defaults) and the `preference`
//! command's flags: how many pairs, how their candidates differ, where they go.

use std::path::PathBuf;

use afterimage_engine::{PairFormat, PairStrategy};
use afterimage_storage::StorageSpec;
use serde::Deserialize;

use super::SettingsError;

/// `preference:` as the file says it. Unknown keys are errors naming the line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferenceSection {
    /// Pairs to write (default 10).
    #[serde(default = "default_num_pairs")]
    pub num_pairs: u64,
    /// Candidate answers per question (default 2).
    #[serde(default = "default_num_responses")]
    pub num_responses: usize,
    /// The score difference a pair needs (default 0.1).
    #[serde(default = "default_min_score_gap")]
    pub min_score_gap: f64,
    /// `temperature` (default), `prompt`, `model` or `combined`.
    #[serde(default)]
    pub strategy: PairStrategy,
    /// The second model of `model` and `combined` (same provider and endpoint).
    pub secondary_model: Option<String>,
    /// Simulate a dialog before the pair's answer (up to `generation.max_turns`).
    #[serde(default)]
    pub multi_turn: bool,
    /// Pairs in flight (default: `generation.max_concurrency`, else the provider's).
    pub max_concurrency: Option<usize>,
    /// `dpo` (default), `chat_dpo`, `ultrafeedback`, `anthropic_hh` or `orpo`.
    #[serde(default)]
    pub output_format: PairFormat,
    /// Where pairs go (default `./preferences.jsonl`, relative to the current folder
    /// as upstream's; also `sqlite:FILE` or `postgres://...`).
    #[serde(default = "default_output_path")]
    pub output_path: String,
    /// Also write every pair whole (all candidates) and the analytics to a log file.
    #[serde(default)]
    pub save_log: bool,
    /// The log file (default: the output's name with `_log.jsonl`).
    pub log_path: Option<String>,
}

impl Default for PreferenceSection {
    fn default() -> Self {
        PreferenceSection {
            num_pairs: default_num_pairs(),
            num_responses: default_num_responses(),
            min_score_gap: default_min_score_gap(),
            strategy: PairStrategy::default(),
            secondary_model: None,
            multi_turn: false,
            max_concurrency: None,
            output_format: PairFormat::default(),
            output_path: default_output_path(),
            save_log: false,
            log_path: None,
        }
    }
}

fn default_num_pairs() -> u64 {
    10
}

fn default_num_responses() -> usize {
    2
}

fn default_min_score_gap() -> f64 {
    0.1
}

fn default_output_path() -> String {
    "./preferences.jsonl".to_owned()
}

/// The command's flags that override the section.
#[derive(Debug, Default, Clone)]
pub struct PreferenceOverrides {
    /// `--num-pairs`
    pub num_pairs: Option<u64>,
    /// `--format`
    pub format: Option<PairFormat>,
    /// `-o/--output`
    pub output: Option<String>,
    /// `--save-log`
    pub save_log: bool,
}

/// A preference run, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceSettings {
    /// Pairs to write.
    pub num_pairs: u64,
    /// Candidates per question.
    pub num_responses: usize,
    /// The score difference a pair needs.
    pub min_score_gap: f64,
    /// How candidates differ.
    pub strategy: PairStrategy,
    /// The second model.
    pub secondary_model: Option<String>,
    /// A simulated dialog before the pair's answer.
    pub multi_turn: bool,
    /// Pairs in flight, when the section sets it.
    pub max_concurrency: Option<usize>,
    /// The rows' shape.
    pub format: PairFormat,
    /// Where pairs go: a JSONL file, `sqlite:FILE` or `postgres://...`.
    pub output: StorageSpec,
    /// Where the analytics log goes, with `save_log`.
    pub log: Option<PathBuf>,
}

/// The section (or its defaults) with the flags applied, checked.
pub(crate) fn resolve(
    section: Option<&PreferenceSection>,
    flags: &PreferenceOverrides,
) -> Result<PreferenceSettings, SettingsError> {
    let default = PreferenceSection::default();
    let s = section.unwrap_or(&default);
    let num_pairs = flags.num_pairs.unwrap_or(s.num_pairs);
    if num_pairs == 0 {
        return Err(SettingsError::new(
            "preference.num_pairs",
            "is 0: ask for at least one pair",
        ));
    }
    if !(2..=16).contains(&s.num_responses) {
        return Err(SettingsError::new(
            "preference.num_responses",
            format!("is {}: a pair compares 2 to 16 candidates", s.num_responses),
        ));
    }
    if !(0.0..=1.0).contains(&s.min_score_gap) {
        return Err(SettingsError::new(
            "preference.min_score_gap",
            format!("is {}: scores lie between 0 and 1", s.min_score_gap),
        ));
    }
    let secondary_model = s.secondary_model.clone().filter(|m| !m.trim().is_empty());
    if s.strategy == PairStrategy::Model && secondary_model.is_none() {
        return Err(SettingsError::new(
            "preference.secondary_model",
            "strategy `model` compares two models: name the second one here (served by the same model.provider)",
        ));
    }
    if s.max_concurrency == Some(0) {
        return Err(SettingsError::new(
            "preference.max_concurrency",
            "is 0: allow at least one pair in flight",
        ));
    }
    let output = output_file(flags.output.as_deref().unwrap_or(&s.output_path))?;
    let log = (flags.save_log || s.save_log).then(|| match &s.log_path {
        Some(path) => PathBuf::from(path),
        None => log_file(&output),
    });
    Ok(PreferenceSettings {
        num_pairs,
        num_responses: s.num_responses,
        min_score_gap: s.min_score_gap,
        strategy: s.strategy,
        secondary_model,
        multi_turn: s.multi_turn,
        max_concurrency: s.max_concurrency,
        format: flags.format.unwrap_or(s.output_format),
        output,
        log,
    })
}

/// Where pairs go; an empty name is refused.
fn output_file(path: &str) -> Result<StorageSpec, SettingsError> {
    if path.trim().is_empty() {
        return Err(SettingsError::new(
            "preference.output_path",
            "is empty: give a file name such as preferences.jsonl (or sqlite:FILE, postgres://...)",
        ));
    }
    Ok(StorageSpec::parse(path))
}

/// `prefs.jsonl` -> `prefs_log.jsonl` (`runs.db` -> `runs_log.jsonl`); for
/// PostgreSQL, `preferences_log.jsonl` in the current folder.
fn log_file(output: &StorageSpec) -> PathBuf {
    let Some(output) = output.file() else {
        return PathBuf::from("preferences_log.jsonl");
    };
    let stem = output.file_stem().map_or_else(
        || "preferences".into(),
        |s| s.to_string_lossy().into_owned(),
    );
    output.with_file_name(format!("{stem}_log.jsonl"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(yaml: &str) -> PreferenceSection {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_are_upstreams() {
        let s = resolve(None, &PreferenceOverrides::default()).unwrap();
        assert_eq!(
            (s.num_pairs, s.num_responses, s.min_score_gap),
            (10, 2, 0.1)
        );
        assert_eq!(s.strategy, PairStrategy::Temperature);
        assert_eq!(s.format, PairFormat::Dpo);
        assert_eq!(s.output.to_string(), "./preferences.jsonl");
        assert_eq!(s.log, None);
    }

    #[test]
    fn flags_win_and_the_log_sits_beside_the_output() {
        let flags = PreferenceOverrides {
            num_pairs: Some(3),
            format: Some(PairFormat::Orpo),
            output: Some("out/p.jsonl".to_owned()),
            save_log: true,
        };
        let s = resolve(Some(&section("num_pairs: 7\n")), &flags).unwrap();
        assert_eq!((s.num_pairs, s.format), (3, PairFormat::Orpo));
        assert_eq!(s.log, Some(PathBuf::from("out/p_log.jsonl")));
    }

    #[test]
    fn mistakes_name_the_key() {
        let err = |yaml: &str| {
            resolve(Some(&section(yaml)), &PreferenceOverrides::default())
                .unwrap_err()
                .key()
                .to_owned()
        };
        assert_eq!(err("strategy: model\n"), "preference.secondary_model");
        assert_eq!(err("num_responses: 1\n"), "preference.num_responses");
        assert_eq!(err("min_score_gap: 2\n"), "preference.min_score_gap");
        assert_eq!(err("output_path: ''\n"), "preference.output_path");
        assert!(serde_saphyr::from_str::<PreferenceSection>("num_pair: 3\n").is_err());
        assert!(serde_saphyr::from_str::<PreferenceSection>("strategy: random\n").is_err());
    }
}
