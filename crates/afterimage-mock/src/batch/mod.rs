//! The three batch protocols: OpenAI files + batches, Anthropic Message Batches and
//! Gemini `batchGenerateContent`, on a clock of [`crate::MockConfig::batch_phase`]
//! phases, each line answered as the synchronous endpoint would answer it.

mod anthropic;
mod gemini;
mod openai;
mod stall;
mod store;

use std::time::Instant;

use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::server::{Answer, Dialect, Refusal, Shared, answer_line, error_answer, unix_now};
pub use stall::BatchStall;
use store::{Inner, Stage};
pub(crate) use store::{Protocol, Store};

/// A batch endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    OpenAiUpload,
    OpenAiFile(String),
    OpenAiFileContent(String),
    OpenAiCreate,
    OpenAiList,
    OpenAiGet(String),
    OpenAiCancel(String),
    AnthropicCreate,
    AnthropicList,
    AnthropicGet(String),
    AnthropicCancel(String),
    AnthropicResults(String),
    GeminiCreate(String),
    GeminiList,
    GeminiGet(String),
    GeminiCancel(String),
    GeminiUpload,
    GeminiFile(String),
    GeminiDownload(String),
    OpenAiDeleteFile(String),
    AnthropicDelete(String),
    GeminiDelete(String),
    GeminiDeleteFile(String),
}

impl Route {
    /// The batch route of `path`, if it is one.
    pub(crate) fn parse(method: &Method, path: &str) -> Option<Route> {
        if path == "/upload/v1beta/files" {
            return (method == Method::POST).then_some(Route::GeminiUpload);
        }
        if let Some(rest) = path.strip_prefix("/download/v1beta/files/") {
            let id = rest
                .strip_suffix(":download")
                .filter(|id| !id.contains('/'))?;
            return (method == Method::GET).then(|| Route::GeminiDownload(format!("files/{id}")));
        }
        if let Some(rest) = path.strip_prefix("/v1beta") {
            return Route::gemini(method, rest);
        }
        let rest = path.strip_prefix("/v1").unwrap_or(path);
        let post = method == Method::POST;
        let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        let id = |s: &str| s.to_string();
        if method == Method::DELETE {
            return match segments.as_slice() {
                ["files", f] => Some(Route::OpenAiDeleteFile(id(f))),
                ["messages", "batches", b] => Some(Route::AnthropicDelete(id(b))),
                _ => None,
            };
        }
        Some(match (post, segments.as_slice()) {
            (true, ["files"]) => Route::OpenAiUpload,
            (false, ["files", f]) => Route::OpenAiFile(id(f)),
            (false, ["files", f, "content"]) => Route::OpenAiFileContent(id(f)),
            (true, ["batches"]) => Route::OpenAiCreate,
            (false, ["batches"]) => Route::OpenAiList,
            (false, ["batches", b]) => Route::OpenAiGet(id(b)),
            (true, ["batches", b, "cancel"]) => Route::OpenAiCancel(id(b)),
            (true, ["messages", "batches"]) => Route::AnthropicCreate,
            (false, ["messages", "batches"]) => Route::AnthropicList,
            (false, ["messages", "batches", b]) => Route::AnthropicGet(id(b)),
            (true, ["messages", "batches", b, "cancel"]) => Route::AnthropicCancel(id(b)),
            (false, ["messages", "batches", b, "results"]) => Route::AnthropicResults(id(b)),
            _ => return None,
        })
        .filter(|_| method == Method::GET || post)
    }

    fn gemini(method: &Method, rest: &str) -> Option<Route> {
        let post = method == Method::POST;
        if let Some(model) = rest
            .strip_prefix("/models/")
            .and_then(|m| m.strip_suffix(":batchGenerateContent"))
        {
            return (post && !model.is_empty() && !model.contains('/'))
                .then(|| Route::GeminiCreate(model.to_string()));
        }
        if let Some(id) = rest.strip_prefix("/files/") {
            if id.is_empty() || id.contains('/') {
                return None;
            }
            let name = format!("files/{id}");
            return match *method {
                Method::GET => Some(Route::GeminiFile(name)),
                Method::DELETE => Some(Route::GeminiDeleteFile(name)),
                _ => None,
            };
        }
        if rest == "/batches" {
            return (method == Method::GET).then_some(Route::GeminiList);
        }
        let name = rest.strip_prefix("/batches/")?;
        if name.is_empty() || name.contains('/') {
            return None;
        }
        if method == Method::DELETE {
            return Some(Route::GeminiDelete(format!("batches/{name}")));
        }
        match (post, name.strip_suffix(":cancel")) {
            (true, Some(id)) => Some(Route::GeminiCancel(format!("batches/{id}"))),
            (false, None) if method == Method::GET => {
                Some(Route::GeminiGet(format!("batches/{name}")))
            }
            _ => None,
        }
    }

    /// The wire format of this route's errors.
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Route::AnthropicCreate
            | Route::AnthropicList
            | Route::AnthropicGet(_)
            | Route::AnthropicCancel(_)
            | Route::AnthropicResults(_)
            | Route::AnthropicDelete(_) => Dialect::Anthropic,
            Route::GeminiCreate(_)
            | Route::GeminiList
            | Route::GeminiGet(_)
            | Route::GeminiCancel(_)
            | Route::GeminiUpload
            | Route::GeminiFile(_)
            | Route::GeminiDownload(_)
            | Route::GeminiDelete(_)
            | Route::GeminiDeleteFile(_) => Dialect::Gemini,
            _ => Dialect::OpenAi,
        }
    }
}

/// What a batch handler needs besides the body.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    shared: &'a Shared,
    key: String,
    query: String,
    host: String,
    content_type: String,
    /// Gemini's `X-Goog-Upload-Command`.
    upload_command: String,
    now: Instant,
    unix: u64,
}

impl Ctx<'_> {
    /// Whether batches are pinned to the key that created them.
    fn pin(&self) -> bool {
        self.shared.config.batch_pin_keys
    }

    /// A query parameter.
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    }

    /// The `limit`-style parameter `name`, clamped to `1..=max` and to
    /// [`crate::MockConfig::batch_list_page`].
    fn limit(&self, name: &str, default: usize, max: usize) -> usize {
        let max = self
            .shared
            .config
            .batch_list_page
            .map_or(max, |m| m.min(max));
        self.param(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
            .clamp(1, max.max(1))
    }

    /// The most requests a batch may hold under `provider_max`.
    fn max_requests(&self, provider_max: usize) -> usize {
        self.shared
            .config
            .batch_max_requests
            .map_or(provider_max, |m| m.min(provider_max))
    }

    /// The batch `id` as seen by this key, settling its results if it has ended.
    fn settle(&self, inner: &mut Inner, id: &str) -> Result<(usize, Stage), Refusal> {
        let index = inner
            .find(id, &self.key, self.pin())
            .ok_or_else(|| not_found(id))?;
        if inner.batches[index].age(self.now) < self.shared.config.batch_hidden_for {
            return Err(not_found(id));
        }
        let stage = self.settle_at(inner, index);
        Ok((index, stage))
    }

    /// Settles batch `index`, counting the lines answered.
    fn settle_at(&self, inner: &mut Inner, index: usize) -> Stage {
        let shared = self.shared;
        let Some(batch) = inner.batches.get_mut(index) else {
            return Stage::Queued;
        };
        let (protocol, model) = (batch.protocol, batch.model.clone());
        let (stage, answered) = batch.settle(self.now, &mut |line, _| {
            answer_line(shared, protocol, &model, &line.body)
        });
        let credit = shared.config.batch_credit;
        let paid = credit.map_or(answered, |c| answered.min(c.saturating_sub(inner.answered)));
        if paid < answered {
            batch.refuse_beyond(paid);
        }
        inner.answered += paid;
        stage
    }
}

/// 404 for a batch or file this key cannot see.
fn not_found(id: &str) -> Refusal {
    (
        StatusCode::NOT_FOUND,
        format!(
            "No batch or file found with id '{id}' (batches are visible only to the API key that created them)."
        ),
    )
}

/// 400 with `message`.
fn bad_request(message: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, message.into())
}

/// Answers a batch route, hanging first (or after a create) while
/// [`crate::MockServer::stall_batches`] stalls its point.
pub(crate) async fn handle(shared: &Shared, route: Route, parts: &Parts, body: Incoming) -> Answer {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let upload_command = header("x-goog-upload-command");
    let stall = &shared.batches.stall;
    let before = BatchStall::before(&route, &upload_command);
    if stall.wait(before).await && before.is_some_and(BatchStall::writes) {
        // Released after its client was killed: a request held before it changed
        // anything never does, so a crash test knows no batch or file came of it.
        let message = "the mock released this request from a stall before handling it";
        return error_answer(route.dialect(), StatusCode::SERVICE_UNAVAILABLE, message, 1);
    }
    // Read the clock after a stall, so a released poll sees the batch as it is now.
    let ctx = Ctx {
        shared,
        key: crate::server::request_key(parts).to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        host: header("host"),
        content_type: header("content-type"),
        upload_command,
        now: Instant::now(),
        unix: unix_now(),
    };
    let after = BatchStall::after(&route);
    let answer = dispatch(&ctx, route, body).await;
    let _hung = stall.wait(after).await;
    answer
}

/// Answers a batch route, or with its error.
async fn dispatch(ctx: &Ctx<'_>, route: Route, body: Incoming) -> Answer {
    let dialect = route.dialect();
    let result = match route {
        Route::OpenAiUpload => openai::upload(ctx, body).await,
        Route::OpenAiFile(id) => openai::file(ctx, &id, false),
        Route::OpenAiFileContent(id) => openai::file(ctx, &id, true),
        Route::OpenAiCreate => openai::create(ctx, body).await,
        Route::OpenAiList => openai::list(ctx),
        Route::OpenAiGet(id) => openai::get(ctx, &id),
        Route::OpenAiCancel(id) => openai::cancel(ctx, &id),
        Route::AnthropicCreate => anthropic::create(ctx, body).await,
        Route::AnthropicList => anthropic::list(ctx),
        Route::AnthropicGet(id) => anthropic::get(ctx, &id),
        Route::AnthropicCancel(id) => anthropic::cancel(ctx, &id),
        Route::AnthropicResults(id) => anthropic::results(ctx, &id),
        Route::GeminiCreate(model) => gemini::create(ctx, &model, body).await,
        Route::GeminiList => gemini::list(ctx),
        Route::GeminiGet(id) => gemini::get(ctx, &id),
        Route::GeminiCancel(id) => gemini::cancel(ctx, &id),
        Route::GeminiUpload => gemini::upload(ctx, body).await,
        Route::GeminiFile(id) => gemini::file(ctx, &id, false),
        Route::GeminiDownload(id) => gemini::file(ctx, &id, true),
        Route::OpenAiDeleteFile(id) => delete_file(ctx, &id, Dialect::OpenAi),
        Route::GeminiDeleteFile(id) => delete_file(ctx, &id, Dialect::Gemini),
        Route::AnthropicDelete(id) => delete_batch(ctx, &id, Dialect::Anthropic),
        Route::GeminiDelete(id) => delete_batch(ctx, &id, Dialect::Gemini),
    };
    result.unwrap_or_else(|(status, message)| error_answer(dialect, status, &message, 1))
}

/// `DELETE /v1/files/{id}` or `/v1beta/files/{id}`, counted; the file is gone
/// (404) afterwards.
fn delete_file(ctx: &Ctx<'_>, id: &str, dialect: Dialect) -> Result<Answer, Refusal> {
    let mut inner = ctx.shared.batches.lock();
    let visible = inner
        .files
        .get(id)
        .is_some_and(|f| !ctx.pin() || f.key == ctx.key);
    if !visible {
        return Err(not_found(id));
    }
    inner.files.remove(id);
    inner.files_deleted += 1;
    let body = match dialect {
        Dialect::OpenAi => serde_json::json!({"id": id, "object": "file", "deleted": true}),
        _ => serde_json::json!({}),
    };
    Ok(Answer::json(StatusCode::OK, &body))
}

/// `DELETE` of an Anthropic message batch (only once ended) or a Gemini batch job.
fn delete_batch(ctx: &Ctx<'_>, id: &str, dialect: Dialect) -> Result<Answer, Refusal> {
    let mut inner = ctx.shared.batches.lock();
    let (index, stage) = ctx.settle(&mut inner, id)?;
    if dialect == Dialect::Anthropic && !matches!(stage, Stage::Ended(_)) {
        return Err(bad_request(format!(
            "Batch {id} is still processing; cancel it and delete it once it has ended."
        )));
    }
    inner.batches.remove(index);
    let body = match dialect {
        Dialect::Anthropic => serde_json::json!({"id": id, "type": "message_batch_deleted"}),
        _ => serde_json::json!({}),
    };
    Ok(Answer::json(StatusCode::OK, &body))
}

/// Values as JSON Lines.
fn jsonl(values: impl IntoIterator<Item = Value>) -> Vec<u8> {
    let mut out = Vec::new();
    for value in values {
        // Writing a `Value` into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut out, &value);
        out.push(b'\n');
    }
    out
}

/// Unix seconds as RFC 3339 UTC (`2024-09-24T18:37:24Z`).
fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Days to civil date (proleptic Gregorian), by eras of 400 years.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let (get, post) = (Method::GET, Method::POST);
        assert_eq!(Route::parse(&post, "/v1/files"), Some(Route::OpenAiUpload));
        assert_eq!(
            Route::parse(&get, "/v1/files/f1/content"),
            Some(Route::OpenAiFileContent("f1".into()))
        );
        assert_eq!(
            Route::parse(&post, "/v1/batches/b1/cancel"),
            Some(Route::OpenAiCancel("b1".into()))
        );
        assert_eq!(
            Route::parse(&get, "/v1/messages/batches/m1/results"),
            Some(Route::AnthropicResults("m1".into()))
        );
        assert_eq!(
            Route::parse(&post, "/v1beta/models/g:batchGenerateContent"),
            Some(Route::GeminiCreate("g".into()))
        );
        assert_eq!(
            Route::parse(&post, "/v1beta/batches/x:cancel"),
            Some(Route::GeminiCancel("batches/x".into()))
        );
        assert_eq!(
            Route::parse(&get, "/v1beta/batches/x"),
            Some(Route::GeminiGet("batches/x".into()))
        );
        assert_eq!(
            Route::parse(&get, "/download/v1beta/files/abc:download"),
            Some(Route::GeminiDownload("files/abc".into()))
        );
        assert_eq!(
            Route::parse(&post, "/upload/v1beta/files"),
            Some(Route::GeminiUpload)
        );
        // The synchronous routes stay theirs.
        assert_eq!(Route::parse(&post, "/v1/messages"), None);
        assert_eq!(Route::parse(&post, "/v1/chat/completions"), None);
        assert_eq!(
            Route::parse(&post, "/v1beta/models/g:generateContent"),
            None
        );
        assert_eq!(Route::parse(&Method::DELETE, "/v1/batches"), None);
        assert_eq!(
            Route::parse(&Method::DELETE, "/v1/files/f1"),
            Some(Route::OpenAiDeleteFile("f1".into()))
        );
        assert_eq!(
            Route::parse(&Method::DELETE, "/v1beta/files/f"),
            Some(Route::GeminiDeleteFile("files/f".into()))
        );
        assert_eq!(
            Route::parse(&Method::DELETE, "/v1beta/batches/x"),
            Some(Route::GeminiDelete("batches/x".into()))
        );
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_727_203_044), "2024-09-24T18:37:24Z");
    }
}
