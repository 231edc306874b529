//! Resolution tests: defaults, paths, the key named by each error, and the checks run before a run.

use afterimage_datasets::ExportFormat;

use super::*;
use crate::config::parse;

fn resolve(yaml: &str, env: &[(&str, &str)]) -> Result<Settings, String> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::resolve(
        parse(yaml)?,
        Path::new("/configs/run.yaml"),
        &Overrides::default(),
        |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
        KeyPolicy::Required,
    )
    .map_err(|e| e.to_string())
}

#[test]
fn a_missing_key_names_the_variable() {
    let err = resolve("respondent: {system_prompt: hi}\n", &[]).unwrap_err();
    assert!(err.contains("GEMINI_API_KEY"), "{err}");
    let err = resolve(
        "model: {provider: openai, api_key_env: TEAM_KEY}\nrespondent: {system_prompt: hi}\n",
        &[("OPENAI_API_KEY", "x")],
    )
    .unwrap_err();
    assert!(err.contains("TEAM_KEY"), "{err}");
    let ok = resolve(
        "model: {provider: local}\nrespondent: {system_prompt: hi}\n",
        &[],
    )
    .unwrap();
    assert!(ok.api_keys.is_empty());
    assert_eq!(ok.model_name, "default");
    assert_eq!(ok.max_concurrency, 8);
}

#[test]
fn output_storage_and_path_pick_the_backend() {
    let key = [("GEMINI_API_KEY", "k")];
    for (output, expected) in [
        ("{path: a.jsonl}", StorageSpec::Jsonl("a.jsonl".into())),
        (
            "{path: a.db, storage: sqlite}",
            StorageSpec::Sqlite("a.db".into()),
        ),
        ("{path: 'sqlite:a.db'}", StorageSpec::Sqlite("a.db".into())),
        (
            "{path: 'sqlite:///a.db', storage: sql}",
            StorageSpec::Sqlite("a.db".into()),
        ),
        (
            "{path: 'postgres://u@h/db', storage: postgres}",
            StorageSpec::Postgres("postgres://u@h/db".into()),
        ),
        (
            "{path: 'postgresql://u@h/db', storage: sql}",
            StorageSpec::Postgres("postgresql://u@h/db".into()),
        ),
    ] {
        let yaml = format!("respondent: {{system_prompt: hi}}\noutput: {output}\n");
        assert_eq!(resolve(&yaml, &key).unwrap().output, expected, "{output}");
    }
    let err = resolve(
        "respondent: {system_prompt: hi}\noutput: {path: x.db, storage: postgres}\n",
        &key,
    )
    .unwrap_err();
    assert!(err.contains("postgres:// URL"), "{err}");
}

#[test]
fn paths_resolve_against_the_config_file() {
    let settings = resolve(
        "respondent: {system_prompt: hi}\ndocuments: {provider: directory, path: docs}\n",
        &[("GEMINI_API_KEY", "k")],
    )
    .unwrap();
    match settings.documents {
        Some(DocumentsSpec::Directory(path)) => assert_eq!(path, Path::new("/configs/docs")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_values_are_explained() {
    let key = [("GEMINI_API_KEY", "k")];
    for (yaml, needle) in [
        (
            "generation: {num_dialogs: 0}\nrespondent: {system_prompt: hi}\n",
            "generation.num_dialogs: is 0",
        ),
        (
            "generation: {num_dialogs: null}\nrespondent: {system_prompt: hi}\n",
            "nothing tells the run",
        ),
        (
            "model: {provider: anthropic}\nrespondent: {system_prompt: hi}\n",
            "ANTHROPIC_API_KEY",
        ),
        (
            "generation: {num_dialogs: 1}\n",
            "respondent.system_prompt: is missing",
        ),
        (
            "respondent: {system_prompt: hi}\noutput: {storage: sql}\n",
            "must be a database URL",
        ),
        (
            "respondent: {system_prompt: hi}\ndocuments: {provider: directory}\n",
            "documents.path",
        ),
    ] {
        let err = resolve(yaml, &key).unwrap_err();
        assert!(err.contains(needle), "{yaml}: {err}");
    }
}

#[test]
fn strategy_sections_need_documents_and_resolve_with_them() {
    let key = [("GEMINI_API_KEY", "k")];
    for (yaml, needle) in [
        (
            "personas: {enabled: true}\n",
            "personas.enabled: needs documents",
        ),
        (
            "generation: {stopping: [{type: context_coverage}]}\n",
            "context_coverage rule needs documents",
        ),
        ("retrieval: {top_k: 2}\n", "retrieval: needs documents"),
        ("tools: {num_tools_to_sample: 1}\n", "tools: list the tools"),
    ] {
        let err = resolve(&format!("respondent: {{system_prompt: hi}}\n{yaml}"), &key).unwrap_err();
        assert!(err.contains(needle), "{yaml}: {err}");
    }
    let settings = resolve(
        "respondent: {system_prompt: hi}\ndocuments: {provider: file, path: 'docs/*.md'}\npersonas: {enabled: true, n_iterations: 1}\nanalytics: {auto_analyze: true}\ngeneration: {num_dialogs: null, stopping: [{type: all, conditions: [{type: context_coverage, target_visits: 2}, {type: fixed, n: 3}]}]}\nretrieval: {per_turn: true, chunk_size: 400, chunk_overlap: 50}\ntools: {specs: [{name: lookup, description: finds, parameters: {type: object}}]}\n",
        &key,
    )
    .unwrap();
    assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
    assert!(
        matches!(settings.documents, Some(DocumentsSpec::Glob(ref p)) if p.ends_with("docs/*.md"))
    );
    assert_eq!(settings.personas.map(|p| p.max_depth), Some(Some(1)));
    assert_eq!(settings.target_visits, Some(2));
    let retrieval = settings.retrieval.as_ref().unwrap();
    assert!(retrieval.per_turn && retrieval.chunk_size == 400);
    assert_eq!(settings.tools.as_ref().unwrap().num_tools_to_sample, 2);
    assert_eq!(criteria(&settings.stopping, Some(4)).unwrap().len(), 1);
    assert_eq!(
        settings.after_run.analyze.as_deref(),
        Some(Path::new("./afterimage_output.html"))
    );
}

#[test]
fn export_and_analytics_are_checked_before_the_run() {
    let settings = resolve(
        "respondent: {system_prompt: hi}\noutput: {path: out/a.jsonl, export: {formats: [openai, sharegpt], split: 0.1, seed: 7}}\nanalytics: {auto_analyze: true, output_path: r.html}\n",
        &[("GEMINI_API_KEY", "k")],
    )
    .unwrap();
    let export = settings.after_run.export.unwrap();
    assert_eq!(
        export.options.formats,
        [ExportFormat::OpenAi, ExportFormat::ShareGpt]
    );
    assert_eq!((export.options.split, export.options.seed), (Some(0.1), 7));
    assert_eq!(
        settings.after_run.analyze.as_deref(),
        Some(Path::new("r.html"))
    );
    for (yaml, needle) in [
        ("output: {export: {formats: [opnai]}}", "opnai"),
        ("output: {export: {formats: [raw], split: 2}}", "split"),
    ] {
        let err = resolve(
            &format!("respondent: {{system_prompt: hi}}\n{yaml}\n"),
            &[("GEMINI_API_KEY", "k")],
        )
        .unwrap_err();
        assert!(err.contains(needle), "{err}");
    }
    let settings = resolve(
        "respondent: {system_prompt: hi}\n",
        &[("GEMINI_API_KEY", "k")],
    )
    .unwrap();
    assert!(settings.after_run.export.is_none() && settings.after_run.analyze.is_none());
}

#[test]
fn errors_name_the_key_at_fault() {
    let key = [("GEMINI_API_KEY", "k")];
    let resolve_err = |yaml: &str, env: &[(&str, &str)]| {
        let raw = parse(yaml).unwrap();
        Settings::resolve(
            raw,
            Path::new("/configs/run.yaml"),
            &Overrides::default(),
            |name| {
                env.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            },
            KeyPolicy::Required,
        )
        .unwrap_err()
    };
    for (yaml, env, path) in [
        (
            "respondent: {system_prompt: hi}\n",
            &[][..],
            "model.api_key_env",
        ),
        (
            "respondent: {system_prompt: hi}\ngeneration: {stopping: [{type: budget, max_total_tokens: 5}, {type: rate_limit}, {type: fixed, n: 0}]}\n",
            &key[..],
            "generation.stopping[2].n",
        ),
        (
            "respondent: {system_prompt: hi}\ndocuments: {provider: memory, texts: [a]}\ngeneration: {stopping: [{type: all, conditions: [{type: fixed, n: 1}, {type: context_coverage, target_visits: 0}]}]}\n",
            &key[..],
            "generation.stopping[0].conditions[1].target_visits",
        ),
        (
            "respondent: {system_prompt: hi}\noutput: {path: x.db, storage: postgres}\n",
            &key[..],
            "output.path",
        ),
        (
            "respondent: {system_prompt: hi}\ngeneration: {max_concurrency: 0}\n",
            &key[..],
            "generation.max_concurrency",
        ),
        (
            "respondent: {system_prompt: hi}\nquality: {evaluator: {provider: openai}}\n",
            &key[..],
            "quality.evaluator.api_key_env",
        ),
    ] {
        let err = resolve_err(yaml, env);
        assert_eq!(err.key(), path, "{yaml}: {err}");
        assert_eq!(err.to_string(), format!("{path}: {}", err.message()));
        assert!(!err.to_string().contains('\n'), "one line: {err}");
    }
}

#[test]
fn each_role_has_its_sampling_keys_and_the_quality_policies_default_on() {
    let key = [("GEMINI_API_KEY", "k")];
    let plain = resolve("respondent: {system_prompt: hi}\n", &key).unwrap();
    assert_eq!(plain.respondent_sampling, RoleSampling::default());
    assert!(plain.quality.instruction_checks);
    assert_eq!(
        plain.quality.on_unjudged,
        afterimage_engine::UnjudgedPolicy::Stop
    );
    let set = resolve(
        "respondent: {system_prompt: hi, temperature: 0.2, max_tokens: 900}\n\
         correspondent: {temperature: 1.2, max_tokens: 120}\n\
         quality: {temperature: 0, max_tokens: 2000, instruction_checks: false, on_unjudged: drop}\n",
        &key,
    )
    .unwrap();
    let sampling = |t, n| RoleSampling {
        temperature: Some(t),
        max_tokens: Some(n),
    };
    assert_eq!(set.respondent_sampling, sampling(0.2, 900));
    assert_eq!(set.correspondent_sampling, sampling(1.2, 120));
    assert_eq!(set.judge_sampling, sampling(0.0, 2000));
    assert!(!set.quality.instruction_checks);
    assert_eq!(
        set.quality.on_unjudged,
        afterimage_engine::UnjudgedPolicy::Drop
    );
    let err = resolve(
        "respondent: {system_prompt: hi}\nquality: {max_tokens: 0}\n",
        &key,
    )
    .unwrap_err();
    assert!(err.starts_with("quality.max_tokens: is 0"), "{err}");
    let err = resolve("quality: {on_unjudged: ignore}\n", &key).unwrap_err();
    assert!(err.contains("ignore"), "{err}");
}

#[test]
fn model_options_reach_the_main_and_the_judge_endpoints() {
    let key = [("OPENAI_API_KEY", "k")];
    let settings = resolve(
        "model: {provider: openai, structured_output: json_object_schema, max_response_bytes: 1048576, max_tokens: 512, temperature: 0.4, prompt_caching: false}\n\
         respondent: {system_prompt: hi}\n\
         quality: {evaluator: {provider: openai, structured_output: prompt}}\n",
        &key,
    )
    .unwrap();
    let options = settings.endpoint_options;
    assert_eq!(
        options.structured_output,
        afterimage_providers::StructuredOutput::JsonObjectSchema
    );
    assert_eq!(options.max_response_bytes, 1_048_576);
    assert_eq!(options.max_tokens, Some(512));
    assert_eq!(options.temperature, Some(0.4));
    assert!(!options.prompt_caching);
    let judge = settings.evaluator.unwrap().options;
    assert_eq!(
        judge.structured_output,
        afterimage_providers::StructuredOutput::PromptOnly
    );
    assert_eq!(judge.max_response_bytes, 16 * 1024 * 1024);
    assert!(judge.prompt_caching);

    let defaults = resolve(
        "respondent: {system_prompt: hi}\n",
        &[("GEMINI_API_KEY", "k")],
    )
    .unwrap();
    assert_eq!(defaults.endpoint_options, EndpointOptions::default());
}

#[test]
fn bad_model_options_name_their_key() {
    let key = [("GEMINI_API_KEY", "k")];
    for (model, at) in [
        (
            "{structured_output: json}",
            "expected one of auto, json_schema",
        ),
        ("{max_response_bytes: 0}", "model.max_response_bytes"),
        ("{max_tokens: 0}", "model.max_tokens"),
        ("{temperature: 3.5}", "model.temperature"),
    ] {
        let err = resolve(
            &format!("model: {model}\nrespondent: {{system_prompt: hi}}\n"),
            &key,
        )
        .unwrap_err();
        assert!(err.contains(at), "{model}: {err}");
    }
}

#[test]
fn sdk_base_url_variables_fill_in_a_missing_base_url() {
    let env = [
        ("ANTHROPIC_API_KEY", "k"),
        ("ANTHROPIC_BASE_URL", "http://gw:4000"),
        ("OPENAI_BASE_URL", "http://o:1/v1"),
    ];
    let from_env = resolve(
        "model: {provider: anthropic}\nrespondent: {system_prompt: hi}\n",
        &env,
    )
    .unwrap();
    assert_eq!(from_env.base_url.as_deref(), Some("http://gw:4000"));
    let configured = resolve(
        "model: {provider: anthropic, base_url: 'http://mine'}\nrespondent: {system_prompt: hi}\n",
        &env,
    )
    .unwrap();
    assert_eq!(configured.base_url.as_deref(), Some("http://mine"));
    // Another provider's variable is not read.
    let gemini = resolve(
        "model: {provider: gemini}\nrespondent: {system_prompt: hi}\n",
        &[("GEMINI_API_KEY", "k"), ("ANTHROPIC_BASE_URL", "http://gw")],
    )
    .unwrap();
    assert_eq!(gemini.base_url, None);
}

#[test]
fn model_temperature_is_the_dialog_roles_default() {
    let key = [("GEMINI_API_KEY", "k")];
    let settings = resolve(
        "model: {temperature: 0.3}\nrespondent: {system_prompt: hi, temperature: 1.1}\n",
        &key,
    )
    .unwrap();
    assert_eq!(
        settings.respondent_sampling.temperature,
        Some(1.1),
        "its own wins"
    );
    assert_eq!(settings.correspondent_sampling.temperature, Some(0.3));
    assert_eq!(
        settings.judge_sampling.temperature, None,
        "the judge keeps its own"
    );
}

#[test]
fn the_main_model_is_priced_from_the_table_unless_model_price_says_otherwise() {
    let key = [("GEMINI_API_KEY", "k")];
    let table = resolve("respondent: {system_prompt: hi}\n", &key).unwrap();
    let listed = afterimage_providers::PriceTable::builtin()
        .lookup(Provider::Gemini, "gemini-2.0-flash")
        .unwrap();
    assert_eq!(table.price, Some(listed));
    assert_eq!(table.price_source, Some(table_source()));
    assert!(
        table
            .price_source
            .unwrap()
            .starts_with("built-in table of 20")
    );

    let own = resolve(
        "model: {price: {input_per_million: 1, output_per_million: 4, cached_input_per_million: 0.5, cache_write_per_million: 2}}\nrespondent: {system_prompt: hi}\n",
        &key,
    )
    .unwrap();
    let expected = afterimage_engine::Price::new(1.0, 4.0)
        .cached_input(0.5)
        .cache_writes(2.0);
    assert_eq!(own.price, Some(expected));
    assert_eq!(own.price_source.as_deref(), Some("model.price"));
    assert_eq!(own.prices.get("gemini-2.0-flash"), Some(expected));
}

#[test]
fn a_model_outside_the_table_has_no_price() {
    let local = resolve(
        "model: {provider: local, model_name: mock-model}\nrespondent: {system_prompt: hi}\n",
        &[],
    )
    .unwrap();
    assert_eq!(local.price, None);
    assert_eq!(local.price_source, None);
    assert_eq!(local.prices.unknown().collect::<Vec<_>>(), ["mock-model"]);
}

#[test]
fn a_negative_price_names_its_key() {
    let err = resolve(
        "model: {price: {input_per_million: 1, output_per_million: -4}}\nrespondent: {system_prompt: hi}\n",
        &[("GEMINI_API_KEY", "k")],
    )
    .unwrap_err();
    assert!(err.contains("model.price.output_per_million"), "{err}");
}

#[test]
fn the_correspondent_and_judge_models_get_their_own_prices() {
    let settings = resolve(
        "model: {provider: openai, model_name: gpt-4o-mini}\n\
         respondent: {system_prompt: hi}\n\
         correspondent: {model_name: gpt-4.1-nano-2025-04-14}\n\
         quality: {auto_improve: true, evaluator: {provider: anthropic, model_name: claude-haiku-4-5, price: {input_per_million: 2, output_per_million: 8}}}\n",
        &[("OPENAI_API_KEY", "k"), ("ANTHROPIC_API_KEY", "k")],
    )
    .unwrap();
    let table = afterimage_providers::PriceTable::builtin();
    assert_eq!(
        settings.prices.get("gpt-4.1-nano-2025-04-14"),
        table.lookup(Provider::Openai, "gpt-4.1-nano")
    );
    let judge = settings.prices.entry("claude-haiku-4-5").unwrap();
    assert_eq!(judge.price, afterimage_engine::Price::new(2.0, 8.0));
    assert_eq!(judge.source, "quality.evaluator.price");
    assert_eq!(settings.prices.unknown().count(), 0);
}
