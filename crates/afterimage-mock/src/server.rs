//! The HTTP server: accept loop, routing, auth, fault injection and latency.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::cache::PromptCache;
use crate::config::MockConfig;
use crate::stats::{Counters, MockStats, Served, bump};
use crate::text::Rng;
use crate::{anthropic, embeddings, gemini, openai};

/// Pending connections the kernel may queue; thousands of clients connect at once.
const BACKLOG: u32 = 4096;
/// Largest request body accepted (413 beyond).
const MAX_BODY: usize = 32 * 1024 * 1024;

/// A response ready to send.
#[derive(Debug)]
pub(crate) struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
    retry_after: Option<u64>,
    /// One more header (Gemini's `x-goog-upload-url`).
    header: Option<(&'static str, String)>,
    /// The tokens a chat answer bills, counted in the stats once it is sent.
    served: Option<Served>,
}

impl Answer {
    /// `value` as a JSON response.
    pub(crate) fn json(status: StatusCode, value: &Value) -> Self {
        Answer {
            status,
            content_type: "application/json",
            // Serializing a `Value` to memory cannot fail.
            body: serde_json::to_vec(value).unwrap_or_default(),
            retry_after: None,
            header: None,
            served: None,
        }
    }

    /// Raw bytes of `content_type`.
    pub(crate) fn bytes(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Self {
        Answer {
            status,
            content_type,
            body,
            retry_after: None,
            header: None,
            served: None,
        }
    }

    /// The same answer with one more header.
    pub(crate) fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.header = Some((name, value));
        self
    }

    /// The same answer, billing `tokens`.
    pub(crate) fn serving(mut self, tokens: Served) -> Self {
        self.served = Some(tokens);
        self
    }

    pub(crate) fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(self.body)));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        if let Some((name, value)) = self.header
            && let Ok(value) = HeaderValue::from_str(&value)
        {
            headers.insert(name, value);
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A Server-Sent Events body built in memory.
#[derive(Debug, Default)]
pub(crate) struct Sse(Vec<u8>);

impl Sse {
    /// Appends `data: <json>` and a blank line.
    pub(crate) fn event(&mut self, value: &Value) {
        self.0.extend_from_slice(b"data: ");
        // Writing a `Value` into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut self.0, value);
        self.0.extend_from_slice(b"\n\n");
    }

    /// Appends OpenAI's end-of-stream marker.
    pub(crate) fn done(&mut self) {
        self.0.extend_from_slice(b"data: [DONE]\n\n");
    }

    pub(crate) fn into_answer(self) -> Answer {
        Answer {
            status: StatusCode::OK,
            content_type: "text/event-stream",
            body: self.0,
            retry_after: None,
            header: None,
            served: None,
        }
    }
}

/// What a format handler needs to answer one model request.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    /// The request number (drives variety and ids).
    pub(crate) n: u64,
    /// The request's random stream.
    pub(crate) rng: Rng,
    /// [`MockConfig::prose_instead_of_json`].
    pub(crate) prose: bool,
    /// Answer a JSON-schema request with JSON that breaks the schema
    /// ([`MockConfig::schema_violation_rate`]).
    pub(crate) break_schema: bool,
    /// The server's prompt cache, unless [`MockConfig::prompt_cache`] is off.
    pub(crate) cache: Option<&'a PromptCache>,
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) stats: Counters,
    next_request: AtomicU64,
    cache: Option<PromptCache>,
    /// Files and batches of the three batch protocols.
    pub(crate) batches: crate::batch::Store,
    /// Per API key: the start of its current one-minute window and the requests in it.
    rpm_windows: Mutex<HashMap<String, (Instant, u32)>>,
    /// Milliseconds added to every answer from now on ([`MockServer::set_extra_latency`]).
    extra_latency_ms: AtomicU64,
    /// Chat requests per model name asked for.
    by_model: Mutex<std::collections::BTreeMap<String, u64>>,
    /// When the server started, and the model requests of each second since.
    started: Instant,
    per_second: Mutex<Vec<u64>>,
}

/// The length of a [`MockConfig::rpm_limit`] window.
const RPM_WINDOW: Duration = Duration::from_secs(60);

impl Shared {
    /// Counts a model request in the second it arrived.
    fn count_second(&self, now: Instant) {
        let second = now.duration_since(self.started).as_secs() as usize;
        let mut seconds = self.per_second.lock().unwrap_or_else(|e| e.into_inner());
        if seconds.len() <= second {
            seconds.resize(second + 1, 0);
        }
        seconds[second] += 1;
    }

    /// Counts a model request against `key`'s per-minute budget: `Some(retry_after_secs)`
    /// when it is over the limit.
    fn over_rpm_limit(&self, key: &str, now: Instant) -> Option<u64> {
        let limit = self.config.rpm_limit?;
        // A poisoned lock only means another request panicked mid-count; keep counting.
        let mut windows = self.rpm_windows.lock().unwrap_or_else(|e| e.into_inner());
        let (start, count) = windows.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(*start) >= RPM_WINDOW {
            (*start, *count) = (now, 0);
        }
        if *count >= limit {
            let left = RPM_WINDOW.saturating_sub(now.duration_since(*start));
            return Some(left.as_secs_f64().ceil().max(1.0) as u64);
        }
        *count += 1;
        None
    }
}

/// A running mock LLM server on `127.0.0.1`.
///
/// Dropping it stops accepting connections and closes each open one after its in-flight
/// request; [`MockServer::shutdown`] does the same and waits for it.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    // Dropping the sender is the shutdown signal; `send(true)` is the explicit one.
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl MockServer {
    /// Starts a server on a free port of `127.0.0.1` (needs a tokio runtime).
    pub async fn start(config: MockConfig) -> io::Result<MockServer> {
        MockServer::start_on(0, config).await
    }

    /// Starts a server on `127.0.0.1:port` (`0` picks a free port).
    pub async fn start_on(port: u16, config: MockConfig) -> io::Result<MockServer> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let socket = TcpSocket::new_v4()?;
        // Lets `cargo xtask mock` restart on the same port while old sockets linger.
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
        let listener = socket.listen(BACKLOG)?;
        let addr = listener.local_addr()?;
        let cache = config
            .prompt_cache
            .then(|| PromptCache::new(config.prompt_cache_min_tokens));
        let shared = Arc::new(Shared {
            config,
            stats: Counters::default(),
            next_request: AtomicU64::new(0),
            cache,
            rpm_windows: Mutex::new(HashMap::new()),
            extra_latency_ms: AtomicU64::new(0),
            by_model: Mutex::default(),
            started: Instant::now(),
            per_second: Mutex::new(Vec::new()),
            batches: crate::batch::Store::default(),
        });
        let (shutdown, signal) = watch::channel(false);
        let task = runtime.spawn(accept_loop(listener, Arc::clone(&shared), signal));
        tracing::debug!(%addr, "afterimage-mock listening");
        Ok(MockServer {
            addr,
            shared,
            shutdown,
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The OpenAI-compatible base URL, `http://127.0.0.1:PORT/v1`.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The Gemini base URL, `http://127.0.0.1:PORT/v1beta`.
    pub fn gemini_base_url(&self) -> String {
        format!("http://{}/v1beta", self.addr)
    }

    /// The Anthropic base URL, `http://127.0.0.1:PORT/v1` (the OpenAI one: the paths differ).
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &MockConfig {
        &self.shared.config
    }

    /// A snapshot of the request counters.
    pub fn stats(&self) -> MockStats {
        self.shared.stats.snapshot()
    }

    /// Adds `latency` to every answer from now on, on top of the configured one
    /// (`Duration::ZERO` takes it away again): for tests that need the requests in
    /// flight to hang, say past a grace period, and then a server that answers.
    pub fn set_extra_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.shared.extra_latency_ms.store(ms, Relaxed);
    }

    /// Chat requests (all three formats, faults included) per model name asked for.
    pub fn requests_by_model(&self) -> std::collections::BTreeMap<String, u64> {
        self.shared
            .by_model
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Model requests received in each second since the server started (429s
    /// included), to check a client's pacing over any window.
    pub fn requests_per_second(&self) -> Vec<u64> {
        self.shared
            .per_second
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Batch requests submitted per `custom_id` (Gemini: metadata `key`) over all
    /// batches and protocols: a count above 1 is a request submitted twice.
    pub fn batch_submissions(&self) -> std::collections::BTreeMap<String, u64> {
        self.shared.batches.lock().submissions.clone()
    }

    /// Batches created, over all three protocols (failed ones included).
    pub fn batches_created(&self) -> u64 {
        self.shared.batches.lock().batches.len() as u64
    }

    /// Batch lines the model answered (injected line faults and lines a cancel or
    /// expiry left unrun are not counted).
    pub fn batch_requests_answered(&self) -> u64 {
        self.shared.batches.lock().answered
    }

    /// Makes every batch request at `point` hang from now on (replacing any earlier
    /// stall point, whose hung requests go on), so a crash test can kill its client
    /// there; [`MockServer::batch_stalled`] says when one is hanging.
    pub fn stall_batches(&self, point: crate::BatchStall) {
        self.shared.batches.stall.set(Some(point));
    }

    /// Ends the stall: hung requests go on (if their client still waits) and later
    /// ones are served normally.
    pub fn unstall_batches(&self) {
        self.shared.batches.stall.set(None);
    }

    /// Batch requests hanging at the stall point now (a killed client's request stops
    /// counting once the server notices the closed connection).
    pub fn batch_stalled(&self) -> u64 {
        self.shared.batches.stall.hanging()
    }

    /// Files deleted through the OpenAI (`DELETE /v1/files/{id}`) or Gemini (`DELETE
    /// /v1beta/files/{id}`) Files API; a deleted file answers 404 afterwards.
    pub fn files_deleted(&self) -> u64 {
        self.shared.batches.lock().files_deleted
    }

    /// Zeroes the counters (e.g. after a benchmark's warm-up).
    pub fn reset_stats(&self) {
        self.shared.stats.reset();
    }

    /// Stops accepting, lets in-flight requests finish, and waits until all is closed.
    pub async fn shutdown(self) {
        // A stalled request would hold the graceful shutdown forever.
        self.unstall_batches();
        let MockServer { shutdown, task, .. } = self;
        let _ = shutdown.send(true);
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "afterimage-mock accept loop ended abnormally");
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut signal: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            // Fires on `send(true)` and when the `MockServer` is dropped.
            _ = signal.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve(stream, Arc::clone(&shared), signal.clone()));
                }
                Err(e) => {
                    // Usually out of file descriptors under a connection storm: back off
                    // briefly instead of spinning, and keep serving.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn serve(stream: TcpStream, shared: Arc<Shared>, mut signal: watch::Receiver<bool>) {
    // Small request/response pairs: Nagle would add delay for nothing.
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = signal.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::trace!(error = %e, "connection ended with an error");
    }
}

/// Which wire format an error should be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    Gemini,
    Anthropic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    OpenAiChat,
    OpenAiEmbeddings,
    OpenAiModels,
    OpenAiModel(&'a str),
    /// `stream`: `None` for `generateContent`, `Some(sse)` for `streamGenerateContent`.
    GeminiGenerate {
        model: &'a str,
        stream: Option<bool>,
    },
    /// `batch`: `batchEmbedContents` rather than `embedContent`.
    GeminiEmbed {
        batch: bool,
    },
    GeminiModels,
    GeminiModel(&'a str),
    AnthropicMessages,
    NotFound(Dialect),
}

impl<'a> Route<'a> {
    fn parse(method: &Method, path: &'a str, query: Option<&str>) -> Route<'a> {
        if let Some(rest) = path.strip_prefix("/v1beta") {
            return Route::gemini(method, rest, query);
        }
        // OpenAI clients are configured with or without the `/v1` suffix.
        let rest = path.strip_prefix("/v1").unwrap_or(path);
        match (method, rest) {
            (&Method::POST, "/chat/completions") => Route::OpenAiChat,
            (&Method::POST, "/embeddings") => Route::OpenAiEmbeddings,
            (&Method::POST, "/messages") => Route::AnthropicMessages,
            (&Method::GET, "/models") => Route::OpenAiModels,
            (&Method::GET, r) => match r.strip_prefix("/models/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Route::OpenAiModel(id),
                _ => Route::NotFound(Dialect::OpenAi),
            },
            _ => Route::NotFound(Dialect::OpenAi),
        }
    }

    fn gemini(method: &Method, rest: &'a str, query: Option<&str>) -> Route<'a> {
        let not_found = Route::NotFound(Dialect::Gemini);
        if method == Method::GET && rest == "/models" {
            return Route::GeminiModels;
        }
        let Some(name) = rest.strip_prefix("/models/").filter(|n| !n.contains('/')) else {
            return not_found;
        };
        match (method, name.split_once(':')) {
            (&Method::GET, None) if !name.is_empty() => Route::GeminiModel(name),
            (&Method::POST, Some((model, action))) if !model.is_empty() => match action {
                "generateContent" => Route::GeminiGenerate {
                    model,
                    stream: None,
                },
                "streamGenerateContent" => Route::GeminiGenerate {
                    model,
                    stream: Some(query.is_some_and(|q| q.split('&').any(|kv| kv == "alt=sse"))),
                },
                "batchEmbedContents" => Route::GeminiEmbed { batch: true },
                "embedContent" => Route::GeminiEmbed { batch: false },
                _ => not_found,
            },
            _ => not_found,
        }
    }

    fn dialect(self) -> Dialect {
        match self {
            Route::GeminiGenerate { .. }
            | Route::GeminiEmbed { .. }
            | Route::GeminiModels
            | Route::GeminiModel(_) => Dialect::Gemini,
            Route::AnthropicMessages => Dialect::Anthropic,
            Route::NotFound(d) => d,
            _ => Dialect::OpenAi,
        }
    }
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let stats = &shared.stats;
    let _in_flight = stats.enter();
    let config = &shared.config;
    let (parts, body) = req.into_parts();
    let route = Route::parse(&parts.method, parts.uri.path(), parts.uri.query());
    // Anthropic shares `/v1/models` with OpenAI; its clients say who they are.
    let anthropic_client = parts.headers.contains_key("anthropic-version");
    let dialect = match route.dialect() {
        Dialect::OpenAi if anthropic_client => Dialect::Anthropic,
        dialect => dialect,
    };
    let fail = |status: StatusCode, message: &str| {
        error_answer(dialect, status, message, config.retry_after_secs).into_response()
    };
    if let Some(batch_route) = crate::batch::Route::parse(&parts.method, parts.uri.path()) {
        if let Some(key) = &config.require_key
            && !authorized(&parts, key)
        {
            bump(&stats.unauthorized);
            let dialect = batch_route.dialect();
            let message = "Incorrect API key provided (afterimage-mock requires a key).";
            return error_answer(dialect, StatusCode::UNAUTHORIZED, message, 1).into_response();
        }
        return crate::batch::handle(shared, batch_route, &parts, body)
            .await
            .into_response();
    }

    if matches!(route, Route::NotFound(_)) {
        bump(&stats.not_found);
        let message = format!("Invalid URL ({} {})", parts.method, parts.uri.path());
        return fail(StatusCode::NOT_FOUND, &message);
    }
    if let Some(key) = &config.require_key
        && !authorized(&parts, key)
    {
        bump(&stats.unauthorized);
        return fail(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided (afterimage-mock requires a key).",
        );
    }
    let answer = match route {
        Route::OpenAiModels if anthropic_client => anthropic::models(),
        Route::OpenAiModel(id) if anthropic_client => anthropic::model(id),
        Route::OpenAiModels => openai::models(),
        Route::OpenAiModel(id) => openai::model(id),
        Route::GeminiModels => gemini::models(),
        Route::GeminiModel(model) => gemini::model(model),
        Route::OpenAiChat
        | Route::OpenAiEmbeddings
        | Route::GeminiGenerate { .. }
        | Route::GeminiEmbed { .. }
        | Route::AnthropicMessages => {
            return model_call(shared, route, &parts, body)
                .await
                .unwrap_or_else(|(status, message)| {
                    if status == StatusCode::BAD_REQUEST || status == StatusCode::PAYLOAD_TOO_LARGE
                    {
                        bump(&stats.bad_requests);
                    }
                    fail(status, &message)
                });
        }
        Route::NotFound(_) => return fail(StatusCode::NOT_FOUND, "Not found"),
    };
    bump(&stats.models);
    answer.into_response()
}

/// Why a request got an error instead of an answer: the status and the message.
pub(crate) type Refusal = (StatusCode, String);

/// A chat/generate/embedding request: the per-key limit, faults, then the answer, then
/// the latency.
async fn model_call(
    shared: &Shared,
    route: Route<'_>,
    parts: &Parts,
    body: Incoming,
) -> Result<Response<Full<Bytes>>, Refusal> {
    let (stats, config) = (&shared.stats, &shared.config);
    bump(call_counter(stats, route));
    shared.count_second(Instant::now());
    if let Some(retry_after) = shared.over_rpm_limit(request_key(parts), Instant::now()) {
        bump(&stats.rate_limited);
        return Ok(rpm_refusal(route.dialect(), retry_after).into_response());
    }
    let value = read_object(body).await?;
    if let Some(model) = chat_model(route, &value) {
        let mut by_model = shared.by_model.lock().unwrap_or_else(|e| e.into_inner());
        *by_model.entry(model.to_owned()).or_default() += 1;
    }
    let n = shared.next_request.fetch_add(1, Relaxed);
    let mut rng = Rng::for_request(config.seed, n);
    let (delay, malformed) = inject_faults(config, stats, &mut rng).await?;
    // Answer first so malformed requests fail at once, as real APIs reject them early.
    let call = Call {
        n,
        rng,
        prose: config.prose_instead_of_json || malformed,
        // A draw of its own, so the other faults' rates stay as they were.
        break_schema: config.schema_violation_rate > 0.0
            && Rng::for_request(config.seed ^ 0x5c4e_3a17, n).next_f64()
                < config.schema_violation_rate,
        cache: shared.cache.as_ref(),
    };
    let answer = respond(route, &value, call, config.embedding_dimensions)
        .map_err(|message| (StatusCode::BAD_REQUEST, message))?;
    let extra = Duration::from_millis(shared.extra_latency_ms.load(Relaxed));
    sleep(delay.saturating_add(extra)).await;
    if let Some(tokens) = answer.served {
        stats.served(tokens);
    }
    Ok(answer.into_response())
}

/// The body the synchronous endpoint would answer one batch line with, billed in the
/// stats; `Err` is why the line is a bad request.
pub(crate) fn answer_line(
    shared: &Shared,
    protocol: crate::batch::Protocol,
    model: &str,
    body: &Value,
) -> Result<Value, String> {
    use crate::batch::Protocol;
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err("Streaming is not supported in a batch.".to_string());
    }
    let n = shared.next_request.fetch_add(1, Relaxed);
    let config = &shared.config;
    let call = Call {
        n,
        rng: Rng::for_request(config.seed, n),
        prose: config.prose_instead_of_json,
        break_schema: false,
        cache: shared.cache.as_ref(),
    };
    let answer = match protocol {
        Protocol::OpenAi => openai::chat(body, call)?,
        Protocol::Anthropic => anthropic::messages(body, call)?,
        Protocol::Gemini => gemini::generate(model, body, call, None)?,
    };
    if let Some(tokens) = answer.served {
        shared.stats.served(tokens);
    }
    serde_json::from_slice(&answer.body).map_err(|e| e.to_string())
}

/// The model a chat request asks for (none for embeddings).
fn chat_model<'v>(route: Route<'v>, value: &'v Value) -> Option<&'v str> {
    match route {
        Route::GeminiGenerate { model, .. } => Some(model),
        Route::OpenAiChat | Route::AnthropicMessages => Some(
            value
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or(crate::reply::DEFAULT_MODEL),
        ),
        _ => None,
    }
}

/// The counter of model calls `route` belongs to.
fn call_counter<'s>(stats: &'s Counters, route: Route<'_>) -> &'s AtomicU64 {
    match route {
        Route::OpenAiChat => &stats.chat_completions,
        Route::AnthropicMessages => &stats.messages,
        Route::OpenAiEmbeddings | Route::GeminiEmbed { .. } => &stats.embeddings,
        _ => &stats.generate_content,
    }
}

/// The 429 for a key over [`MockConfig::rpm_limit`], waiting out its minute.
fn rpm_refusal(dialect: Dialect, retry_after: u64) -> Answer {
    let message = "Rate limit reached: requests per minute (afterimage-mock rpm_limit).";
    error_answer(dialect, StatusCode::TOO_MANY_REQUESTS, message, retry_after)
}

/// Draws this request's fault: a 429 at once, or a 500 after the latency. Without one,
/// the latency to wait once the answer is ready, and whether the answer's content is
/// to be unusable.
async fn inject_faults(
    config: &MockConfig,
    stats: &Counters,
    rng: &mut Rng,
) -> Result<(Duration, bool), Refusal> {
    // One draw decides both faults so their rates add up exactly.
    let draw = rng.next_f64();
    if draw < config.rate_limit_rate {
        bump(&stats.rate_limited);
        return Err((
            StatusCode::TOO_MANY_REQUESTS,
            "Rate limit reached".to_string(),
        ));
    }
    let delay = delay(config, rng);
    if draw < config.rate_limit_rate + config.error_rate {
        sleep(delay).await;
        bump(&stats.errors_injected);
        return Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request (injected by afterimage-mock)."
                .to_string(),
        ));
    }
    let malformed = draw < config.rate_limit_rate + config.error_rate + config.malformed_rate;
    if malformed {
        bump(&stats.malformed_injected);
    }
    Ok((delay, malformed))
}

/// The answer to a model call in `route`'s format; `Err` is a bad request's message.
fn respond(
    route: Route<'_>,
    value: &Value,
    call: Call,
    dimensions: usize,
) -> Result<Answer, String> {
    match route {
        Route::GeminiGenerate { model, stream } => gemini::generate(model, value, call, stream),
        Route::OpenAiEmbeddings => embeddings::openai(value, dimensions),
        Route::GeminiEmbed { batch: true } => embeddings::gemini_batch(value, dimensions),
        Route::GeminiEmbed { batch: false } => embeddings::gemini_single(value, dimensions),
        Route::AnthropicMessages => anthropic::messages(value, call),
        _ => openai::chat(value, call),
    }
}

async fn sleep(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// `latency ± jitter`, uniform, floored at zero.
fn delay(config: &MockConfig, rng: &mut Rng) -> Duration {
    if config.jitter.is_zero() {
        return config.latency;
    }
    let offset = config.jitter.as_secs_f64() * (2.0 * rng.next_f64() - 1.0);
    Duration::try_from_secs_f64((config.latency.as_secs_f64() + offset).max(0.0))
        .unwrap_or(config.latency)
}

/// The body as a JSON object.
async fn read_object(body: Incoming) -> Result<Value, Refusal> {
    let value = read_json(body).await?;
    if !value.is_object() {
        return Err((
            StatusCode::BAD_REQUEST,
            "The request body must be a JSON object.".to_string(),
        ));
    }
    Ok(value)
}

/// The body as JSON.
pub(crate) async fn read_json(body: Incoming) -> Result<Value, Refusal> {
    let bytes = read_bytes(body).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let message = format!("We could not parse the JSON body of your request: {e}");
        (StatusCode::BAD_REQUEST, message)
    })
}

/// The body's bytes, up to [`MAX_BODY`].
pub(crate) async fn read_bytes(body: Incoming) -> Result<Bytes, Refusal> {
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            let message = format!("The request body is larger than {MAX_BODY} bytes.");
            return Err((StatusCode::PAYLOAD_TOO_LARGE, message));
        }
        Err(e) => {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("Could not read the body: {e}"),
            ));
        }
    };
    Ok(bytes)
}

/// The API key a request carries (see [`authorized`]), or `""` without one.
pub(crate) fn request_key(parts: &Parts) -> &str {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    header(header::AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .or_else(|| header("x-goog-api-key"))
        .or_else(|| header("x-api-key"))
        .or_else(|| {
            parts
                .uri
                .query()?
                .split('&')
                .find_map(|kv| kv.strip_prefix("key="))
        })
        .unwrap_or("")
}

/// The key may come as `Authorization: Bearer`, `x-goog-api-key`, `x-api-key` or `?key=`.
fn authorized(parts: &Parts, key: &str) -> bool {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    header(header::AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|v| v.trim() == key)
        || header("x-goog-api-key") == Some(key)
        || header("x-api-key") == Some(key)
        || parts
            .uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv.strip_prefix("key=") == Some(key)))
}

/// An error in `dialect`'s shape (429s carry `Retry-After`).
pub(crate) fn error_answer(
    dialect: Dialect,
    status: StatusCode,
    message: &str,
    retry_after: u64,
) -> Answer {
    let body = match dialect {
        Dialect::OpenAi => openai::error(status, message),
        Dialect::Gemini => gemini::error(status, message, retry_after),
        Dialect::Anthropic => anthropic::error(status, message),
    };
    let mut answer = Answer::json(status, &body);
    if status == StatusCode::TOO_MANY_REQUESTS {
        answer.retry_after = Some(retry_after);
    }
    answer
}

/// Serves on `127.0.0.1:port` in the foreground, printing the URLs and a stats line
/// every few seconds while requests come in, until Ctrl-C.
pub async fn run(port: u16, config: MockConfig) -> io::Result<()> {
    let server = MockServer::start_on(port, config).await?;
    say(format_args!(
        "afterimage-mock listening on {}\n  OpenAI base URL: {}  (POST /chat/completions, /embeddings, GET /models)\n  \
         Gemini base URL: {}  (POST /models/{{model}}:generateContent, :batchEmbedContents, GET /models)\n  \
         Anthropic base URL: {}  (POST /messages, GET /models)\n  \
         Batches: OpenAI /v1/files + /v1/batches, Anthropic /v1/messages/batches, Gemini \
         /v1beta/models/{{model}}:batchGenerateContent + /v1beta/batches\nPress Ctrl-C to stop.",
        server.base_url(),
        server.openai_base_url(),
        server.gemini_base_url(),
        server.anthropic_base_url(),
    ));
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported = 0;
    let ctrl_c = tokio::signal::ctrl_c();
    let mut ctrl_c = std::pin::pin!(ctrl_c);
    loop {
        tokio::select! {
            result = &mut ctrl_c => {
                result?;
                break;
            }
            _ = ticker.tick() => {
                let stats = server.stats();
                if stats.requests != reported {
                    reported = stats.requests;
                    say(format_args!("{stats}"));
                }
            }
        }
    }
    let stats = server.stats();
    // Ctrl-C is ours now, so a second one would not kill a shutdown stuck behind a long
    // latency: bound the wait instead.
    let _ = tokio::time::timeout(Duration::from_secs(2), server.shutdown()).await;
    say(format_args!("stopped; {stats}"));
    Ok(())
}

/// Prints a line, ignoring a closed stdout (e.g. piped into `head`).
fn say(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stdout().lock(), "{args}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_and_anthropic_routes() {
        let post = Method::POST;
        let get = Method::GET;
        assert_eq!(
            Route::parse(&post, "/v1/chat/completions", None),
            Route::OpenAiChat
        );
        assert_eq!(
            Route::parse(&post, "/chat/completions", None),
            Route::OpenAiChat
        );
        assert_eq!(Route::parse(&get, "/models", None), Route::OpenAiModels);
        assert_eq!(
            Route::parse(&get, "/v1/models/gpt-x", None),
            Route::OpenAiModel("gpt-x")
        );
        assert_eq!(
            Route::parse(&post, "/v1/embeddings", None),
            Route::OpenAiEmbeddings
        );
        assert_eq!(
            Route::parse(&post, "/embeddings", None),
            Route::OpenAiEmbeddings
        );
        assert_eq!(
            Route::parse(&post, "/v1/messages", None),
            Route::AnthropicMessages
        );
        assert_eq!(
            Route::parse(&get, "/v1/chat/completions", None),
            Route::NotFound(Dialect::OpenAi)
        );
    }

    #[test]
    fn gemini_routes() {
        let post = Method::POST;
        assert_eq!(
            Route::parse(&post, "/v1beta/models/gemini-x:generateContent", None),
            Route::GeminiGenerate {
                model: "gemini-x",
                stream: None
            }
        );
        assert_eq!(
            Route::parse(
                &post,
                "/v1beta/models/g:streamGenerateContent",
                Some("key=k&alt=sse")
            ),
            Route::GeminiGenerate {
                model: "g",
                stream: Some(true)
            }
        );
        assert_eq!(
            Route::parse(&Method::GET, "/v1beta/models/g", None),
            Route::GeminiModel("g")
        );
        assert_eq!(
            Route::parse(&post, "/v1beta/models/e:batchEmbedContents", None),
            Route::GeminiEmbed { batch: true }
        );
        assert_eq!(
            Route::parse(&post, "/v1beta/models/g:countTokens", None),
            Route::NotFound(Dialect::Gemini)
        );
    }

    #[test]
    fn rpm_limit_counts_per_key_and_resets_each_minute() {
        let shared = Shared {
            config: MockConfig::default().with_rpm_limit(2),
            stats: Counters::default(),
            next_request: AtomicU64::new(0),
            cache: None,
            rpm_windows: Mutex::new(HashMap::new()),
            extra_latency_ms: AtomicU64::new(0),
            by_model: Mutex::default(),
            started: Instant::now(),
            per_second: Mutex::new(Vec::new()),
            batches: crate::batch::Store::default(),
        };
        let t0 = Instant::now();
        assert_eq!(shared.over_rpm_limit("a", t0), None);
        assert_eq!(shared.over_rpm_limit("a", t0), None);
        // The third in the same minute waits for the window to end.
        assert_eq!(shared.over_rpm_limit("a", t0), Some(60));
        assert_eq!(
            shared.over_rpm_limit("a", t0 + Duration::from_millis(59_500)),
            Some(1)
        );
        // Another key has its own budget.
        assert_eq!(shared.over_rpm_limit("b", t0), None);
        // A new minute, a new budget.
        assert_eq!(shared.over_rpm_limit("a", t0 + RPM_WINDOW), None);
        // Requests are counted in the second they arrived.
        let start = shared.started;
        for at in [start, start, start + Duration::from_millis(2500)] {
            shared.count_second(at);
        }
        assert_eq!(*shared.per_second.lock().unwrap(), vec![2, 0, 1]);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let config = MockConfig::default()
            .with_latency(Duration::from_millis(10))
            .with_jitter(Duration::from_millis(20));
        let mut rng = Rng::for_request(0, 0);
        for _ in 0..1000 {
            assert!(delay(&config, &mut rng) <= Duration::from_millis(30));
        }
    }
}
