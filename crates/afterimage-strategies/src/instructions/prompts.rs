//! The prompts of the instruction generators and the correspondent writer, and the
//! user message an instruction request sends.
//!
//! Every default template is public so that a custom one can start from it.

/// System prompt of [`ContextualInstructionGenerator`](crate::ContextualInstructionGenerator);
/// `{n_instructions}` is replaced by the number of questions asked for.
pub const DEFAULT_CONTEXTUAL_INSTRUCTION_PROMPT: &str = r#"You write the first message that a real person sends to an AI assistant when they open a new chat.

The next message describes the person (under "Who is writing") and gives a piece of knowledge (under "Context"). Write exactly {n_instructions} different opening messages this person could send, each one about something the context covers.

Rules:
- Write what the person would actually type: natural, concrete, in their own voice. Mix short and longer messages, and mix kinds of message: questions, requests for help, problems to solve, situations to advise on.
- Each message must make sense on its own. The person has never seen the context, so never mention "the document", "the text", "the passage", "the article" or "the context"; name the specific things it talks about instead.
- Each message must be answerable with the knowledge in the context.
- Language: write in the language of the context. If the context has no clear language, use the language of the person's description. If that is unclear too, use English.
- Write only the person's message: no answer, no numbering, no labels such as "User:", no quotation marks around it.

Reply with JSON only: an object whose one key "instructions" holds a list of exactly {n_instructions} strings, each string one whole message in the person's words."#;

/// System prompt of [`SimpleInstructionGenerator`](crate::SimpleInstructionGenerator);
/// `{n_instructions}` is replaced by the number of questions asked for.
pub const DEFAULT_SIMPLE_INSTRUCTION_PROMPT: &str = r#"You write the first message that a real person sends to an AI assistant when they open a new chat.

The next message describes the person (under "Who is writing"). Write exactly {n_instructions} different opening messages this person could plausibly send, about the needs, questions and problems that bring them to the assistant.

Rules:
- Write what the person would actually type: natural, concrete, in their own voice. Mix short and longer messages, and mix kinds of message: questions, requests for help, problems to solve, situations to advise on.
- Each message must make sense on its own, without any earlier conversation.
- Language: write in the language of the person's description. If it is unclear, use English.
- Write only the person's message: no answer, no numbering, no labels such as "User:", no quotation marks around it.

Reply with JSON only: an object whose one key "instructions" holds a list of exactly {n_instructions} strings, each string one whole message in the person's words."#;

/// System prompt of [`ToolCallingInstructionGenerator`](crate::ToolCallingInstructionGenerator);
/// `{n_instructions}` is replaced by the number of requests asked for.
pub const DEFAULT_TOOL_CALLING_INSTRUCTION_PROMPT: &str = r#"You write the first message that a real person sends to an AI assistant when they open a new chat. The assistant can use the tools listed in the next message, but the person cannot see them and does not know they exist.

The next message describes the person (under "Who is writing"), lists the tools (under "Tools") and may give some background knowledge (under "Context"). Write exactly {n_instructions} different opening messages this person could send, each one a request that the assistant can only fulfil well by using one or more of the tools.

Rules:
- Write what the person would actually type: natural, concrete, in their own voice. Mix short and longer messages, and mix requests that need one tool with requests that need several, or the same tool more than once.
- Put the concrete values the tools need in the message itself: names, places, dates, amounts, identifiers, units. Use realistic values, and leave out only what a real person would plausibly forget to mention.
- Never name a tool, and never mention functions, APIs, tools, calls, parameters or JSON: the person asks for what they want, not for how to get it.
- Each message must make sense on its own, without any earlier conversation. When there is a context, the person has never seen it, so never mention "the document", "the text" or "the context".
- Language: write in the language of the person's description (or of the context, when the description gives no clear language). If both are unclear, use English.
- Write only the person's message: no answer, no numbering, no labels such as "User:", no quotation marks around it.

Reply with JSON only: an object whose one key "instructions" holds a list of exactly {n_instructions} strings, each string one whole message in the person's words."#;

/// What [`write_correspondent_prompt`](crate::write_correspondent_prompt) asks the model.
pub(crate) const CORRESPONDENT_WRITER_PROMPT: &str = r#"You write role-play instructions for a language model that will pretend to be a human user chatting with an AI assistant. The next message shows the assistant's system prompt between <assistant_system_prompt> tags. Write the system prompt for the simulated user.

The prompt you write must make the simulated user:
1. Be one believable person who would really come to this assistant: give them a concrete situation, a reason to ask, and a level of expertise that fits.
2. Always speak as that person, to the assistant. They never answer their own questions, never write in the assistant's voice, never call themselves an AI or a language model, and never mention a simulation or a role-play.
3. Write in the language the assistant works in (the language of its system prompt, unless it names another one), and keep that language for the whole conversation.
4. Stay the same person in every turn: the same circumstances and goals, no sudden jumps to unrelated subjects.
5. Write the way people type in a chat: one message at a time, usually short, sometimes informal, with no labels such as "User:" and no stage directions.
6. React to what the assistant says: ask follow-up questions, push back when an answer is vague or does not help, and give details when asked for them.

Address the simulated user as "you", and write the prompt in the same language as the assistant's system prompt. Reply with the prompt only, between <user_system_prompt> and </user_system_prompt>.

For example, for an assistant whose system prompt is "You are a bicycle mechanic who helps people repair their bikes at home.", a good answer is:
<user_system_prompt>You are a commuter who rides eight kilometres to work every day on an old steel road bike. You know how to pump a tyre but little else about repairs, and you would rather fix things yourself than pay a shop. Ask the mechanic about whatever is bothering you with your bike, one message at a time, the way you would text a knowledgeable friend. Describe symptoms in your own words, say when an explanation is too technical, and follow up until you know what to do.</user_system_prompt>"#;

/// Appended to the dialog the correspondent sees before each follow-up turn, so the
/// simulated user keeps a human voice.
///
/// The engine shows the correspondent the dialog from the user's side: its own earlier
/// messages as `assistant` messages and the respondent's replies as `user` messages.
/// This note says so, and asks for one new message in the same language and persona.
pub const CORRESPONDENT_FOLLOW_UP_NOTE: &str = "You are the user in this chat, a human talking to an AI assistant, and still the same person as in your earlier messages: the messages you wrote are yours, and the ones you received are the assistant's replies. Write your next message to the assistant.\n\
- Use the same language as your earlier messages.\n\
- React to the assistant's last reply as that person would: ask a follow-up question, ask for a clarification, push back, or share a detail the assistant asked for.\n\
- Stay in your situation; do not switch to an unrelated subject, job or story.\n\
- Never write as the assistant: do not answer your own question, explain, or summarise the assistant's reply.\n\
- Write the message only: no preamble, no labels such as \"User:\", no quotation marks, one message.";

/// Opening tag of the correspondent prompt in the writer's answer.
pub(crate) const USER_PROMPT_OPEN: &str = "<user_system_prompt>";
/// Closing tag of the correspondent prompt in the writer's answer.
pub(crate) const USER_PROMPT_CLOSE: &str = "</user_system_prompt>";

/// System prompt of [`PersonaInstructionGenerator`](crate::PersonaInstructionGenerator);
/// `{n_instructions}` is replaced by the number of questions asked for and `{persona}`
/// by the persona's description.
pub const DEFAULT_PERSONA_INSTRUCTION_PROMPT: &str = r#"You write the first message that a particular person sends to an AI assistant when they open a new chat.

The person is: {persona}

The next message may add how this person talks to assistants (under "Who is writing") and gives a piece of knowledge (under "Context"). Write exactly {n_instructions} different opening messages this person could send, each one about something the context covers and each one shaped by who they are: their situation, their goals, what they already know and what they do not.

Rules:
- Write what this person would actually type: natural, concrete, in their own voice and at their level of expertise. Mix short and longer messages, and mix kinds of message: questions, requests for help, problems to solve, situations to advise on.
- Each message must make sense on its own. The person has never seen the context, so never mention "the document", "the text", "the passage", "the article" or "the context"; name the specific things it talks about instead.
- Each message must be answerable with the knowledge in the context.
- Never introduce the person by a description of themselves such as "As a nurse, ..." unless they really would; let their situation show in what they ask.
- Language: write in the language of the context. If the context has no clear language, use the language of the person's description. If that is unclear too, use English.
- Write only the person's message: no answer, no numbering, no labels such as "User:", no quotation marks around it.

Reply with JSON only: an object whose one key "instructions" holds a list of exactly {n_instructions} strings, each string one whole message in the person's words."#;

/// The fallback persona when a document has none.
pub(crate) const FALLBACK_PERSONA: &str = "A curious user";

/// Sent after an answer that held no usable instruction list.
pub(crate) const INSTRUCTIONS_CORRECTION: &str = r#"That answer could not be read. Reply again with JSON only: an object whose one key "instructions" holds a list of strings, each string one whole message in the person's words."#;

/// Who is writing, in an instruction request without a correspondent prompt.
pub(crate) const NO_CORRESPONDENT_PROMPT: &str =
    "An ordinary user of the assistant; nothing more is known about them.";

/// The user message of an instruction request: who is writing and, when there is
/// one, the context.
pub(crate) fn instruction_user_message(
    correspondent_prompt: &str,
    context: Option<&str>,
) -> String {
    let who = correspondent_prompt.trim();
    let who = if who.is_empty() {
        NO_CORRESPONDENT_PROMPT
    } else {
        who
    };
    match context {
        Some(context) => {
            format!("# Who is writing\n{who}\n\n# Context\n<context>\n{context}\n</context>")
        }
        None => format!("# Who is writing\n{who}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_message_with_and_without_context() {
        assert_eq!(
            instruction_user_message(" A nurse. ", Some("ctx")),
            "# Who is writing\nA nurse.\n\n# Context\n<context>\nctx\n</context>"
        );
        assert_eq!(
            instruction_user_message("A nurse.", None),
            "# Who is writing\nA nurse."
        );
        assert_eq!(
            instruction_user_message("  ", None),
            "# Who is writing\nAn ordinary user of the assistant; nothing more is known about them."
        );
    }
}
