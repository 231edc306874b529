//! The mock server over real HTTP, through reqwest: the OpenAI and Gemini formats here,
//! the Anthropic one in `anthropic` (one test binary builds and links once).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod anthropic;
mod batch;
mod caching;
mod stall;

use std::time::{Duration, Instant};

use afterimage_mock::{MockConfig, MockServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn server(config: MockConfig) -> MockServer {
    MockServer::start(config).await.unwrap()
}

async fn post(url: &str, body: &Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn get(url: &str) -> (StatusCode, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn chat_url(server: &MockServer) -> String {
    format!("{}/chat/completions", server.openai_base_url())
}

fn gemini_url(server: &MockServer, model: &str) -> String {
    format!(
        "{}/models/{model}:generateContent",
        server.gemini_base_url()
    )
}

fn content(reply: &Value) -> &str {
    reply["choices"][0]["message"]["content"].as_str().unwrap()
}

const SYSTEM: &str = "You are a helpful assistant.";
const QUESTION: &str = "How do I rotate my API keys safely?";

#[tokio::test]
async fn openai_plain_reply_has_the_chat_completions_shape_and_varies() {
    let server = server(MockConfig::default()).await;
    let body = json!({
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": QUESTION},
        ],
    });
    let (status, reply) = post(&chat_url(&server), &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["object"], "chat.completion");
    assert!(reply["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(reply["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(reply["model"], "gpt-test");
    let choice = &reply["choices"][0];
    assert_eq!(reply["choices"].as_array().unwrap().len(), 1);
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"].get("reasoning_content").is_none());
    let text = content(&reply);
    assert!(
        text.contains(QUESTION),
        "the answer quotes the user: {text}"
    );

    let usage = &reply["usage"];
    let prompt_tokens = (words(SYSTEM) + words(QUESTION)) * 4 / 3;
    assert_eq!(usage["prompt_tokens"], prompt_tokens);
    assert_eq!(usage["completion_tokens"], words(text) * 4 / 3);
    assert_eq!(
        usage["total_tokens"],
        prompt_tokens + usage["completion_tokens"].as_u64().unwrap()
    );

    let (_, again) = post(&format!("{}/v1/chat/completions", server.base_url()), &body).await;
    assert_ne!(content(&again), text, "replies vary between calls");
    assert_eq!(server.stats().chat_completions, 2);
}

#[tokio::test]
async fn a_system_prompt_casting_the_model_as_the_user_gets_a_question() {
    let server = server(MockConfig::default()).await;
    for n in 0..5 {
        let (_, reply) = post(
            &chat_url(&server),
            &json!({
                "model": "m",
                "messages": [
                    {"role": "system", "content": "Play the role of a user who runs a bakery."},
                    {"role": "user", "content": "Sourdough needs a mature starter and long fermentation."},
                ],
            }),
        )
        .await;
        let text = content(&reply);
        assert!(text.ends_with('?'), "call {n}: {text}");
        assert!(
            !text.contains("Sourdough needs a mature"),
            "no assistant-style quote: {text}"
        );
    }
}

#[tokio::test]
async fn a_request_to_write_a_system_prompt_gets_one_in_the_requested_tags() {
    let server = server(MockConfig::default()).await;
    let system = "Write the system prompt for the simulated user. \
                  Reply with the prompt only, between <user_system_prompt> and </user_system_prompt>.";
    let (_, reply) = post(
        &chat_url(&server),
        &json!({"model": "m", "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "<assistant_system_prompt>You are a bicycle mechanic who helps people repair their bikes.</assistant_system_prompt>"},
        ]}),
    )
    .await;
    let text = content(&reply);
    let inner = text
        .strip_prefix("<user_system_prompt>")
        .and_then(|t| t.strip_suffix("</user_system_prompt>"))
        .unwrap_or_else(|| panic!("tagged: {text}"));
    assert!(inner.contains("You are the user"), "{inner}");
    let grounded = ["bicycle", "mechanic", "repair", "bikes", "helps", "people"];
    assert!(grounded.iter().any(|w| inner.contains(w)), "{inner}");
}

#[tokio::test]
async fn reasoning_models_return_reasoning_content() {
    let server = server(MockConfig::default()).await;
    let (_, reply) = post(
        &chat_url(&server),
        &json!({"model": "deepseek-reasoner", "messages": [{"role": "user", "content": QUESTION}]}),
    )
    .await;
    let reasoning = reply["choices"][0]["message"]["reasoning_content"]
        .as_str()
        .unwrap();
    assert!(!reasoning.is_empty());
    let completion = (words(content(&reply)) + words(reasoning)) * 4 / 3;
    assert_eq!(reply["usage"]["completion_tokens"], completion);
}

fn nested_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["questions", "difficulty", "score", "rating", "meta", "verified", "note"],
        "properties": {
            "questions": {"type": "array", "minItems": 5, "maxItems": 7, "items": {"type": "string"}},
            "difficulty": {"type": "string", "enum": ["easy", "medium", "hard"]},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "rating": {"type": "integer", "minimum": 1, "maximum": 5},
            "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
            "meta": {"$ref": "#/$defs/meta"},
            "verified": {"type": "boolean"},
            "note": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 20}]}
        },
        "$defs": {
            "meta": {
                "type": "object",
                "required": ["author", "pages"],
                "properties": {
                    "author": {"type": "string", "minLength": 3},
                    "pages": {"type": "array", "minItems": 4, "items": {"$ref": "#/$defs/page"}}
                }
            },
            "page": {
                "type": "object",
                "required": ["number", "title"],
                "properties": {
                    "number": {"type": "integer", "exclusiveMinimum": 0},
                    "title": {"type": "string"}
                }
            }
        }
    })
}

const DOCUMENT: &str = "Refunds are issued to the original card within five business days. \
                        Invoices list every refund and chargeback separately.";

/// Checks `value` against [`nested_schema`] field by field; returns the questions.
fn assert_valid_nested(value: &Value) -> Vec<String> {
    let obj = value.as_object().unwrap();
    assert_eq!(obj.len(), 8, "every property is filled: {value}");

    let questions: Vec<String> = value["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q.as_str().unwrap().to_string())
        .collect();
    assert_eq!(questions.len(), 5, "minItems honoured: {questions:?}");
    for (i, q) in questions.iter().enumerate() {
        assert!(q.ends_with('?'), "{q}");
        assert!(!questions[..i].contains(q), "distinct: {questions:?}");
    }
    let grounded = [
        "Refunds",
        "Invoices",
        "refund",
        "chargeback",
        "card",
        "business",
    ];
    assert!(
        questions
            .iter()
            .any(|q| grounded.iter().any(|w| q.contains(w))),
        "questions mention the document: {questions:?}"
    );

    assert_eq!(value["difficulty"], "easy");
    let score = value["score"].as_f64().unwrap();
    assert!((0.8..=0.95).contains(&score), "{score}");
    let rating = value["rating"].as_i64().unwrap();
    assert!((1..=5).contains(&rating), "{rating}");
    assert!(value["tags"].as_array().unwrap().len() <= 2);
    assert!(
        value["tags"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_string)
    );
    assert!(value["verified"].is_boolean());
    let note = value["note"].as_str().unwrap();
    assert!(note.chars().count() <= 20, "{note}");

    let meta = &value["meta"];
    assert!(meta["author"].as_str().unwrap().chars().count() >= 3);
    let pages = meta["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 4);
    for page in pages {
        assert!(page["number"].as_i64().unwrap() > 0, "{page}");
        assert!(page["title"].is_string(), "{page}");
    }
    questions
}

#[tokio::test]
async fn openai_json_schema_reply_validates_and_varies() {
    let server = server(MockConfig::default()).await;
    let body = json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "Write questions a customer might ask about the document."},
            {"role": "user", "content": DOCUMENT},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "questions", "strict": true, "schema": nested_schema()},
        },
    });
    let (status, reply) = post(&chat_url(&server), &body).await;
    assert_eq!(status, StatusCode::OK);
    let first: Value = serde_json::from_str(content(&reply)).unwrap();
    let first_questions = assert_valid_nested(&first);

    let (_, reply) = post(&chat_url(&server), &body).await;
    let second: Value = serde_json::from_str(content(&reply)).unwrap();
    assert_ne!(assert_valid_nested(&second), first_questions);
}

#[tokio::test]
async fn json_object_follows_a_schema_in_the_system_prompt_or_answers_an_object() {
    let server = server(MockConfig::default()).await;
    let system = "Grade the answer. Reply with JSON matching this schema: \
        {\"type\": \"object\", \"required\": [\"feedback\", \"score\"], \"properties\": \
        {\"feedback\": {\"type\": \"string\"}, \"score\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 10}}}";
    let (_, reply) = post(
        &chat_url(&server),
        &json!({
            "model": "m",
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": DOCUMENT}],
            "response_format": {"type": "json_object"},
        }),
    )
    .await;
    let value: Value = serde_json::from_str(content(&reply)).unwrap();
    assert_eq!(value.as_object().unwrap().len(), 2, "{value}");
    assert!(!value["feedback"].as_str().unwrap().is_empty());
    let score = value["score"].as_i64().unwrap();
    assert!((1..=10).contains(&score), "{score}");

    let (_, reply) = post(
        &chat_url(&server),
        &json!({
            "model": "m",
            "messages": [{"role": "user", "content": QUESTION}],
            "response_format": {"type": "json_object"},
        }),
    )
    .await;
    let value: Value = serde_json::from_str(content(&reply)).unwrap();
    assert!(
        value["response"].as_str().unwrap().contains(QUESTION),
        "{value}"
    );
}

#[tokio::test]
async fn prose_instead_of_json_breaks_structured_output_on_purpose() {
    let server = server(MockConfig::default().with_prose_instead_of_json(true)).await;
    let (status, reply) = post(
        &chat_url(&server),
        &json!({
            "model": "m",
            "messages": [{"role": "user", "content": QUESTION}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": nested_schema()}},
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(serde_json::from_str::<Value>(content(&reply)).is_err());
    assert!(content(&reply).contains(QUESTION));
}

#[tokio::test]
async fn gemini_reply_has_the_generate_content_shape_and_validates() {
    let server = server(MockConfig::default()).await;
    let body = json!({
        "systemInstruction": {"parts": [{"text": "Write questions a customer might ask."}]},
        "contents": [{"role": "user", "parts": [{"text": DOCUMENT}]}],
        "generationConfig": {
            "responseMimeType": "application/json",
            "responseJsonSchema": nested_schema(),
        },
    });
    let (status, reply) = post(&gemini_url(&server, "gemini-test"), &body).await;
    assert_eq!(status, StatusCode::OK);
    let candidate = &reply["candidates"][0];
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(candidate["content"]["role"], "model");
    let parts = candidate["content"]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 1);
    let text = parts[0]["text"].as_str().unwrap();
    assert_valid_nested(&serde_json::from_str(text).unwrap());
    assert_eq!(reply["modelVersion"], "gemini-test");

    let usage = &reply["usageMetadata"];
    let prompt_tokens = (words("Write questions a customer might ask.") + words(DOCUMENT)) * 4 / 3;
    assert_eq!(usage["promptTokenCount"], prompt_tokens);
    assert_eq!(usage["candidatesTokenCount"], words(text) * 4 / 3);
    assert_eq!(
        usage["totalTokenCount"],
        prompt_tokens + usage["candidatesTokenCount"].as_u64().unwrap()
    );
    assert_eq!(server.stats().generate_content, 1);
}

#[tokio::test]
async fn gemini_openapi_response_schema_plain_text_and_thoughts() {
    let server = server(MockConfig::default()).await;
    let (_, reply) = post(
        &gemini_url(&server, "g"),
        &json!({
            "contents": [{"role": "user", "parts": [{"text": QUESTION}]}],
            "generationConfig": {"responseSchema": {
                "type": "OBJECT",
                "properties": {
                    "persona": {"type": "STRING"},
                    "age": {"type": "INTEGER", "minimum": 18, "maximum": 90},
                    "level": {"type": "STRING", "format": "enum", "enum": ["novice", "expert"]},
                },
                "required": ["persona", "age", "level"],
            }},
        }),
    )
    .await;
    let text = reply["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap();
    let value: Value = serde_json::from_str(text).unwrap();
    assert!(value["persona"].as_str().unwrap().len() > 10);
    assert!((18..=90).contains(&value["age"].as_i64().unwrap()));
    assert_eq!(value["level"], "novice");

    let (_, reply) = post(
        &gemini_url(&server, "g"),
        &json!({
            "system_instruction": {"parts": [{"text": "You are the user in this conversation."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "Hi, I need help."}]},
                {"role": "model", "parts": [{"text": "Backups run nightly at midnight."}]},
            ],
            "generationConfig": {"thinkingConfig": {"includeThoughts": true}},
        }),
    )
    .await;
    let parts = reply["candidates"][0]["content"]["parts"]
        .as_array()
        .unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["thought"], true);
    assert!(
        parts[1]["text"].as_str().unwrap().ends_with('?'),
        "{}",
        parts[1]
    );
    assert!(
        reply["usageMetadata"]["thoughtsTokenCount"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn models_endpoints() {
    let server = server(MockConfig::default()).await;
    for url in [
        format!("{}/models", server.openai_base_url()),
        format!("{}/models", server.base_url()),
    ] {
        let (status, list) = get(&url).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["object"], "list");
        assert_eq!(list["data"][0]["id"], "mock-model");
        assert_eq!(list["data"][0]["object"], "model");
    }
    let (status, model) = get(&format!("{}/models/gemini-x", server.gemini_base_url())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(model["name"], "models/gemini-x");
    assert!(
        model["supportedGenerationMethods"]
            .as_array()
            .unwrap()
            .contains(&json!("generateContent"))
    );
    let (_, list) = get(&format!("{}/models", server.gemini_base_url())).await;
    assert_eq!(list["models"][0]["name"], "models/mock-model");
    assert_eq!(server.stats().models, 4);
}

#[tokio::test]
async fn latency_is_applied_to_both_formats() {
    let latency = Duration::from_millis(150);
    let server = server(MockConfig::default().with_latency(latency)).await;
    let started = Instant::now();
    let (status, _) = post(
        &chat_url(&server),
        &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= latency, "{:?}", started.elapsed());

    let started = Instant::now();
    let (status, _) = post(
        &gemini_url(&server, "g"),
        &json!({"contents": [{"parts": [{"text": "hi"}]}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= latency, "{:?}", started.elapsed());
}

#[tokio::test]
async fn error_rate_one_answers_500_in_each_format() {
    let server = server(MockConfig::default().with_error_rate(1.0)).await;
    let (status, body) = post(
        &chat_url(&server),
        &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["type"], "server_error");
    assert!(body["error"]["message"].is_string());

    let (status, body) = post(
        &gemini_url(&server, "g"),
        &json!({"contents": [{"parts": [{"text": "hi"}]}]}),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["code"], 500);
    assert_eq!(body["error"]["status"], "INTERNAL");
    assert_eq!(server.stats().errors_injected, 2);
}

#[tokio::test]
async fn rate_limit_rate_one_answers_429_with_retry_after() {
    let config = MockConfig::default()
        .with_rate_limit_rate(1.0)
        .with_retry_after_secs(7);
    let server = server(config).await;
    let client = reqwest::Client::new();
    let response = client
        .post(chat_url(&server))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["message"], "Rate limit reached");
    assert_eq!(body["error"]["type"], "rate_limit_error");

    let response = client
        .post(gemini_url(&server, "g"))
        .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], 429);
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(body["error"]["details"][0]["retryDelay"], "7s");
    assert_eq!(server.stats().rate_limited, 2);
}

#[tokio::test]
async fn rpm_limit_answers_429_per_key_once_the_minute_is_used_up() {
    let server = server(MockConfig::default().with_rpm_limit(2)).await;
    let client = reqwest::Client::new();
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let send = |key: &'static str| {
        client
            .post(chat_url(&server))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    assert_eq!(send("a").await.unwrap().status(), StatusCode::OK);
    assert_eq!(send("a").await.unwrap().status(), StatusCode::OK);
    let over = send("a").await.unwrap();
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = over.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Each key has its own budget.
    assert_eq!(send("b").await.unwrap().status(), StatusCode::OK);
    let stats = server.stats();
    assert_eq!((stats.chat_completions, stats.rate_limited), (4, 1));
}

#[tokio::test]
async fn fractional_fault_rates_mix_faults_and_successes() {
    let config = MockConfig::default()
        .with_error_rate(0.3)
        .with_rate_limit_rate(0.3)
        .with_seed(42);
    let server = server(config).await;
    let client = reqwest::Client::new();
    let mut counts = [0u32; 3];
    for _ in 0..200 {
        let status = client
            .post(chat_url(&server))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
            .status();
        match status.as_u16() {
            200 => counts[0] += 1,
            429 => counts[1] += 1,
            500 => counts[2] += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // 40% / 30% / 30% of 200; a fixed seed makes this deterministic.
    assert!(counts.iter().all(|&c| c > 30), "{counts:?}");
    let stats = server.stats();
    assert_eq!(u64::from(counts[1]), stats.rate_limited);
    assert_eq!(u64::from(counts[2]), stats.errors_injected);
}

#[tokio::test]
async fn require_key_answers_401_without_the_key() {
    let server = server(MockConfig::default().with_require_key("sk-mock")).await;
    let client = reqwest::Client::new();
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let gemini = json!({"contents": [{"parts": [{"text": "hi"}]}]});
    let response = client
        .post(chat_url(&server))
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");

    let wrong = client
        .post(chat_url(&server))
        .bearer_auth("sk-wrong")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let models = client
        .get(format!("{}/models", server.openai_base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), StatusCode::UNAUTHORIZED);
    let response = client
        .post(gemini_url(&server, "g"))
        .json(&gemini)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(server.stats().unauthorized, 4);
}

#[tokio::test]
async fn require_key_accepts_it_as_bearer_header_or_query() {
    let server = server(MockConfig::default().with_require_key("sk-mock")).await;
    let client = reqwest::Client::new();
    let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let gemini = json!({"contents": [{"parts": [{"text": "hi"}]}]});

    let ok = client
        .post(chat_url(&server))
        .bearer_auth("sk-mock")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let ok = client
        .post(gemini_url(&server, "g"))
        .header("x-goog-api-key", "sk-mock")
        .json(&gemini)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let ok = client
        .post(format!("{}?key=sk-mock", gemini_url(&server, "g")))
        .json(&gemini)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(server.stats().unauthorized, 0);
}

#[tokio::test]
async fn bad_bodies_answer_400_and_unknown_paths_404() {
    let server = server(MockConfig::default()).await;
    let client = reqwest::Client::new();
    let response = client
        .post(chat_url(&server))
        .header("content-type", "application/json")
        .body("this is not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let response = client
        .post(gemini_url(&server, "g"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");

    let (status, body) = post(&chat_url(&server), &json!({"model": "m"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages")
    );

    let (status, body) = get(&format!("{}/v1/nothing", server.base_url())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["message"], "Invalid URL (GET /v1/nothing)");
    let (status, _) = get(&chat_url(&server)).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "chat completions is POST only"
    );
    let (status, body) = post(
        &format!("{}/models/g:countTokens", server.gemini_base_url()),
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["status"], "NOT_FOUND");

    let stats = server.stats();
    assert_eq!((stats.bad_requests, stats.not_found), (3, 3));
}

#[tokio::test]
async fn stats_count_requests_and_peak_concurrency() {
    let server = server(MockConfig::default().with_latency(Duration::from_millis(50))).await;
    let client = reqwest::Client::new();
    let url = chat_url(&server);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let body = json!({"model": "m", "messages": [{"role": "user", "content": format!("question {i}")}]});
            client.post(url).json(&body).send().await.unwrap().status()
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    let stats = server.stats();
    assert_eq!(stats.requests, 50);
    assert_eq!(stats.chat_completions, 50);
    assert!(stats.max_in_flight > 1, "{stats:?}");
    assert!(stats.max_in_flight <= 50, "{stats:?}");
    assert_eq!(stats.in_flight, 0);

    server.reset_stats();
    assert_eq!(server.stats().requests, 0);
    assert_eq!(server.stats().max_in_flight, 0);
}

#[tokio::test]
async fn tools_are_called_then_answered() {
    let server = server(MockConfig::default()).await;
    let tools = json!([{"type": "function", "function": {
        "name": "lookup_order",
        "description": "Find an order",
        "parameters": {"type": "object", "required": ["order_id", "limit"], "properties": {
            "order_id": {"type": "string"}, "limit": {"type": "integer", "minimum": 1, "maximum": 3}
        }},
    }}]);
    let (_, reply) = post(
        &chat_url(&server),
        &json!({"model": "m", "tools": tools, "messages": [{"role": "user", "content": "Where is my order?"}]}),
    )
    .await;
    let choice = &reply["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "lookup_order");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["order_id"].is_string());
    assert!((1..=3).contains(&args["limit"].as_i64().unwrap()));

    let (_, reply) = post(
        &chat_url(&server),
        &json!({"model": "m", "tools": tools, "messages": [
            {"role": "user", "content": "Where is my order?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "{\"status\": \"shipped\"}"},
        ]}),
    )
    .await;
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    assert!(content(&reply).contains("Where is my order?"));

    let (_, reply) = post(
        &gemini_url(&server, "g"),
        &json!({
            "contents": [{"role": "user", "parts": [{"text": "Where is my order?"}]}],
            "tools": [{"functionDeclarations": [{"name": "lookup_order", "parameters": {
                "type": "OBJECT", "properties": {"order_id": {"type": "STRING"}}, "required": ["order_id"]
            }}]}],
        }),
    )
    .await;
    let call = &reply["candidates"][0]["content"]["parts"][0]["functionCall"];
    assert_eq!(call["name"], "lookup_order");
    assert!(call["args"]["order_id"].is_string());
}

#[tokio::test]
async fn openai_streaming_sends_server_sent_events() {
    let server = server(MockConfig::default()).await;
    let response = reqwest::Client::new()
        .post(chat_url(&server))
        .json(&json!({
            "model": "m",
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": QUESTION}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = response.text().await.unwrap();
    let events: Vec<&str> = body
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap())
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(text.contains(QUESTION), "{text}");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(
        chunks[chunks.len() - 1]["usage"]["completion_tokens"],
        words(&text) * 4 / 3
    );
}

#[tokio::test]
async fn gemini_streaming_sends_server_sent_events() {
    let server = server(MockConfig::default()).await;
    let body = reqwest::Client::new()
        .post(format!(
            "{}/models/g:streamGenerateContent?alt=sse",
            server.gemini_base_url()
        ))
        .json(&json!({"contents": [{"parts": [{"text": QUESTION}]}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let chunks: Vec<Value> = body
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert!(chunks.len() > 1);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str())
        .collect();
    assert!(text.contains(QUESTION), "{text}");
    assert_eq!(
        chunks.last().unwrap()["candidates"][0]["finishReason"],
        "STOP"
    );
    assert!(chunks[0]["candidates"][0].get("finishReason").is_none());
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    let server = server(MockConfig::default()).await;
    let addr = server.addr();
    let (status, _) = get(&format!("{}/models", server.base_url())).await;
    assert_eq!(status, StatusCode::OK);
    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let addr = server.addr();
    drop(server);
    // The accept loop notices the drop on its next poll.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused);
}

fn cosine(a: &Value, b: &Value) -> f64 {
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    a.iter()
        .zip(b)
        .map(|(x, y)| x.as_f64().unwrap() * y.as_f64().unwrap())
        .sum()
}

#[tokio::test]
async fn openai_embeddings_are_deterministic_word_hashes() {
    let server = server(MockConfig::default()).await;
    let body = json!({
        "model": "text-embedding-3-small",
        "input": ["How long does a refund take?", "A refund takes 30 days.", "Shipping is free."]
    });
    let (status, reply) = post(&format!("{}/embeddings", server.openai_base_url()), &body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["object"], "list");
    assert_eq!(reply["model"], "text-embedding-3-small");
    let data = reply["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let vectors: Vec<&Value> = data.iter().map(|d| &d["embedding"]).collect();
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["index"], i);
        assert_eq!(d["embedding"].as_array().unwrap().len(), 64);
        assert!((cosine(&d["embedding"], &d["embedding"]) - 1.0).abs() < 1e-5);
    }
    assert!(cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]));
    assert!(reply["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    // The same text gets the same vector, at either path and in any batch.
    let single = json!({"model": "m", "input": "A refund takes 30 days."});
    let (_, again) = post(&format!("{}/embeddings", server.base_url()), &single).await;
    assert_eq!(&again["data"][0]["embedding"], vectors[1]);
    // `dimensions` is honoured; a bad input is a 400.
    let small = json!({"model": "m", "input": "refund", "dimensions": 8});
    let (_, reply) = post(&format!("{}/embeddings", server.openai_base_url()), &small).await;
    assert_eq!(reply["data"][0]["embedding"].as_array().unwrap().len(), 8);
    let bad = json!({"model": "m", "input": [1, 2]});
    let (status, reply) = post(&format!("{}/embeddings", server.openai_base_url()), &bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(server.stats().embeddings, 4);
    assert_eq!(server.stats().chat_completions, 0);
}

#[tokio::test]
async fn gemini_batch_embeddings_match_the_openai_vectors() {
    let server = server(MockConfig::default().with_embedding_dimensions(32)).await;
    let texts = ["How long does a refund take?", "Shipping is free."];
    let requests: Vec<Value> = texts
        .iter()
        .map(|t| json!({"model": "models/gemini-embedding-001", "content": {"parts": [{"text": t}]}}))
        .collect();
    let url = format!(
        "{}/models/gemini-embedding-001:batchEmbedContents",
        server.gemini_base_url()
    );
    let (status, reply) = post(&url, &json!({"requests": requests})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let embeddings = reply["embeddings"].as_array().unwrap();
    assert_eq!(embeddings.len(), 2);
    assert_eq!(embeddings[0]["values"].as_array().unwrap().len(), 32);
    let (_, openai) = post(
        &format!("{}/embeddings", server.openai_base_url()),
        &json!({"model": "m", "input": texts}),
    )
    .await;
    assert_eq!(embeddings[1]["values"], openai["data"][1]["embedding"]);

    let url = format!(
        "{}/models/gemini-embedding-001:embedContent",
        server.gemini_base_url()
    );
    let (_, single) = post(&url, &json!({"content": {"parts": [{"text": texts[0]}]}})).await;
    assert_eq!(single["embedding"]["values"], embeddings[0]["values"]);
    let (status, reply) = post(&url, &json!({"content": {}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reply["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(server.stats().embeddings, 4);
}

#[tokio::test]
async fn embeddings_share_the_fault_injection_of_model_calls() {
    let server = server(MockConfig::default().with_error_rate(1.0)).await;
    let body = json!({"model": "m", "input": "refund"});
    let (status, _) = post(&format!("{}/embeddings", server.openai_base_url()), &body).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(server.stats().errors_injected, 1);
}

#[tokio::test]
async fn terse_answers_are_asked_for_and_judged_low() {
    let server = server(MockConfig::default()).await;
    let ask = |system: &str, model: &str| {
        json!({
            "model": model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": QUESTION},
            ],
        })
    };
    let (_, terse) = post(
        &chat_url(&server),
        &ask(
            &format!("{SYSTEM} Answer in one short sentence."),
            "primary",
        ),
    )
    .await;
    let (_, full) = post(&chat_url(&server), &ask(SYSTEM, "secondary")).await;
    let (terse, full) = (content(&terse).to_owned(), content(&full).to_owned());
    assert!(words(&terse) < 15, "{terse}");
    assert!(words(&full) >= 15, "{full}");

    // A judge's transcript: the score follows the last assistant answer's length.
    let judge = |answer: &str| {
        json!({
            "model": "judge",
            "messages": [
                {"role": "system", "content": "Grade the conversation."},
                {"role": "user", "content": format!("# Conversation\n1. User: {QUESTION}\n\n2. Assistant: {answer}")},
            ],
            "response_format": {"type": "json_schema", "json_schema": {"name": "grade", "schema": {
                "type": "object",
                "properties": {"helpfulness": {"type": "object", "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1}}, "required": ["score"]}},
                "required": ["helpfulness"],
            }}},
        })
    };
    let score = |reply: &Value| -> f64 {
        let v: Value = serde_json::from_str(content(reply)).unwrap();
        v["helpfulness"]["score"].as_f64().unwrap()
    };
    let (_, low) = post(&chat_url(&server), &judge(&terse)).await;
    let (_, high) = post(&chat_url(&server), &judge(&full)).await;
    assert!(score(&low) < 0.55, "{low}");
    assert!(score(&high) >= 0.8, "{high}");

    let by_model = server.requests_by_model();
    assert_eq!(
        (
            by_model["primary"],
            by_model["secondary"],
            by_model["judge"]
        ),
        (1, 1, 2)
    );
}
