//! Instruction generators against a scripted model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use afterimage_core::testing::ScriptedModel;
use afterimage_core::{
    AskedQuestions, ChatResponse, Document, DocumentSource, InstructionGenerator,
    InstructionRequest, Role, Steering, StrategyError, ToolSpec, Usage,
};
use afterimage_strategies::{
    CONTEXT_SEPARATOR, ContextualInstructionGenerator, InMemoryDocumentProvider,
    SimpleInstructionGenerator, ToolCallingInstructionGenerator, builtin_question_type,
};
use async_trait::async_trait;
use serde_json::json;

/// A model that gives these answers in order (the last one repeats).
fn answering(answers: &[&str]) -> Arc<ScriptedModel> {
    let answers: Vec<String> = answers.iter().map(|a| (*a).to_owned()).collect();
    let next = Arc::new(AtomicUsize::new(0));
    Arc::new(ScriptedModel::new("scripted", move |_request| {
        let i = next.fetch_add(1, Ordering::SeqCst).min(answers.len() - 1);
        let answer = answers[i].clone();
        async move { Ok(ChatResponse::text(answer).with_usage(Usage::new(10, 5))) }
    }))
}

fn docs(texts: &[&str]) -> Arc<InMemoryDocumentProvider> {
    Arc::new(InMemoryDocumentProvider::new(texts.iter().copied()))
}

fn request() -> InstructionRequest {
    InstructionRequest::new("You are a cyclist who commutes daily.", 42)
}

async fn generate(answers: &[&str], n: usize) -> Result<Vec<String>, StrategyError> {
    let model = answering(answers);
    ContextualInstructionGenerator::new(model, docs(&["Chains need oil every 300 km."]))
        .n_instructions(n)
        .generate(&request())
        .await
        .map(|batch| batch.instructions)
}

#[tokio::test]
async fn request_carries_schema_prompts_and_context() {
    let model = answering(&[r#"{"instructions": ["How often should I oil my chain?"]}"#]);
    let generator = ContextualInstructionGenerator::new(
        model.clone(),
        docs(&["Chains need oil every 300 km."]),
    )
    .n_instructions(1)
    .temperature(0.3);
    let batch = generator.generate(&request()).await.unwrap();

    assert_eq!(batch.instructions, ["How often should I oil my chain?"]);
    assert_eq!(batch.context, "Chains need oil every 300 km.");
    assert_eq!(
        batch.documents,
        vec![Document::new("Chains need oil every 300 km.")]
    );
    assert!(batch.persona.is_none());
    assert!(batch.metadata.is_empty());
    assert_eq!(batch.usage, Usage::new(10, 5));
    assert_eq!(batch.requests, 1);

    let requests = model.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.temperature, Some(0.3));
    let schema = sent.response_schema.as_ref().unwrap();
    assert_eq!(schema.name, "instructions");
    assert!(schema.strict);
    assert_eq!(
        schema.schema["properties"]["instructions"]["items"],
        json!({"type": "string"})
    );
    assert_eq!(schema.schema["required"], json!(["instructions"]));
    assert_eq!(sent.messages.len(), 2);
    assert_eq!(sent.messages[0].role, Role::System);
    assert!(
        sent.messages[0]
            .content
            .contains("Write exactly 1 different opening messages")
    );
    assert!(!sent.messages[0].content.contains("{n_instructions}"));
    assert_eq!(sent.messages[1].role, Role::User);
    assert_eq!(
        sent.messages[1].content,
        "# Who is writing\nYou are a cyclist who commutes daily.\n\n# Context\n<context>\nChains need oil every 300 km.\n</context>"
    );
}

#[tokio::test]
async fn custom_system_prompt_template_keeps_json_braces() {
    let model = answering(&[r#"["q"]"#]);
    ContextualInstructionGenerator::new(model.clone(), docs(&["ctx"]))
        .n_instructions(5)
        .system_prompt_template(r#"Give {n_instructions} questions as {"instructions": [...]}."#)
        .generate(&request())
        .await
        .unwrap();
    assert_eq!(
        model.requests()[0].messages[0].content,
        r#"Give 5 questions as {"instructions": [...]}."#
    );
}

#[tokio::test]
async fn code_fenced_answer() {
    let answer = "```json\n{\"instructions\": [\"a?\", \"b?\", \"c?\"]}\n```";
    assert_eq!(generate(&[answer], 3).await.unwrap(), ["a?", "b?", "c?"]);
}

#[tokio::test]
async fn bare_array_and_single_array_object() {
    assert_eq!(
        generate(&[r#"["a?", "b?"]"#], 3).await.unwrap(),
        ["a?", "b?"]
    );
    assert_eq!(
        generate(&[r#"{"questions": ["a?"]}"#], 3).await.unwrap(),
        ["a?"]
    );
}

#[tokio::test]
async fn stray_prose_around_json() {
    let answer = "Sure! Here are your questions:\n{\"instructions\": [\" a? \", \"b?\"]}\nLet me know if you need more.";
    assert_eq!(generate(&[answer], 2).await.unwrap(), ["a?", "b?"]);
}

#[tokio::test]
async fn too_many_are_cut_to_n_and_duplicates_removed() {
    let answer = r#"{"instructions": ["a?", "b?", "a?", " b? ", "", "c?", "d?"]}"#;
    assert_eq!(generate(&[answer], 3).await.unwrap(), ["a?", "b?", "c?"]);
}

#[tokio::test]
async fn prose_then_json_succeeds_on_the_second_call() {
    let model = answering(&["I'd be happy to help!", r#"{"instructions": ["a?"]}"#]);
    let batch = ContextualInstructionGenerator::new(model.clone(), docs(&["ctx"]))
        .generate(&request())
        .await
        .unwrap();
    assert_eq!(batch.instructions, ["a?"]);
    assert_eq!(batch.requests, 2);
    assert_eq!(batch.usage, Usage::new(20, 10));
    let second = &model.requests()[1];
    assert_eq!(second.messages.len(), 4);
    assert_eq!(second.messages[2].role, Role::Assistant);
    assert_eq!(second.messages[2].content, "I'd be happy to help!");
    assert_eq!(second.messages[3].role, Role::User);
    assert!(second.response_schema.is_some());
}

#[tokio::test]
async fn prose_twice_is_malformed_after_exactly_two_calls() {
    let model = answering(&[
        "I cannot produce questions.",
        "Still no JSON, sorry about that.",
    ]);
    let err = ContextualInstructionGenerator::new(model.clone(), docs(&["ctx"]))
        .generate(&request())
        .await
        .unwrap_err();
    assert_eq!(model.calls(), 2);
    let StrategyError::MalformedOutput { message } = &err else {
        panic!("expected MalformedOutput, got {err:?}");
    };
    assert_eq!(
        message,
        "asked twice for a JSON list of 3 questions, but it holds no JSON list of questions; the answer starts: Still no JSON, sorry about that."
    );
}

#[tokio::test]
async fn empty_list_twice_is_malformed() {
    let model = answering(&[r#"{"instructions": []}"#]);
    let err = ContextualInstructionGenerator::new(model.clone(), docs(&["ctx"]))
        .generate(&request())
        .await
        .unwrap_err();
    assert_eq!(model.calls(), 2);
    assert_eq!(
        err.to_string(),
        "the model's answer could not be used: asked twice for a JSON list of 3 questions, but its list of questions is empty; the answer starts: {\"instructions\": []}"
    );
}

#[tokio::test]
async fn merged_contexts_use_the_python_separator() {
    let model = answering(&[r#"["q?"]"#]);
    let generator = ContextualInstructionGenerator::new(
        model.clone(),
        docs(&["first doc", "second doc", "third doc"]),
    )
    .num_random_contexts(2);
    let batch = generator.generate(&request()).await.unwrap();
    assert_eq!(batch.documents.len(), 2);
    assert_ne!(batch.documents[0].id, batch.documents[1].id);
    let separator = format!("\n{}\n\n", "-".repeat(80));
    assert_eq!(CONTEXT_SEPARATOR, separator);
    assert_eq!(
        batch.context,
        format!(
            "{}{separator}{}",
            batch.documents[0].text, batch.documents[1].text
        )
    );
    assert!(
        model.requests()[0].messages[1]
            .content
            .contains(&batch.context)
    );
}

#[tokio::test]
async fn sampling_spreads_over_documents_and_repeats_per_seed() {
    let texts = ["d1", "d2", "d3", "d4"];
    let model = answering(&[r#"["q?"]"#]);
    let generator = ContextualInstructionGenerator::new(model.clone(), docs(&texts));
    let mut seen = Vec::new();
    for seed in 0..4 {
        let batch = generator
            .generate(&InstructionRequest::new("p", seed))
            .await
            .unwrap();
        seen.push(batch.context);
    }
    assert!(seen.iter().all(|c| texts.contains(&c.as_str())), "{seen:?}");
    // Every pick is recorded, so the next pick favours the rest.
    let sampler = generator.sampler().await.unwrap();
    let uses: Vec<u64> = texts
        .iter()
        .map(|t| sampler.uses(&Document::new(*t).id))
        .collect();
    assert_eq!(uses.iter().sum::<u64>(), 4);
    for (text, used) in texts.iter().zip(&uses) {
        let picked = seen.iter().filter(|c| c.as_str() == *text).count() as u64;
        assert_eq!(*used, picked, "{text}");
    }

    // A fresh generator with the same seeds and the same history repeats the picks.
    let again = ContextualInstructionGenerator::new(model, docs(&texts));
    for (seed, want) in (0..4).zip(&seen) {
        let batch = again
            .generate(&InstructionRequest::new("p", seed))
            .await
            .unwrap();
        assert_eq!(&batch.context, want);
    }
}

#[derive(Debug)]
struct Failing;

#[async_trait]
impl DocumentSource for Failing {
    async fn load(&self) -> Result<Vec<Document>, StrategyError> {
        Err(StrategyError::NoDocuments {
            message: "nothing here".into(),
        })
    }
}

#[tokio::test]
async fn load_errors_surface_from_generate_without_calling_the_model() {
    let model = answering(&[r#"["q?"]"#]);
    let err = ContextualInstructionGenerator::new(model.clone(), Arc::new(Failing))
        .generate(&request())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no usable documents: nothing here");
    assert_eq!(model.calls(), 0);
}

#[derive(Debug, Default)]
struct Counting(AtomicUsize);

#[async_trait]
impl DocumentSource for Counting {
    async fn load(&self) -> Result<Vec<Document>, StrategyError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(vec![Document::new("only")])
    }
}

#[tokio::test]
async fn documents_load_once() {
    let source = Arc::new(Counting::default());
    let model = answering(&[r#"["q?"]"#]);
    let generator = ContextualInstructionGenerator::new(model, source.clone());
    assert_eq!(source.0.load(Ordering::SeqCst), 0);
    for seed in 0..3 {
        generator
            .generate(&InstructionRequest::new("p", seed))
            .await
            .unwrap();
    }
    assert_eq!(source.0.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn zero_counts_are_config_errors() {
    let model = answering(&[r#"["q?"]"#]);
    let err = ContextualInstructionGenerator::new(model.clone(), docs(&["x"]))
        .n_instructions(0)
        .generate(&request())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: n_instructions must be at least 1"
    );
    let err = ContextualInstructionGenerator::new(model.clone(), docs(&["x"]))
        .num_random_contexts(0)
        .generate(&request())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: num_random_contexts must be at least 1"
    );
    assert_eq!(model.calls(), 0);
}

#[tokio::test]
async fn simple_generator_uses_the_correspondent_prompt_alone() {
    let model = answering(&[r#"{"instructions": ["a?", "b?"]}"#]);
    let batch = SimpleInstructionGenerator::new(model.clone())
        .n_instructions(2)
        .generate(&request())
        .await
        .unwrap();
    assert_eq!(batch.instructions, ["a?", "b?"]);
    assert_eq!(batch.context, "");
    assert!(batch.documents.is_empty());
    assert_eq!(batch.requests, 1);
    let sent = &model.requests()[0];
    assert_eq!(
        sent.messages[1].content,
        "# Who is writing\nYou are a cyclist who commutes daily."
    );
    assert!(
        sent.messages[0]
            .content
            .contains("Write exactly 2 different opening messages")
    );
    assert_eq!(sent.response_schema.as_ref().unwrap().name, "instructions");
}

/// A steered request: the `why` type, one question to avoid about `documents`, and
/// questions repeating hard enough to raise the temperature.
fn steered(documents: &[String]) -> InstructionRequest {
    let asked = Arc::new(AskedQuestions::new(8));
    asked.record(documents, "How often should I oil my chain?");
    request().steering(
        Steering::new(builtin_question_type("why"))
            .avoiding(asked, 8, 1000)
            .pressure(0.5, 1.1)
            .sections(Some(40)),
    )
}

#[tokio::test]
async fn every_generator_follows_the_steering() {
    let answer = r#"{"instructions": ["Why does a chain wear out?"]}"#;
    let text = "Chains need oil every 300 km. Dry chains wear out fast and squeak in the rain.";
    let document = Document::new(text);
    let ids = [document.id.clone()];
    let tool = ToolSpec {
        name: "find_shop".into(),
        description: "Finds a bike shop near a place.".into(),
        parameters: json!({"type": "object", "properties": {"place": {"type": "string"}}}),
    };
    let simple_model = answering(&[answer]);
    let contextual_model = answering(&[answer]);
    let tools_model = answering(&[answer]);
    let batches = [
        SimpleInstructionGenerator::new(simple_model.clone())
            .generate(&steered(&[]))
            .await
            .unwrap(),
        ContextualInstructionGenerator::new(contextual_model.clone(), docs(&[text]))
            .generate(&steered(&ids))
            .await
            .unwrap(),
        ToolCallingInstructionGenerator::new(tools_model.clone(), vec![tool])
            .documents(docs(&[text]))
            .generate(&steered(&ids))
            .await
            .unwrap(),
    ];
    for (batch, model) in batches
        .iter()
        .zip([simple_model, contextual_model, tools_model])
    {
        assert_eq!(batch.metadata["question_type"], "why");
        let sent = &model.requests()[0];
        // Half the pressure: halfway from the writer's 0.7 to the bound of 1.1.
        assert!((sent.temperature.unwrap() - 0.9).abs() < 1e-6);
        let user = &sent.messages[1].content;
        assert!(
            user.contains("# Kind of message\nEvery message you write is a why question"),
            "{user}"
        );
        assert!(
            user.ends_with("- How often should I oil my chain?"),
            "{user}"
        );
    }
    // A long document is shown as a section, which becomes the batch's context.
    assert!(
        batches[1].context.chars().count() <= 40,
        "{}",
        batches[1].context
    );
    assert!(text.contains(batches[1].context.as_str()));
    // Unsteered, the same generator shows the whole document and names no type.
    let plain = ContextualInstructionGenerator::new(answering(&[answer]), docs(&[text]))
        .generate(&request())
        .await
        .unwrap();
    assert_eq!(plain.context, text);
    assert!(plain.metadata.get("question_type").is_none());
}
