//! `cargo xtask bench`: the release CLI against the mock LLM server, measured from outside.
//!
//! The mock runs in its own process (`xtask bench-server`, release build) so that the
//! CPU and memory of each side are measured apart: `wait4` returns each child's CPU time
//! and peak RSS, and `/proc/<pid>/status` is polled for the RSS curve. The mock's request
//! counters give `k`, the successful model requests per dialog, and with them the limit
//! `C / (k x L)` dialogs per second that a run with concurrency C against latency L can
//! reach; the table states the ratio achieved.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{Flags, cargo, workspace_root};

const BENCH_USAGE: &str = "\
Usage: cargo xtask bench [options]

Builds the CLI and the mock in release mode, starts the mock on 127.0.0.1 in its own
process, runs `afterimage generate` against it and prints wall time, dialogs/s, the
limit C/(k x L) and the ratio achieved, requests per dialog k (from the mock's counters),
CPU per request and peak RSS of the CLI, and the mock's own CPU. Results also go to JSON.

Options:
  --matrix               Run the preset rows of BENCHMARKS.md instead of one case
  --num-dialogs N        Rows to write [default: 2000]
  --max-concurrency C    Dialogs in flight [default: 256]
  --max-turns T          Most assistant replies per dialog [default: 3]
  --latency-ms L         Mock latency per model request [default: 100]
  --jitter-ms J          Each latency is L +/- up to J [default: 0]
  --error-rate R         Fraction of model requests answered 500 [default: 0]
  --rate-limit-rate R    Fraction answered 429 with Retry-After [default: 0]
  --retry-after-secs S   Retry-After of those 429s [default: 1]
  --rpm-limit N          Hard requests-per-minute limit per key in the mock [default: none]
  --compare-python       Also run the Python afterimage (PyPI, in target/bench/py-venv)
                         on the same workload and mock, and print the ratios side by side
  --python-spec SPEC     What pip installs for --compare-python [default: afterimage==0.18.1]
  --json FILE            Where to write the results [default: target/bench/results.json]";

/// One workload: the mock's behaviour and the CLI's flags.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    latency_ms: u64,
    jitter_ms: u64,
    error_rate: f64,
    rate_limit_rate: f64,
    retry_after_secs: u64,
    rpm_limit: u32,
    num_dialogs: u64,
    concurrency: u64,
    max_turns: u32,
}

impl Case {
    fn new(name: &str, latency_ms: u64, concurrency: u64, num_dialogs: u64) -> Case {
        Case {
            name: name.to_string(),
            latency_ms,
            jitter_ms: 0,
            error_rate: 0.0,
            rate_limit_rate: 0.0,
            retry_after_secs: 1,
            rpm_limit: 0,
            num_dialogs,
            concurrency,
            max_turns: 3,
        }
    }

    /// The arguments of `xtask bench-server` (the mock's flags).
    fn mock_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--latency-ms={}", self.latency_ms),
            format!("--jitter-ms={}", self.jitter_ms),
            format!("--error-rate={}", self.error_rate),
            format!("--rate-limit-rate={}", self.rate_limit_rate),
            format!("--retry-after-secs={}", self.retry_after_secs),
        ];
        if self.rpm_limit > 0 {
            args.push(format!("--rpm-limit={}", self.rpm_limit));
        }
        args
    }
}

/// The preset rows: the targets.
fn matrix() -> Vec<Case> {
    let mut jitter = Case::new("L=100+-50 ms, C=256, N=2000", 100, 256, 2000);
    jitter.jitter_ms = 50;
    let mut limited = Case::new(
        "5% 429 (Retry-After 1 s), L=100 ms, C=64, N=6000",
        100,
        64,
        6000,
    );
    limited.rate_limit_rate = 0.05;
    let mut limited_slow = Case::new("5% 429 (Retry-After 1 s), L=1000 ms, C=64", 1000, 64, 400);
    limited_slow.rate_limit_rate = 0.05;
    vec![
        Case::new("L=100 ms, C=256, N=2000", 100, 256, 2000),
        jitter,
        Case::new("L=1000 ms, C=1024, N=5000", 1000, 1024, 5000),
        Case::new("L=0, C=64, N=20000", 0, 64, 20_000),
        Case::new("L=0, C=64, N=100000", 0, 64, 100_000),
        limited,
        limited_slow,
    ]
}

/// The valued flags of `cargo xtask bench`.
const BENCH_FLAGS: &[&str] = &[
    "--num-dialogs",
    "--max-concurrency",
    "--max-turns",
    "--latency-ms",
    "--jitter-ms",
    "--error-rate",
    "--rate-limit-rate",
    "--retry-after-secs",
    "--rpm-limit",
    "--python-spec",
    "--json",
];

/// Start-up times in wall seconds, for the summary and the JSON.
#[derive(Debug, Clone, Copy)]
struct Startup {
    /// `afterimage --version`.
    version: f64,
    /// Config load to the end of a 1-dialog run at L=0.
    one_dialog: f64,
    /// The Python CLI's `afterimage --version`, with `--compare-python`.
    python_version: Option<f64>,
}

/// `cargo xtask bench`.
pub(crate) fn bench(args: &[String]) -> Result<()> {
    let flags = Flags::parse(args, BENCH_FLAGS, &["--matrix", "--compare-python"])?;
    if flags.help {
        println!("{BENCH_USAGE}");
        return Ok(());
    }
    let root = workspace_root();
    let cases = cases(&flags)?;
    let json_path: PathBuf = flags
        .value("--json")?
        .unwrap_or_else(|| root.join("target/bench/results.json"));

    let bin = build_release(&root)?;
    let work = root.join("target/bench");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let python = python_from_flags(&flags, &work)?;

    println!("== machine: {}", machine());
    let results = run_cases(&bin, &work, &cases, python.as_deref())?;
    let (version, one_dialog) = startup(&bin, &work)?;
    let startup = Startup {
        version,
        one_dialog,
        python_version: python.as_deref().map(python_startup).transpose()?,
    };

    print_results(&results, startup);
    write_json(&json_path, &results, startup)
}

/// The preset rows with `--matrix`, else the one case the flags describe.
fn cases(flags: &Flags) -> Result<Vec<Case>> {
    if flags.switch("--matrix") {
        return Ok(matrix());
    }
    let mut case = Case::new(
        "custom",
        flags.value("--latency-ms")?.unwrap_or(100),
        flags.value("--max-concurrency")?.unwrap_or(256),
        flags.value("--num-dialogs")?.unwrap_or(2000),
    );
    case.max_turns = flags.value("--max-turns")?.unwrap_or(3);
    case.jitter_ms = flags.value("--jitter-ms")?.unwrap_or(0);
    case.error_rate = crate::rate(flags, "--error-rate")?;
    case.rate_limit_rate = crate::rate(flags, "--rate-limit-rate")?;
    case.retry_after_secs = flags.value("--retry-after-secs")?.unwrap_or(1);
    case.rpm_limit = flags.value("--rpm-limit")?.unwrap_or(0);
    case.name = format!(
        "L={}{} ms, C={}, N={}, T={}",
        case.latency_ms,
        if case.jitter_ms > 0 {
            format!("+-{}", case.jitter_ms)
        } else {
            String::new()
        },
        case.concurrency,
        case.num_dialogs,
        case.max_turns
    );
    Ok(vec![case])
}

/// Builds the CLI and the mock in release mode and says where they are.
fn build_release(root: &Path) -> Result<Binaries> {
    println!("== building the CLI and the mock (release)");
    let status = Command::new(cargo())
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "afterimage-cli",
            "-p",
            "xtask",
        ])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    let release = target_dir(root).join("release");
    Ok(Binaries {
        cli: release.join("afterimage"),
        mock: release.join("xtask"),
    })
}

/// Where cargo puts its builds: `CARGO_TARGET_DIR` when set (a relative one is taken
/// from `root`, where the build runs), else `root/target`.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// The Python CLI with `--compare-python`, installed if need be.
fn python_from_flags(flags: &Flags, work: &Path) -> Result<Option<PathBuf>> {
    if !flags.switch("--compare-python") {
        return Ok(None);
    }
    let spec: String = flags
        .value("--python-spec")?
        .unwrap_or_else(|| "afterimage==0.18.1".into());
    python_cli(work, &spec).map(Some)
}

/// Runs each case with the Rust CLI and, if given, the Python one, printing each run's
/// summary as it ends.
fn run_cases(
    bin: &Binaries,
    work: &Path,
    cases: &[Case],
    python: Option<&Path>,
) -> Result<Vec<(Run, Option<Run>)>> {
    let mut results = Vec::new();
    for case in cases {
        let rust = run_case(bin, work, case, Tool::Rust)?;
        println!("{}", rust.summary());
        let py = match python {
            Some(py) => {
                let run = run_case(bin, work, case, Tool::Python(py.to_path_buf()))?;
                println!("{}", run.summary());
                Some(run)
            }
            None => None,
        };
        results.push((rust, py));
    }
    Ok(results)
}

/// The Python CLI's `--version`, median wall seconds of 3.
fn python_startup(py: &Path) -> Result<f64> {
    median_wall(3, || {
        let mut c = Command::new(py);
        c.arg("--version");
        c
    })
}

/// The table, the start-up times and, for one compared case, the side-by-side ratios.
fn print_results(results: &[(Run, Option<Run>)], startup: Startup) {
    println!();
    print_table(results);
    println!(
        "\nstart-up (median of 20): `afterimage --version` {:.1} ms; config load to the end of a \
         1-dialog run at L=0 {:.1} ms",
        startup.version * 1e3,
        startup.one_dialog * 1e3
    );
    if let Some(py) = startup.python_version {
        println!(
            "python `afterimage --version` (median of 3): {:.0} ms",
            py * 1e3
        );
    }
    if let [(rust, Some(py))] = results {
        print_comparison(rust, py);
    }
}

/// Writes every run and the start-up times to `path` as JSON.
fn write_json(path: &Path, results: &[(Run, Option<Run>)], startup: Startup) -> Result<()> {
    let json = json!({
        "machine": machine(),
        "date_unix": unix_secs(),
        "runs": results.iter().flat_map(|(r, p)| std::iter::once(r).chain(p.as_ref())).map(Run::to_json).collect::<Vec<_>>(),
        "startup": {
            "version_secs": startup.version,
            "one_dialog_run_secs": startup.one_dialog,
            "python_version_secs": startup.python_version,
        },
    });
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("\nresults written to {}", path.display());
    Ok(())
}

/// `xtask bench-server`: the mock in the foreground; prints its OpenAI base URL, serves
/// until stdin closes, then prints its counters as one JSON line and exits.
pub(crate) fn server(args: &[String]) -> Result<()> {
    let flags = Flags::parse(args, crate::MOCK_FLAGS, &["--prose"])?;
    let config = crate::mock_config(&flags)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let server = runtime
        .block_on(afterimage_mock::MockServer::start(config))
        .context("starting the mock server")?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", server.openai_base_url())?;
        out.flush()?;
    }
    // The runtime's workers serve while this thread waits for the harness.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    let s = server.stats();
    let stats = json!({
        "requests": s.requests,
        "chat_completions": s.chat_completions,
        "models": s.models,
        "errors_injected": s.errors_injected,
        "rate_limited": s.rate_limited,
        "bad_requests": s.bad_requests,
        "max_in_flight": s.max_in_flight,
    });
    println!("{stats}");
    runtime.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

#[derive(Debug)]
struct Binaries {
    cli: PathBuf,
    mock: PathBuf,
}

#[derive(Debug, Clone)]
enum Tool {
    Rust,
    /// The Python CLI's path.
    Python(PathBuf),
}

impl Tool {
    /// The tool's name in the table, the JSON and the run's file names.
    fn name(&self) -> &'static str {
        match self {
            Tool::Rust => "rust",
            Tool::Python(_) => "python",
        }
    }
}

/// What `wait4` says about a finished child.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    success: bool,
    cpu_secs: f64,
    max_rss_kb: u64,
}

/// Reaps `child` with `wait4`, returning its exit status, CPU time and peak RSS.
fn wait_usage(child: &Child) -> Result<Usage> {
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero `rusage` is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child; both pointers are to live locals.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if reaped != pid {
        bail!("wait4({pid}): {}", std::io::Error::last_os_error());
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Usage {
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        cpu_secs: secs(usage.ru_utime) + secs(usage.ru_stime),
        max_rss_kb: u64::try_from(usage.ru_maxrss).unwrap_or(0),
    })
}

/// RSS samples of a running child.
#[derive(Debug, Default)]
struct RssSamples {
    /// `(secs since start, VmRSS kB)`.
    rss: Vec<(f64, u64)>,
    /// The last VmHWM seen: the peak RSS of the program itself. (`wait4`'s `ru_maxrss`
    /// also counts the forking harness's RSS from before `exec`.)
    hwm_kb: u64,
}

impl RssSamples {
    /// The first RSS sample (kB) taken at or after `secs`, or 0.
    fn at(&self, secs: f64) -> u64 {
        self.rss
            .iter()
            .find(|(t, _)| *t >= secs)
            .map_or(0, |&(_, kb)| kb)
    }
}

/// Polls `/proc/<pid>/status` every 20 ms until stopped.
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<RssSamples> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let path = format!("/proc/{pid}/status");
        let mut samples = RssSamples::default();
        let kb = |status: &str, key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        };
        while !stop.load(Ordering::Relaxed) {
            if let Ok(status) = std::fs::read_to_string(&path) {
                if let Some(rss) = kb(&status, "VmRSS:") {
                    samples.rss.push((start.elapsed().as_secs_f64(), rss));
                }
                if let Some(hwm) = kb(&status, "VmHWM:") {
                    samples.hwm_kb = samples.hwm_kb.max(hwm);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        samples
    })
}

/// One measured run of one tool on one case.
#[derive(Debug)]
struct Run {
    case: Case,
    tool: &'static str,
    rows: u64,
    wall_secs: f64,
    cli: Usage,
    /// RSS (kB) half-way and at 90% of the run, from the samples.
    rss_mid_kb: u64,
    rss_late_kb: u64,
    mock: Usage,
    stats: Value,
    report: Value,
    load_before: f64,
    load_after: f64,
}

impl Run {
    fn stat(&self, key: &str) -> u64 {
        self.stats[key].as_u64().unwrap_or(0)
    }

    /// Model requests the mock received (including 429s and 500s).
    fn requests(&self) -> u64 {
        self.stat("chat_completions")
    }

    /// Successful model requests per row.
    fn k(&self) -> f64 {
        let ok = self
            .requests()
            .saturating_sub(self.stat("rate_limited") + self.stat("errors_injected"));
        ok as f64 / self.rows.max(1) as f64
    }

    fn dialogs_per_sec(&self) -> f64 {
        self.rows as f64 / self.wall_secs
    }

    /// `C / (k x L)` dialogs per second, when there is a latency.
    fn limit(&self) -> Option<f64> {
        (self.case.latency_ms > 0)
            .then(|| self.case.concurrency as f64 / (self.k() * self.case.latency_ms as f64 / 1e3))
    }

    /// The limit when each 429 also idles its slot for Retry-After:
    /// `C / (k x L + r x RA)`, r the 429s per row.
    fn retry_bound(&self) -> Option<f64> {
        let r = self.stat("rate_limited") as f64 / self.rows.max(1) as f64;
        (self.case.latency_ms > 0 && r > 0.0).then(|| {
            self.case.concurrency as f64
                / (self.k() * self.case.latency_ms as f64 / 1e3
                    + r * self.case.retry_after_secs as f64)
        })
    }

    fn ratio(&self) -> Option<f64> {
        self.limit().map(|l| self.dialogs_per_sec() / l)
    }

    fn cpu_ms_per_request(&self) -> f64 {
        self.cli.cpu_secs * 1e3 / self.requests().max(1) as f64
    }

    fn summary(&self) -> String {
        format!(
            "   {:<6} {:<44} rows {}/{} in {:.2} s, {:.0} dialogs/s{}, k {:.2}, CPU {:.3} ms/req, \
             peak RSS {:.1} MB, mock {:.0}% of a core, load {:.2}",
            self.tool,
            self.case.name,
            self.rows,
            self.case.num_dialogs,
            self.wall_secs,
            self.dialogs_per_sec(),
            self.ratio()
                .map(|r| format!(" ({:.0}% of the limit)", r * 100.0))
                .unwrap_or_default(),
            self.k(),
            self.cpu_ms_per_request(),
            self.cli.max_rss_kb as f64 / 1024.0,
            self.mock.cpu_secs / self.wall_secs * 100.0,
            self.load_before,
        )
    }

    fn to_json(&self) -> Value {
        json!({
            "tool": self.tool,
            "case": self.case.name,
            "latency_ms": self.case.latency_ms,
            "jitter_ms": self.case.jitter_ms,
            "error_rate": self.case.error_rate,
            "rate_limit_rate": self.case.rate_limit_rate,
            "retry_after_secs": self.case.retry_after_secs,
            "rpm_limit": self.case.rpm_limit,
            "num_dialogs": self.case.num_dialogs,
            "max_concurrency": self.case.concurrency,
            "max_turns": self.case.max_turns,
            "rows_written": self.rows,
            "exit_ok": self.cli.success,
            "wall_secs": self.wall_secs,
            "dialogs_per_sec": self.dialogs_per_sec(),
            "requests_per_dialog_ok": self.k(),
            "limit_dialogs_per_sec": self.limit(),
            "ratio_to_limit": self.ratio(),
            "retry_adjusted_limit": self.retry_bound(),
            "cpu_secs": self.cli.cpu_secs,
            "cpu_ms_per_request": self.cpu_ms_per_request(),
            "peak_rss_mb": self.cli.max_rss_kb as f64 / 1024.0,
            "rss_mid_mb": self.rss_mid_kb as f64 / 1024.0,
            "rss_late_mb": self.rss_late_kb as f64 / 1024.0,
            "mock_cpu_secs": self.mock.cpu_secs,
            "mock_core_share": self.mock.cpu_secs / self.wall_secs,
            "mock_peak_rss_mb": self.mock.max_rss_kb as f64 / 1024.0,
            "mock_stats": self.stats,
            "cli_report": self.report,
            "load1_before": self.load_before,
            "load1_after": self.load_after,
        })
    }
}

/// Starts the mock, runs one tool on `case` against it, stops the mock.
fn run_case(bin: &Binaries, work: &Path, case: &Case, tool: Tool) -> Result<Run> {
    let tool_name = tool.name();
    let (mut mock, url) = Mock::start(bin, case)?;
    let files = RunFiles::write(work, tool_name, case, &url)?;

    let load_before = load1();
    let command = tool_command(&tool, bin, work, case, &url, &files);
    let measured = measure(command, &files.log, tool_name)?;
    let load_after = load1();
    let (stats, mock_usage) = mock.stop()?;

    if !measured.cli.success {
        warn_failed(tool_name, case, &files.log);
    }
    let rows = count_lines(&files.out).unwrap_or(0);
    let wall_secs = measured.wall_secs;
    Ok(Run {
        case: case.clone(),
        tool: tool_name,
        rows,
        wall_secs,
        cli: measured.cli,
        rss_mid_kb: measured.samples.at(wall_secs * 0.5),
        rss_late_kb: measured.samples.at(wall_secs * 0.9),
        mock: mock_usage,
        stats,
        report: serde_json::from_str(measured.stdout.trim()).unwrap_or(Value::Null),
        load_before,
        load_after,
    })
}

/// The mock in its own process (`xtask bench-server`), serving one case.
#[derive(Debug)]
struct Mock {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Mock {
    /// Starts the mock with `case`'s behaviour; returns it and its OpenAI base URL.
    fn start(bin: &Binaries, case: &Case) -> Result<(Mock, String)> {
        let mut child = Command::new(&bin.mock)
            .arg("bench-server")
            .args(case.mock_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the mock (xtask bench-server)")?;
        let mut out = BufReader::new(child.stdout.take().context("mock stdout")?);
        let mut url = String::new();
        out.read_line(&mut url)?;
        let url = url.trim().to_string();
        if !url.starts_with("http://") {
            bail!("the mock did not start (said {url:?})");
        }
        Ok((Mock { child, out }, url))
    }

    /// Closes the mock's stdin, which stops it; returns its counters and its usage.
    fn stop(&mut self) -> Result<(Value, Usage)> {
        drop(self.child.stdin.take());
        let mut stats = String::new();
        self.out.read_line(&mut stats)?;
        let usage = wait_usage(&self.child)?;
        let stats = serde_json::from_str(stats.trim()).context("reading the mock's stats")?;
        Ok((stats, usage))
    }
}

/// The files of one run, named after the tool: rows, config and the CLI's stderr.
#[derive(Debug)]
struct RunFiles {
    out: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

impl RunFiles {
    /// Removes the last run's rows and writes the config of `case` against `url`.
    fn write(work: &Path, tool_name: &str, case: &Case, url: &str) -> Result<RunFiles> {
        let out = work.join(format!("{tool_name}-rows.jsonl"));
        let _ = std::fs::remove_file(&out);
        let config = work.join(format!("{tool_name}-bench.yaml"));
        std::fs::write(&config, workload_yaml(case, url, &out))?;
        let log = work.join(format!("{tool_name}-stderr.log"));
        Ok(RunFiles { out, config, log })
    }
}

/// The command line of `tool` running `case` against the mock at `url`.
fn tool_command(
    tool: &Tool,
    bin: &Binaries,
    work: &Path,
    case: &Case,
    url: &str,
    files: &RunFiles,
) -> Command {
    match tool {
        Tool::Rust => {
            let mut c = Command::new(&bin.cli);
            c.arg("generate")
                .arg("--config")
                .arg(&files.config)
                .args(["--provider", "local", "--model", "mock-model"])
                .args(["--base-url", url])
                .args(["--num-dialogs", &case.num_dialogs.to_string()])
                .args(["--max-concurrency", &case.concurrency.to_string()])
                .args(["--max-turns", &case.max_turns.to_string()])
                .arg("--out")
                .arg(&files.out)
                .args(["--seed", "1", "--json"]);
            c
        }
        Tool::Python(py) => {
            let mut c = Command::new(py);
            c.args(["generate", "-c"])
                .arg(&files.config)
                .current_dir(work);
            c
        }
    }
}

/// What one measured CLI process did.
#[derive(Debug)]
struct Measured {
    /// Exit status and CPU from `wait4`, peak RSS from VmHWM when sampled.
    cli: Usage,
    wall_secs: f64,
    samples: RssSamples,
    stdout: String,
}

/// Runs `command` to its end, stderr to `log`, sampling its RSS and timing it.
fn measure(mut command: Command, log: &Path, tool_name: &str) -> Result<Measured> {
    let start = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(log)?)
        .spawn()
        .with_context(|| format!("starting the {tool_name} CLI"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(child.id(), Arc::clone(&stop));
    let mut stdout = child.stdout.take().context("CLI stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let mut cli = wait_usage(&child)?;
    let wall_secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap_or_default();
    if samples.hwm_kb > 0 {
        cli.max_rss_kb = samples.hwm_kb;
    }
    let stdout = reader.join().unwrap_or_default();
    Ok(Measured {
        cli,
        wall_secs,
        samples,
        stdout,
    })
}

/// Warns with the last lines of the failed CLI's stderr.
fn warn_failed(tool_name: &str, case: &Case, log: &Path) {
    let err = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = err.lines().rev().take(15).collect();
    eprintln!(
        "warning: the {tool_name} CLI failed on {}; the last lines of {}:\n{}",
        case.name,
        log.display(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

/// Lines in `path`, read in blocks (the harness stays small: its RSS would otherwise
/// carry over into the next child's `ru_maxrss` through `fork`).
fn count_lines(path: &Path) -> Result<u64> {
    let mut file = File::open(path)?;
    let mut block = vec![0u8; 64 * 1024];
    let mut lines = 0;
    loop {
        let n = file.read(&mut block)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += block[..n].iter().filter(|&&c| c == b'\n').count() as u64;
    }
}

/// The benchmark's config, in the schema both CLIs read: the support documents,
/// contextual instructions, no judge. `correspondent.system_prompt` (ours; Python ignores
/// unknown keys) fixes the simulated user's prompt so no request goes to writing one;
/// `max_failures` (ours) lets a run replace every failed dialog, so fault rows measure
/// throughput instead of stopping at the default failure budget.
fn workload_yaml(case: &Case, base_url: &str, out: &Path) -> String {
    let docs = workspace_root().join("examples/support-docs");
    format!(
        "generation:
  num_dialogs: {n}
  max_turns: {t}
  max_concurrency: {c}
  max_failures: {n}
model:
  provider: local
  model_name: mock-model
  base_url: {base_url}
respondent:
  system_prompt: You are a Tier 1 Technical Support agent.
correspondent:
  system_prompt: You are a customer asking a support agent about your problem. Ask one short follow-up question.
documents:
  provider: directory
  path: {docs}
context:
  enabled: true
  num_random_contexts: 1
  n_instructions: 3
quality:
  auto_improve: false
  # Throughput, not diversity: the mock's question pool is finite, and near-duplicate
  # filtering would end the run (questions ran out) before N; exact repeats only
  # steer. Python ignores the key.
  dedup: false
output:
  path: {out}
",
        n = case.num_dialogs,
        t = case.max_turns,
        c = case.concurrency,
        docs = docs.display(),
        out = out.display(),
    )
}

/// `(afterimage --version, a whole 1-dialog run at L=0)`, median wall seconds of 20 each.
fn startup(bin: &Binaries, work: &Path) -> Result<(f64, f64)> {
    let version = median_wall(20, || {
        let mut c = Command::new(&bin.cli);
        c.arg("--version");
        c
    })?;
    let mut mock = Command::new(&bin.mock)
        .arg("bench-server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the mock")?;
    let mut mock_out = BufReader::new(mock.stdout.take().context("mock stdout")?);
    let mut url = String::new();
    mock_out.read_line(&mut url)?;
    let url = url.trim().to_string();
    let case = Case::new("startup", 0, 1, 1);
    let out = work.join("startup-rows.jsonl");
    let config = work.join("startup.yaml");
    std::fs::write(&config, workload_yaml(&case, &url, &out))?;
    let run = median_wall(20, || {
        let _ = std::fs::remove_file(&out);
        let mut c = Command::new(&bin.cli);
        c.args(["generate", "--config"])
            .arg(&config)
            .args(["--provider", "local", "--model", "mock-model"])
            .args(["--base-url", &url, "--max-turns", "1", "--json"]);
        c
    });
    drop(mock.stdin.take());
    let _ = wait_usage(&mock);
    Ok((version, run?))
}

/// The median wall time of `times` runs of the command `make` builds; each must succeed.
fn median_wall(times: usize, mut make: impl FnMut() -> Command) -> Result<f64> {
    let mut walls = Vec::with_capacity(times);
    for _ in 0..times {
        let start = Instant::now();
        let status = make()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        walls.push(start.elapsed().as_secs_f64());
        if !status.success() {
            bail!("a start-up run failed ({status})");
        }
    }
    walls.sort_by(f64::total_cmp);
    Ok(walls[walls.len() / 2])
}

/// The Python afterimage CLI in `target/bench/py-venv`, installed with pip if missing.
fn python_cli(work: &Path, spec: &str) -> Result<PathBuf> {
    let venv = work.join("py-venv");
    let cli = venv.join("bin/afterimage");
    let pip = venv.join("bin/pip");
    if !pip.exists() {
        println!("== creating {}", venv.display());
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()?;
        if !status.success() {
            bail!("python3 -m venv failed");
        }
    }
    let installed = Command::new(&pip)
        .args(["show", "afterimage"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let wanted = spec.split_once("==").map(|(_, v)| v);
    let have = installed
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .map(str::trim);
    if !cli.exists() || (wanted.is_some() && have != wanted) {
        println!("== pip install {spec}");
        let status = Command::new(&pip)
            .args(["install", "--quiet", spec])
            .status()?;
        if !status.success() {
            bail!("pip install {spec} failed");
        }
    }
    Ok(cli)
}

fn print_table(results: &[(Run, Option<Run>)]) {
    println!(
        "| tool | case | rows / N | wall s | dialogs/s | k | limit d/s | ratio | CPU ms/req | peak RSS MB | RSS mid/late MB | mock core | load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for run in results
        .iter()
        .flat_map(|(r, p)| std::iter::once(r).chain(p.as_ref()))
    {
        let limit = match (run.limit(), run.retry_bound()) {
            (Some(l), Some(b)) => format!("{l:.0} ({b:.0} w/ Retry-After)"),
            (Some(l), None) => format!("{l:.0}"),
            _ => "-".into(),
        };
        let ratio = match (run.ratio(), run.retry_bound()) {
            (Some(r), Some(b)) => format!(
                "{:.0}% ({:.0}%)",
                r * 100.0,
                run.dialogs_per_sec() / b * 100.0
            ),
            (Some(r), None) => format!("{:.0}%", r * 100.0),
            _ => "-".into(),
        };
        println!(
            "| {} | {} | {} / {} | {:.2} | {:.1} | {:.2} | {} | {} | {:.3} | {:.1} | {:.1} / {:.1} | {:.0}% | {:.2} |",
            run.tool,
            run.case.name,
            run.rows,
            run.case.num_dialogs,
            run.wall_secs,
            run.dialogs_per_sec(),
            run.k(),
            limit,
            ratio,
            run.cpu_ms_per_request(),
            run.cli.max_rss_kb as f64 / 1024.0,
            run.rss_mid_kb as f64 / 1024.0,
            run.rss_late_kb as f64 / 1024.0,
            run.mock.cpu_secs / run.wall_secs * 100.0,
            run.load_before,
        );
    }
}

fn print_comparison(rust: &Run, py: &Run) {
    let x = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!("\nRust vs Python on the same workload and mock, in one invocation:");
    println!(
        "  dialogs/s      rust {:>9.1}   python {:>9.1}   rust/python x{:.1}",
        rust.dialogs_per_sec(),
        py.dialogs_per_sec(),
        x(rust.dialogs_per_sec(), py.dialogs_per_sec())
    );
    if let (Some(r), Some(p)) = (rust.ratio(), py.ratio()) {
        println!(
            "  of the limit   rust {:>8.0}%   python {:>8.0}%",
            r * 100.0,
            p * 100.0
        );
    }
    println!(
        "  CPU ms/request rust {:>9.3}   python {:>9.3}   python/rust x{:.0}",
        rust.cpu_ms_per_request(),
        py.cpu_ms_per_request(),
        x(py.cpu_ms_per_request(), rust.cpu_ms_per_request())
    );
    println!(
        "  peak RSS MB    rust {:>9.1}   python {:>9.1}   python/rust x{:.0}",
        rust.cli.max_rss_kb as f64 / 1024.0,
        py.cli.max_rss_kb as f64 / 1024.0,
        x(py.cli.max_rss_kb as f64, rust.cli.max_rss_kb as f64)
    );
    println!(
        "  rows / asked   rust {:>5} / {}   python {:>5} / {}",
        rust.rows, rust.case.num_dialogs, py.rows, py.case.num_dialogs
    );
}

/// The 1-minute load average.
fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// CPU model, cores and memory, for the record.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    format!(
        "{model}, {cores} cores, {:.0} GB RAM",
        mem_kb as f64 / 1024.0 / 1024.0
    )
}

/// Seconds since the Unix epoch.
fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
