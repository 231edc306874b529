//! `afterimage generate` and `afterimage validate`.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use afterimage_core::{Document, DocumentSource};
use afterimage_engine::EngineError;
use anyhow::{Context, anyhow};

use crate::Failure;
use crate::args::{GenerateArgs, ValidateArgs};
use crate::build;
use crate::config::{self, ProviderKind};
use crate::output::{Progress, print_report};
use crate::settings::{DocumentsSpec, KeyPolicy, Overrides, Settings};

/// Runs `generate`.
pub(crate) async fn generate(args: GenerateArgs) -> Result<(), Failure> {
    let settings = settings(&args.config, args.overrides.into(), KeyPolicy::Required)?;
    // Documents are read once, here, so an empty folder fails before any request.
    let settings = preload_documents(settings).await?;
    let (generator, options) = build::generator(&settings).map_err(Failure::Usage)?;

    let progress = Progress::start(
        settings.num_dialogs,
        !args.json && std::io::stderr().is_terminal(),
    );
    let options = options.on_progress(progress.callback());
    let result = generator.generate(options).await;
    progress.finish();

    match result {
        Ok(report) => {
            print_report(&report, args.json);
            crate::datasets::after_generate(&settings, &report.failures).await;
            Ok(())
        }
        Err(EngineError::RunFailed { cause, report }) => {
            print_report(&report, args.json);
            Err(Failure::Run(anyhow!(
                "{cause} ({} rows written to {} are kept)",
                report.rows_written,
                report.output
            )))
        }
        Err(e @ EngineError::Config(_)) => Err(Failure::Usage(e.into())),
        Err(e) => Err(Failure::Run(e.into())),
    }
}

/// Runs `validate`: every check is reported; the worst outcome sets the exit code.
pub(crate) async fn validate(args: ValidateArgs) -> Result<(), Failure> {
    let settings = settings(&args.config, args.overrides.into(), KeyPolicy::Optional)?;
    println!("ok    config {}", args.config.display());
    for warning in &settings.warnings {
        println!("warn  {warning}");
    }
    let mut usage_problems = 0;
    let mut run_problems = 0;

    match (&settings.key_env, &settings.api_key) {
        (Some(var), Some(_)) => println!("ok    API key in {var}"),
        (Some(var), None) if settings.provider != ProviderKind::Local => {
            println!("fail  API key: {var} is not set (export {var}=<your key>)");
            usage_problems += 1;
        }
        _ => println!("ok    no API key needed"),
    }

    match &settings.documents {
        None => println!("ok    no documents (questions come from the prompts alone)"),
        Some(spec) => match load_documents(spec).await {
            Ok(docs) => println!("ok    {} documents from {}", docs.len(), describe(spec)),
            Err(e) => {
                println!("fail  documents: {e:#}");
                usage_problems += 1;
            }
        },
    }

    match check_writable(&settings.output) {
        Ok(()) => println!("ok    output {} is writable", settings.output.display()),
        Err(e) => {
            println!("fail  output: {e:#}");
            usage_problems += 1;
        }
    }

    let endpoint = async {
        let client = build::http_client(&settings)?;
        let model = build::model(&settings, &settings.model_name, &client)?;
        tokio::time::timeout(Duration::from_secs(10), model.probe())
            .await
            .map_err(|_| anyhow!("no answer within 10 s"))??;
        anyhow::Ok(())
    };
    match endpoint.await {
        Ok(()) => println!(
            "ok    endpoint answers ({} {})",
            settings.provider.name(),
            settings.model_name
        ),
        Err(e) => {
            println!("fail  endpoint: {e:#}");
            run_problems += 1;
        }
    }

    if usage_problems > 0 {
        Err(Failure::Usage(anyhow!(
            "{usage_problems} check(s) failed; see above"
        )))
    } else if run_problems > 0 {
        Err(Failure::Run(anyhow!(
            "the endpoint check failed; see above"
        )))
    } else {
        println!(
            "config is ready: afterimage generate --config {}",
            args.config.display()
        );
        Ok(())
    }
}

fn settings(path: &Path, overrides: Overrides, keys: KeyPolicy) -> Result<Settings, Failure> {
    let raw = config::load(path).map_err(|e| Failure::Usage(e.into()))?;
    let settings = Settings::resolve(raw, path, &overrides, |name| std::env::var(name).ok(), keys)
        .map_err(|e| Failure::Usage(anyhow!("{}: {e}", path.display())))?;
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    Ok(settings)
}

async fn preload_documents(mut settings: Settings) -> Result<Settings, Failure> {
    if let Some(spec) = &settings.documents {
        let docs = load_documents(spec).await.map_err(Failure::Usage)?;
        settings.documents = Some(DocumentsSpec::Loaded(docs));
    }
    Ok(settings)
}

async fn load_documents(spec: &DocumentsSpec) -> anyhow::Result<Vec<Document>> {
    let source: Arc<dyn DocumentSource> = build::documents(spec)?;
    source
        .load()
        .await
        .with_context(|| format!("reading documents from {}", describe(spec)))
}

fn describe(spec: &DocumentsSpec) -> String {
    match spec {
        DocumentsSpec::Directory(path) | DocumentsSpec::File(path) => path.display().to_string(),
        DocumentsSpec::Jsonl { path, .. } => path.display().to_string(),
        DocumentsSpec::Inline(texts) => format!("{} inline texts", texts.len()),
        DocumentsSpec::Loaded(docs) => format!("{} loaded documents", docs.len()),
    }
}

/// Creates (and removes) a probe file next to the output, without touching the output.
fn check_writable(output: &Path) -> anyhow::Result<()> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let probe = dir.join(format!(".afterimage-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| format!("cannot write in {}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    if output.is_dir() {
        anyhow::bail!("{} is a folder, not a file", output.display());
    }
    Ok(())
}
