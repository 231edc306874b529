//! Gemini's batch mode: `POST /v1beta/models/{model}:batchGenerateContent` (inline
//! requests or an uploaded JSONL file), `GET /v1beta/batches[/{id}]`,
//! `POST /v1beta/batches/{id}:cancel`, and the Files API pieces a file batch needs
//! (resumable `POST /upload/v1beta/files`, `GET` and `DELETE /v1beta/files/{id}`,
//! `GET /download/v1beta/files/{id}:download`).

use hyper::StatusCode;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::store::{Batch, End, Fate, File, Inner, NewBatch, Outcome, Protocol, Stage};
use super::{Ctx, bad_request, jsonl, not_found, rfc3339};
use crate::server::{Answer, Refusal, read_bytes, read_json};

const BATCH_TYPE: &str =
    "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch";
const OUTPUT_TYPE: &str =
    "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput";

/// A camelCase field or its snake_case spelling (both are accepted on the wire).
fn field<'a>(value: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    value.get(camel).or_else(|| value.get(snake))
}

/// `POST /v1beta/models/{model}:batchGenerateContent` with inline requests.
pub(super) async fn create(ctx: &Ctx<'_>, model: &str, body: Incoming) -> Result<Answer, Refusal> {
    let body = read_json(body).await?;
    let batch = body
        .get("batch")
        .ok_or_else(|| bad_request("The body must hold a 'batch' object."))?;
    let input = field(batch, "inputConfig", "input_config")
        .ok_or_else(|| bad_request("batch.input_config is required."))?;
    let (requests, input_file_id, errors) = match field(input, "fileName", "file_name") {
        Some(name) => {
            let name = name.as_str().unwrap_or_default();
            let inner = ctx.shared.batches.lock();
            let file = inner
                .files
                .get(name)
                .filter(|f| f.purpose == "batch" && (!ctx.pin() || f.key == ctx.key))
                .ok_or_else(|| not_found(name))?;
            let (requests, errors) = file_requests(&file.bytes);
            (requests, name.to_string(), errors)
        }
        None => (inline_requests(input)?, String::new(), Vec::new()),
    };
    let max = ctx.max_requests(usize::MAX);
    if requests.len() > max {
        return Err(bad_request(format!(
            "A batch holds at most {max} requests here (afterimage-mock batch_max_requests)."
        )));
    }
    let display_name = field(batch, "displayName", "display_name")
        .cloned()
        .unwrap_or(Value::Null);
    let new = NewBatch {
        protocol: Protocol::Gemini,
        key: ctx.key.clone(),
        model: model.trim_start_matches("models/").to_string(),
        metadata: display_name,
        input_file_id,
        requests,
        errors,
    };
    let mut inner = ctx.shared.batches.lock();
    let index = inner.create(new, &ctx.shared.config, ctx.unix);
    let batch = &inner.batches[index];
    Ok(Answer::json(
        StatusCode::OK,
        &operation(ctx, batch, batch.stage(ctx.now)),
    ))
}

type Requests = Vec<(String, Value, Value)>;

/// `input_config.requests.requests[{request, metadata}]`; the key is `metadata.key`.
fn inline_requests(input: &Value) -> Result<Requests, Refusal> {
    let requests = input
        .pointer("/requests/requests")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            bad_request(
                "batch.input_config needs requests.requests (a non-empty array) or file_name.",
            )
        })?;
    Ok(requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let metadata = r.get("metadata").cloned().unwrap_or(Value::Null);
            let key = metadata
                .get("key")
                .and_then(Value::as_str)
                .map_or_else(|| i.to_string(), str::to_string);
            let request = r.get("request").cloned().unwrap_or(Value::Null);
            (key, request, metadata)
        })
        .collect())
}

/// The lines `{key, request}` of an uploaded input file, and what fails validation.
fn file_requests(bytes: &[u8]) -> (Requests, Vec<Value>) {
    let (mut requests, mut errors) = (Vec::new(), Vec::new());
    let text = String::from_utf8_lossy(bytes);
    for (i, raw) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let value = serde_json::from_str::<Value>(raw).ok();
        match value.as_ref().and_then(|v| Some((v.get("key")?.as_str()?, v.get("request")?))) {
            Some((key, request)) => requests.push((key.to_string(), request.clone(), json!({"key": key}))),
            None => errors.push(json!({
                "line": i + 1,
                "message": format!("Line {} of the input file is not a JSON object with 'key' and 'request'.", i + 1),
            })),
        }
    }
    if requests.is_empty() && errors.is_empty() {
        errors.push(json!({"line": 0, "message": "The input file has no requests."}));
    }
    (requests, errors)
}

/// `POST /upload/v1beta/files`, resumable: `start` answers the upload URL in
/// `x-goog-upload-url`; `upload, finalize` to it stores the bytes.
pub(super) async fn upload(ctx: &Ctx<'_>, body: Incoming) -> Result<Answer, Refusal> {
    let command = ctx.upload_command.to_ascii_lowercase();
    if command.contains("start") {
        let start = read_json(body).await.unwrap_or(Value::Null);
        let display = start
            .pointer("/file/display_name")
            .or_else(|| start.pointer("/file/displayName"))
            .and_then(Value::as_str)
            .unwrap_or("upload.jsonl");
        let mut inner = ctx.shared.batches.lock();
        let name = inner.new_id("files/");
        let url = format!(
            "http://{}/upload/v1beta/files?upload_id={}",
            ctx.host,
            name.trim_start_matches("files/")
        );
        let file = File {
            key: ctx.key.clone(),
            filename: display.to_string(),
            purpose: "pending".to_string(),
            bytes: Vec::new(),
            created_at: ctx.unix,
        };
        inner.files.insert(name, file);
        return Ok(Answer::json(StatusCode::OK, &json!({})).with_header("x-goog-upload-url", url));
    }
    if !command.contains("upload") {
        return Err(bad_request(
            "Send X-Goog-Upload-Command: start, then upload, finalize to the URL it returns.",
        ));
    }
    let name = format!("files/{}", ctx.param("upload_id").unwrap_or_default());
    let bytes = read_bytes(body).await?;
    let mut inner = ctx.shared.batches.lock();
    let file = inner
        .files
        .get_mut(&name)
        .filter(|f| f.purpose == "pending" && (!ctx.pin() || f.key == ctx.key))
        .ok_or_else(|| not_found(&name))?;
    file.bytes = bytes.to_vec();
    file.purpose = "batch".to_string();
    let object = file_object(ctx, &name, file);
    Ok(Answer::json(StatusCode::OK, &json!({"file": object})))
}

fn file_object(ctx: &Ctx<'_>, name: &str, file: &File) -> Value {
    json!({
        "name": name, "displayName": file.filename, "mimeType": "application/jsonl",
        "sizeBytes": file.bytes.len().to_string(), "createTime": rfc3339(file.created_at),
        "state": "ACTIVE", "uri": format!("http://{}/v1beta/{name}", ctx.host),
        "downloadUri": format!("http://{}/download/v1beta/{name}:download?alt=media", ctx.host),
    })
}

/// `GET /v1beta/files/{id}` (the object) or `/download/…:download` (the bytes).
pub(super) fn file(ctx: &Ctx<'_>, name: &str, content: bool) -> Result<Answer, Refusal> {
    let inner = ctx.shared.batches.lock();
    let file = inner
        .files
        .get(name)
        .filter(|f| !ctx.pin() || f.key == ctx.key)
        .ok_or_else(|| not_found(name))?;
    Ok(if content {
        Answer::bytes(StatusCode::OK, "application/jsonl", file.bytes.clone())
    } else {
        Answer::json(StatusCode::OK, &file_object(ctx, name, file))
    })
}

/// Writes a file batch's responses file once it has ended: one line per result,
/// `{key, response}` or `{key, error}`.
fn write_responses(inner: &mut Inner, index: usize, unix: u64) {
    let Some(batch) = inner.batches.get(index) else {
        return;
    };
    if batch.input_file_id.is_empty() || batch.files_written || batch.outcomes.is_none() {
        return;
    }
    let lines: Vec<Value> = batch
        .results()
        .into_iter()
        .filter_map(|(line, outcome)| {
            let mut result = line_result(outcome)?;
            result["key"] = json!(line.custom_id);
            Some(result)
        })
        .collect();
    let file = File {
        key: batch.key.clone(),
        filename: format!("{}-responses.jsonl", batch.id),
        purpose: "batch_output".to_string(),
        bytes: jsonl(lines),
        created_at: unix,
    };
    let name = inner.new_id("files/");
    inner.files.insert(name.clone(), file);
    if let Some(batch) = inner.batches.get_mut(index) {
        batch.output_file_id = Some(name);
        batch.files_written = true;
    }
}

/// A result line's `response` or `error`; `None` for lines not in the results.
fn line_result(outcome: &Outcome) -> Option<Value> {
    let error = |status: StatusCode, message: &str| json!({"error": crate::gemini::error(status, message, 1)["error"].take()});
    Some(match outcome {
        Outcome::Ok(response) => json!({"response": response}),
        Outcome::Retryable { server: false } => error(
            StatusCode::TOO_MANY_REQUESTS,
            "Resource exhausted (injected by afterimage-mock).",
        ),
        Outcome::Retryable { server: true } => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error (injected by afterimage-mock).",
        ),
        Outcome::Permanent(message) => error(StatusCode::BAD_REQUEST, message),
        Outcome::NoCredit => error(
            StatusCode::TOO_MANY_REQUESTS,
            "You exceeded your current quota, please check your plan and billing details.",
        ),
        Outcome::Missing | Outcome::Unfinished => return None,
    })
}

/// `GET /v1beta/batches/{id}`.
pub(super) fn get(ctx: &Ctx<'_>, id: &str) -> Result<Answer, Refusal> {
    let mut inner = ctx.shared.batches.lock();
    let (index, stage) = ctx.settle(&mut inner, id)?;
    write_responses(&mut inner, index, ctx.unix);
    Ok(Answer::json(
        StatusCode::OK,
        &operation(ctx, &inner.batches[index], stage),
    ))
}

/// `POST /v1beta/batches/{id}:cancel`: an empty object.
pub(super) fn cancel(ctx: &Ctx<'_>, id: &str) -> Result<Answer, Refusal> {
    let mut inner = ctx.shared.batches.lock();
    let (index, _) = ctx.settle(&mut inner, id)?;
    if !inner.batches[index].cancel(ctx.now, ctx.unix) {
        return Err(bad_request(format!(
            "Batch {id} has already ended and cannot be cancelled."
        )));
    }
    Ok(Answer::json(StatusCode::OK, &json!({})))
}

/// `GET /v1beta/batches?pageSize=&pageToken=`: oldest first; the token is an offset.
pub(super) fn list(ctx: &Ctx<'_>) -> Result<Answer, Refusal> {
    let size = ctx.limit("pageSize", 20, 1000);
    let start: usize = ctx
        .param("pageToken")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let mut inner = ctx.shared.batches.lock();
    let visible: Vec<usize> = (0..inner.batches.len())
        .filter(|&i| {
            let b = &inner.batches[i];
            b.protocol == Protocol::Gemini && (!ctx.pin() || b.key == ctx.key)
        })
        .collect();
    let mut operations = Vec::new();
    for &i in visible.iter().skip(start).take(size) {
        let stage = ctx.settle_at(&mut inner, i);
        write_responses(&mut inner, i, ctx.unix);
        operations.push(operation(ctx, &inner.batches[i], stage));
    }
    let mut body = json!({"operations": operations});
    if start + size < visible.len() {
        body["nextPageToken"] = json!((start + size).to_string());
    }
    Ok(Answer::json(StatusCode::OK, &body))
}

fn state(ctx: &Ctx<'_>, stage: Stage) -> String {
    let name = match stage {
        Stage::Queued => "PENDING",
        Stage::Running(_) | Stage::Finalizing | Stage::Cancelling => "RUNNING",
        Stage::Ended(End::Completed) => "SUCCEEDED",
        Stage::Ended(End::Failed) => "FAILED",
        Stage::Ended(End::Expired) => "EXPIRED",
        Stage::Ended(End::Cancelled) => "CANCELLED",
    };
    let prefix = if ctx.shared.config.gemini_job_states {
        "JOB_STATE_"
    } else {
        "BATCH_STATE_"
    };
    format!("{prefix}{name}")
}

/// The operation object; once ended, the inline results sit under both
/// `metadata.output` and `response`, as the SDK and the REST docs read them.
fn operation(ctx: &Ctx<'_>, batch: &Batch, stage: Stage) -> Value {
    let n = batch.lines.len();
    let mut inlined = Vec::new();
    let (mut succeeded, mut failed) = (0, 0);
    for (line, outcome) in batch.results() {
        match outcome {
            Outcome::Ok(_) | Outcome::Missing => succeeded += 1,
            Outcome::Unfinished => {}
            _ => failed += 1,
        }
        if let Some(mut result) = line_result(outcome) {
            result["metadata"] = line.metadata.clone();
            inlined.push(result);
        }
    }
    let pending = match stage {
        Stage::Running(done) => n - done,
        Stage::Queued | Stage::Cancelling => n,
        _ => 0,
    };
    let ended = matches!(stage, Stage::Ended(_));
    let mut metadata = json!({
        "@type": BATCH_TYPE, "name": batch.id, "model": format!("models/{}", batch.model),
        "displayName": batch.metadata, "state": state(ctx, stage),
        "createTime": rfc3339(batch.created_at), "updateTime": rfc3339(ctx.unix),
        "batchStats": {
            "requestCount": n.to_string(), "successfulRequestCount": succeeded.to_string(),
            "failedRequestCount": failed.to_string(), "pendingRequestCount": pending.to_string(),
        },
    });
    if !batch.input_file_id.is_empty() {
        metadata["inputConfig"] = json!({"fileName": batch.input_file_id});
    }
    let mut op = json!({"name": batch.id, "metadata": Value::Null, "done": ended});
    if ended {
        metadata["endTime"] = json!(rfc3339(batch.phase_at(3)));
    }
    match (&batch.fate, stage) {
        (Fate::Fail(errors), Stage::Ended(End::Failed)) => {
            let message = errors
                .first()
                .and_then(|e| e.get("message"))
                .cloned()
                .unwrap_or(Value::Null);
            op["error"] = json!({"code": 3, "message": message});
        }
        (_, Stage::Ended(End::Completed | End::Cancelled)) => {
            let output = match &batch.output_file_id {
                Some(name) => json!({"responsesFile": name}),
                None => json!({"inlinedResponses": {"inlinedResponses": inlined}}),
            };
            let mut response = output.clone();
            response["@type"] = json!(OUTPUT_TYPE);
            metadata["output"] = output;
            op["response"] = response;
        }
        _ => {}
    }
    op["metadata"] = metadata;
    op
}
