//! `TurnHooks`: called around every completion with the dialog so far, in order; a
//! hook's error fails the dialog with its message.

use std::sync::{Arc, Mutex};

use afterimage_core::testing::ScriptedModel;
use afterimage_core::{
    ChatResponse, GeneratedInstructions, InstructionGenerator, InstructionRequest, Message,
    StrategyError,
};
use afterimage_engine::{
    ConversationGenerator, EngineError, GenerateOptions, HookError, TurnHooks, TurnView,
};
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

/// Records every call as `hook turn messages-so-far`; fails `fail_at` when set.
#[derive(Debug, Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
    fail_at: Option<&'static str>,
}

impl Recorder {
    fn note(&self, hook: &'static str, view: &TurnView<'_>) -> Result<(), HookError> {
        self.calls.lock().unwrap().push(format!(
            "{hook} {} {} {}",
            view.role.name(),
            view.turn,
            view.messages.len()
        ));
        assert!(
            view.dialog_id.ends_with(&format!("-{:06}", view.index)),
            "{}",
            view.dialog_id
        );
        match self.fail_at {
            Some(stage) if stage == hook => Err(HookError::new("policy says no")),
            _ => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl TurnHooks for Recorder {
    async fn before_correspondent(&self, view: &TurnView<'_>) -> Result<(), HookError> {
        self.note("before", view)
    }

    async fn after_correspondent(
        &self,
        view: &TurnView<'_>,
        message: &str,
    ) -> Result<(), HookError> {
        assert_eq!(message, "follow-up question?");
        self.note("after", view)
    }

    async fn before_respondent(&self, view: &TurnView<'_>) -> Result<(), HookError> {
        assert_eq!(view.system_prompt, "You are an agent.");
        self.note("before", view)
    }

    async fn after_respondent(
        &self,
        view: &TurnView<'_>,
        reply: &Message,
    ) -> Result<(), HookError> {
        assert_eq!(reply.content, "an answer");
        self.note("after", view)
    }
}

fn generator(hooks: Arc<Recorder>, path: &std::path::Path) -> ConversationGenerator {
    let model = Arc::new(ScriptedModel::new("scripted", |request| async move {
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
        .model(model as _)
        .instruction_generator(Arc::new(OneQuestion))
        .storage(Arc::new(JsonlStorage::new(path)))
        .turn_hooks(hooks as _)
        .build()
        .unwrap()
}

#[tokio::test]
async fn hooks_see_every_completion_in_order_with_the_dialog_so_far() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = Arc::new(Recorder::default());
    generator(Arc::clone(&hooks), &dir.path().join("out.jsonl"))
        .generate(GenerateOptions::new().num_dialogs(1).fixed_turns(2))
        .await
        .unwrap();
    assert_eq!(
        *hooks.calls.lock().unwrap(),
        [
            "before respondent 1 1",
            "after respondent 1 1",
            "before correspondent 2 2",
            "after correspondent 2 2",
            "before respondent 2 3",
            "after respondent 2 3",
        ]
    );
}

#[tokio::test]
async fn a_failing_hook_fails_the_dialog_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let hooks = Arc::new(Recorder {
        fail_at: Some("after"),
        ..Recorder::default()
    });
    let error = generator(Arc::clone(&hooks), &path)
        .generate(
            GenerateOptions::new()
                .num_dialogs(1)
                .fixed_turns(2)
                .max_failures(1)
                .failure_backoff(std::time::Duration::ZERO),
        )
        .await
        .unwrap_err();
    let EngineError::RunFailed { cause, report } = error else {
        panic!("expected a failed run");
    };
    assert!(cause.contains("policy says no"), "{cause}");
    assert_eq!(report.failures.get("hook: after_respondent"), Some(&2));
    assert_eq!(report.rows_written, 0);
    assert!(!path.exists() || std::fs::read_to_string(&path).unwrap().is_empty());
}
