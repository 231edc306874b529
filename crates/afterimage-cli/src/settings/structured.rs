//! `structured:` (ours; upstream's `StructuredGenerator` has no CLI): the output
//! schema, inline or in a JSON or YAML file relative to the config, the number of
//! rows and where they go. Read by `afterimage structured` and checked by `validate`.

use std::path::Path;

use afterimage_storage::StorageSpec;

use afterimage_core::JsonSchema;
use serde::Deserialize;

use super::SettingsError;

/// `structured:` as the file says it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructuredSection {
    /// A JSON or YAML file holding the JSON Schema, relative to the config file.
    pub schema_file: Option<String>,
    /// The JSON Schema inline (YAML or JSON syntax).
    pub schema: Option<serde_json::Value>,
    /// The schema's name as JSON schema modes send it (default: the file's stem, or
    /// `output`).
    pub name: Option<String>,
    /// Rows to write (default 10).
    pub num_samples: Option<u64>,
    /// Where rows go, as `output.path` says it: a JSONL file relative to the working
    /// directory, `sqlite:FILE` or `postgres://...` (default
    /// `./afterimage_structured.jsonl`).
    pub output_path: Option<String>,
}

/// A structured run, resolved: the schema checked, the count and the output known.
#[derive(Debug, Clone)]
pub(crate) struct StructuredSettings {
    /// The schema every output must match.
    pub(crate) schema: JsonSchema,
    /// Where it came from, for messages (`schema.json`, `structured.schema`).
    pub(crate) origin: String,
    /// Rows to write.
    pub(crate) num_samples: u64,
    /// The storage rows go to.
    pub(crate) output: StorageSpec,
}

/// Resolves `structured:` (from the config at `config_path`), `--num-samples` and
/// `--out` winning over the file.
pub(crate) fn resolve(
    section: Option<&StructuredSection>,
    config_path: &Path,
    num_samples: Option<u64>,
    out: Option<&str>,
) -> Result<StructuredSettings, SettingsError> {
    let Some(section) = section else {
        return Err(SettingsError::new(
            "structured",
            "the config has no `structured:` section: add one with the output schema (`schema_file: schema.json` or `schema: {type: object, ...}`)",
        ));
    };
    let base_dir = config_path.parent().unwrap_or(Path::new("."));
    let (value, origin, stem) = match (&section.schema_file, &section.schema) {
        (Some(_), Some(_)) => {
            return Err(SettingsError::new(
                "structured.schema",
                "give the schema once: either `schema_file` or `schema`, not both",
            ));
        }
        (None, None) => {
            return Err(SettingsError::new(
                "structured",
                "the output schema is missing: add `schema_file: schema.json` (JSON or YAML, relative to the config) or an inline `schema:`",
            ));
        }
        (Some(file), None) => {
            let path = base_dir.join(file);
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            (read_schema_file(&path)?, path.display().to_string(), stem)
        }
        (None, Some(inline)) => (inline.clone(), "structured.schema".to_owned(), None),
    };
    let key = if section.schema_file.is_some() {
        "structured.schema_file"
    } else {
        "structured.schema"
    };
    afterimage_engine::check_output_schema(&value)
        .map_err(|e| SettingsError::new(key, format!("{origin}: {e}")))?;
    let name = section
        .name
        .clone()
        .or(stem)
        .unwrap_or_else(|| "output".into());
    let name = schema_name(&name);
    let num_samples = num_samples.or(section.num_samples).unwrap_or(10);
    if num_samples == 0 {
        return Err(SettingsError::new(
            "structured.num_samples",
            "0 rows asks for nothing: give at least 1",
        ));
    }
    let output = StorageSpec::parse(
        out.or(section.output_path.as_deref())
            .unwrap_or("./afterimage_structured.jsonl"),
    );
    Ok(StructuredSettings {
        schema: JsonSchema::new(name, value),
        origin,
        num_samples,
        output,
    })
}

/// The schema in a JSON file, or YAML for any other extension (YAML also reads JSON).
fn read_schema_file(path: &Path) -> Result<serde_json::Value, SettingsError> {
    let key = "structured.schema_file";
    let text = std::fs::read_to_string(path).map_err(|e| {
        SettingsError::new(
            key,
            format!(
                "cannot read {}: {e} (the path is relative to the config file)",
                path.display()
            ),
        )
    })?;
    let json = path.extension().is_some_and(|e| e == "json");
    let parsed = if json {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        serde_saphyr::from_str(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| {
        let kind = if json { "JSON" } else { "YAML" };
        SettingsError::new(key, format!("{} is not valid {kind}: {e}", path.display()))
    })
}

/// `name` as OpenAI accepts a schema name: letters, digits, `_` and `-`, 64 at most.
fn schema_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "output".to_owned()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(yaml: &str) -> StructuredSection {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn schema_files_are_json_or_yaml_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("schemas")).unwrap();
        std::fs::write(
            dir.path().join("schemas/faq.json"),
            r#"{"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("schemas/faq entry.yaml"),
            "type: object\nproperties:\n  q: {type: string}\nrequired: [q]\n",
        )
        .unwrap();
        let config = dir.path().join("run.yaml");
        for (file, name) in [
            ("schemas/faq.json", "faq"),
            ("schemas/faq entry.yaml", "faq_entry"),
        ] {
            let settings = resolve(
                Some(&section(&format!("schema_file: {file}\nnum_samples: 3\n"))),
                &config,
                None,
                None,
            )
            .unwrap();
            assert_eq!(settings.schema.name, name);
            assert_eq!(settings.schema.schema["required"][0], "q");
            assert_eq!(settings.num_samples, 3);
        }
        // Rows go to any storage `generate` writes to.
        let db = resolve(
            Some(&section(
                "schema: {type: object}\noutput_path: sqlite:x.db\n",
            )),
            &config,
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            db.output,
            StorageSpec::Sqlite(std::path::PathBuf::from("x.db"))
        );
        let pg = resolve(
            Some(&section("schema: {type: object}\n")),
            &config,
            None,
            Some("postgres://postgres@127.0.0.1:5432/test"),
        )
        .unwrap();
        assert!(
            matches!(pg.output, StorageSpec::Postgres(_)),
            "{}",
            pg.output
        );
    }

    #[test]
    fn problems_name_the_key() {
        let config = Path::new("run.yaml");
        let error = |yaml: &str| resolve(Some(&section(yaml)), config, None, None).unwrap_err();
        let typo = error("schema: {type: object, properties: {a: {type: strng}}}\n");
        assert_eq!(typo.key(), "structured.schema");
        assert!(typo.message().contains("/properties/a/type"), "{typo}");
        assert_eq!(error("num_samples: 3\n").key(), "structured");
        let missing = error("schema_file: nowhere.json\n");
        assert_eq!(missing.key(), "structured.schema_file");
        assert!(missing.message().contains("nowhere.json"), "{missing}");
        assert!(serde_saphyr::from_str::<StructuredSection>("shema: {}\n").is_err());
    }
}
