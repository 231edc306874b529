//! `--metrics-addr`: the binary serves Prometheus text on `/metrics` during a run
//! against the mock; the counters move as the run goes, and the text parses with a
//! real Prometheus parser (`prometheus_client`'s, from PyPI).
//!
//! The parser test needs `AFTERIMAGE_TEST_PROMETHEUS_PYTHON`, a Python with
//! `prometheus-client` installed (`.ci/run` makes one under `~/.cache/afterimage`).
//! Without it the test says why it skipped, unless `AFTERIMAGE_REQUIRE_PROMETHEUS` is
//! set (as `.ci/run` does), which makes a missing parser a failure.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use afterimage_mock::{MockConfig, MockServer};

use crate::Cli;

const CONFIG: &str = r#"
generation:
  num_dialogs: 60
  max_turns: 2
  max_concurrency: 4
model:
  provider: local
  model_name: mock-model
  price: {input_per_million: 1.0, output_per_million: 4.0}
respondent:
  system_prompt: You are a Tier 1 Technical Support agent.
documents:
  provider: memory
  texts:
    - Error 503 means the service is unavailable. Retry after 5 minutes.
    - To reset your password, click 'Forgot Password' on the login screen.
"#;

/// A run serving metrics, and where.
struct Served {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
    _server: MockServer,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a run with `--metrics-addr 127.0.0.1:0` and reads the bound address from
/// its stderr.
async fn serve() -> Served {
    let server = MockServer::start(MockConfig::default().with_latency(Duration::from_millis(30)))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let out = dir.path().join("out.jsonl");
    let mut child = Cli::generate(&config, &server.openai_base_url(), &out)
        .args(&["--json", "--metrics-addr", "127.0.0.1:0"])
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (found, address) = mpsc::channel();
    // Reads stderr to its end, so the pipe never fills and blocks the run.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("serving metrics on ") {
                let _ = found.send(url.to_owned());
            }
        }
    });
    let url = tokio::task::spawn_blocking(move || address.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the run never said where it serves metrics");
    Served {
        child,
        url,
        _dir: dir,
        _server: server,
    }
}

async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    response.text().await.unwrap()
}

/// The value of the sample line `series` (name and labels as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes until `written` dialogs are counted; returns that scrape.
async fn scrape_until_written(url: &str, written: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = scrape(url).await;
        if sample(&text, r#"afterimage_dialogs_total{outcome="written"}"#) >= Some(written) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the counters never moved:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_while_the_run_goes_on() {
    let served = serve().await;
    let first = scrape_until_written(&served.url, 3.0).await;
    let second = scrape_until_written(&served.url, 10.0).await;
    let moved = |series: &str| {
        let (a, b) = (sample(&first, series), sample(&second, series));
        assert!(a.is_some() && b > a, "{series}: {a:?} then {b:?}\n{second}");
    };
    moved(r#"afterimage_dialogs_total{outcome="written"}"#);
    moved(r#"afterimage_requests_total{provider="local",status="ok"}"#);
    moved(r#"afterimage_tokens_total{kind="input"}"#);
    moved(r#"afterimage_tokens_total{kind="output"}"#);
    moved("afterimage_cost_usd_total");
    assert_eq!(
        sample(&second, r#"afterimage_dialogs_total{outcome="failed"}"#),
        Some(0.0)
    );
    let in_flight = sample(&second, "afterimage_dialogs_in_flight").unwrap();
    assert!((0.0..=4.0).contains(&in_flight), "{in_flight}");
    assert_eq!(
        sample(
            &second,
            r#"afterimage_concurrency_limit{model="mock-model"}"#
        ),
        Some(4.0),
        "{second}"
    );
    assert!(second.contains("# TYPE afterimage_requests_in_flight gauge\n"));
    // Anything but GET /metrics is refused.
    let other = served.url.replace("/metrics", "/other");
    assert_eq!(reqwest::get(&other).await.unwrap().status(), 404);
}

/// Parses the text with `prometheus_client.parser` and prints every sample as
/// `name{labels} value` with labels sorted, one per line; exits non-zero on text it
/// cannot parse.
const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{family.type} {s.name}{{{labels}}} {s.value}")
"#;

/// The Python with `prometheus_client`, or why there is none (a failure when
/// `AFTERIMAGE_REQUIRE_PROMETHEUS` is set).
fn parser_python() -> Option<String> {
    let missing = match std::env::var("AFTERIMAGE_TEST_PROMETHEUS_PYTHON") {
        Ok(python) if std::path::Path::new(&python).exists() => return Some(python),
        Ok(python) => {
            format!("AFTERIMAGE_TEST_PROMETHEUS_PYTHON names {python}, which does not exist")
        }
        Err(_) => "AFTERIMAGE_TEST_PROMETHEUS_PYTHON is not set".to_owned(),
    };
    assert!(
        std::env::var_os("AFTERIMAGE_REQUIRE_PROMETHEUS").is_none(),
        "AFTERIMAGE_REQUIRE_PROMETHEUS is set but {missing}"
    );
    eprintln!("skipped: {missing} (see the README: metrics)");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_text_parses_with_prometheus_own_parser() {
    let Some(python) = parser_python() else {
        return;
    };
    let served = serve().await;
    let text = scrape_until_written(&served.url, 5.0).await;
    let parsed = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(python)
            .args(["-c", PARSE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        (text, child.wait_with_output().unwrap())
    })
    .await
    .unwrap();
    let (text, output) = parsed;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the parser refused:\n{stderr}\n{text}"
    );
    let samples: HashMap<String, (String, f64)> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let mut parts = line.split(' ');
            let (kind, series, value) = (parts.next(), parts.next(), parts.next());
            (
                series.unwrap().to_owned(),
                (kind.unwrap().to_owned(), value.unwrap().parse().unwrap()),
            )
        })
        .collect();
    // Every sample line we wrote came back, as the type we declared.
    let lines = text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(samples.len(), lines, "{samples:?}");
    let get = |series: &str| samples.get(series).cloned();
    let written = get(r#"afterimage_dialogs_total{outcome="written"}"#).unwrap();
    assert_eq!(written.0, "counter");
    assert!(written.1 >= 5.0, "{written:?}");
    assert_eq!(
        get(r#"afterimage_requests_total{provider="local",status="ok"}"#)
            .unwrap()
            .0,
        "counter"
    );
    assert_eq!(get("afterimage_dialogs_in_flight{}").unwrap().0, "gauge");
    assert_eq!(
        get(r#"afterimage_concurrency_limit{model="mock-model"}"#).unwrap(),
        ("gauge".to_owned(), 4.0)
    );
    assert!(get("afterimage_cost_usd_total{}").unwrap().1 > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_address_that_cannot_be_bound_is_a_usage_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let out = dir.path().join("out.jsonl");
    let run = Cli::generate(&config, "http://127.0.0.1:9/v1", &out)
        .args(&["--metrics-addr", &addr])
        .run()
        .await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("cannot serve metrics on {addr}")),
        "{}",
        run.stderr
    );
    assert!(!out.exists(), "nothing ran");
}
