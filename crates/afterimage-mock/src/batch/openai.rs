//! OpenAI's Batch API: `POST /v1/files` (multipart), `GET /v1/files/{id}[/content]`,
//! `POST /v1/batches`, `GET /v1/batches[/{id}]`, `POST /v1/batches/{id}/cancel`.

use std::collections::HashSet;

use hyper::StatusCode;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::store::{Batch, End, File, NewBatch, Outcome, Protocol, Stage};
use super::{Ctx, bad_request, jsonl, not_found};
use crate::server::{Answer, Refusal, read_bytes, read_json};

/// The only endpoint the mock batches.
const ENDPOINT: &str = "/v1/chat/completions";
/// OpenAI's per-batch request limit.
const MAX_REQUESTS: usize = 50_000;
const DAY: u64 = 86_400;

/// `POST /v1/files`: a multipart upload with a `file` and a `purpose` field.
pub(super) async fn upload(ctx: &Ctx<'_>, body: Incoming) -> Result<Answer, Refusal> {
    let bytes = read_bytes(body).await?;
    let boundary = ctx
        .content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_string())
        .ok_or_else(|| bad_request("Upload the file as multipart/form-data with a boundary."))?;
    let mut file = None;
    let mut purpose = String::new();
    for part in multipart(&bytes, &boundary) {
        match part.name.as_str() {
            "file" => file = Some((part.filename.unwrap_or_default(), part.body.to_vec())),
            "purpose" => purpose = String::from_utf8_lossy(part.body).into_owned(),
            _ => {}
        }
    }
    let (filename, content) =
        file.ok_or_else(|| bad_request("The multipart body has no 'file' field."))?;
    if purpose != "batch" {
        return Err(bad_request(format!(
            "This mock accepts only purpose 'batch' (got '{purpose}')."
        )));
    }
    let mut inner = ctx.shared.batches.lock();
    let id = inner.new_id("file-");
    let file = File {
        key: ctx.key.clone(),
        filename,
        purpose,
        bytes: content,
        created_at: ctx.unix,
    };
    let object = file_object(&id, &file);
    inner.files.insert(id, file);
    Ok(Answer::json(StatusCode::OK, &object))
}

/// One part of a multipart body.
struct Part<'a> {
    name: String,
    filename: Option<String>,
    body: &'a [u8],
}

/// The parts of a `multipart/form-data` body: enough for one file and a few fields.
fn multipart<'a>(body: &'a [u8], boundary: &str) -> Vec<Part<'a>> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let chunks = split(body, delimiter.as_bytes()).into_iter().skip(1);
    for chunk in chunks {
        if chunk.starts_with(b"--") {
            break;
        }
        let chunk = chunk.strip_prefix(b"\r\n").unwrap_or(chunk);
        let Some(end) = find(chunk, b"\r\n\r\n") else {
            continue;
        };
        let headers = String::from_utf8_lossy(&chunk[..end]);
        let content = &chunk[end + 4..];
        let content = content.strip_suffix(b"\r\n").unwrap_or(content);
        let attribute = |name: &str| {
            let pattern = format!("{name}=\"");
            let start = headers.find(&pattern)? + pattern.len();
            let len = headers[start..].find('"')?;
            Some(headers[start..start + len].to_string())
        };
        if let Some(name) = attribute(" name").or_else(|| attribute(";name")) {
            parts.push(Part {
                name,
                filename: attribute("filename"),
                body: content,
            });
        }
    }
    parts
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn split<'a>(mut body: &'a [u8], delimiter: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(at) = find(body, delimiter) {
        out.push(&body[..at]);
        body = &body[at + delimiter.len()..];
    }
    out.push(body);
    out
}

fn file_object(id: &str, file: &File) -> Value {
    json!({
        "id": id, "object": "file", "bytes": file.bytes.len(),
        "created_at": file.created_at, "filename": file.filename,
        "purpose": file.purpose, "status": "processed",
        "expires_at": file.created_at + 30 * DAY,
    })
}

/// `GET /v1/files/{id}` (the object) or `/content` (the bytes).
pub(super) fn file(ctx: &Ctx<'_>, id: &str, content: bool) -> Result<Answer, Refusal> {
    let inner = ctx.shared.batches.lock();
    let file = inner
        .files
        .get(id)
        .filter(|f| !ctx.pin() || f.key == ctx.key)
        .ok_or_else(|| not_found(id))?;
    Ok(if content {
        Answer::bytes(StatusCode::OK, "application/jsonl", file.bytes.clone())
    } else {
        Answer::json(StatusCode::OK, &file_object(id, file))
    })
}

/// `POST /v1/batches`: validates the input file's lines now; a batch that fails
/// validation says so once its first phase is over.
pub(super) async fn create(ctx: &Ctx<'_>, body: Incoming) -> Result<Answer, Refusal> {
    let body = read_json(body).await?;
    let text = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or_default();
    let (file_id, endpoint) = (text("input_file_id"), text("endpoint"));
    if endpoint != ENDPOINT {
        return Err(bad_request(format!(
            "This mock batches only endpoint '{ENDPOINT}' (got '{endpoint}')."
        )));
    }
    if text("completion_window") != "24h" {
        return Err(bad_request("completion_window must be '24h'."));
    }
    let metadata = body.get("metadata").cloned().unwrap_or(Value::Null);
    check_metadata(&metadata)?;
    let mut inner = ctx.shared.batches.lock();
    let file = inner
        .files
        .get(file_id)
        .filter(|f| !ctx.pin() || f.key == ctx.key)
        .ok_or_else(|| not_found(file_id))?;
    let (requests, model, mut errors) = parse_input(&file.bytes);
    let max = ctx.max_requests(MAX_REQUESTS);
    if requests.len() > max {
        let message = format!("A batch holds at most {max} requests.");
        push_error(&mut errors, 0, "too_many_requests", message);
    }
    let new = NewBatch {
        protocol: Protocol::OpenAi,
        key: ctx.key.clone(),
        model,
        metadata,
        input_file_id: file_id.to_string(),
        requests,
        errors,
    };
    let index = inner.create(new, &ctx.shared.config, ctx.unix);
    let batch = &inner.batches[index];
    Ok(Answer::json(
        StatusCode::OK,
        &object(batch, batch.stage(ctx.now)),
    ))
}

/// OpenAI's metadata rules: up to 16 string pairs, keys up to 64 characters, values
/// up to 512.
fn check_metadata(metadata: &Value) -> Result<(), Refusal> {
    let pairs = match metadata {
        Value::Null => return Ok(()),
        Value::Object(pairs) => pairs,
        _ => return Err(bad_request("metadata must be an object of strings.")),
    };
    let fits = pairs.len() <= 16
        && pairs.iter().all(|(k, v)| {
            k.chars().count() <= 64 && v.as_str().is_some_and(|v| v.chars().count() <= 512)
        });
    if fits {
        Ok(())
    } else {
        Err(bad_request(
            "metadata holds at most 16 pairs of strings, keys up to 64 characters and values up to 512.",
        ))
    }
}

type Requests = Vec<(String, Value, Value)>;

/// The input lines, the one model they use, and what fails validation.
fn parse_input(bytes: &[u8]) -> (Requests, String, Vec<Value>) {
    let (mut requests, mut errors, mut ids, mut model) =
        (Vec::new(), Vec::new(), HashSet::new(), None::<String>);
    let text = String::from_utf8_lossy(bytes);
    for (i, raw) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line = i + 1;
        let Ok(value) = serde_json::from_str::<Value>(raw) else {
            push_error(
                &mut errors,
                line,
                "invalid_json_line",
                "This line is not valid JSON.".into(),
            );
            continue;
        };
        let Some(custom_id) = value.get("custom_id").and_then(Value::as_str) else {
            push_error(
                &mut errors,
                line,
                "missing_required_parameter",
                "custom_id is missing.".into(),
            );
            continue;
        };
        if !ids.insert(custom_id.to_string()) {
            let message = format!("The custom_id '{custom_id}' is used more than once.");
            push_error(&mut errors, line, "duplicate_custom_id", message);
        }
        if value.get("url").and_then(Value::as_str) != Some(ENDPOINT)
            || value.get("method").and_then(Value::as_str) != Some("POST")
        {
            let message = format!("The line must be a POST to '{ENDPOINT}'.");
            push_error(&mut errors, line, "invalid_url", message);
        }
        let body = value.get("body").cloned().unwrap_or(Value::Null);
        let line_model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match &model {
            None => model = Some(line_model.to_string()),
            Some(m) if m != line_model => {
                let message = "A batch's requests must all use one model.".to_string();
                push_error(&mut errors, line, "mismatched_model", message);
            }
            Some(_) => {}
        }
        requests.push((custom_id.to_string(), body, Value::Null));
    }
    if requests.is_empty() && errors.is_empty() {
        push_error(
            &mut errors,
            0,
            "empty_file",
            "The input file has no requests.".into(),
        );
    }
    (requests, model.unwrap_or_default(), errors)
}

fn push_error(errors: &mut Vec<Value>, line: usize, code: &str, message: String) {
    errors.push(json!({"code": code, "line": line, "message": message, "param": null}));
}

/// `GET /v1/batches/{id}`.
pub(super) fn get(ctx: &Ctx<'_>, id: &str) -> Result<Answer, Refusal> {
    let mut inner = ctx.shared.batches.lock();
    let (index, stage) = ctx.settle(&mut inner, id)?;
    write_files(&mut inner, index, ctx.unix);
    Ok(Answer::json(
        StatusCode::OK,
        &object(&inner.batches[index], stage),
    ))
}

/// `POST /v1/batches/{id}/cancel`.
pub(super) fn cancel(ctx: &Ctx<'_>, id: &str) -> Result<Answer, Refusal> {
    let mut inner = ctx.shared.batches.lock();
    let (index, _) = ctx.settle(&mut inner, id)?;
    let batch = &mut inner.batches[index];
    if !batch.cancel(ctx.now, ctx.unix) {
        let status = status(batch.stage(ctx.now));
        return Err(bad_request(format!(
            "Cannot cancel a batch with status '{status}'."
        )));
    }
    Ok(Answer::json(
        StatusCode::OK,
        &object(batch, batch.stage(ctx.now)),
    ))
}

/// `GET /v1/batches?after=&limit=`: newest first.
pub(super) fn list(ctx: &Ctx<'_>) -> Result<Answer, Refusal> {
    let limit = ctx.limit("limit", 20, 100);
    let mut inner = ctx.shared.batches.lock();
    let visible: Vec<usize> = (0..inner.batches.len())
        .rev()
        .filter(|&i| {
            let b = &inner.batches[i];
            b.protocol == Protocol::OpenAi && (!ctx.pin() || b.key == ctx.key)
        })
        .collect();
    let start = match ctx.param("after") {
        Some(after) => visible
            .iter()
            .position(|&i| inner.batches[i].id == after)
            .map_or(visible.len(), |p| p + 1),
        None => 0,
    };
    let page: Vec<usize> = visible.iter().skip(start).take(limit).copied().collect();
    let mut data = Vec::new();
    for &i in &page {
        let stage = ctx.settle_at(&mut inner, i);
        write_files(&mut inner, i, ctx.unix);
        data.push(object(&inner.batches[i], stage));
    }
    let id_at = |p: Option<&usize>| p.map(|&i| inner.batches[i].id.clone());
    let body = json!({
        "object": "list", "data": data,
        "first_id": id_at(page.first()), "last_id": id_at(page.last()),
        "has_more": start + page.len() < visible.len(),
    });
    Ok(Answer::json(StatusCode::OK, &body))
}

fn status(stage: Stage) -> &'static str {
    match stage {
        Stage::Queued => "validating",
        Stage::Running(_) => "in_progress",
        Stage::Finalizing => "finalizing",
        Stage::Cancelling => "cancelling",
        Stage::Ended(End::Completed) => "completed",
        Stage::Ended(End::Failed) => "failed",
        Stage::Ended(End::Expired) => "expired",
        Stage::Ended(End::Cancelled) => "cancelled",
    }
}

/// The Batch object.
fn object(batch: &Batch, stage: Stage) -> Value {
    let n = batch.lines.len();
    let (completed, failed) = match stage {
        Stage::Running(done) => (done, 0),
        Stage::Finalizing => (n, 0),
        _ => batch
            .results()
            .iter()
            .fold((0, 0), |(c, f), (_, o)| match o {
                Outcome::Ok(_) | Outcome::Missing => (c + 1, f),
                _ => (c, f + 1),
            }),
    };
    let failed_validation = matches!(stage, Stage::Ended(End::Failed));
    let errors = match &batch.fate {
        super::store::Fate::Fail(errors) if failed_validation => {
            json!({"object": "list", "data": errors})
        }
        _ => Value::Null,
    };
    let past = |ok: bool, k: u32| ok.then(|| batch.phase_at(k));
    let ran = !matches!(stage, Stage::Queued) && !failed_validation;
    let ended = |end: End| past(stage == Stage::Ended(end), 3);
    json!({
        "id": batch.id, "object": "batch", "endpoint": ENDPOINT, "model": batch.model,
        "errors": errors, "input_file_id": batch.input_file_id, "completion_window": "24h",
        "status": status(stage),
        "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
        "created_at": batch.created_at, "in_progress_at": past(ran, 1),
        "expires_at": batch.created_at + DAY,
        "finalizing_at": past(matches!(stage, Stage::Finalizing | Stage::Ended(End::Completed)), 2),
        "completed_at": ended(End::Completed),
        "failed_at": past(failed_validation, 1), "expired_at": ended(End::Expired),
        "cancelling_at": batch.cancelled_at, "cancelled_at": ended(End::Cancelled),
        "request_counts": {"total": n, "completed": completed, "failed": failed},
        "metadata": batch.metadata,
    })
}

/// Writes an ended batch's output and error files, once.
fn write_files(inner: &mut super::store::Inner, index: usize, unix: u64) {
    let Some(batch) = inner.batches.get(index) else {
        return;
    };
    if batch.files_written || batch.outcomes.is_none() {
        return;
    }
    let expired = batch.stage(std::time::Instant::now()) == Stage::Ended(End::Expired);
    let (mut output, mut errors) = (Vec::new(), Vec::new());
    for (n, (line, outcome)) in batch.results().into_iter().enumerate() {
        let id = format!("batch_req_{}_{n}", batch.id.trim_start_matches("batch_"));
        let response = |status: StatusCode, body: Value| json!({"status_code": status.as_u16(), "request_id": format!("req_{n}"), "body": body});
        let error_line = |status: StatusCode, message: &str| {
            let body = crate::openai::error(status, message);
            json!({"id": id, "custom_id": line.custom_id, "response": response(status, body), "error": null})
        };
        match outcome {
            Outcome::Ok(body) => output.push(json!({
                "id": id, "custom_id": line.custom_id,
                "response": response(StatusCode::OK, body.clone()), "error": null,
            })),
            Outcome::Retryable { server: false } => errors.push(error_line(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit reached (injected by afterimage-mock).",
            )),
            Outcome::Retryable { server: true } => errors.push(error_line(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error (injected by afterimage-mock).",
            )),
            Outcome::Permanent(message) => {
                errors.push(error_line(StatusCode::BAD_REQUEST, message));
            }
            Outcome::NoCredit => {
                let status = StatusCode::TOO_MANY_REQUESTS;
                let body = json!({"error": {"message": "You exceeded your current quota, please check your plan and billing details.", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}});
                errors.push(json!({"id": id, "custom_id": line.custom_id, "response": response(status, body), "error": null}));
            }
            Outcome::Missing => {}
            Outcome::Unfinished => {
                let (code, message) = if expired {
                    (
                        "batch_expired",
                        "This request could not be executed before the completion window expired.",
                    )
                } else {
                    (
                        "batch_cancelled",
                        "This request was not executed because the batch was cancelled.",
                    )
                };
                errors.push(json!({
                    "id": id, "custom_id": line.custom_id, "response": null,
                    "error": {"code": code, "message": message},
                }));
            }
        }
    }
    let key = batch.key.clone();
    let store = |lines: Vec<Value>, inner: &mut super::store::Inner| {
        (!lines.is_empty()).then(|| {
            let id = inner.new_id("file-");
            let file = File {
                key: key.clone(),
                filename: "batch_output.jsonl".to_string(),
                purpose: "batch_output".to_string(),
                bytes: jsonl(lines),
                created_at: unix,
            };
            inner.files.insert(id.clone(), file);
            id
        })
    };
    let output_id = store(output, inner);
    let error_id = store(errors, inner);
    if let Some(batch) = inner.batches.get_mut(index) {
        batch.output_file_id = output_id;
        batch.error_file_id = error_id;
        batch.files_written = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_finds_the_file_and_the_purpose() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\
Content-Type: application/jsonl\r\n\r\n{\"a\":1}\n{\"b\":2}\n\r\n--XyZ--\r\n";
        let parts = multipart(body, "XyZ");
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].name.as_str(), parts[0].body),
            ("purpose", &b"batch"[..])
        );
        assert_eq!(parts[1].filename.as_deref(), Some("in.jsonl"));
        assert_eq!(parts[1].body, b"{\"a\":1}\n{\"b\":2}\n");
    }

    #[test]
    fn input_validation_names_the_line() {
        let input =
            br#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}
{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"n"}}
not json
"#;
        let (requests, model, errors) = parse_input(input);
        assert_eq!((requests.len(), model.as_str()), (2, "m"));
        let codes: Vec<(&str, u64)> = errors
            .iter()
            .map(|e| (e["code"].as_str().unwrap(), e["line"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            codes,
            [
                ("duplicate_custom_id", 2),
                ("mismatched_model", 2),
                ("invalid_json_line", 3)
            ]
        );
    }
}
