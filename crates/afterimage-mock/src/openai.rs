//! The OpenAI Chat Completions wire format (also spoken by DeepSeek, vLLM, Ollama, ...).

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::reply::{
    Ask, DEFAULT_MODEL, Prompt, Reply, Role, ToolPick, Want, answer, is_thinking_model, name_of,
    named_or_random,
};
use crate::server::{Answer, Call, Sse, unix_now};
use crate::stats::Served;
use crate::text::{Rng, approx_tokens, contains_ci, pieces};

/// `POST /v1/chat/completions`: a completion, or an SSE stream when `stream` is true.
pub(crate) fn chat(body: &Value, call: Call<'_>) -> Result<Answer, String> {
    let Call {
        n,
        mut rng,
        prose,
        break_schema,
        cache,
    } = call;
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_MODEL);
    let prompt = read_prompt(body)?;
    let ask = Ask {
        prompt: &prompt,
        want: want(body),
        tool: pick_tool(body, &prompt, &mut rng),
        thinking: is_thinking_model(model),
        prose_instead_of_json: prose,
        break_schema,
        temperature: body.get("temperature").and_then(Value::as_f64),
    };
    let cached = cache.map_or(0, |c| c.implicit(&format!("openai/{model}"), &prompt).read);
    let reply = answer(&ask, rng, n);

    let (usage, served) = usage(&prompt, &reply, cached, model);
    let head = Head {
        id: format!("chatcmpl-mock-{n}"),
        created: unix_now(),
        model,
        n,
    };
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        return Ok(stream(&head, reply, include_usage.then_some(usage)).serving(served));
    }
    Ok(completion(&head, reply, usage).serving(served))
}

/// The conversation in `messages`.
fn read_prompt(body: &Value) -> Result<Prompt<'_>, String> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("'messages' is required and must be an array")?;
    let mut prompt = Prompt::default();
    for message in messages {
        let role = match message.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => Role::System,
            Some("assistant") => Role::Assistant,
            Some("tool" | "function") => Role::Tool,
            _ => Role::User,
        };
        prompt.saw(role);
        prompt.push_content(role, message.get("content"));
    }
    Ok(prompt)
}

/// Structured output as `response_format` asks for it.
fn want(body: &Value) -> Want<'_> {
    let format = body.get("response_format");
    match format.and_then(|f| f.get("type")).and_then(Value::as_str) {
        Some("json_schema") => {
            Want::schema_or_any(format.and_then(|f| f.pointer("/json_schema/schema")))
        }
        Some("json_object") => Want::AnyJson,
        _ => Want::Text,
    }
}

/// Calls a tool when tools are offered, `tool_choice` is not `"none"`, and the last
/// message is not already a tool result.
fn pick_tool<'a>(body: &'a Value, prompt: &Prompt<'_>, rng: &mut Rng) -> Option<ToolPick<'a>> {
    let functions: Vec<&Value> = body
        .get("tools")?
        .as_array()?
        .iter()
        .filter_map(|t| t.get("function"))
        .collect();
    let choice = body.get("tool_choice");
    if functions.is_empty()
        || choice.and_then(Value::as_str) == Some("none")
        || prompt.answers_tool_result()
    {
        return None;
    }
    let forced = choice
        .and_then(|c| c.pointer("/function/name"))
        .and_then(Value::as_str);
    let function = named_or_random(&functions, forced, rng)?;
    Some(ToolPick {
        name: name_of(function)?,
        parameters: function.get("parameters"),
    })
}

/// Token counts as OpenAI reports them (cached and reasoning tokens are parts of the
/// totals), with DeepSeek's cache hit and miss counts for its models.
fn usage(prompt: &Prompt<'_>, reply: &Reply, cached: u64, model: &str) -> (Value, Served) {
    let prompt_tokens = approx_tokens(prompt.word_count());
    let completion_tokens = approx_tokens(reply.word_count());
    let reasoning_tokens = approx_tokens(reply.reasoning_word_count());
    let mut usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    });
    if contains_ci(model, "deepseek") {
        usage["prompt_cache_hit_tokens"] = json!(cached);
        usage["prompt_cache_miss_tokens"] = json!(prompt_tokens - cached);
    }
    let served = Served {
        input: prompt_tokens,
        output: completion_tokens,
        cached,
        written: 0,
        reasoning: reasoning_tokens,
    };
    (usage, served)
}

/// What every completion and chunk of one response repeats.
struct Head<'a> {
    id: String,
    created: u64,
    model: &'a str,
    /// The request number (tool call ids).
    n: u64,
}

/// The answer as one `chat.completion` object.
fn completion(head: &Head<'_>, reply: Reply, usage: Value) -> Answer {
    let (message, finish_reason) = match reply {
        Reply::Text { content, reasoning } => {
            let mut message = json!({"role": "assistant", "content": content, "refusal": null});
            if let Some(r) = reasoning {
                message["reasoning_content"] = Value::String(r);
            }
            (message, "stop")
        }
        Reply::ToolCall { name, arguments } => (
            json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [tool_call(head.n, &name, &arguments)],
            }),
            "tool_calls",
        ),
    };
    Answer::json(
        StatusCode::OK,
        &json!({
            "id": head.id,
            "object": "chat.completion",
            "created": head.created,
            "model": head.model,
            "system_fingerprint": "fp_afterimage_mock",
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
            "usage": usage,
        }),
    )
}

fn tool_call(n: u64, name: &str, arguments: &Value) -> Value {
    json!({
        "id": format!("call_mock_{n}"),
        "type": "function",
        "function": {"name": name, "arguments": arguments.to_string()},
    })
}

/// The same answer as Server-Sent Events, all chunks in one body.
fn stream(head: &Head<'_>, reply: Reply, usage: Option<Value>) -> Answer {
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({
            "id": head.id,
            "object": "chat.completion.chunk",
            "created": head.created,
            "model": head.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let mut sse = Sse::default();
    let finish = match reply {
        Reply::Text { content, reasoning } => {
            sse.event(&chunk(json!({"role": "assistant", "content": ""}), None));
            if let Some(r) = reasoning {
                sse.event(&chunk(json!({"reasoning_content": r}), None));
            }
            for piece in pieces(&content, 6) {
                sse.event(&chunk(json!({"content": piece}), None));
            }
            "stop"
        }
        Reply::ToolCall { name, arguments } => {
            let mut call = tool_call(head.n, &name, &arguments);
            call["index"] = json!(0);
            sse.event(&chunk(
                json!({"role": "assistant", "content": null, "tool_calls": [call]}),
                None,
            ));
            "tool_calls"
        }
    };
    sse.event(&chunk(json!({}), Some(finish)));
    if let Some(usage) = usage {
        sse.event(&json!({
            "id": head.id,
            "object": "chat.completion.chunk",
            "created": head.created,
            "model": head.model,
            "choices": [],
            "usage": usage,
        }));
    }
    sse.done();
    sse.into_answer()
}

/// `GET /v1/models`.
pub(crate) fn models() -> Answer {
    Answer::json(
        StatusCode::OK,
        &json!({"object": "list", "data": [model_object(DEFAULT_MODEL)]}),
    )
}

/// `GET /v1/models/{id}`: every id exists.
pub(crate) fn model(id: &str) -> Answer {
    Answer::json(StatusCode::OK, &model_object(id))
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "afterimage-mock"})
}

/// An error body in OpenAI's shape.
pub(crate) fn error(status: StatusCode, message: &str) -> Value {
    let (kind, code) = match status.as_u16() {
        401 => ("invalid_request_error", json!("invalid_api_key")),
        429 => ("rate_limit_error", json!("rate_limit_exceeded")),
        500..=599 => ("server_error", Value::Null),
        _ => ("invalid_request_error", Value::Null),
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}
