//! The prompts of the model-played tool ([`LlmToolSimulator`](crate::LlmToolSimulator)).

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
