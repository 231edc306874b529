//! One persona call: ask, read the answer, and try once more when that fails.

use afterimage_core::{
    ChatModel, ChatRequest, Message, ProviderError, StrategyError, Usage, snippet,
};

use super::parse::{personas_schema, read_personas};
use super::prompts::PERSONAS_CORRECTION;

/// The personas one call produced (or why it failed), and what it cost.
#[derive(Debug)]
pub(crate) struct Answer {
    /// Up to five cleaned descriptions, or the failure after the retry.
    pub(crate) personas: Result<Vec<String>, StrategyError>,
    /// Tokens spent over both attempts.
    pub(crate) usage: Usage,
    /// Requests made (1 or 2).
    pub(crate) requests: u32,
}

/// Asks `model` for five personas. An unusable answer gets one more chance (the model
/// sees its answer and the shape again); a non-fatal provider error is retried once
/// as is; a fatal one is returned at once.
pub(crate) async fn ask_for_personas(
    model: &dyn ChatModel,
    system_prompt: &str,
    user_message: String,
    temperature: f32,
) -> Answer {
    let mut messages = vec![Message::system(system_prompt), Message::user(user_message)];
    let request = |messages: Vec<Message>| {
        ChatRequest::new(messages)
            .temperature(temperature)
            .json_schema(personas_schema())
    };
    let mut usage = Usage::default();
    let mut requests = 0;
    for attempt in 0..2 {
        requests += 1;
        let response = match model.chat(request(messages.clone())).await {
            Ok(response) => response,
            Err(e) if e.is_fatal() || attempt == 1 => {
                return Answer {
                    personas: Err(StrategyError::Provider(e)),
                    usage,
                    requests,
                };
            }
            Err(e) => {
                tracing::debug!(error = %e, "persona call failed; trying once more");
                continue;
            }
        };
        usage += response.usage;
        let answer = response.message.content;
        match read_personas(&answer) {
            Ok(personas) => {
                return Answer {
                    personas: Ok(personas),
                    usage,
                    requests,
                };
            }
            Err(problem) if attempt == 1 => {
                return Answer {
                    personas: Err(StrategyError::MalformedOutput {
                        message: format!(
                            "asked twice for a JSON list of five personas, but {problem}; the answer starts: {}",
                            snippet(answer.trim(), 200)
                        ),
                    }),
                    usage,
                    requests,
                };
            }
            Err(problem) => {
                tracing::debug!(
                    problem = %problem,
                    answer = %snippet(&answer, 200),
                    "persona answer unusable; asking once more"
                );
                messages.push(Message::assistant(answer));
                messages.push(Message::user(PERSONAS_CORRECTION));
            }
        }
    }
    // Both attempts return above; this only satisfies the type checker.
    Answer {
        personas: Err(StrategyError::Provider(ProviderError::Other {
            message: "persona call made no attempt".into(),
            retryable: false,
        })),
        usage,
        requests,
    }
}
