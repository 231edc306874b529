//! A respondent prompt modifier that rewrites the prompt for each follow-up question
//! (per-turn retrieval): the assistant sees the new prompt at the next turn, and the
//! row reports the last one.

use std::sync::Arc;

use afterimage_core::testing::ScriptedModel;
use afterimage_core::{
    ChatResponse, GeneratedInstructions, Instruction, InstructionGenerator, InstructionRequest,
    ModifiedPrompt, RespondentPromptModifier, StrategyError,
};
use afterimage_engine::{ConversationGenerator, GenerateOptions};
use afterimage_storage::JsonlStorage;

#[derive(Debug)]
struct OneQuestion;

#[async_trait::async_trait]
impl InstructionGenerator for OneQuestion {
    async fn generate(
        &self,
        _request: &InstructionRequest,
    ) -> Result<GeneratedInstructions, StrategyError> {
        Ok(GeneratedInstructions {
            instructions: vec!["How do I reset my password?".to_owned()],
            ..Default::default()
        })
    }
}

/// Adds what it "found" for every question to the prompt and the context.
#[derive(Debug)]
struct PerTurn;

#[async_trait::async_trait]
impl RespondentPromptModifier for PerTurn {
    async fn modify(
        &self,
        respondent_prompt: &str,
        instruction: &Instruction,
    ) -> Result<ModifiedPrompt, StrategyError> {
        let found = format!("[found for: {}]", instruction.text);
        Ok(ModifiedPrompt {
            system_prompt: format!("{respondent_prompt} {found}"),
            response_context: Some(found),
            ..Default::default()
        })
    }

    async fn follow_up(
        &self,
        _respondent_prompt: &str,
        _instruction: &Instruction,
        current: &ModifiedPrompt,
        question: &str,
    ) -> Result<Option<ModifiedPrompt>, StrategyError> {
        let found = format!("[found for: {question}]");
        let mut next = current.clone();
        next.system_prompt = format!("{} {found}", current.system_prompt);
        next.response_context = Some(format!(
            "{} {found}",
            current.response_context.clone().unwrap_or_default()
        ));
        Ok(Some(next))
    }
}

#[tokio::test]
async fn follow_up_prompts_reach_the_respondent_and_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let model = Arc::new(ScriptedModel::new("scripted", |request| async move {
        // The correspondent's system prompt is the fixed one below.
        let user_side = request.messages[0]
            .content
            .starts_with("You are a customer");
        Ok(ChatResponse::text(if user_side {
            "follow-up question?"
        } else {
            "an answer"
        }))
    }));
    ConversationGenerator::builder()
        .respondent_prompt("You are an agent.")
        .correspondent_prompt("You are a customer.")
        .model(Arc::clone(&model) as _)
        .instruction_generator(Arc::new(OneQuestion))
        .respondent_prompt_modifier(Arc::new(PerTurn))
        .storage(Arc::new(JsonlStorage::new(&path)))
        .build()
        .unwrap()
        .generate(GenerateOptions::new().num_dialogs(1).fixed_turns(3))
        .await
        .unwrap();

    let systems: Vec<String> = model
        .requests()
        .iter()
        .filter(|r| r.messages[0].content.starts_with("You are an agent."))
        .map(|r| r.messages[0].content.clone())
        .collect();
    assert_eq!(
        systems,
        [
            "You are an agent. [found for: How do I reset my password?]",
            "You are an agent. [found for: How do I reset my password?] [found for: follow-up question?]",
            "You are an agent. [found for: How do I reset my password?] [found for: follow-up question?] [found for: follow-up question?]",
        ]
    );
    let row: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
    assert_eq!(
        row["response_context"],
        "[found for: How do I reset my password?] [found for: follow-up question?] [found for: follow-up question?]"
    );
    let roles: Vec<&str> = row["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
            "assistant"
        ]
    );
}
