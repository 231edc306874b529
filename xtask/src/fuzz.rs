//! `cargo xtask fuzz`: every fuzz target in `fuzz/` for a few seconds each, with
//! cargo-fuzz, seeded from the committed corpora.
//!
//! Nothing is written inside the checkout: the corpora in `fuzz/corpus/` are read
//! only, new inputs and crash reproducers go to a scratch folder under the system's
//! temporary folder, and the instrumented build goes to `--target-dir`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{Flags, cargo, workspace_root};

const USAGE: &str = "\
Usage: cargo xtask fuzz [options] [TARGET...]

Builds the fuzz targets in fuzz/ with cargo-fuzz and runs each (or the TARGETs named)
for --secs seconds, seeded from fuzz/corpus/<target>/. A crash stops the run and keeps
its reproducer; add it to fuzz/corpus/<target>/ once fixed, so the corpus replay test
(crates/afterimage-cli/tests/cli/fuzz_corpus.rs) keeps checking it.

Needs cargo-fuzz (cargo install cargo-fuzz --locked). On a stable toolchain the
nightly-only instrumentation flags are allowed with RUSTC_BOOTSTRAP=1, which this
command sets for cargo-fuzz only.

Options:
  --secs N            Seconds per target [default: 20]
  --runs N            Inputs per target instead of a time; with --seed the run is
                      the same every time (what CI uses, so a green run stays green)
  --seed S            libFuzzer's random seed [default: a new one each run]
  --target-dir DIR    Where the instrumented build goes
                      [default: $CARGO_TARGET_DIR/fuzz, else target/fuzz]";

/// One target's result, from libFuzzer's final statistics.
struct Outcome {
    target: String,
    execs: u64,
    per_sec: u64,
    new_units: u64,
}

/// `cargo xtask fuzz`.
pub(crate) fn fuzz(args: &[String]) -> Result<()> {
    let (flags, targets) = split_targets(args)?;
    if flags.help {
        println!("{USAGE}");
        return Ok(());
    }
    let budget = Budget {
        secs: flags.value("--secs")?.unwrap_or(20),
        runs: flags.value("--runs")?,
        seed: flags.value("--seed")?,
    };
    let root = workspace_root();
    let target_dir = match flags.value::<PathBuf>("--target-dir")? {
        Some(dir) => dir,
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| root.join("target"), PathBuf::from)
            .join("fuzz"),
    };
    let all = list_targets(&root)?;
    let targets = if targets.is_empty() { all } else { targets };
    check_cargo_fuzz()?;

    let started = Instant::now();
    cargo_fuzz_build(&root, &target_dir)?;
    println!("== built in {:.0} s", started.elapsed().as_secs_f64());
    let scratch = std::env::temp_dir().join(format!("afterimage-fuzz-{}", std::process::id()));
    let mut outcomes = Vec::new();
    for target in &targets {
        outcomes.push(run_target(&root, &target_dir, &scratch, target, &budget)?);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    remove_empty_artifact_dirs(&root);
    println!(
        "\n{:<20} {:>12} {:>10} {:>10}",
        "target", "execs", "execs/s", "new"
    );
    for o in &outcomes {
        println!(
            "{:<20} {:>12} {:>10} {:>10}",
            o.target, o.execs, o.per_sec, o.new_units
        );
    }
    println!(
        "no crashes in {} targets; {:.0} s in all",
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The flags, and the positional target names.
fn split_targets(args: &[String]) -> Result<(Flags, Vec<String>)> {
    let (mut flag_args, mut targets) = (Vec::new(), Vec::new());
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg.starts_with('-') {
            flag_args.push(arg.clone());
            if !arg.contains('=')
                && matches!(
                    arg.as_str(),
                    "--secs" | "--runs" | "--seed" | "--target-dir"
                )
                && let Some(value) = args.next()
            {
                flag_args.push(value.clone());
            }
        } else {
            targets.push(arg.clone());
        }
    }
    let flags = Flags::parse(
        &flag_args,
        &["--secs", "--runs", "--seed", "--target-dir"],
        &[],
    )?;
    Ok((flags, targets))
}

/// The targets: the files in `fuzz/fuzz_targets/`.
fn list_targets(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("fuzz/fuzz_targets");
    let entries = std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
    let mut targets = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            targets.push(stem.to_owned());
        }
    }
    targets.sort();
    Ok(targets)
}

fn check_cargo_fuzz() -> Result<()> {
    let found = Command::new(cargo())
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        bail!("cargo-fuzz is not installed (cargo install cargo-fuzz --locked)");
    }
    Ok(())
}

/// `cargo fuzz build`, every target at once. No sanitizer: the code fuzzed is safe
/// Rust, where a panic is the bug to find, and ASan would slow the build and each run.
fn cargo_fuzz_build(root: &Path, target_dir: &Path) -> Result<()> {
    let status = Command::new(cargo())
        .current_dir(root)
        .args(["fuzz", "build", "--sanitizer", "none", "--target-dir"])
        .arg(target_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed ({status})");
    }
    Ok(())
}

/// How long each target runs: a time, or a number of inputs (and a seed, for a run
/// that is the same every time).
struct Budget {
    secs: u64,
    runs: Option<u64>,
    seed: Option<u64>,
}

impl Budget {
    /// libFuzzer's options for this budget.
    fn options(&self) -> Vec<String> {
        let mut options = match self.runs {
            Some(runs) => vec![format!("-runs={runs}")],
            None => vec![format!("-max_total_time={}", self.secs)],
        };
        options.extend(self.seed.map(|seed| format!("-seed={seed}")));
        options
    }

    fn describe(&self) -> String {
        match (self.runs, self.seed) {
            (Some(runs), Some(seed)) => format!("{runs} inputs, seed {seed}"),
            (Some(runs), None) => format!("{runs} inputs"),
            (None, _) => format!("{} s", self.secs),
        }
    }
}

/// Runs one target within `budget`; a crash is an error naming its reproducer.
fn run_target(
    root: &Path,
    target_dir: &Path,
    scratch: &Path,
    target: &str,
    budget: &Budget,
) -> Result<Outcome> {
    let corpus = scratch.join("corpus").join(target);
    let artifacts = scratch.join("artifacts").join(target);
    let log = scratch.join(format!("{target}.log"));
    for dir in [&corpus, &artifacts] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    println!("== fuzzing {target} for {}", budget.describe());
    let seeds = root.join("fuzz/corpus").join(target);
    // libFuzzer adds new inputs to the first folder only; the seeds stay untouched.
    let output = Command::new(cargo())
        .current_dir(root)
        .args(["fuzz", "run", "--sanitizer", "none", "--target-dir"])
        .arg(target_dir)
        .arg(target)
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .args(budget.options())
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args(["-print_final_stats=1", "-timeout=10", "-rss_limit_mb=2048"])
        .env("RUSTC_BOOTSTRAP", "1")
        .output()
        .context("running cargo fuzz run")?;
    let text = String::from_utf8_lossy(&output.stderr);
    std::fs::write(&log, text.as_bytes()).with_context(|| format!("writing {}", log.display()))?;
    if !output.status.success() {
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{target} failed ({}); reproducers in {}, full log {}\n{}",
            output.status,
            artifacts.display(),
            log.display(),
            tail.join("\n")
        );
    }
    let stat = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(Outcome {
        target: target.to_owned(),
        execs: stat("number_of_executed_units"),
        per_sec: stat("average_exec_per_sec"),
        new_units: stat("new_units_added"),
    })
}

/// cargo-fuzz makes an empty `fuzz/artifacts/<target>/` for every run even when told to
/// keep artifacts elsewhere; empty ones are removed so the checkout stays as it was.
fn remove_empty_artifact_dirs(root: &Path) {
    let dir = root.join("fuzz/artifacts");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            // Fails, and so keeps the folder, when it holds anything.
            let _ = std::fs::remove_dir(entry.path());
        }
    }
    let _ = std::fs::remove_dir(&dir);
}
