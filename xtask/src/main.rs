//! `cargo xtask`: project automation for afterimage.
//!
//! Each subcommand is one function taking its own arguments; `main` only dispatches.
//! Flags are parsed by hand ([`Flags`]) to keep this crate's dependencies minimal.

use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail};

mod bench;
mod bench_storage;
mod fuzz;
mod tidy;

const USAGE: &str = "\
Usage: cargo xtask <command> [options]

Commands:
  demo    Generate a dataset offline: the CLI runs examples/support-bot.yaml against the mock
  bench   Measure the release CLI against the mock: dialogs/s vs the limit, CPU, peak RSS
  mock    Run the mock LLM server in the foreground (OpenAI and Gemini formats)
  tidy    Check the code against ARCHITECTURE.md: layering, named paths and functions,
          crate docs, function length, docs built with warnings denied (--no-docs skips those)
  bench-storage  Rows/s written by each storage backend and resume's scan time
  fuzz    Run every fuzz target briefly (cargo-fuzz): --secs N each [default: 20]
  ci      What CI runs: fmt --check, clippy -D warnings, tests
  help    Show this help

Run `cargo xtask <command> --help` for a command's options.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(args: &[String]) -> Result<()> {
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(());
    };
    match command.as_str() {
        "demo" => demo(rest),
        "bench" => bench::bench(rest),
        // Internal: the mock in its own process, for `bench` to measure apart.
        "bench-server" => bench::server(rest),
        "mock" => mock(rest),
        "tidy" => tidy::tidy(&workspace_root(), !rest.iter().any(|a| a == "--no-docs")),
        "bench-storage" => bench_storage::run(rest),
        "fuzz" => fuzz::fuzz(rest),
        "ci" => ci(),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

const MOCK_USAGE: &str = "\
Usage: cargo xtask mock [options]

Serves http://127.0.0.1:PORT/v1 (OpenAI) and http://127.0.0.1:PORT/v1beta (Gemini)
until Ctrl-C.

Options:
  --port P               Port on 127.0.0.1 (0 picks a free one) [default: 8080]
  --latency-ms L         Delay before each model answer [default: 0]
  --jitter-ms J          Each delay is latency +/- up to J [default: 0]
  --error-rate R         Fraction of model requests answered 500 [default: 0]
  --rate-limit-rate R    Fraction answered 429 with Retry-After [default: 0]
  --retry-after-secs S   Retry-After of those 429s [default: 1]
  --rpm-limit N          Hard limit of model requests per minute per key (429 beyond) [default: none]
  --require-key KEY      Answer 401 unless this API key is sent
  --prose                Answer JSON-schema requests with prose
  --schema-violation-rate R  Fraction of JSON-schema requests answered with JSON
                         that leaves out a required property [default: 0]
  --seed N               Seed for faults, jitter and text [default: 0]
  --batch-phase-ms MS    Length of each batch phase (three to a batch) [default: 200]
  --batch-retryable-rate R   Fraction of batch lines answered 429/5xx [default: 0]
  --batch-permanent-rate R   Fraction of batch lines answered 400 [default: 0]
  --batch-missing-rate R     Fraction of batch lines left out of the results [default: 0]
  --batch-failure-rate R     Fraction of OpenAI/Gemini batches failing validation [default: 0]
  --batch-expiry-rate R      Fraction of batches expiring half done [default: 0]
  --batch-token-limit-rate R Fraction of OpenAI batches failing token_limit_exceeded [default: 0]
  --batch-max-requests N     Most requests per batch [default: the provider's]
  --batch-hidden-ms MS       A new batch is 404 for this long [default: 0]";

/// `cargo xtask mock`: the mock LLM server in the foreground.
fn mock(args: &[String]) -> Result<()> {
    let flags = Flags::parse(args, MOCK_FLAGS, &["--prose"])?;
    if flags.help {
        println!("{MOCK_USAGE}");
        return Ok(());
    }
    let port: u16 = flags.value("--port")?.unwrap_or(8080);
    let config = mock_config(&flags)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime
        .block_on(afterimage_mock::run(port, config))
        .with_context(|| format!("serving the mock on 127.0.0.1:{port}"))
}

/// The valued flags of `cargo xtask mock` (and of `bench-server`).
const MOCK_FLAGS: &[&str] = &[
    "--port",
    "--latency-ms",
    "--jitter-ms",
    "--error-rate",
    "--rate-limit-rate",
    "--retry-after-secs",
    "--rpm-limit",
    "--require-key",
    "--seed",
    "--schema-violation-rate",
    "--batch-phase-ms",
    "--batch-retryable-rate",
    "--batch-permanent-rate",
    "--batch-missing-rate",
    "--batch-failure-rate",
    "--batch-expiry-rate",
    "--batch-token-limit-rate",
    "--batch-max-requests",
    "--batch-hidden-ms",
];

/// The mock's configuration from [`MOCK_FLAGS`] and `--prose`.
fn mock_config(flags: &Flags) -> Result<afterimage_mock::MockConfig> {
    let mut config = afterimage_mock::MockConfig::default()
        .with_latency(Duration::from_millis(
            flags.value("--latency-ms")?.unwrap_or(0),
        ))
        .with_jitter(Duration::from_millis(
            flags.value("--jitter-ms")?.unwrap_or(0),
        ))
        .with_error_rate(rate(flags, "--error-rate")?)
        .with_rate_limit_rate(rate(flags, "--rate-limit-rate")?)
        .with_schema_violation_rate(rate(flags, "--schema-violation-rate")?)
        .with_batch_retryable_rate(rate(flags, "--batch-retryable-rate")?)
        .with_batch_permanent_rate(rate(flags, "--batch-permanent-rate")?)
        .with_batch_missing_rate(rate(flags, "--batch-missing-rate")?)
        .with_batch_validation_failure_rate(rate(flags, "--batch-failure-rate")?)
        .with_batch_expiry_rate(rate(flags, "--batch-expiry-rate")?)
        .with_batch_token_limit_rate(rate(flags, "--batch-token-limit-rate")?)
        .with_batch_max_requests(flags.value("--batch-max-requests")?.unwrap_or(0))
        .with_batch_hidden_for(Duration::from_millis(
            flags.value("--batch-hidden-ms")?.unwrap_or(0),
        ))
        .with_prose_instead_of_json(flags.switch("--prose"))
        .with_seed(flags.value("--seed")?.unwrap_or(0));
    if let Some(secs) = flags.value("--retry-after-secs")? {
        config = config.with_retry_after_secs(secs);
    }
    if let Some(key) = flags.value::<String>("--require-key")? {
        config = config.with_require_key(key);
    }
    if let Some(ms) = flags.value("--batch-phase-ms")? {
        config = config.with_batch_phase(Duration::from_millis(ms));
    }
    if let Some(rpm) = flags.value("--rpm-limit")? {
        config = config.with_rpm_limit(rpm);
    }
    if config.error_rate + config.rate_limit_rate > 1.0 {
        bail!("--error-rate plus --rate-limit-rate must not exceed 1");
    }
    Ok(config)
}

const DEMO_USAGE: &str = "\
Usage: cargo xtask demo [options]

Starts the mock LLM server on a free port and runs
  afterimage generate --config examples/support-bot.yaml --provider local --base-url <mock>
writing target/demo/support-bot.jsonl. No API key and no network needed.

Options:
  --num-dialogs N        Dialogs to generate [default: 24]
  --latency-ms L         Mock latency per request [default: 150]";

/// `cargo xtask demo`: the real CLI, over real HTTP, against the mock server.
fn demo(args: &[String]) -> Result<()> {
    let flags = Flags::parse(args, &["--num-dialogs", "--latency-ms"], &[])?;
    if flags.help {
        println!("{DEMO_USAGE}");
        return Ok(());
    }
    let dialogs: u64 = flags.value("--num-dialogs")?.unwrap_or(24);
    let latency: u64 = flags.value("--latency-ms")?.unwrap_or(150);
    let root = workspace_root();
    let out = root.join("target/demo/support-bot.jsonl");
    // A fresh file each time, so the demo shows one run's rows.
    let _ = std::fs::remove_file(&out);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let config = afterimage_mock::MockConfig::default()
        .with_latency(Duration::from_millis(latency))
        .with_jitter(Duration::from_millis(latency / 2));
    let server = runtime
        .block_on(afterimage_mock::MockServer::start(config))
        .context("starting the mock server")?;
    println!(
        "mock LLM server at {} ({latency} ms latency)",
        server.base_url()
    );

    let status = run_demo_cli(&root, &server.openai_base_url(), dialogs, &out)?;
    println!("{}", server.stats());
    runtime.block_on(server.shutdown());
    if !status.success() {
        bail!("the CLI failed ({status})");
    }

    let rows =
        std::fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    // The row exactly as stored: Python afterimage's keys, in its order.
    if let Some(first) = rows.lines().next() {
        println!("\nthe first row of {}:\n{first}", out.display());
    }
    Ok(())
}

/// `afterimage generate` on examples/support-bot.yaml through `cargo run`, against the
/// mock at `base_url`, writing `dialogs` rows to `out`.
fn run_demo_cli(
    root: &std::path::Path,
    base_url: &str,
    dialogs: u64,
    out: &std::path::Path,
) -> Result<std::process::ExitStatus> {
    std::process::Command::new(cargo())
        .current_dir(root)
        .args([
            "run",
            "--quiet",
            "--package",
            "afterimage-cli",
            "--",
            "generate",
        ])
        .args([
            "--config",
            "examples/support-bot.yaml",
            "--provider",
            "local",
            "--model",
            "mock-model",
        ])
        .args(["--base-url", base_url])
        .args([
            "--num-dialogs",
            &dialogs.to_string(),
            "--max-concurrency",
            "8",
        ])
        .arg("--out")
        .arg(out)
        .status()
        .context("running the afterimage CLI")
}

/// `cargo xtask ci`: the checks `.ci/run` makes, in the same order.
fn ci() -> Result<()> {
    let root = workspace_root();
    for args in [
        &["fmt", "--all", "--check"][..],
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &["test", "--workspace"],
    ] {
        println!("== cargo {}", args.join(" "));
        let status = std::process::Command::new(cargo())
            .current_dir(&root)
            .args(args)
            .status()
            .with_context(|| format!("running cargo {}", args.join(" ")))?;
        if !status.success() {
            bail!("cargo {} failed", args.join(" "));
        }
    }
    println!("== cargo xtask tidy");
    tidy::tidy(&root, true)
}

/// The workspace root (this crate's parent folder).
fn workspace_root() -> std::path::PathBuf {
    let xtask = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

/// The cargo that runs us, so toolchain overrides carry over.
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// A fraction flag, checked to lie in `0..=1`.
fn rate(flags: &Flags, name: &str) -> Result<f64> {
    let value: f64 = flags.value(name)?.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&value) {
        bail!("{name} must be between 0 and 1, got {value}");
    }
    Ok(value)
}

/// Parsed `--name value`, `--name=value` and `--switch` flags of one subcommand.
///
/// Unknown flags and stray positional arguments are errors, so typos do not go unnoticed.
#[derive(Debug, Default)]
struct Flags {
    values: Vec<(String, String)>,
    switches: Vec<String>,
    help: bool,
}

impl Flags {
    /// Parses `args` given the flags that take a value and the boolean switches.
    fn parse(args: &[String], valued: &[&str], switches: &[&str]) -> Result<Flags> {
        let mut flags = Flags::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" {
                flags.help = true;
                continue;
            }
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (arg.as_str(), None),
            };
            if valued.contains(&name) {
                let value = match inline {
                    Some(v) => v.to_string(),
                    None => args
                        .next()
                        .with_context(|| format!("{name} needs a value"))?
                        .clone(),
                };
                flags.values.retain(|(n, _)| n != name);
                flags.values.push((name.to_string(), value));
            } else if switches.contains(&name) && inline.is_none() {
                flags.switches.push(name.to_string());
            } else {
                bail!("unexpected argument `{arg}` (see --help)");
            }
        }
        Ok(flags)
    }

    /// The value of `name` parsed as `T`, if given.
    fn value<T>(&self, name: &str) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let Some((_, raw)) = self.values.iter().find(|(n, _)| n == name) else {
            return Ok(None);
        };
        raw.parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{name} {raw:?}: {e}"))
    }

    /// Whether switch `name` was given.
    fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_take_separate_and_inline_values() {
        let flags = Flags::parse(
            &args(&["--port", "9000", "--error-rate=0.25", "--prose"]),
            &["--port", "--error-rate"],
            &["--prose"],
        )
        .unwrap();
        assert_eq!(flags.value::<u16>("--port").unwrap(), Some(9000));
        assert_eq!(flags.value::<f64>("--error-rate").unwrap(), Some(0.25));
        assert!(flags.switch("--prose"));
        assert_eq!(flags.value::<u16>("--seed").unwrap(), None);
    }

    #[test]
    fn flags_reject_unknown_missing_and_malformed_values() {
        assert!(Flags::parse(&args(&["--nope"]), &["--port"], &[]).is_err());
        assert!(Flags::parse(&args(&["--port"]), &["--port"], &[]).is_err());
        assert!(Flags::parse(&args(&["stray"]), &["--port"], &[]).is_err());
        let flags = Flags::parse(&args(&["--port", "x"]), &["--port"], &[]).unwrap();
        assert!(flags.value::<u16>("--port").is_err());
    }

    #[test]
    fn rates_outside_zero_to_one_are_rejected() {
        let flags = Flags::parse(&args(&["--error-rate", "1.5"]), &["--error-rate"], &[]).unwrap();
        assert!(rate(&flags, "--error-rate").is_err());
    }
}
