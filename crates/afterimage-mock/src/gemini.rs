//! The Gemini `generateContent` REST wire format (`v1beta`).

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::reply::{
    Ask, DEFAULT_MODEL, Prompt, Reply, Role, ToolPick, Want, answer, name_of, named_or_random,
    text_of,
};
use crate::server::{Answer, Call, Sse};
use crate::stats::Served;
use crate::text::{Rng, approx_tokens, pieces, word_count};

/// Gemini accepts both the proto JSON (camelCase) and original (snake_case) field names.
fn field<'a>(value: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    value.get(camel).or_else(|| value.get(snake))
}

/// `POST /v1beta/models/{model}:generateContent` (or `:streamGenerateContent`, as SSE
/// with `alt=sse`, else as a JSON array of chunks).
pub(crate) fn generate(
    model: &str,
    body: &Value,
    call: Call<'_>,
    stream: Option<bool>,
) -> Result<Answer, String> {
    let Call {
        n,
        mut rng,
        prose,
        break_schema,
        cache,
    } = call;
    let prompt = read_prompt(body)?;
    let config = field(body, "generationConfig", "generation_config");
    let ask = Ask {
        prompt: &prompt,
        want: want(config),
        tool: pick_tool(body, &prompt, &mut rng),
        thinking: thinking(config),
        prose_instead_of_json: prose,
        break_schema,
        temperature: config
            .and_then(|c| c.get("temperature"))
            .and_then(Value::as_f64),
    };
    let cached = cache.map_or(0, |c| c.implicit(&format!("gemini/{model}"), &prompt).read);
    let reply = answer(&ask, rng, n);

    let (parts, usage, served) = render(&prompt, reply, cached);
    let frame = Frame {
        usage,
        model,
        response_id: format!("mock-{n}"),
    };
    let answer = match stream {
        None => Answer::json(StatusCode::OK, &frame.response(parts, true)),
        Some(sse) => frame.stream(parts, sse),
    };
    Ok(answer.serving(served))
}

/// The conversation in `systemInstruction` and `contents`.
fn read_prompt(body: &Value) -> Result<Prompt<'_>, String> {
    let contents = body
        .get("contents")
        .and_then(Value::as_array)
        .ok_or("'contents' is required and must be an array")?;
    let mut prompt = Prompt::default();
    if let Some(parts) =
        field(body, "systemInstruction", "system_instruction").and_then(|s| s.get("parts"))
    {
        for text in parts.as_array().into_iter().flatten().filter_map(text_of) {
            prompt.push(Role::System, text);
        }
    }
    for content in contents {
        let role = match content.get("role").and_then(Value::as_str) {
            Some("model") => Role::Assistant,
            Some("function" | "tool") => Role::Tool,
            _ => Role::User,
        };
        let parts = content.get("parts").and_then(Value::as_array);
        prompt.saw(role);
        for part in parts.into_iter().flatten() {
            if field(part, "functionResponse", "function_response").is_some() {
                prompt.saw(Role::Tool);
            }
            if let Some(text) = text_of(part) {
                prompt.push(role, text);
            }
        }
    }
    Ok(prompt)
}

/// Structured output as `generationConfig` asks for it: a schema (JSON Schema or the
/// OpenAPI subset), or JSON by MIME type alone.
fn want(config: Option<&Value>) -> Want<'_> {
    let get = |camel, snake| config.and_then(|c| field(c, camel, snake));
    if let Some(schema) = get("responseJsonSchema", "response_json_schema")
        .or_else(|| get("responseSchema", "response_schema"))
    {
        Want::Schema(schema)
    } else if get("responseMimeType", "response_mime_type").and_then(Value::as_str)
        == Some("application/json")
    {
        Want::AnyJson
    } else {
        Want::Text
    }
}

/// Whether `generationConfig.thinkingConfig.includeThoughts` asks for thoughts.
fn thinking(config: Option<&Value>) -> bool {
    config
        .and_then(|c| field(c, "thinkingConfig", "thinking_config"))
        .and_then(|t| field(t, "includeThoughts", "include_thoughts"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// The reply as candidate parts (a thought first when there is one), its
/// `usageMetadata` (thoughts apart from the candidates, the cached part of the prompt
/// in it), and the tokens billed.
fn render(prompt: &Prompt<'_>, reply: Reply, cached: u64) -> (Vec<Value>, Value, Served) {
    let prompt_tokens = approx_tokens(prompt.word_count());
    let (parts, candidates_tokens, thoughts_tokens) = match reply {
        Reply::Text { content, reasoning } => {
            let thoughts = reasoning.as_deref().map_or(0, word_count);
            let mut parts = Vec::with_capacity(2);
            if let Some(r) = reasoning {
                parts.push(json!({"text": r, "thought": true}));
            }
            let tokens = approx_tokens(word_count(&content));
            parts.push(json!({"text": content}));
            (parts, tokens, approx_tokens(thoughts))
        }
        Reply::ToolCall { name, arguments } => {
            let tokens = approx_tokens(word_count(&arguments.to_string()));
            let part = json!({"functionCall": {"name": name, "args": arguments}});
            (vec![part], tokens, 0)
        }
    };
    let mut usage = json!({
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": candidates_tokens,
        "totalTokenCount": prompt_tokens + candidates_tokens + thoughts_tokens,
    });
    if thoughts_tokens > 0 {
        usage["thoughtsTokenCount"] = json!(thoughts_tokens);
    }
    if cached > 0 {
        usage["cachedContentTokenCount"] = json!(cached);
    }
    let served = Served {
        input: prompt_tokens,
        output: candidates_tokens + thoughts_tokens,
        cached,
        written: 0,
        reasoning: thoughts_tokens,
    };
    (parts, usage, served)
}

/// What every response and chunk of one answer repeats.
struct Frame<'a> {
    usage: Value,
    model: &'a str,
    response_id: String,
}

impl Frame<'_> {
    /// One `GenerateContentResponse` carrying `parts`; `finish` marks the last.
    fn response(&self, parts: Vec<Value>, finish: bool) -> Value {
        let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if finish {
            candidate["finishReason"] = json!("STOP");
        }
        json!({
            "candidates": [candidate],
            "usageMetadata": self.usage,
            "modelVersion": self.model,
            "responseId": self.response_id,
        })
    }

    /// The answer as chunks, one part each: SSE events with `sse`, else a JSON array.
    fn stream(&self, parts: Vec<Value>, sse: bool) -> Answer {
        let chunks = stream_parts(parts);
        let last = chunks.len().saturating_sub(1);
        let events = chunks
            .into_iter()
            .enumerate()
            .map(|(i, part)| self.response(vec![part], i == last));
        if sse {
            let mut out = Sse::default();
            events.for_each(|e| out.event(&e));
            out.into_answer()
        } else {
            Answer::json(StatusCode::OK, &Value::Array(events.collect()))
        }
    }
}

/// Streams send text in pieces; thoughts and function calls go whole.
fn stream_parts(parts: Vec<Value>) -> Vec<Value> {
    let mut chunks = Vec::new();
    for part in parts {
        match text_of(&part) {
            Some(text) if part.get("thought").is_none() => {
                chunks.extend(pieces(text, 6).into_iter().map(|p| json!({"text": p})));
            }
            _ => chunks.push(part),
        }
    }
    chunks
}

/// Calls a declared function unless the mode is `NONE` or the last turn was a function
/// response; `allowedFunctionNames` narrows the choice.
fn pick_tool<'a>(body: &'a Value, prompt: &Prompt<'_>, rng: &mut Rng) -> Option<ToolPick<'a>> {
    let declarations: Vec<&Value> = body
        .get("tools")?
        .as_array()?
        .iter()
        .filter_map(|t| field(t, "functionDeclarations", "function_declarations"))
        .filter_map(Value::as_array)
        .flatten()
        .collect();
    let calling = field(body, "toolConfig", "tool_config")
        .and_then(|c| field(c, "functionCallingConfig", "function_calling_config"));
    let mode = calling.and_then(|c| c.get("mode")).and_then(Value::as_str);
    if declarations.is_empty()
        || mode.is_some_and(|m| m.eq_ignore_ascii_case("none"))
        || prompt.answers_tool_result()
    {
        return None;
    }
    let allowed = calling
        .and_then(|c| field(c, "allowedFunctionNames", "allowed_function_names"))
        .and_then(Value::as_array)
        .and_then(|names| names.first())
        .and_then(Value::as_str);
    let declaration = named_or_random(&declarations, allowed, rng)?;
    Some(ToolPick {
        name: name_of(declaration)?,
        parameters: field(
            declaration,
            "parametersJsonSchema",
            "parameters_json_schema",
        )
        .or_else(|| declaration.get("parameters")),
    })
}

/// `GET /v1beta/models`.
pub(crate) fn models() -> Answer {
    Answer::json(
        StatusCode::OK,
        &json!({"models": [model_object(DEFAULT_MODEL)]}),
    )
}

/// `GET /v1beta/models/{model}`: every model exists.
pub(crate) fn model(model: &str) -> Answer {
    Answer::json(StatusCode::OK, &model_object(model))
}

fn model_object(model: &str) -> Value {
    json!({
        "name": format!("models/{model}"),
        "baseModelId": model,
        "version": "001",
        "displayName": model,
        "description": "A mock model served by afterimage-mock.",
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
    })
}

/// An error body in Gemini's (Google RPC) shape.
pub(crate) fn error(status: StatusCode, message: &str, retry_after_secs: u64) -> Value {
    let rpc_status = match status.as_u16() {
        400 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        _ => "INTERNAL",
    };
    let mut error = json!({"code": status.as_u16(), "message": message, "status": rpc_status});
    if status == StatusCode::TOO_MANY_REQUESTS {
        error["details"] = json!([{
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{retry_after_secs}s"),
        }]);
    }
    json!({"error": error})
}
