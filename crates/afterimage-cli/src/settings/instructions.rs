//! `instructions:` (ours): how first questions are steered away from repetition, and
//! `generation.on_exhausted`.

use afterimage_core::QuestionType;
use afterimage_engine::SteeringConfig;
use afterimage_strategies::{DEFAULT_QUESTION_TYPES, builtin_question_type};

use super::SettingsError;
use crate::config::{InstructionsSection, QuestionTypeEntry};

/// `instructions:`, checked: the steering the run asks its instruction generator with.
pub(super) fn resolve(section: &InstructionsSection) -> Result<SteeringConfig, SettingsError> {
    let mut steering = SteeringConfig::default();
    steering.enabled = section.steering.unwrap_or(true);
    if let Some(entries) = &section.question_types {
        steering.question_types = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| question_type(i, entry))
            .collect::<Result<_, _>>()?;
    }
    if let Some(n) = section.avoid_count {
        steering.avoid_count = n;
    }
    if let Some(n) = section.avoid_chars {
        steering.avoid_chars = n;
    }
    if let Some(t) = section.max_temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(SettingsError::new(
                "instructions.max_temperature",
                format!("{t} is outside 0 to 2: use a temperature such as 1.0"),
            ));
        }
        steering.max_temperature = t;
    }
    if let Some(n) = section.section_chars {
        steering.section_chars = (n > 0).then_some(n);
    }
    Ok(steering)
}

/// Entry `i` of `instructions.question_types`.
fn question_type(i: usize, entry: &QuestionTypeEntry) -> Result<QuestionType, SettingsError> {
    let key = format!("instructions.question_types[{i}]");
    match entry {
        QuestionTypeEntry::Name(name) => builtin_question_type(name.trim()).ok_or_else(|| {
            let names: Vec<&str> = DEFAULT_QUESTION_TYPES.iter().map(|(n, _)| *n).collect();
            SettingsError::new(
                key,
                format!(
                    "`{name}` is no built-in question type ({}); for one of your own write {{name: ..., description: ...}}",
                    names.join(", ")
                ),
            )
        }),
        QuestionTypeEntry::Custom(custom) => {
            if custom.name.trim().is_empty() || custom.description.trim().is_empty() {
                return Err(SettingsError::new(
                    key,
                    "a question type of your own needs a name and a description of what to ask",
                ));
            }
            Ok(QuestionType::new(custom.name.trim(), custom.description.trim()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(yaml: &str) -> InstructionsSection {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_builtin_names_and_own_types() {
        let default = resolve(&InstructionsSection::default()).unwrap();
        assert!(default.enabled);
        assert_eq!(default.question_types.len(), DEFAULT_QUESTION_TYPES.len());
        let steering = resolve(&section(
            "steering: false\nquestion_types: [why, {name: pricing, description: a question about plans}]\nsection_chars: 0\n",
        ))
        .unwrap();
        assert!(!steering.enabled);
        let names: Vec<&str> = steering
            .question_types
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(names, ["why", "pricing"]);
        assert_eq!(steering.section_chars, None);
    }

    #[test]
    fn unknown_names_and_bad_values_are_errors_naming_the_key() {
        let error = resolve(&section("question_types: [how-to]\n")).unwrap_err();
        assert_eq!(error.key(), "instructions.question_types[0]");
        assert!(error.message().contains("how_to"), "{error}");
        let error = resolve(&section("max_temperature: 3\n")).unwrap_err();
        assert_eq!(error.key(), "instructions.max_temperature");
        assert!(serde_saphyr::from_str::<InstructionsSection>("avoid_cout: 3\n").is_err());
    }
}
