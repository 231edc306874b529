//! The simulated user's system prompt, and the note that keeps its follow-ups human.

use afterimage_core::{ChatModel, ChatRequest, Message, StrategyError, snippet};

use super::prompts::{
    CORRESPONDENT_FOLLOW_UP_NOTE, CORRESPONDENT_WRITER_PROMPT, USER_PROMPT_CLOSE, USER_PROMPT_OPEN,
};

/// Asks `model` once to write the system prompt of a simulated human user who will talk
/// to an assistant whose system prompt is `respondent_prompt`.
///
/// The answer is expected between `<user_system_prompt>` tags; without tags the whole
/// trimmed answer is the prompt. An empty result is
/// [`StrategyError::MalformedOutput`].
pub async fn write_correspondent_prompt(
    model: &dyn ChatModel,
    respondent_prompt: &str,
) -> Result<String, StrategyError> {
    let request = ChatRequest::new(vec![
        Message::system(CORRESPONDENT_WRITER_PROMPT),
        Message::user(format!(
            "<assistant_system_prompt>\n{}\n</assistant_system_prompt>",
            respondent_prompt.trim()
        )),
    ])
    .temperature(0.7);
    let answer = model.chat(request.clone()).await?.message.content;
    let problem = match extract_user_prompt(&answer).and_then(validate_user_prompt) {
        Ok(prompt) => return Ok(prompt),
        Err(problem) => problem,
    };
    // One more try, showing the model what was wrong with its answer.
    let mut retry = request;
    retry.messages.push(Message::assistant(answer));
    retry.messages.push(Message::user(format!(
        "That cannot be used: {problem}. Write the system prompt for the simulated human user (the person asking for help, not the assistant), between <user_system_prompt> and </user_system_prompt>."
    )));
    let answer = model.chat(retry).await?.message.content;
    extract_user_prompt(&answer).and_then(validate_user_prompt)
}

/// Phrases that cast the reader as the assistant: a prompt with them would make the
/// simulated user answer instead of ask.
const ASSISTANT_CASTING: &[&str] = &[
    "you are a helpful assistant",
    "you are an ai assistant",
    "you are an assistant",
    "you are a support agent",
    "as an ai assistant",
    "your role is to assist",
    "your job is to help users",
    "your job is to answer",
    "you answer the user's questions",
    "respond to the user's questions",
];

/// Rejects a correspondent prompt that is really an assistant prompt.
fn validate_user_prompt(prompt: String) -> Result<String, StrategyError> {
    let lower = prompt.to_lowercase();
    match ASSISTANT_CASTING.iter().find(|p| lower.contains(*p)) {
        Some(phrase) => Err(StrategyError::MalformedOutput {
            message: format!(
                "the written correspondent prompt casts the model as the assistant (\"{phrase}\"): {}",
                snippet(&prompt, 160)
            ),
        }),
        None => Ok(prompt),
    }
}

/// The note the engine appends to the dialog before each correspondent follow-up:
/// same language and person as before, never the assistant's voice, no preamble, one
/// message. See [`CORRESPONDENT_FOLLOW_UP_NOTE`].
pub fn correspondent_follow_up_note() -> &'static str {
    CORRESPONDENT_FOLLOW_UP_NOTE
}

/// The text between the tags, by position: characters of the tag names that also
/// begin or end the prompt itself are kept.
///
/// With several tagged blocks the last non-empty one wins, since a model that first
/// restates the format tends to put its real answer last. An opening tag without a
/// closing one (a cut-off answer) runs to the end.
fn extract_user_prompt(answer: &str) -> Result<String, StrategyError> {
    // ASCII lowercasing keeps byte offsets, so positions found in `lower` index `answer`.
    let lower = answer.to_ascii_lowercase();
    let mut tagged = false;
    let mut found: Option<&str> = None;
    let mut from = 0;
    while let Some(open) = lower[from..].find(USER_PROMPT_OPEN) {
        tagged = true;
        let start = from + open + USER_PROMPT_OPEN.len();
        let end = lower[start..]
            .find(USER_PROMPT_CLOSE)
            .map_or(answer.len(), |close| start + close);
        let block = answer[start..end].trim();
        if !block.is_empty() {
            found = Some(block);
        }
        from = (end + USER_PROMPT_CLOSE.len()).min(answer.len());
    }
    let prompt = match found {
        Some(block) => block,
        None if tagged => "",
        // A lone closing tag: the prompt is what precedes it.
        None => match lower.find(USER_PROMPT_CLOSE) {
            Some(close) => answer[..close].trim(),
            None => answer.trim(),
        },
    };
    if prompt.is_empty() {
        return Err(StrategyError::MalformedOutput {
            message: format!(
                "the correspondent prompt writer gave an empty prompt; the answer starts: {}",
                snippet(answer.trim(), 200)
            ),
        });
    }
    Ok(prompt.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extract(answer: &str) -> String {
        extract_user_prompt(answer).unwrap()
    }

    #[test]
    fn keeps_tag_letters_at_the_edges() {
        // Python's character-set strip turns these into "are a pet owner. Ask the ex"
        // and ": ...".
        assert_eq!(
            extract("<user_system_prompt>you are a pet owner. Ask the expert</user_system_prompt>"),
            "you are a pet owner. Ask the expert"
        );
        assert_eq!(
            extract("<user_system_prompt>user: I have a question</user_system_prompt>"),
            "user: I have a question"
        );
        assert_eq!(
            extract("you are a pet owner. Ask the expert"),
            "you are a pet owner. Ask the expert"
        );
    }

    #[test]
    fn finds_the_block_among_prose() {
        assert_eq!(
            extract(
                "Here it is:\n<user_system_prompt>\n  You are Ana, a baker.\n</user_system_prompt>\nGood luck!"
            ),
            "You are Ana, a baker."
        );
        assert_eq!(
            extract("<USER_SYSTEM_PROMPT>Tu es Marie.</USER_SYSTEM_PROMPT>"),
            "Tu es Marie."
        );
        assert_eq!(
            extract(
                "Format: <user_system_prompt></user_system_prompt>\n<user_system_prompt>You are Bo.</user_system_prompt>"
            ),
            "You are Bo."
        );
        assert_eq!(
            extract("<user_system_prompt>You are Bo, cut off mid"),
            "You are Bo, cut off mid"
        );
        assert_eq!(extract("You are Bo.\n</user_system_prompt>"), "You are Bo.");
    }

    #[test]
    fn empty_answers_are_errors() {
        for answer in ["", "  \n", "<user_system_prompt> </user_system_prompt>"] {
            let err = extract_user_prompt(answer).unwrap_err();
            assert_eq!(err.kind(), "malformed_output", "{answer:?}");
        }
        let err =
            extract_user_prompt("<user_system_prompt>\n</user_system_prompt> ok").unwrap_err();
        assert!(
            err.to_string()
                .contains("the answer starts: <user_system_prompt>"),
            "{err}"
        );
    }
}
