//! Google's Gemini API (`generateContent` REST).

use std::collections::HashMap;

use afterimage_core::{
    ChatModel, ChatRequest, ChatResponse, FinishReason, Message, ProviderError, Role, ToolCall,
    ToolSpec, Usage,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::builder::{ChatBuilder, ChatClient, Structured, sealed};
use crate::http::{Auth, Http, HttpSettings, NotFoundHelp, with_version};
use crate::structured::{send_with_fallback, with_schema_instruction};
use crate::usage::{billed, count, lenient};
use crate::{BuildError, Provider, StructuredOutput, StructuredOutputState};

/// The Gemini Developer API.
pub const GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";
/// The version segment added to a base URL that has none.
pub(crate) const GEMINI_VERSION: &str = "v1beta";

/// Documented by Google for replaying function calls whose thought signature was not
/// kept: Gemini 3 rejects a replayed `functionCall` part without one.
const SKIP_THOUGHT_SIGNATURE: &str = "skip_thought_signature_validator";

/// Which fields carry a request's JSON Schemas: the structured-output schema in
/// `generationConfig`, and each tool's parameters in its function declaration
/// (`parametersJsonSchema` or `parameters`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum GeminiSchemaField {
    /// `responseJsonSchema` and `parametersJsonSchema`: full JSON Schema (`$ref`,
    /// `anyOf`, `additionalProperties`, ...), so the schemas written for OpenAI work
    /// unchanged (Gemini 2.5 and later).
    #[default]
    ResponseJsonSchema,
    /// `responseSchema` and `parameters`: Google's OpenAPI subset, for older models.
    /// Keywords it rejects (`$schema`, `additionalProperties`) are removed first.
    ResponseSchema,
}

/// A client for the Gemini `generateContent` API.
///
/// Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct Gemini {
    http: Http,
    model: String,
    schema_field: GeminiSchemaField,
    include_thoughts: bool,
    structured_output: StructuredOutputState,
}

impl std::fmt::Debug for Gemini {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gemini")
            .field("model", &self.model)
            .field("http", &self.http)
            .field("schema_field", &self.schema_field)
            .field("structured_output", &self.structured_output)
            .finish()
    }
}

/// Settings for a [`Gemini`] client: the shared setters of [`ChatBuilder`] plus
/// [`schema_field`](ChatBuilder::schema_field),
/// [`include_thoughts`](ChatBuilder::include_thoughts) and the structured output mode
/// ([`structured_output`](ChatBuilder::structured_output),
/// [`structured_output_state`](ChatBuilder::structured_output_state)).
pub type GeminiBuilder = ChatBuilder<Gemini>;

/// The settings only Gemini clients have.
#[derive(Debug, Clone)]
pub struct GeminiOptions {
    schema_field: GeminiSchemaField,
    include_thoughts: bool,
}

impl Gemini {
    /// A builder for the Gemini API at [`GEMINI_BASE_URL`].
    pub fn builder() -> GeminiBuilder {
        ChatBuilder::new(
            GEMINI_BASE_URL,
            GeminiOptions {
                schema_field: GeminiSchemaField::ResponseJsonSchema,
                include_thoughts: false,
            },
        )
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        self.http.base_url()
    }

    /// The structured output state this client shares with its endpoint.
    pub fn structured_output(&self) -> &StructuredOutputState {
        &self.structured_output
    }

    /// The JSON body this client would POST to `:generateContent` for `request`, in
    /// the structured-output mode the endpoint uses now: a batch request's `request`.
    /// The model is not in the body but in the path.
    pub fn request_body(&self, request: &ChatRequest) -> Result<serde_json::Value, ProviderError> {
        let body = self.body(request, self.structured_output.mode())?;
        crate::transport::to_value(&body)
    }

    /// This client's connection, for the provider's batch endpoints.
    pub fn transport(&self) -> crate::Transport {
        crate::Transport::new(self.http.clone(), &self.model)
    }

    fn body<'a>(
        &self,
        request: &'a ChatRequest,
        mode: StructuredOutput,
    ) -> Result<Body<'a>, ProviderError> {
        let mut config = GenerationConfig {
            temperature: request.temperature,
            max_output_tokens: request.max_tokens,
            thinking_config: self.include_thoughts.then_some(ThinkingConfig {
                include_thoughts: true,
            }),
            ..GenerationConfig::default()
        };
        let mut system = request.system_text();
        if let Some(schema) = &request.response_schema {
            self.ask_for_json(&mut config, schema, mode);
            if mode.schema_in_prompt() {
                system = Some(with_schema_instruction(system, schema));
            }
        }
        let tools = if request.tools.is_empty() {
            Vec::new()
        } else {
            vec![Tools {
                function_declarations: request
                    .tools
                    .iter()
                    .map(|tool| Declaration::new(tool, self.schema_field))
                    .collect(),
            }]
        };
        Ok(Body {
            system_instruction: system.map(|text| SystemInstruction {
                parts: vec![Part::text(text)],
            }),
            contents: contents(&request.messages)?,
            generation_config: (!config.is_empty()).then_some(config),
            tools,
        })
    }

    /// The `generationConfig` fields of `mode`.
    fn ask_for_json<'a>(
        &self,
        config: &mut GenerationConfig<'a>,
        schema: &'a afterimage_core::JsonSchema,
        mode: StructuredOutput,
    ) {
        let subset = match (mode, self.schema_field) {
            (StructuredOutput::PromptOnly, _) => return,
            (StructuredOutput::JsonObject, _) => None,
            (StructuredOutput::JsonObjectSchema, _) | (_, GeminiSchemaField::ResponseSchema) => {
                Some(openapi_subset(&schema.schema))
            }
            _ => {
                config.response_json_schema = Some(&schema.schema);
                None
            }
        };
        config.response_mime_type = Some("application/json");
        config.response_schema = subset;
    }

    pub(crate) fn response(
        &self,
        reply: GenerateResponse,
        model: &str,
        body: &str,
    ) -> Result<ChatResponse, ProviderError> {
        let usage = reply
            .usage_metadata
            .map(UsageMetadata::billed)
            .unwrap_or_default();
        let Some(candidate) = reply.candidates.into_iter().next() else {
            let block = reply.prompt_feedback.and_then(|f| f.block_reason);
            return Err(match block {
                // Not retryable: the same prompt is blocked again.
                Some(reason) => ProviderError::BadRequest {
                    status: 200,
                    message: self.http.redact(&format!(
                        "Gemini blocked the prompt (blockReason {reason}); rephrase it or relax the safety settings"
                    )),
                },
                None => self.http.malformed("the response has no candidates", body),
            });
        };
        let mut content = String::new();
        let mut reasoning = String::new();
        let mut tool_calls = Vec::new();
        let parts = candidate.content.map(|c| c.parts).unwrap_or_default();
        for part in parts {
            if let Some(call) = part.function_call {
                let id = call
                    .id
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| format!("call_{}", tool_calls.len()));
                let arguments = match call.args {
                    Value::Null => "{}".to_owned(),
                    args => args.to_string(),
                };
                tool_calls.push(ToolCall::function(id, call.name, arguments));
            } else if let Some(text) = part.text {
                if part.thought {
                    reasoning.push_str(&text);
                } else {
                    content.push_str(&text);
                }
            }
        }
        let finish_reason = candidate.finish_reason.as_deref().map(|reason| {
            match finish_reason(reason) {
                // Gemini says STOP after a function call; callers look for ToolCalls,
                // as OpenAI reports it.
                FinishReason::Stop if !tool_calls.is_empty() => FinishReason::ToolCalls,
                other => other,
            }
        });
        let message = Message {
            content,
            reasoning: (!reasoning.is_empty()).then_some(reasoning),
            tool_calls,
            ..Message::assistant("")
        };
        Ok(ChatResponse {
            message,
            usage,
            finish_reason,
            model: reply
                .model_version
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| model.to_owned()),
            rate_limit: None,
            batched: false,
            replayed: false,
        })
    }
}

impl ChatBuilder<Gemini> {
    /// Which field carries a request's JSON Schema (default `responseJsonSchema`).
    pub fn schema_field(mut self, field: GeminiSchemaField) -> Self {
        self.options.schema_field = field;
        self
    }

    /// Asks thinking models for their thought summaries (`thinkingConfig.includeThoughts`),
    /// which land in [`Message::reasoning`]. Models without thinking reject it.
    pub fn include_thoughts(mut self, yes: bool) -> Self {
        self.options.include_thoughts = yes;
        self
    }
}

impl ChatClient for Gemini {}

#[allow(private_interfaces)]
impl sealed::Build for Gemini {
    type Options = GeminiOptions;

    fn build(
        mut http: HttpSettings,
        model: Option<String>,
        structured: Structured,
        options: GeminiOptions,
    ) -> Result<Self, BuildError> {
        http.base_url = with_version(&http.base_url, GEMINI_VERSION);
        http.provider = Provider::Gemini.name();
        http.not_found = Some(NotFoundHelp {
            models_path: "/models?pageSize=1000",
            url_hint: "`https://generativelanguage.googleapis.com/v1beta`, or a server's root such as `http://host:4000` (`/v1beta` is added)",
        });
        // Google's endpoint always needs a key; a proxy or mock server may not.
        if http.key.is_none() && http.base_url == GEMINI_BASE_URL {
            return Err(BuildError::MissingApiKey { provider: "Gemini" });
        }
        let model = model
            .map(|m| model_name(&m).to_owned())
            .filter(|m| !m.trim().is_empty())
            .ok_or(BuildError::MissingModel)?;
        Ok(Gemini {
            http: http.build(Auth::Header("x-goog-api-key"))?,
            model,
            schema_field: options.schema_field,
            include_thoughts: options.include_thoughts,
            structured_output: structured.state(Provider::Gemini),
        })
    }
}

#[async_trait]
impl ChatModel for Gemini {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ProviderError> {
        let model = request
            .model
            .as_deref()
            .map_or(self.model.as_str(), model_name);
        let path = format!("/models/{model}:generateContent");
        let url = self.http.url(&path);
        let has_schema = request.response_schema.is_some();
        let text = send_with_fallback(&self.structured_output, has_schema, &url, |mode| {
            let body = self.body(&request, mode);
            let path = &path;
            async move { self.http.post_json(path, &body?, model).await }
        })
        .await?;
        let reply: GenerateResponse = self.http.parse_json(&text, "a generateContent response")?;
        self.response(reply, model, &text)
    }

    fn model_id(&self) -> &str {
        &self.model
    }

    async fn probe(&self) -> Result<(), ProviderError> {
        let path = format!("/models/{}", self.model);
        self.http.get(&path, &self.model, true).await.map(|_| ())
    }
}

/// Accepts both `gemini-2.5-flash` and the resource name `models/gemini-2.5-flash`.
fn model_name(model: &str) -> &str {
    model.strip_prefix("models/").unwrap_or(model)
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        other => FinishReason::Other(other.to_owned()),
    }
}

/// The messages as Gemini `contents`: system messages left out (they go to
/// `systemInstruction`), consecutive turns of one role merged, because parallel tool
/// results must arrive as one turn.
fn contents(messages: &[Message]) -> Result<Vec<Content>, ProviderError> {
    let mut contents: Vec<Content> = Vec::new();
    // Gemini answers a function by name; our tool messages carry only the call id.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for message in messages {
        let (role, parts) = match message.role {
            Role::System => continue,
            Role::User => ("user", vec![Part::text(message.content.clone())]),
            Role::Assistant => {
                let mut parts = Vec::new();
                if !message.content.is_empty() {
                    parts.push(Part::text(message.content.clone()));
                }
                for (i, call) in message.tool_calls.iter().enumerate() {
                    call_names.insert(&call.id, &call.function.name);
                    parts.push(Part::FunctionCall {
                        function_call: FunctionCall {
                            name: call.function.name.clone(),
                            args: call_arguments(call)?,
                        },
                        // Only the first call of a turn carries a signature, as the
                        // model itself sends them.
                        thought_signature: (i == 0).then_some(SKIP_THOUGHT_SIGNATURE),
                    });
                }
                if parts.is_empty() {
                    parts.push(Part::text(String::new()));
                }
                ("model", parts)
            }
            Role::Tool => {
                let id = message.tool_call_id.as_deref().unwrap_or_default();
                let name = call_names.get(id).copied().unwrap_or(id);
                let part = Part::FunctionResponse {
                    function_response: FunctionResponse {
                        name: name.to_owned(),
                        response: tool_response(&message.content),
                    },
                };
                ("user", vec![part])
            }
        };
        match contents.last_mut() {
            Some(last) if last.role == role => last.parts.extend(parts),
            _ => contents.push(Content { role, parts }),
        }
    }
    Ok(contents)
}

/// Gemini wants the arguments as an object, not as the JSON text OpenAI uses.
fn call_arguments(call: &ToolCall) -> Result<Value, ProviderError> {
    let text = call.function.arguments.trim();
    if text.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(args @ Value::Object(_)) => Ok(args),
        _ => Err(ProviderError::Other {
            message: format!(
                "tool call `{}` ({}) has arguments that are not a JSON object, which Gemini requires",
                call.function.name, call.id
            ),
            retryable: false,
        }),
    }
}

/// A tool result as Gemini's `response` object: a JSON object as is, anything else
/// under `output` (the key Google documents for a function's output).
fn tool_response(content: &str) -> Value {
    match serde_json::from_str::<Value>(content) {
        Ok(object @ Value::Object(_)) => object,
        Ok(other) => serde_json::json!({ "output": other }),
        Err(_) => serde_json::json!({ "output": content }),
    }
}

/// The schema without the keywords the OpenAPI-subset `responseSchema` rejects.
fn openapi_subset(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| !matches!(key.as_str(), "$schema" | "additionalProperties"))
                .map(|(key, value)| (key.clone(), openapi_subset(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(openapi_subset).collect()),
        other => other.clone(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction>,
    contents: Vec<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation_config: Option<GenerationConfig<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tools<'a>>,
}

#[derive(Serialize)]
struct SystemInstruction {
    parts: Vec<Part>,
}

#[derive(Serialize)]
struct Content {
    role: &'static str,
    parts: Vec<Part>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Part {
    Text {
        text: String,
    },
    #[serde(rename_all = "camelCase")]
    FunctionCall {
        function_call: FunctionCall,
        #[serde(skip_serializing_if = "Option::is_none")]
        thought_signature: Option<&'static str>,
    },
    #[serde(rename_all = "camelCase")]
    FunctionResponse {
        function_response: FunctionResponse,
    },
}

impl Part {
    fn text(text: String) -> Self {
        Part::Text { text }
    }
}

#[derive(Serialize)]
struct FunctionCall {
    name: String,
    args: Value,
}

#[derive(Serialize)]
struct FunctionResponse {
    name: String,
    response: Value,
}

// `responseJsonSchema` rather than `responseSchema`: the latter takes only Google's
// OpenAPI subset (no `$ref`, no `additionalProperties`, limited `anyOf`), so a schema
// written for OpenAI's strict mode is often rejected there, while `responseJsonSchema`
// takes standard JSON Schema. `GeminiSchemaField::ResponseSchema` is for older models.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_json_schema: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_config: Option<ThinkingConfig>,
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        self.temperature.is_none()
            && self.max_output_tokens.is_none()
            && self.response_mime_type.is_none()
            && self.thinking_config.is_none()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfig {
    include_thoughts: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Tools<'a> {
    function_declarations: Vec<Declaration<'a>>,
}

/// A function declaration. Its parameters go where the schemas of structured output
/// go: `parametersJsonSchema` (full JSON Schema, so OpenAI tool specs with
/// `additionalProperties` work unchanged) or, for older models, `parameters` in
/// Google's OpenAPI subset.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Declaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters_json_schema: Option<&'a Value>,
}

impl<'a> Declaration<'a> {
    fn new(tool: &'a ToolSpec, field: GeminiSchemaField) -> Self {
        let (parameters, parameters_json_schema) = match field {
            GeminiSchemaField::ResponseJsonSchema => (None, Some(&tool.parameters)),
            GeminiSchemaField::ResponseSchema => (Some(openapi_subset(&tool.parameters)), None),
        };
        Declaration {
            name: &tool.name,
            description: &tool.description,
            parameters,
            parameters_json_schema,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default, deserialize_with = "lenient")]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<CandidateContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct CandidateContent {
    #[serde(default)]
    parts: Vec<ResponsePart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponsePart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: bool,
    #[serde(default)]
    function_call: Option<ResponseCall>,
}

#[derive(Deserialize)]
struct ResponseCall {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    args: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

/// Gemini's usage: the prompt count includes the cached part; thoughts are billed as
/// output but left out of the candidates' count.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default, deserialize_with = "count")]
    prompt_token_count: u64,
    #[serde(default, deserialize_with = "count")]
    candidates_token_count: u64,
    #[serde(default, deserialize_with = "count")]
    thoughts_token_count: u64,
    #[serde(default, deserialize_with = "count")]
    cached_content_token_count: u64,
}

impl UsageMetadata {
    fn billed(self) -> Usage {
        let thoughts = self.thoughts_token_count;
        billed(
            self.prompt_token_count,
            self.candidates_token_count.saturating_add(thoughts),
            self.cached_content_token_count,
            0,
            thoughts,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_subset_drops_rejected_keywords_everywhere() {
        let schema = serde_json::json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": false,
            "properties": {"items": {"type": "array", "items": {"type": "object", "additionalProperties": false}}}
        });
        assert_eq!(
            openapi_subset(&schema),
            serde_json::json!({
                "type": "object",
                "properties": {"items": {"type": "array", "items": {"type": "object"}}}
            })
        );
    }

    #[test]
    fn tool_results_become_objects() {
        assert_eq!(
            tool_response(r#"{"temp": 21}"#),
            serde_json::json!({"temp": 21})
        );
        assert_eq!(
            tool_response("[1, 2]"),
            serde_json::json!({"output": [1, 2]})
        );
        assert_eq!(
            tool_response("sunny"),
            serde_json::json!({"output": "sunny"})
        );
    }

    #[test]
    fn arguments_must_be_objects() {
        let bad = ToolCall::function("c1", "f", "[1]");
        assert!(
            call_arguments(&bad)
                .unwrap_err()
                .to_string()
                .contains("`f`")
        );
        let empty = ToolCall::function("c1", "f", "");
        assert_eq!(call_arguments(&empty).unwrap(), serde_json::json!({}));
    }
}
