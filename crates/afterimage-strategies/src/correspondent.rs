//! The simulated user's system prompt, and the note that keeps its follow-ups human.

use afterimage_core::{ChatModel, ChatRequest, Message, StrategyError, snippet};

use crate::prompts::{
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
    let answer = model.chat(request).await?.message.content;
    extract_user_prompt(&answer)
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
