//! Tools: schema validation keyword by keyword, reading tool specs, handler dispatch,
//! the model-played tool, and the tool-calling instruction generator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use afterimage_core::testing::ScriptedModel;
use afterimage_core::{
    ChatResponse, Document, InstructionGenerator, InstructionRequest, Message, Persona,
    PersonaPick, PersonaSource, Role, StrategyError, ToolCall, ToolExecutor, ToolSpec, Usage,
};
use afterimage_strategies::{
    InMemoryDocumentProvider, LlmToolSimulator, ToolCallingInstructionGenerator, ToolHandlers,
    parse_tool_specs, validate_arguments, validate_tool_call,
};
use async_trait::async_trait;
use serde_json::{Value, json};

fn errors(schema: Value, value: Value) -> Vec<String> {
    validate_arguments(&schema, &value)
        .err()
        .unwrap_or_default()
}

#[test]
fn each_keyword_passes_and_fails() {
    // (schema, a value it accepts, a value it rejects, part of the error)
    let table: Vec<(Value, Value, Value, &str)> = vec![
        (
            json!({"type": "object"}),
            json!({}),
            json!([]),
            "`/`: expected object, got an array",
        ),
        (
            json!({"type": "string"}),
            json!("a"),
            json!(1),
            "expected string, got number 1",
        ),
        (
            json!({"type": "number"}),
            json!(1.5),
            json!("1"),
            "expected number",
        ),
        (
            json!({"type": "integer"}),
            json!(3),
            json!(3.5),
            "expected integer",
        ),
        (
            json!({"type": "integer"}),
            json!(3.0),
            json!(true),
            "expected integer, got boolean",
        ),
        (
            json!({"type": "boolean"}),
            json!(false),
            json!(0),
            "expected boolean",
        ),
        (
            json!({"type": "array"}),
            json!([]),
            json!({}),
            "expected array",
        ),
        (
            json!({"type": "null"}),
            json!(null),
            json!(0),
            "expected null",
        ),
        (
            json!({"type": ["string", "null"]}),
            json!(null),
            json!(1),
            "expected string or null",
        ),
        (
            json!({"enum": ["c", "f"]}),
            json!("c"),
            json!("kelvin"),
            r#"`/`: expected one of ["c","f"], got "kelvin""#,
        ),
        (
            json!({"minimum": 0}),
            json!(0),
            json!(-1),
            "less than the minimum 0",
        ),
        (
            json!({"maximum": 10}),
            json!(10),
            json!(10.5),
            "more than the maximum 10",
        ),
        (
            json!({"minLength": 2}),
            json!("ab"),
            json!("é"),
            "1 characters, fewer than minLength 2",
        ),
        (
            json!({"maxLength": 2}),
            json!("éé"),
            json!("abc"),
            "more than maxLength 2",
        ),
        (
            json!({"minItems": 1}),
            json!([1]),
            json!([]),
            "fewer than minItems 1",
        ),
        (
            json!({"maxItems": 1}),
            json!([1]),
            json!([1, 2]),
            "more than maxItems 1",
        ),
        (
            json!({"items": {"type": "string"}}),
            json!(["a"]),
            json!(["a", 2]),
            "`/1`: expected string",
        ),
        (
            json!({"required": ["city"]}),
            json!({"city": "x"}),
            json!({}),
            "missing required property `city`",
        ),
        (
            json!({"properties": {"a": {}}, "additionalProperties": false}),
            json!({"a": 1}),
            json!({"b": 1}),
            "unexpected property `b`",
        ),
        (
            json!({"properties": {"unit": {"enum": ["c", "f"]}}}),
            json!({"unit": "f"}),
            json!({"unit": "kelvin"}),
            r#"`/unit`: expected one of ["c","f"], got "kelvin""#,
        ),
        (
            json!({"properties": {"to": {"properties": {"zip": {"type": "string"}}}}}),
            json!({"to": {"zip": "75001"}}),
            json!({"to": {"zip": 75001}}),
            "`/to/zip`: expected string",
        ),
        (
            json!({"additionalProperties": {"type": "integer"}}),
            json!({"x": 1}),
            json!({"x": "1"}),
            "`/x`: expected integer",
        ),
    ];
    for (schema, good, bad, expected) in table {
        assert_eq!(
            errors(schema.clone(), good.clone()),
            Vec::<String>::new(),
            "{schema} on {good}"
        );
        let found = errors(schema.clone(), bad.clone());
        assert!(
            found.iter().any(|e| e.contains(expected)),
            "{schema} on {bad}: {found:?} lacks {expected:?}"
        );
    }
}

#[test]
fn unknown_keywords_are_ignored_and_every_error_is_listed() {
    let schema = json!({"type": "object", "format": "weird", "anyOf": [{"type": "string"}]});
    assert!(validate_arguments(&schema, &json!({})).is_ok());
    let schema = json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "maximum": 7}},
        "required": ["city", "days"]
    });
    let found = errors(schema, json!({"days": 9}));
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("missing required property `city`"));
    assert!(found[1].starts_with("`/days`:"), "{found:?}");
}

#[test]
fn tool_specs_in_both_shapes() {
    let specs = parse_tool_specs(&json!([
        {"type": "function", "function": {
            "name": "get_weather", "description": "Weather.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
        {"name": "get-time_2", "description": "Time."}
    ]))
    .unwrap();
    assert_eq!(specs.len(), 2);
    assert_eq!(specs[0].name, "get_weather");
    assert_eq!(specs[0].parameters["properties"]["city"]["type"], "string");
    assert_eq!(specs[1].name, "get-time_2");
    assert_eq!(
        specs[1].parameters,
        json!({"type": "object", "properties": {}})
    );
}

#[test]
fn bad_tool_specs_are_config_errors() {
    let long = "x".repeat(65);
    for (bad, expected) in [
        (json!({"name": "a"}), "array"),
        (json!([{"name": "get weather"}]), "letters, digits"),
        (json!([{"name": ""}]), "letters, digits"),
        (json!([{"name": long}]), "letters, digits"),
        (
            json!([{"name": "a"}, {"type": "function", "function": {"name": "a"}}]),
            "used twice",
        ),
        (
            json!([{"name": "a", "parameters": "none"}]),
            "JSON Schema object",
        ),
        (json!([{"description": "no name"}]), "tool 1"),
        (
            json!([{"type": "retrieval", "function": {"name": "a"}}]),
            "only \"function\"",
        ),
    ] {
        match parse_tool_specs(&bad) {
            Err(StrategyError::Config(message)) => {
                assert!(message.contains(expected), "{bad}: {message}")
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}

fn weather() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: "Current weather in a city.".into(),
        parameters: json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"]
        }),
    }
}

#[test]
fn tool_calls_are_checked_against_the_offered_tools() {
    let tools = [weather()];
    let ok = ToolCall::function("c", "get_weather", r#"{"city":"Oslo"}"#);
    assert_eq!(
        validate_tool_call(&tools, &ok).unwrap().1,
        json!({"city": "Oslo"})
    );
    let unknown = ToolCall::function("c", "get_time", "{}");
    assert!(
        validate_tool_call(&tools, &unknown)
            .unwrap_err()
            .contains("unknown tool `get_time`")
    );
    let broken = ToolCall::function("c", "get_weather", "{city");
    assert!(
        validate_tool_call(&tools, &broken)
            .unwrap_err()
            .contains("not valid JSON")
    );
    let missing = ToolCall::function("c", "get_weather", "");
    assert!(
        validate_tool_call(&tools, &missing)
            .unwrap_err()
            .contains("`city`")
    );
    let array = ToolCall::function("c", "get_weather", "[]");
    assert!(
        validate_tool_call(&tools, &array)
            .unwrap_err()
            .contains("not a JSON object")
    );
}

/// A fallback that records what it was asked.
#[derive(Debug, Default)]
struct Recorder(AtomicUsize);

#[async_trait]
impl ToolExecutor for Recorder {
    async fn execute(
        &self,
        tool: &ToolSpec,
        _call: &ToolCall,
        _dialog: &[Message],
    ) -> Result<afterimage_core::ToolOutput, StrategyError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(afterimage_core::ToolOutput {
            content: format!("{{\"from\":\"{}\"}}", tool.name),
            usage: Usage::new(1, 1),
            requests: 1,
        })
    }
}

#[tokio::test]
async fn handlers_dispatch_by_name_and_fall_back() {
    let tool = weather();
    let call = ToolCall::function("c", "get_weather", r#"{"city":"Oslo"}"#);
    let handlers = ToolHandlers::new().handler("get_weather", |args| {
        Ok(json!({"city": args["city"], "temp": -3}))
    });
    let out = handlers.execute(&tool, &call, &[]).await.unwrap();
    assert_eq!(out.content, r#"{"city":"Oslo","temp":-3}"#);
    assert_eq!(out.requests, 0);

    let other = ToolCall::function("d", "get_time", "{}");
    match handlers.execute(&tool, &other, &[]).await {
        Err(StrategyError::Tool { tool, message }) => {
            assert_eq!(tool, "get_time");
            assert!(message.contains("no handler"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let recorder = Arc::new(Recorder::default());
    let with_fallback = handlers.fallback(recorder.clone());
    let out = with_fallback.execute(&tool, &other, &[]).await.unwrap();
    assert_eq!(out.requests, 1);
    assert_eq!(recorder.0.load(Ordering::SeqCst), 1);

    let failing = ToolHandlers::new().handler("get_weather", |_| Err("station offline".into()));
    match failing.execute(&tool, &call, &[]).await {
        Err(StrategyError::Tool { message, .. }) => assert_eq!(message, "station offline"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_simulator_plays_the_tool_with_the_earlier_results_and_retries_once() {
    let answers = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&answers);
    let model = Arc::new(ScriptedModel::new("sim", move |_request| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            Ok(match n {
                0 => ChatResponse::text("```json\n{\"temp\": 4,  \"sky\": \"snow\"}\n```"),
                1 => ChatResponse::text("It is snowing."),
                _ => ChatResponse::text("{\"temp\": 4}"),
            }
            .with_usage(Usage::new(7, 3)))
        }
    }));
    let simulator = LlmToolSimulator::new(model.clone()).temperature(0.1);
    let first = ToolCall::function("c1", "get_weather", r#"{"city":"Oslo"}"#);
    let dialog = vec![Message::user("Weather in Oslo?")];
    let out = simulator
        .execute(&weather(), &first, &dialog)
        .await
        .unwrap();
    assert_eq!(out.content, r#"{"sky":"snow","temp":4}"#);
    assert_eq!((out.requests, out.usage), (1, Usage::new(7, 3)));

    // A second call sees the first result; a prose answer gets one more chance.
    let mut asked = Message::assistant("");
    asked.tool_calls = vec![first];
    let dialog = vec![
        Message::user("Weather in Oslo?"),
        asked,
        Message::tool("c1", out.content.clone()),
        Message::assistant("4 degrees and snow."),
        Message::user("And again, to be sure?"),
    ];
    let again = ToolCall::function("c2", "get_weather", r#"{"city":"Oslo"}"#);
    let out = simulator
        .execute(&weather(), &again, &dialog)
        .await
        .unwrap();
    assert_eq!(out.content, r#"{"temp":4}"#);
    assert_eq!(out.requests, 2);
    let requests = model.requests();
    let second = &requests[1];
    assert_eq!(second.temperature, Some(0.1));
    assert!(second.response_schema.is_some());
    assert_eq!(second.messages[0].role, Role::System);
    assert!(
        second.messages[0]
            .content
            .contains("Current weather in a city.")
    );
    let user = &second.messages[1].content;
    assert!(
        user.contains(r#"get_weather({"city":"Oslo"}) returned {"sky":"snow","temp":4}"#),
        "{user}"
    );
    assert!(user.contains("And again, to be sure?"), "{user}");
    assert_eq!(requests[2].messages.len(), 4);

    // Prose twice: a malformed-output error naming the tool.
    let model = Arc::new(ScriptedModel::new("sim", |_r| async {
        Ok(ChatResponse::text("sunny"))
    }));
    let err = LlmToolSimulator::new(model)
        .execute(&weather(), &again, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StrategyError::MalformedOutput { .. }));
    assert!(err.to_string().contains("get_weather"), "{err}");
}

fn tools(n: usize) -> Vec<ToolSpec> {
    (0..n)
        .map(|i| ToolSpec {
            name: format!("tool_{i}"),
            description: format!("Does thing {i}."),
            parameters: json!({"type": "object", "properties": {}}),
        })
        .collect()
}

fn instructions_model() -> Arc<ScriptedModel> {
    Arc::new(ScriptedModel::new("gen", |_r| async {
        Ok(
            ChatResponse::text(r#"{"instructions": ["Book me a table for 4 at 8pm", "b", "c"]}"#)
                .with_usage(Usage::new(10, 5)),
        )
    }))
}

fn sampled(batch: &afterimage_core::GeneratedInstructions) -> Vec<String> {
    batch.metadata["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_generator_samples_tools_with_the_seed_and_shows_only_those() {
    let model = instructions_model();
    let generator = ToolCallingInstructionGenerator::new(model.clone(), tools(6));
    let a = generator
        .generate(&InstructionRequest::new("A diner.", 1))
        .await
        .unwrap();
    let b = generator
        .generate(&InstructionRequest::new("A diner.", 1))
        .await
        .unwrap();
    assert_eq!(sampled(&a), sampled(&b));
    assert_eq!(sampled(&a).len(), 2);
    assert_eq!(a.instructions.len(), 3);
    assert_eq!((a.requests, a.usage), (1, Usage::new(10, 5)));
    assert!(a.persona.is_none() && a.documents.is_empty() && a.context.is_empty());

    let prompt = &model.requests()[0];
    assert!(prompt.messages[0].content.contains("exactly 3"));
    let user = &prompt.messages[1].content;
    assert!(user.contains("A diner."), "{user}");
    for i in 0..6 {
        let name = format!("tool_{i}");
        assert_eq!(user.contains(&name), sampled(&a).contains(&name), "{user}");
    }

    // Over many seeds every tool gets sampled, and never the same one twice.
    let mut seen = BTreeSet::new();
    for seed in 0..40 {
        let batch = generator
            .generate(&InstructionRequest::new("A diner.", seed))
            .await
            .unwrap();
        let names = sampled(&batch);
        assert_eq!(names.iter().collect::<BTreeSet<_>>().len(), 2);
        seen.extend(names);
    }
    assert_eq!(seen.len(), 6);

    // Fewer tools than asked for: all of them.
    let all = ToolCallingInstructionGenerator::new(instructions_model(), tools(1))
        .num_tools_to_sample(3)
        .generate(&InstructionRequest::new("A diner.", 9))
        .await
        .unwrap();
    assert_eq!(sampled(&all), ["tool_0"]);
}

/// One persona per document, costing one request.
#[derive(Debug)]
struct Personas;

#[async_trait]
impl PersonaSource for Personas {
    async fn persona_for(
        &self,
        document: &Document,
        _seed: u64,
    ) -> Result<PersonaPick, StrategyError> {
        Ok(PersonaPick {
            persona: Some(Persona {
                description: format!("A chef who read: {}", document.text),
                generation_depth: Some(1),
            }),
            usage: Usage::new(2, 2),
            requests: 1,
        })
    }
}

#[tokio::test]
async fn documents_and_personas_shape_the_request() {
    let model = instructions_model();
    let docs = Arc::new(InMemoryDocumentProvider::new(["The bistro opens at 7pm."]));
    let batch = ToolCallingInstructionGenerator::new(model.clone(), tools(3))
        .documents(docs)
        .personas(Arc::new(Personas))
        .n_instructions(2)
        .num_tools_to_sample(1)
        .generate(&InstructionRequest::new("A diner.", 5))
        .await
        .unwrap();
    assert_eq!(batch.instructions.len(), 2);
    assert_eq!(batch.context, "The bistro opens at 7pm.");
    assert_eq!(batch.documents.len(), 1);
    let persona = batch.persona.as_ref().unwrap();
    assert_eq!(persona.generation_depth, Some(1));
    assert_eq!((batch.requests, batch.usage), (2, Usage::new(12, 7)));
    let user = &model.requests()[0].messages[1].content;
    assert!(user.contains("A chef who read"), "{user}");
    assert!(!user.contains("A diner."), "{user}");
    assert!(
        user.contains("<context>\nThe bistro opens at 7pm.\n</context>"),
        "{user}"
    );
    assert_eq!(sampled(&batch).len(), 1);
}

#[tokio::test]
async fn bad_settings_are_config_errors() {
    let request = InstructionRequest::new("A diner.", 1);
    let cases = [
        ToolCallingInstructionGenerator::new(instructions_model(), vec![]),
        ToolCallingInstructionGenerator::new(instructions_model(), tools(2)).n_instructions(0),
        ToolCallingInstructionGenerator::new(instructions_model(), tools(2)).num_tools_to_sample(0),
        ToolCallingInstructionGenerator::new(instructions_model(), tools(2))
            .personas(Arc::new(Personas)),
    ];
    for generator in cases {
        let err = generator.generate(&request).await.unwrap_err();
        assert!(matches!(err, StrategyError::Config(_)), "{err}");
    }
}

#[test]
fn the_cheap_checks_accept_tool_plumbing() {
    let mut asked = Message::assistant("");
    asked.tool_calls = vec![ToolCall::function(
        "c1",
        "get_weather",
        r#"{"city":"Oslo"}"#,
    )];
    let dialog = vec![
        Message::user("What is the weather in Oslo today?"),
        asked,
        Message::tool("c1", r#"{"temp":4}"#),
        Message::assistant("It is 4 degrees in Oslo."),
    ];
    assert_eq!(afterimage_strategies::check_dialog(&dialog, false), Ok(()));
    let mut empty = dialog.clone();
    empty[2].content.clear();
    assert_eq!(
        afterimage_strategies::check_dialog(&empty, false)
            .unwrap_err()
            .cause,
        "empty_reply"
    );
}
