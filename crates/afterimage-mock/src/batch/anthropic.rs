//! Anthropic's Message Batches: `POST /v1/messages/batches`, `GET …[/{id}]`,
//! `POST …/{id}/cancel`, `GET …/{id}/results`.

use std::collections::HashSet;

use hyper::StatusCode;
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::store::{Batch, End, NewBatch, Outcome, Protocol, Stage};
use super::{Ctx, bad_request, jsonl, rfc3339};
use crate::server::{Answer, Refusal, read_json};

/// What Anthropic answers a batch line once the credit has run out (curator #296).
const LOW_CREDIT: &str = "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.";

/// Anthropic's per-batch request limit.
const MAX_REQUESTS: usize = 100_000;

/// `POST /v1/messages/batches`: ids and params are checked at once, as the real API does.
pub(super) async fn create(ctx: &Ctx<'_>, body: Incoming) -> Result<Answer, Refusal> {
    let body = read_json(body).await?;
    let requests = body
        .get("requests")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| bad_request("requests: must be a non-empty array."))?;
    let max = ctx.max_requests(MAX_REQUESTS);
    if requests.len() > max {
        return Err(bad_request(format!(
            "requests: at most {max} requests per batch."
        )));
    }
    let mut seen = HashSet::new();
    let mut parsed = Vec::with_capacity(requests.len());
    for (i, request) in requests.iter().enumerate() {
        let id = request
            .get("custom_id")
            .and_then(Value::as_str)
            .filter(|id| valid_id(id))
            .ok_or_else(|| {
                bad_request(format!(
                    "requests.{i}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$."
                ))
            })?;
        if !seen.insert(id) {
            return Err(bad_request(format!(
                "requests.{i}.custom_id: '{id}' is used more than once in this batch."
            )));
        }
        let params = request
            .get("params")
            .filter(|p| p.is_object())
            .ok_or_else(|| bad_request(format!("requests.{i}.params: must be an object.")))?;
        parsed.push((id.to_string(), params.clone(), Value::Null));
    }
    let new = NewBatch {
        protocol: Protocol::Anthropic,
        key: ctx.key.clone(),
        model: String::new(),
        metadata: Value::Null,
        input_file_id: String::new(),
        requests: parsed,
        errors: Vec::new(),
    };
    let mut inner = ctx.shared.batches.lock();
    let index = inner.create(new, &ctx.shared.config, ctx.unix);
    let batch = &inner.batches[index];
    Ok(Answer::json(
        StatusCode::OK,
        &object(ctx, batch, batch.stage(ctx.now)),
    ))
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `GET /v1/messages/batches/{id}`.
pub(super) fn get(ctx: &Ctx<'_>, id: &str) -> Result<Answer, Refusal> {
    let mut inner = ctx.shared.batches.lock();
    let (index, stage) = ctx.settle(&mut inner, id)?;
    Ok(Answer::json(
        StatusCode::OK,
        &object(ctx, &inner.batches[index], stage),
    ))
}

/// `POST /v1/messages/batches/{id}/cancel`.
pub(super) fn cancel(ctx: &Ctx<'_>, id: &str) -> Result<Answer, Refusal> {
    let mut inner = ctx.shared.batches.lock();
    let (index, _) = ctx.settle(&mut inner, id)?;
    let batch = &mut inner.batches[index];
    if !batch.cancel(ctx.now, ctx.unix) {
        return Err(bad_request(format!(
            "Batch {id} has already ended and cannot be canceled."
        )));
    }
    Ok(Answer::json(
        StatusCode::OK,
        &object(ctx, batch, batch.stage(ctx.now)),
    ))
}

/// `GET /v1/messages/batches/{id}/results`: JSON Lines, shuffled, once ended.
pub(super) fn results(ctx: &Ctx<'_>, id: &str) -> Result<Answer, Refusal> {
    let mut inner = ctx.shared.batches.lock();
    let (index, stage) = ctx.settle(&mut inner, id)?;
    let Stage::Ended(end) = stage else {
        return Err(bad_request(format!(
            "Batch {id} is still processing; its results are available once processing_status is 'ended'."
        )));
    };
    let lines = inner.batches[index]
        .results()
        .into_iter()
        .filter_map(|(line, outcome)| {
            let result = match outcome {
                Outcome::Ok(message) => json!({"type": "succeeded", "message": message}),
                Outcome::Retryable { server } => {
                    let (status, message) = if *server {
                        (529, "Overloaded (injected by afterimage-mock).")
                    } else {
                        (429, "Rate limited (injected by afterimage-mock).")
                    };
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                    errored(status, message)
                }
                Outcome::Permanent(message) => errored(StatusCode::BAD_REQUEST, message),
                Outcome::NoCredit => errored(StatusCode::BAD_REQUEST, LOW_CREDIT),
                Outcome::Missing => return None,
                Outcome::Unfinished if end == End::Expired => json!({"type": "expired"}),
                Outcome::Unfinished => json!({"type": "canceled"}),
            };
            Some(json!({"custom_id": line.custom_id, "result": result}))
        });
    Ok(Answer::bytes(
        StatusCode::OK,
        "application/binary",
        jsonl(lines),
    ))
}

fn errored(status: StatusCode, message: &str) -> Value {
    json!({"type": "errored", "error": crate::anthropic::error(status, message)})
}

/// `GET /v1/messages/batches?after_id=&before_id=&limit=`: newest first.
pub(super) fn list(ctx: &Ctx<'_>) -> Result<Answer, Refusal> {
    let limit = ctx.limit("limit", 20, 1000);
    let mut inner = ctx.shared.batches.lock();
    let visible: Vec<usize> = (0..inner.batches.len())
        .rev()
        .filter(|&i| {
            let b = &inner.batches[i];
            b.protocol == Protocol::Anthropic && (!ctx.pin() || b.key == ctx.key)
        })
        .collect();
    let position = |id: &str| visible.iter().position(|&i| inner.batches[i].id == id);
    let (start, end) = match (ctx.param("after_id"), ctx.param("before_id")) {
        (Some(after), _) => {
            let start = position(after).map_or(visible.len(), |p| p + 1);
            (start, (start + limit).min(visible.len()))
        }
        (None, Some(before)) => {
            let end = position(before).unwrap_or(0);
            (end.saturating_sub(limit), end)
        }
        (None, None) => (0, limit.min(visible.len())),
    };
    let page: Vec<usize> = visible[start..end].to_vec();
    let mut data = Vec::new();
    for &i in &page {
        let stage = ctx.settle_at(&mut inner, i);
        data.push(object(ctx, &inner.batches[i], stage));
    }
    let id_at = |p: Option<&usize>| p.map(|&i| inner.batches[i].id.clone());
    let body = json!({
        "data": data, "has_more": end < visible.len(),
        "first_id": id_at(page.first()), "last_id": id_at(page.last()),
    });
    Ok(Answer::json(StatusCode::OK, &body))
}

/// The MessageBatch object; counts other than `processing` stay 0 until it has ended.
fn object(ctx: &Ctx<'_>, batch: &Batch, stage: Stage) -> Value {
    let ended = matches!(stage, Stage::Ended(_));
    let mut counts = [batch.lines.len(), 0, 0, 0, 0];
    if let Stage::Ended(end) = stage {
        counts[0] = 0;
        for (_, outcome) in batch.results() {
            let slot = match outcome {
                Outcome::Ok(_) | Outcome::Missing => 1,
                Outcome::Retryable { .. } | Outcome::Permanent(_) | Outcome::NoCredit => 2,
                Outcome::Unfinished if end == End::Expired => 4,
                Outcome::Unfinished => 3,
            };
            counts[slot] += 1;
        }
    }
    let [processing, succeeded, errored, canceled, expired] = counts;
    let status = match stage {
        Stage::Ended(_) => "ended",
        Stage::Cancelling => "canceling",
        _ => "in_progress",
    };
    json!({
        "id": batch.id, "type": "message_batch", "processing_status": status,
        "request_counts": {
            "processing": processing, "succeeded": succeeded, "errored": errored,
            "canceled": canceled, "expired": expired,
        },
        "ended_at": ended.then(|| rfc3339(batch.phase_at(3).max(batch.cancelled_at.unwrap_or(0)))),
        "created_at": rfc3339(batch.created_at),
        "expires_at": rfc3339(batch.created_at + 86_400),
        "archived_at": null,
        "cancel_initiated_at": batch.cancelled_at.map(rfc3339),
        "results_url": ended.then(|| format!("http://{}/v1/messages/batches/{}/results", ctx.host, batch.id)),
    })
}
