//! The prompts this crate sends, and the small template filler they share.
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

Reply with JSON only, in exactly this shape, holding {n_instructions} strings:
{"instructions": ["first message", "second message"]}"#;

/// System prompt of [`SimpleInstructionGenerator`](crate::SimpleInstructionGenerator);
/// `{n_instructions}` is replaced by the number of questions asked for.
pub const DEFAULT_SIMPLE_INSTRUCTION_PROMPT: &str = r#"You write the first message that a real person sends to an AI assistant when they open a new chat.

The next message describes the person (under "Who is writing"). Write exactly {n_instructions} different opening messages this person could plausibly send, about the needs, questions and problems that bring them to the assistant.

Rules:
- Write what the person would actually type: natural, concrete, in their own voice. Mix short and longer messages, and mix kinds of message: questions, requests for help, problems to solve, situations to advise on.
- Each message must make sense on its own, without any earlier conversation.
- Language: write in the language of the person's description. If it is unclear, use English.
- Write only the person's message: no answer, no numbering, no labels such as "User:", no quotation marks around it.

Reply with JSON only, in exactly this shape, holding {n_instructions} strings:
{"instructions": ["first message", "second message"]}"#;

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

Reply with JSON only, in exactly this shape, holding {n_instructions} strings:
{"instructions": ["first message", "second message"]}"#;

/// System prompt of [`LlmToolSimulator`](crate::LlmToolSimulator); `{name}`,
/// `{description}` and `{parameters}` describe the tool being played.
pub(crate) const TOOL_SIMULATOR_PROMPT: &str = r#"You stand in for a software tool that an AI assistant has just called. Reply exactly as the real tool would: with its result as one JSON object, and nothing else.

The tool:
- name: {name}
- what it does: {description}
- its parameters (JSON Schema): {parameters}

The next message shows the user's request that led to the call, the results this and other tools already returned in the same conversation, and the call with its arguments.

Rules:
- Return realistic, specific data that fits the tool's description and the arguments exactly: real-looking names, numbers, dates, units and identifiers, not placeholders such as "example" or "string".
- Stay consistent with the earlier results: the same question asked again gets the same answer, and nothing contradicts what was already returned.
- When the arguments ask for something that cannot exist or be done, return the error the real tool would give, as JSON (for example {"error": "no flight LH123 on 2024-02-30"}).
- Keep it compact: the fields a real tool of this kind returns, no explanations, no markdown, no code fences."#;

/// Sent after a simulated tool result that held no JSON object.
pub(crate) const TOOL_SIMULATOR_CORRECTION: &str = "That answer could not be read as the tool's result. Reply again with the result as one JSON object only.";

/// The respondent's system prompt when it answers from a context; `{prompt}` is the
/// base respondent prompt and `{context}` the merged documents.
pub const DEFAULT_RESPONDENT_CONTEXT_TEMPLATE: &str = r#"{prompt}

## Knowledge for this conversation
<context>
{context}
</context>

Answer from this knowledge as if it were your own. Never say that you were given a context, a document or a text, and never cite it as a source. When the user asks about something it does not cover, help with what you reliably know instead of inventing details. Help the user directly rather than sending them elsewhere, unless your instructions above say otherwise."#;

/// The respondent's system prompt when it answers from retrieved passages
/// ([`WithRagRespondentPromptModifier`](crate::WithRagRespondentPromptModifier));
/// `{prompt}` is the base respondent prompt and `{context}` the passages.
pub const DEFAULT_RAG_RESPONDENT_TEMPLATE: &str = r#"{prompt}

## Reference material for this conversation
<context>
{context}
</context>

This material was looked up for the user's questions; some of it may be off topic. Answer from the parts that fit as if the knowledge were your own. Never say that you were given passages, documents or search results, and never cite them as a source. When the material does not cover what the user asks, help with what you reliably know instead of inventing details. Help the user directly rather than sending them elsewhere, unless your instructions above say otherwise."#;

/// The `{context}` of a RAG prompt when the retriever found nothing.
pub const NO_RETRIEVED_CONTEXT: &str = "No relevant reference material was found.";

/// The heading between the question's own context and the retrieved passages, when a
/// RAG prompt includes both.
pub(crate) const RETRIEVED_HEADING: &str = "## Retrieved passages";

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

/// System prompt of [`PersonaGenerator`](crate::PersonaGenerator) for the first
/// persona layer; the user message holds the document.
pub const DEFAULT_PERSONA_FROM_TEXT_PROMPT: &str = r#"You imagine the people who would come to an AI assistant with questions about a piece of knowledge.

The next message gives the knowledge between <document> tags. Describe exactly five different people who would realistically ask an assistant about what it covers.

Rules:
- Each description is one or two sentences of at most 40 words: who the person is (role, situation, level of expertise) and what brings them to this subject.
- Make the five people clearly different from one another: different roles, needs, backgrounds and levels of expertise, from beginners to specialists.
- Describe types of people, not individuals: no names, email addresses, phone numbers, street addresses or other personal data, and no real private persons.
- Write the descriptions in the language of the document.

Reply with JSON only, in exactly this shape, holding five strings:
{"personas": ["first description", "second description"]}"#;

/// System prompt of [`PersonaGenerator`](crate::PersonaGenerator) for deeper persona
/// layers; the user message holds one persona of the layer above and the document's
/// subject.
pub const DEFAULT_PERSONA_FROM_PERSONA_PROMPT: &str = r#"You imagine the people around a given person who would also come to an AI assistant with questions about the same subject.

The next message describes one person (under "Person") and the subject they ask about (under "Subject"). Describe exactly five other people connected to them: colleagues, clients, managers, students, suppliers, family members who are affected, or people in a more specific version of their situation. Each one must have their own reason to ask an assistant about the subject.

Rules:
- Each description is one or two sentences of at most 40 words: who the person is, how they relate to the given person, and what brings them to the subject.
- Make the five people clearly different from one another and from the given person.
- Describe types of people, not individuals: no names, email addresses, phone numbers, street addresses or other personal data, and no real private persons.
- Write the descriptions in the language of the given person's description.

Reply with JSON only, in exactly this shape, holding five strings:
{"personas": ["first description", "second description"]}"#;

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

Reply with JSON only, in exactly this shape, holding {n_instructions} strings:
{"instructions": ["first message", "second message"]}"#;

/// Sent after an answer that held no usable persona list.
pub(crate) const PERSONAS_CORRECTION: &str = r#"That answer could not be used. Reply again with JSON only, in exactly this shape, holding five descriptions of at most 40 words each and no personal data: {"personas": ["first description", "second description"]}"#;

/// The fallback persona when a document has none.
pub(crate) const FALLBACK_PERSONA: &str = "A curious user";

/// The most characters of a document shown when deriving personas from personas:
/// enough to name the subject, without paying for the whole text 25 or 125 times.
pub(crate) const SUBJECT_EXCERPT_CHARS: usize = 1500;

/// The user message asking for the first persona layer of `document`.
pub(crate) fn persona_from_text_message(document: &str) -> String {
    format!("<document>\n{}\n</document>", document.trim())
}

/// The user message asking for personas around `persona`, about `document`.
pub(crate) fn persona_from_persona_message(persona: &str, document: &str) -> String {
    let excerpt = afterimage_core::snippet(document.trim(), SUBJECT_EXCERPT_CHARS);
    format!(
        "# Person\n{}\n\n# Subject\n<document>\n{excerpt}\n</document>",
        persona.trim()
    )
}

/// Sent after an answer that held no usable instruction list.
pub(crate) const INSTRUCTIONS_CORRECTION: &str = r#"That answer could not be read. Reply again with JSON only, in exactly this shape: {"instructions": ["first message", "second message"]}"#;

/// The criteria [`LlmJudge`](crate::LlmJudge) scores by default, in the order it
/// lists them to the model.
pub const DEFAULT_JUDGE_CRITERIA: [&str; 5] = [
    "coherence",
    "factuality",
    "grounding",
    "helpfulness",
    "relevance",
];

/// System prompt of [`LlmJudge`](crate::LlmJudge); `{criteria}` is replaced by one
/// line per criterion and `{shape}` by the JSON answer expected.
pub const DEFAULT_JUDGE_PROMPT: &str = r#"You review conversations that will be used to train AI assistants. The next message shows the background material of one conversation (if it had any) and the conversation itself: a user talking to an AI assistant, one numbered message at a time. Grade the conversation on each criterion below.

Criteria:
{criteria}

Scoring:
- Give every criterion a score from 0 to 1. 1 means there is nothing worth fixing; around 0.5 means clear problems a careful editor would fix; 0 means the conversation fails the criterion entirely. Use the whole range, with decimals such as 0.65; a score is not a reward for effort.
- Score each criterion separately: a flaw lowers every criterion it breaks, and only those.
- Base every score on what the conversation and the material actually say, not on how confident the assistant sounds.
- Feedback: one or two sentences per criterion naming the concrete problem and where it is (for example "message 4 gives the wrong opening hours"), or saying briefly why nothing is wrong.

Reply with JSON only, one entry per criterion, in exactly this shape:
{shape}"#;

/// What each default criterion means, as the judge's system prompt explains it.
pub(crate) const JUDGE_CRITERION_DESCRIPTIONS: [(&str, &str); 5] = [
    (
        "coherence",
        "the conversation hangs together. Every assistant message answers the message just before it, later turns build on what was already said, and the assistant neither contradicts itself nor loses track of the user's situation.",
    ),
    (
        "factuality",
        "nothing the assistant states is false. Facts, figures, names, steps and reasoning are correct, whether they come from the material or from general knowledge; invented details count as false.",
    ),
    (
        "grounding",
        "the assistant's answers are backed by the material it was given: what it asserts can be found in or follows from that material, nothing contradicts it, and anything beyond it is general knowledge or marked as such. When the assistant was given no material, judge instead how carefully it handles what it cannot check: specific claims (prices, versions, dates, policies, figures) are hedged or left out rather than stated with invented certainty. Having no material to check against never earns a free 1.",
    ),
    (
        "helpfulness",
        "the assistant really helps the user get what they came for: specific, complete and usable answers of a sensible length, with a question back when details are missing, rather than vague, evasive, padded or boilerplate replies.",
    ),
    (
        "relevance",
        "the conversation stays on its subject. The user's questions are about the material (or, without material, about the subject of the first message), and the assistant's answers address those questions without drifting into unrelated content.",
    ),
];

/// Sent after a judge answer that lacked a criterion or a numeric score; `{problem}`
/// says what was wrong, `{names}` lists the criteria and `{shape}` is the JSON shape.
pub(crate) const JUDGE_CORRECTION: &str = r#"That answer could not be used: {problem}. Reply again with JSON only, with an entry for each of {names}, each score a number from 0 to 1, in exactly this shape:
{shape}"#;

/// Replaces each `{name}` in `template` that has a value, in one pass.
///
/// One pass matters: a value that itself contains `{context}` or JSON braces is copied
/// as is, never substituted again, and unknown `{...}` (JSON examples) stay literal.
pub(crate) fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let known = after.find('}').and_then(|end| {
            let name = &after[..end];
            values
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (end, *value))
        });
        match known {
            Some((end, value)) => {
                out.push_str(value);
                rest = &after[end + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The user message of an instruction request: who is writing and, when there is
/// one, the context.
pub(crate) fn instruction_user_message(
    correspondent_prompt: &str,
    context: Option<&str>,
) -> String {
    let who = correspondent_prompt.trim();
    let who = if who.is_empty() {
        "An ordinary user of the assistant; nothing more is known about them."
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
    fn fill_replaces_known_names_once_and_keeps_other_braces() {
        let out = fill(
            "{prompt}|{context}|{\"a\": [1]}|{unknown}|{",
            &[("prompt", "P {context}"), ("context", "C {prompt}")],
        );
        assert_eq!(out, "P {context}|C {prompt}|{\"a\": [1]}|{unknown}|{");
    }

    #[test]
    fn default_templates_fill_their_placeholders() {
        let out = fill(
            DEFAULT_CONTEXTUAL_INSTRUCTION_PROMPT,
            &[("n_instructions", "4")],
        );
        assert!(!out.contains("{n_instructions}"));
        assert_eq!(out.matches("exactly 4").count(), 1);
        assert!(out.ends_with(r#"{"instructions": ["first message", "second message"]}"#));
        let out = fill(
            DEFAULT_RESPONDENT_CONTEXT_TEMPLATE,
            &[("prompt", "P"), ("context", "C")],
        );
        assert!(
            out.starts_with("P\n\n## Knowledge for this conversation\n<context>\nC\n</context>\n")
        );
    }

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
