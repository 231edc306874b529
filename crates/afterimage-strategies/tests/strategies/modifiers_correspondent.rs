//! The respondent prompt modifier and the correspondent prompt writer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use afterimage_core::testing::ScriptedModel;
use afterimage_core::{
    ChatResponse, GeneratedInstructions, Instruction, ProviderError, RespondentPromptModifier,
    Role, StrategyError,
};
use afterimage_strategies::{
    CORRESPONDENT_FOLLOW_UP_NOTE, WithContextRespondentPromptModifier,
    correspondent_follow_up_note, write_correspondent_prompt,
};

fn instruction(context: &str) -> Instruction {
    Instruction::split(GeneratedInstructions {
        instructions: vec!["How do I oil a chain?".into()],
        context: context.into(),
        ..GeneratedInstructions::default()
    })
    .remove(0)
}

#[tokio::test]
async fn modifier_adds_the_context_to_the_base_prompt() {
    let modified = WithContextRespondentPromptModifier::new()
        .modify(
            "You are a bike mechanic.",
            &instruction("Oil every 300 km."),
        )
        .await
        .unwrap();
    assert_eq!(
        modified.system_prompt,
        "You are a bike mechanic.\n\n## Knowledge for this conversation\n<context>\nOil every 300 km.\n</context>\n\n\
         Answer from this knowledge as if it were your own. Never say that you were given a context, a document or a text, and never cite it as a source. \
         When the user asks about something it does not cover, help with what you reliably know instead of inventing details. \
         Help the user directly rather than sending them elsewhere, unless your instructions above say otherwise."
    );
    assert_eq!(
        modified.response_context.as_deref(),
        Some("Oil every 300 km.")
    );
    assert!(modified.metadata.is_empty());
}

#[tokio::test]
async fn modifier_leaves_the_prompt_alone_without_context() {
    for context in ["", "  \n"] {
        let modified = WithContextRespondentPromptModifier::default()
            .modify("You are a bike mechanic.", &instruction(context))
            .await
            .unwrap();
        assert_eq!(modified.system_prompt, "You are a bike mechanic.");
        assert_eq!(modified.response_context, None);
    }
}

#[tokio::test]
async fn custom_template_is_filled_once() {
    let modifier =
        WithContextRespondentPromptModifier::with_template("{prompt}\nKNOW: {context}").unwrap();
    // A base prompt mentioning `{context}` is copied literally, not substituted.
    let modified = modifier
        .modify("Use {context} wisely.", &instruction("facts"))
        .await
        .unwrap();
    assert_eq!(modified.system_prompt, "Use {context} wisely.\nKNOW: facts");
    assert_eq!(modifier.render("P", "C"), "P\nKNOW: C");

    let err = WithContextRespondentPromptModifier::with_template("{prompt} only").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: the respondent prompt template has no {context} placeholder"
    );
}

fn answering(answer: &'static str) -> ScriptedModel {
    ScriptedModel::new("writer", move |_request| async move {
        Ok(ChatResponse::text(answer))
    })
}

#[tokio::test]
async fn correspondent_prompt_is_taken_from_between_the_tags() {
    let model = answering(
        "Here is the prompt:\n<user_system_prompt>\nyou are a pet owner. Ask the expert\n</user_system_prompt>",
    );
    let prompt = write_correspondent_prompt(&model, "You are a veterinarian.")
        .await
        .unwrap();
    assert_eq!(prompt, "you are a pet owner. Ask the expert");

    let requests = model.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.temperature, Some(0.7));
    assert_eq!(sent.messages[0].role, Role::System);
    assert!(sent.messages[0].content.contains("<user_system_prompt>"));
    assert_eq!(sent.messages[1].role, Role::User);
    assert_eq!(
        sent.messages[1].content,
        "<assistant_system_prompt>\nYou are a veterinarian.\n</assistant_system_prompt>"
    );
}

#[tokio::test]
async fn correspondent_prompt_edge_cases() {
    let cases = [
        (
            "<user_system_prompt>user: my dog limps</user_system_prompt>",
            "user: my dog limps",
        ),
        (
            "  Eres una dueña de un gato.  ",
            "Eres una dueña de un gato.",
        ),
        (
            "<user_system_prompt>pet owner asking the vet, cut off",
            "pet owner asking the vet, cut off",
        ),
    ];
    for (answer, want) in cases {
        let model = answering(answer);
        assert_eq!(
            write_correspondent_prompt(&model, "You are a vet.")
                .await
                .unwrap(),
            want
        );
    }
}

#[tokio::test]
async fn empty_correspondent_prompt_is_malformed() {
    let model = answering("<user_system_prompt>  </user_system_prompt>");
    let err = write_correspondent_prompt(&model, "You are a vet.")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the model's answer could not be used: the correspondent prompt writer gave an empty prompt; the answer starts: <user_system_prompt>  </user_system_prompt>"
    );
}

#[tokio::test]
async fn an_assistant_prompt_is_refused_then_rewritten() {
    let answers = Arc::new(std::sync::Mutex::new(vec![
        "<user_system_prompt>You are a pet owner whose cat stopped eating.</user_system_prompt>",
        "<user_system_prompt>You are a helpful assistant for pet owners.</user_system_prompt>",
    ]));
    let model = ScriptedModel::new("writer", move |_request| {
        let answer = answers.lock().unwrap().pop().unwrap_or("");
        async move { Ok(ChatResponse::text(answer)) }
    });
    let prompt = write_correspondent_prompt(&model, "You are a vet.")
        .await
        .unwrap();
    assert_eq!(prompt, "You are a pet owner whose cat stopped eating.");
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests[1].messages[3]
            .content
            .contains("casts the model as the assistant")
    );

    // Twice an assistant prompt: an error that quotes it.
    let model = answering("<user_system_prompt>You are a helpful assistant.</user_system_prompt>");
    let err = write_correspondent_prompt(&model, "You are a vet.")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("you are a helpful assistant"),
        "{err}"
    );
    assert_eq!(model.calls(), 2);
}

#[tokio::test]
async fn provider_errors_pass_through() {
    let model = ScriptedModel::new("down", |_request| async {
        Err(ProviderError::Server {
            status: 503,
            message: "busy".into(),
        })
    });
    let err = write_correspondent_prompt(&model, "You are a vet.")
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StrategyError::Provider(ProviderError::Server { status: 503, .. })
    ));
    // Usable through `Arc<dyn ChatModel>` as the engine holds it.
    let shared: Arc<dyn afterimage_core::ChatModel> = Arc::new(answering("You are Kim."));
    assert_eq!(
        write_correspondent_prompt(shared.as_ref(), "x")
            .await
            .unwrap(),
        "You are Kim."
    );
}

#[test]
fn follow_up_note_keeps_a_human_voice() {
    let note = correspondent_follow_up_note();
    assert_eq!(note, CORRESPONDENT_FOLLOW_UP_NOTE);
    assert!(note.contains("same language as your earlier messages"));
    assert!(note.contains("Never write as the assistant"));
    assert!(note.contains("no preamble"));
    assert!(note.contains("one message"));
}
