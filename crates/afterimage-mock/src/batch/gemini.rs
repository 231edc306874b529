//! Gemini's batch mode: `POST /v1beta/models/{model}:batchGenerateContent` (inline
//! requests), `GET /v1beta/batches[/{id}]`, `POST /v1beta/batches/{id}:cancel`.

use hyper::StatusCode;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::store::{Batch, End, Fate, NewBatch, Outcome, Protocol, Stage};
use super::{Ctx, bad_request, rfc3339};
use crate::server::{Answer, Refusal, read_json};

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
    if field(input, "fileName", "file_name").is_some() {
        return Err(bad_request(
            "afterimage-mock batches inline requests only (batch.input_config.requests); file input is not served.",
        ));
    }
    let requests = input
        .pointer("/requests/requests")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            bad_request("batch.input_config.requests.requests must be a non-empty array.")
        })?;
    let max = ctx.max_requests(usize::MAX);
    if requests.len() > max {
        return Err(bad_request(format!(
            "batch.input_config.requests.requests: at most {max} requests per batch (afterimage-mock batch_max_requests)."
        )));
    }
    let parsed = requests
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
        .collect();
    let display_name = field(batch, "displayName", "display_name")
        .cloned()
        .unwrap_or(Value::Null);
    let new = NewBatch {
        protocol: Protocol::Gemini,
        key: ctx.key.clone(),
        model: model.trim_start_matches("models/").to_string(),
        metadata: display_name,
        input_file_id: String::new(),
        requests: parsed,
        errors: Vec::new(),
    };
    let mut inner = ctx.shared.batches.lock();
    let index = inner.create(new, &ctx.shared.config, ctx.unix);
    let batch = &inner.batches[index];
    Ok(Answer::json(
        StatusCode::OK,
        &operation(ctx, batch, batch.stage(ctx.now)),
    ))
}

/// `GET /v1beta/batches/{id}`.
pub(super) fn get(ctx: &Ctx<'_>, id: &str) -> Result<Answer, Refusal> {
    let mut inner = ctx.shared.batches.lock();
    let (index, stage) = ctx.settle(&mut inner, id)?;
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
        let error = |status: StatusCode, message: &str| {
            crate::gemini::error(status, message, 1)["error"].take()
        };
        let result = match outcome {
            Outcome::Ok(response) => json!({"response": response}),
            Outcome::Retryable { server: false } => {
                json!({"error": error(StatusCode::TOO_MANY_REQUESTS, "Resource exhausted (injected by afterimage-mock).")})
            }
            Outcome::Retryable { server: true } => {
                json!({"error": error(StatusCode::INTERNAL_SERVER_ERROR, "Internal error (injected by afterimage-mock).")})
            }
            Outcome::Permanent(message) => {
                json!({"error": error(StatusCode::BAD_REQUEST, message)})
            }
            Outcome::Missing => {
                succeeded += 1;
                continue;
            }
            Outcome::Unfinished => continue,
        };
        if result.get("response").is_some() {
            succeeded += 1;
        } else {
            failed += 1;
        }
        let mut result = result;
        result["metadata"] = line.metadata.clone();
        inlined.push(result);
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
            let output = json!({"inlinedResponses": {"inlinedResponses": inlined}});
            metadata["output"] = output.clone();
            let mut response = json!({"@type": OUTPUT_TYPE});
            response["inlinedResponses"] = output["inlinedResponses"].clone();
            op["response"] = response;
        }
        _ => {}
    }
    op["metadata"] = metadata;
    op
}
