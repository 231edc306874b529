//! The dialog's side of batch mode: a `ChatModel` that parks each request of a dialog
//! with the batcher and waits for its outcome, the `Live` guard a running dialog
//! holds, and the settings.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};
use std::time::Duration;

use afterimage_core::{
    ChatModel, ChatRequest, ChatResponse, DialogStep, ProviderError, next_dialog_step,
};
use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

/// What a round smaller than `min_requests` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tail {
    /// Goes through the synchronous model: full price, answered in seconds.
    #[default]
    Sync,
    /// Goes as a batch anyway: half price, one more batch turnaround.
    Batch,
}

/// How the batcher forms rounds, polls and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSettings {
    /// A round with fewer requests takes the `tail` path (default 50).
    pub min_requests: usize,
    /// What a small round does (default [`Tail::Sync`]).
    pub tail: Tail,
    /// A round is submitted when nothing new has arrived for this long (default 2 s).
    pub linger: Duration,
    /// Batches of one round in flight at once (default 10).
    pub max_open_batches: usize,
    /// The first wait between polls of a batch (default 15 s).
    pub poll_initial: Duration,
    /// The longest wait between polls, which double up to it (default 5 minutes).
    pub poll_max: Duration,
    /// Submissions of one request before its dialog fails (default 3).
    pub max_request_attempts: u32,
    /// Keeps the provider's input and result files after a batch is applied
    /// (default false: they are deleted where the provider keeps files).
    pub keep_files: bool,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            min_requests: 50,
            tail: Tail::Sync,
            linger: Duration::from_secs(2),
            max_open_batches: 10,
            poll_initial: crate::POLL_INITIAL,
            poll_max: crate::POLL_MAX,
            max_request_attempts: 3,
            keep_files: false,
        }
    }
}

impl BatchSettings {
    /// The wait before poll `attempt` (0 first) of a batch whose phase has not changed:
    /// doubling from `poll_initial` to `poll_max`, then spread by `jitter` (in
    /// `[0, 1)`) over plus or minus a tenth, as [`poll_delay`](crate::poll_delay) does.
    pub(crate) fn poll_wait(&self, attempt: u32, jitter: f64) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
        let base = self
            .poll_initial
            .checked_mul(factor)
            .map_or(self.poll_max, |d| d.min(self.poll_max));
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.5
        };
        base.mul_f64(0.9 + 0.2 * jitter)
    }
}

/// Who in a dialog sends a request: part of its id, so a journal can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestRole {
    /// The simulated user (correspondent): `u`.
    User,
    /// The assistant (respondent): `a`.
    Assistant,
    /// The judge: `j`.
    Judge,
    /// Writing the questions dialogs start from (the instruction generator): `q`.
    Question,
}

impl RequestRole {
    pub(crate) fn letter(self) -> char {
        match self {
            RequestRole::User => 'u',
            RequestRole::Assistant => 'a',
            RequestRole::Judge => 'j',
            RequestRole::Question => 'q',
        }
    }
}

/// What the batcher's task receives.
pub(crate) enum Msg {
    /// A request waiting for its outcome.
    Park(Box<Parked>),
    /// The number of live dialogs changed: look at the barrier again.
    Wake,
}

/// One waiting request.
pub(crate) struct Parked {
    /// `{run}-{dialog:06}-{step:02}{role}`: the same for every attempt.
    pub(crate) key: String,
    /// The attempt its id carries, from 1; set when it joins a round.
    pub(crate) attempt: u32,
    /// Outcomes it has had so far (a failed answer journalled by an earlier process
    /// counts): what `max_request_attempts` bounds.
    pub(crate) tries: u32,
    /// The last retryable cause, for the error once attempts are spent.
    pub(crate) last_cause: Option<String>,
    /// What to send.
    pub(crate) request: ChatRequest,
    /// The batcher's endpoint it goes to (an index into its endpoints).
    pub(crate) endpoint: usize,
    /// The model it asks for when the request names none.
    pub(crate) model: String,
    /// The synchronous model of its role: what answers it in a small round.
    pub(crate) sync: Option<Arc<dyn ChatModel>>,
    /// Where the outcome goes.
    pub(crate) reply: oneshot::Sender<Result<ChatResponse, ProviderError>>,
}

impl Parked {
    /// The id this attempt is submitted under: `{key}-{attempt}`.
    pub(crate) fn custom_id(&self) -> String {
        format!("{}-{}", self.key, self.attempt)
    }
}

/// What the models and guards share with the batcher's task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) run: String,
    pub(crate) model: String,
    pub(crate) live: AtomicUsize,
}

/// Held while a dialog runs, so the batcher knows how many callers to wait for
/// before it submits a round; handed out boxed in a
/// [`LiveGuard`](afterimage_core::LiveGuard) by
/// [`Batcher::enter`](afterimage_core::LiveDialogs::enter).
#[derive(Debug)]
pub(crate) struct Live {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Msg>,
}

impl Live {
    pub(crate) fn new(shared: Arc<Shared>, tx: mpsc::UnboundedSender<Msg>) -> Self {
        shared.live.fetch_add(1, Ordering::SeqCst);
        Live { shared, tx }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.shared.live.fetch_sub(1, Ordering::SeqCst);
        // The batcher may have stopped already; then nobody waits for the news.
        let _ = self.tx.send(Msg::Wake);
    }
}

/// A [`ChatModel`] that answers through provider batches. Inside a dialog (see
/// [`in_dialog()`](afterimage_core::in_dialog)) each `chat()` parks its request with
/// the [`Batcher`](crate::Batcher) under the id
/// `{run}-{dialog:06}-{step:02}{role}-{attempt}` (`[A-Za-z0-9_-]`, at most 64
/// characters, so every provider takes it) and waits for the round that answers it;
/// outside any dialog (a run's setup) it calls the synchronous model. The step
/// numbers every request of a dialog, whatever its role, model or endpoint, so ids
/// stay distinct across all the models of one batcher.
#[derive(Debug, Clone)]
pub struct BatchingChatModel {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Msg>,
    role: RequestRole,
    /// Where its requests go, as the batcher numbers its endpoints.
    pub(crate) endpoint: usize,
    /// Its model: the batch lines' model and its `model_id`.
    pub(crate) model: String,
    sync: Option<Arc<dyn ChatModel>>,
}

impl BatchingChatModel {
    pub(crate) fn new(
        shared: Arc<Shared>,
        tx: mpsc::UnboundedSender<Msg>,
        role: RequestRole,
        sync: Option<Arc<dyn ChatModel>>,
    ) -> Self {
        let model = shared.model.clone();
        BatchingChatModel {
            shared,
            tx,
            role,
            endpoint: 0,
            model,
            sync,
        }
    }

    async fn park(
        &self,
        step: DialogStep,
        request: ChatRequest,
    ) -> Result<ChatResponse, ProviderError> {
        let key = format!(
            "{}-{:06}-{:02}{}",
            self.shared.run,
            step.dialog,
            step.step,
            self.role.letter()
        );
        let (reply, answer) = oneshot::channel();
        let parked = Parked {
            key,
            attempt: 1,
            tries: 0,
            last_cause: None,
            request,
            endpoint: self.endpoint,
            model: self.model.clone(),
            sync: self.sync.clone(),
            reply,
        };
        let stopped = || {
            ProviderError::Other {
            message: "the batcher stopped before this request was answered; start the run again to resume it"
                .into(),
            retryable: false,
        }
        };
        self.tx
            .send(Msg::Park(Box::new(parked)))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

#[async_trait]
impl ChatModel for BatchingChatModel {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ProviderError> {
        match next_dialog_step() {
            Some(step) => self.park(step, request).await,
            None => match &self.sync {
                Some(sync) => sync.chat(request).await,
                None => Err(ProviderError::Other {
                    message: "a request outside any dialog (run setup) needs the synchronous model, and batch mode was started without one; configure the provider's synchronous client too".into(),
                    retryable: false,
                }),
            },
        }
    }

    fn model_id(&self) -> &str {
        &self.model
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_waits_double_from_the_initial_to_the_max() {
        let settings = BatchSettings {
            poll_initial: Duration::from_millis(10),
            poll_max: Duration::from_millis(50),
            ..BatchSettings::default()
        };
        let waits: Vec<u128> = (0..5)
            .map(|a| settings.poll_wait(a, 0.5).as_millis())
            .collect();
        assert_eq!(waits, [10, 20, 40, 50, 50]);
        assert_eq!(settings.poll_wait(u32::MAX, 0.5), Duration::from_millis(50));
        let defaults = BatchSettings::default();
        assert_eq!(defaults.poll_wait(0, 0.5), crate::POLL_INITIAL);
        assert_eq!(defaults.poll_wait(40, 0.5), crate::POLL_MAX);
        // Jitter spreads each wait over plus or minus a tenth.
        assert_eq!(settings.poll_wait(0, 0.0), Duration::from_millis(9));
        assert_eq!(settings.poll_wait(4, 1.0), Duration::from_millis(55));
    }
}
