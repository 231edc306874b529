//! `TurnHooks`: code of the caller's that runs before and after every completion of a
//! dialog (the Python library's `ConversationTurnHooks`), seeing the dialog so far.

use afterimage_core::Message;

/// Which side of the dialog a completion is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnRole {
    /// The simulated user.
    Correspondent,
    /// The assistant being trained.
    Respondent,
}

impl TurnRole {
    /// `correspondent` or `respondent`.
    pub fn name(self) -> &'static str {
        match self {
            TurnRole::Correspondent => "correspondent",
            TurnRole::Respondent => "respondent",
        }
    }
}

/// A read-only view of a dialog at one completion: whose turn it is and what was said.
#[derive(Debug, Clone, Copy)]
pub struct TurnView<'a> {
    /// The row id the dialog will be stored under (`<run>-<index>`).
    pub dialog_id: &'a str,
    /// The dialog's index in the run.
    pub index: u64,
    /// Which model completes next (or just completed).
    pub role: TurnRole,
    /// The assistant reply this completion belongs to, from 1.
    pub turn: u32,
    /// The system prompt the completing model is given.
    pub system_prompt: &'a str,
    /// The dialog so far, first user message first, as the row stores it (the
    /// completion's own message not included).
    pub messages: &'a [Message],
}

/// Why a hook failed the attempt: its message is the dialog's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HookError(pub String);

impl HookError {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> Self {
        HookError(message.into())
    }
}

/// Hooks called around every completion of a dialog; each gets a [`TurnView`] of the
/// dialog so far. All default to doing nothing. An error fails the dialog's attempt
/// with the hook's message (the scheduler replaces the dialog within the failure
/// budget), so a hook can also veto a dialog.
///
/// ```
/// use afterimage_core::Message;
/// use afterimage_engine::{HookError, TurnHooks, TurnView};
///
/// #[derive(Debug)]
/// struct NoShouting;
///
/// #[afterimage_core::async_trait]
/// impl TurnHooks for NoShouting {
///     async fn after_respondent(&self, _view: &TurnView<'_>, reply: &Message) -> Result<(), HookError> {
///         if reply.content.chars().any(|c| c.is_lowercase()) {
///             Ok(())
///         } else {
///             Err(HookError::new("the assistant shouted"))
///         }
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait TurnHooks: Send + Sync + std::fmt::Debug {
    /// Before the simulated user writes a follow-up.
    async fn before_correspondent(&self, _view: &TurnView<'_>) -> Result<(), HookError> {
        Ok(())
    }

    /// After the simulated user wrote `message` (not yet in `view.messages`).
    async fn after_correspondent(
        &self,
        _view: &TurnView<'_>,
        _message: &str,
    ) -> Result<(), HookError> {
        Ok(())
    }

    /// Before each respondent completion (a turn with tool rounds has several).
    async fn before_respondent(&self, _view: &TurnView<'_>) -> Result<(), HookError> {
        Ok(())
    }

    /// After a respondent completion produced `reply` (text, tool calls or both).
    async fn after_respondent(
        &self,
        _view: &TurnView<'_>,
        _reply: &Message,
    ) -> Result<(), HookError> {
        Ok(())
    }
}
