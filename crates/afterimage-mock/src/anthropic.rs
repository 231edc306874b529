//! The Anthropic Messages API wire format (`POST /v1/messages`).

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::cache::CacheUse;
use crate::reply::{
    Ask, DEFAULT_MODEL, Prompt, Reply, Role, ToolPick, Want, answer, name_of, text_of,
};
use crate::server::{Answer, Call, unix_now};
use crate::stats::Served;
use crate::text::{Rng, approx_tokens};

/// `POST /v1/messages`.
pub(crate) fn messages(body: &Value, call: Call<'_>) -> Result<Answer, String> {
    let Call {
        n,
        mut rng,
        prose,
        cache,
        ..
    } = call;
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_MODEL);
    let messages = validate(body)?;
    let prompt = read_prompt(body, messages);
    let (tool, want) = match pick_tool(body, &prompt, &mut rng) {
        // Structured output is a forced tool: with prose requested, answer it with
        // text so clients' parse failures get exercised.
        Some((pick, true)) if prose => (None, Want::schema_or_any(pick.parameters)),
        Some((pick, _)) => (Some(pick), Want::Text),
        None => (None, Want::Text),
    };
    let ask = Ask {
        prompt: &prompt,
        want,
        tool,
        thinking: body.pointer("/thinking/type").and_then(Value::as_str) == Some("enabled"),
        prose_instead_of_json: prose,
        // Structured output is a forced tool here; the fault covers the JSON modes.
        break_schema: false,
        temperature: body.get("temperature").and_then(Value::as_f64),
    };
    let cached = cache.map_or(CacheUse::default(), |c| {
        c.explicit(&format!("anthropic/{model}"), &prompt)
    });
    let reply = answer(&ask, rng, n);
    Ok(message(&prompt, reply, model, n, cached))
}

/// The `messages`, once the fields the real API insists on are there.
fn validate(body: &Value) -> Result<&[Value], String> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: Field required")?;
    if body.get("max_tokens").and_then(Value::as_u64).is_none() {
        return Err("max_tokens: Field required".to_owned());
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err("stream: afterimage-mock does not stream the Messages API".to_owned());
    }
    Ok(messages)
}

/// The conversation in `system` and `messages`.
fn read_prompt<'a>(body: &'a Value, messages: &'a [Value]) -> Prompt<'a> {
    let mut prompt = Prompt::default();
    match body.get("system") {
        Some(Value::String(text)) => prompt.push(Role::System, text),
        Some(Value::Array(blocks)) => {
            for block in blocks {
                if let Some(text) = text_of(block) {
                    prompt.push(Role::System, text);
                }
                mark_if_asked(&mut prompt, block);
            }
        }
        _ => {}
    }
    for message in messages {
        let role = match message.get("role").and_then(Value::as_str) {
            Some("assistant") => Role::Assistant,
            _ => Role::User,
        };
        prompt.saw(role);
        match message.get("content") {
            Some(Value::String(text)) => prompt.push(role, text),
            Some(Value::Array(blocks)) => {
                for block in blocks {
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            if let Some(text) = text_of(block) {
                                prompt.push(role, text);
                            }
                        }
                        // A user turn that carries only tool results answers a call.
                        Some("tool_result") => prompt.saw(Role::Tool),
                        _ => {}
                    }
                    mark_if_asked(&mut prompt, block);
                }
            }
            _ => {}
        }
    }
    prompt
}

/// A block with `cache_control` is a prompt cache breakpoint.
fn mark_if_asked(prompt: &mut Prompt<'_>, block: &Value) {
    if block.get("cache_control").is_some_and(Value::is_object) {
        prompt.mark();
    }
}

/// The tool to call, and whether `tool_choice` forced it. A forced tool is always
/// called; otherwise one is called when tools are offered, `tool_choice` is not
/// `none`, and the last turn is not already a tool result.
fn pick_tool<'a>(
    body: &'a Value,
    prompt: &Prompt<'_>,
    rng: &mut Rng,
) -> Option<(ToolPick<'a>, bool)> {
    let tools = body.get("tools")?.as_array()?;
    let choice = body.get("tool_choice");
    let kind = choice.and_then(|c| c.get("type")).and_then(Value::as_str);
    let pick = |tool: &'a Value| {
        Some(ToolPick {
            name: name_of(tool)?,
            parameters: tool.get("input_schema"),
        })
    };
    if kind == Some("tool") {
        let name = choice.and_then(name_of);
        let tool = tools.iter().find(|t| name_of(t) == name)?;
        return pick(tool).map(|p| (p, true));
    }
    if tools.is_empty() || kind == Some("none") || prompt.answers_tool_result() {
        return None;
    }
    pick(tools.get(rng.below(tools.len()))?).map(|p| (p, false))
}

/// The reply as a `message` object. Its `input_tokens` leave out what was read from and
/// written to the cache, as Anthropic counts them.
fn message(prompt: &Prompt<'_>, reply: Reply, model: &str, n: u64, cached: CacheUse) -> Answer {
    let prompt_tokens = approx_tokens(prompt.word_count());
    let output_tokens = approx_tokens(reply.word_count());
    let served = Served {
        input: prompt_tokens,
        output: output_tokens,
        cached: cached.read,
        written: cached.written,
        reasoning: 0,
    };
    let usage = json!({
        "input_tokens": prompt_tokens - cached.read - cached.written,
        "cache_creation_input_tokens": cached.written,
        "cache_read_input_tokens": cached.read,
        "output_tokens": output_tokens,
    });
    let (content, stop_reason) = match reply {
        Reply::Text { content, reasoning } => {
            let mut blocks = Vec::with_capacity(2);
            if let Some(r) = reasoning {
                blocks.push(json!({"type": "thinking", "thinking": r, "signature": "bW9jaw=="}));
            }
            blocks.push(json!({"type": "text", "text": content}));
            (blocks, "end_turn")
        }
        Reply::ToolCall { name, arguments } => (
            vec![json!({
                "type": "tool_use",
                "id": format!("toolu_mock_{n}"),
                "name": name,
                "input": arguments,
            })],
            "tool_use",
        ),
    };
    Answer::json(
        StatusCode::OK,
        &json!({
            "id": format!("msg_mock_{n}"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": usage,
        }),
    )
    .serving(served)
}

/// `GET /v1/models` asked by an Anthropic client (it sends `anthropic-version`).
pub(crate) fn models() -> Answer {
    Answer::json(
        StatusCode::OK,
        &json!({
            "data": [model_object(DEFAULT_MODEL)],
            "has_more": false,
            "first_id": DEFAULT_MODEL,
            "last_id": DEFAULT_MODEL,
        }),
    )
}

/// `GET /v1/models/{id}` asked by an Anthropic client: every id exists.
pub(crate) fn model(id: &str) -> Answer {
    Answer::json(StatusCode::OK, &model_object(id))
}

fn model_object(id: &str) -> Value {
    let created = unix_now();
    json!({"type": "model", "id": id, "display_name": id, "created_at": created.to_string()})
}

/// An error body in Anthropic's shape.
pub(crate) fn error(status: StatusCode, message: &str) -> Value {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_tokens_is_required() {
        let call = Call {
            n: 0,
            rng: Rng::for_request(0, 0),
            prose: false,
            break_schema: false,
            cache: None,
        };
        let body = json!({"messages": []});
        assert!(messages(&body, call).unwrap_err().contains("max_tokens"));
    }
}
