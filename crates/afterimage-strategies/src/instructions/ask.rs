//! Asking a model for a list of first questions and reading its answer, shared by the
//! instruction generators.

use afterimage_core::{
    ChatModel, ChatRequest, JsonSchema, Message, StrategyError, Usage, parse_lenient, snippet,
};
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, Error as _};
use serde_json::Value;

use super::prompts::INSTRUCTIONS_CORRECTION;

/// A structured-output schema for `{"<key>": [string]}`.
pub(crate) fn list_schema(key: &str, description: &str) -> JsonSchema {
    JsonSchema::new(
        key,
        serde_json::json!({
            "type": "object",
            "properties": {
                key: {
                    "type": "array",
                    "items": {"type": "string"},
                    // A server that enforces the schema with a grammar (llama.cpp)
                    // would otherwise let a small model answer an empty list.
                    "minItems": 1,
                    "description": description
                }
            },
            "required": [key],
            "additionalProperties": false
        }),
    )
}

/// What the schema says its list holds; a small model may hand it back as a question.
pub(crate) const INSTRUCTIONS_DESCRIPTION: &str = "The first messages, one string each.";

/// The structured-output schema: `{"instructions": [string]}`.
pub(crate) fn instructions_schema() -> JsonSchema {
    list_schema("instructions", INSTRUCTIONS_DESCRIPTION)
}

/// The key a [`KeyedList`] looks for.
pub(crate) trait ListKey {
    /// The object key holding the list (`"instructions"`, `"personas"`).
    const KEY: &'static str;
}

/// A list of strings found in one of the shapes models answer with:
/// `{"<key>": [...]}`, a bare array, or an object whose only array holds strings.
///
/// Deserializing rejects every other value, so [`parse_lenient`] moves on to the next
/// JSON candidate in the answer instead of settling on, say, a stray `[1]`. Since it
/// also tries nested values, an object with several string lists yields the first one.
#[derive(Debug)]
pub(crate) struct KeyedList<K>(pub(crate) Vec<String>, pub(crate) PhantomData<K>);

impl<'de, K: ListKey> Deserialize<'de> for KeyedList<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        string_list(&value, K::KEY)
            .map(|items| KeyedList(items, PhantomData))
            .ok_or_else(|| D::Error::custom("not a list of strings"))
    }
}

/// The key of first-question lists.
#[derive(Debug)]
struct Instructions;

impl ListKey for Instructions {
    const KEY: &'static str = "instructions";
}

fn strings(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|item| item.as_str().map(str::to_owned))
        .collect()
}

fn string_list(value: &Value, key: &str) -> Option<Vec<String>> {
    match value {
        Value::Array(_) => strings(value),
        Value::Object(object) => {
            if let Some(list) = object.get(key) {
                return strings(list);
            }
            let mut arrays = object.values().filter(|v| v.is_array());
            match (arrays.next(), arrays.next()) {
                (Some(only), None) => strings(only),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Trims, drops empty items and repeats (keeping first occurrences), keeps at most `n`.
fn clean(items: Vec<String>, n: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(n.min(items.len()));
    for item in items {
        let item = item.trim();
        if !item.is_empty() && !out.iter().any(|seen| seen == item) {
            out.push(item.to_owned());
        }
    }
    out.truncate(n);
    out
}

/// The usable questions in `answer`, or why there are none.
fn read_answer(answer: &str, n: usize) -> Result<Vec<String>, String> {
    let KeyedList(items, _) = parse_lenient::<KeyedList<Instructions>>(answer)
        .map_err(|_| "it holds no JSON list of questions".to_owned())?;
    let items = clean(items, n);
    if items.is_empty() {
        return Err("its list of questions is empty".to_owned());
    }
    Ok(items)
}

/// The questions a model proposed, and what asking cost.
#[derive(Debug)]
pub(crate) struct Asked {
    /// The cleaned questions (at least one, at most the number asked for).
    pub(crate) instructions: Vec<String>,
    /// Tokens spent over every call.
    pub(crate) usage: Usage,
    /// Calls made (1, or 2 after a retry).
    pub(crate) requests: u32,
}

/// The prompt-cache key of an instruction request: the same prompts give the same key.
fn cache_key(system_prompt: &str, user_message: &str) -> String {
    let prompt = format!("{system_prompt}\n\n{user_message}");
    format!(
        "instructions/{:016x}",
        afterimage_core::fnv1a(prompt.as_bytes())
    )
}

/// Asks `model` for `n` questions with this system prompt and user message.
///
/// An answer without a usable list gets one more chance (a second call that shows the
/// model its answer and restates the shape); then the error quotes the answer.
pub(crate) async fn ask_for_instructions(
    model: &dyn ChatModel,
    system_prompt: String,
    user_message: String,
    temperature: f32,
    n: usize,
) -> Result<Asked, StrategyError> {
    // Later requests about the same document repeat this prompt: a key lets the
    // provider's prompt cache serve it again.
    let key = cache_key(&system_prompt, &user_message);
    let mut messages = vec![Message::system(system_prompt), Message::user(user_message)];
    let request = |messages: Vec<Message>| {
        ChatRequest::new(messages)
            .temperature(temperature)
            .json_schema(instructions_schema())
            .cache_key(key.clone())
    };
    let response = model.chat(request(messages.clone())).await?;
    let mut usage = response.usage;
    let answer = response.message.content;
    let first_problem = match read_answer(&answer, n) {
        Ok(instructions) => {
            return Ok(Asked {
                instructions,
                usage,
                requests: 1,
            });
        }
        Err(problem) => problem,
    };
    tracing::debug!(
        problem = %first_problem,
        answer = %snippet(&answer, 200),
        "instruction answer unusable; asking once more"
    );
    messages.push(Message::assistant(answer));
    messages.push(Message::user(INSTRUCTIONS_CORRECTION));
    let response = model.chat(request(messages)).await?;
    usage += response.usage;
    let answer = response.message.content;
    match read_answer(&answer, n) {
        Ok(instructions) => Ok(Asked {
            instructions,
            usage,
            requests: 2,
        }),
        Err(problem) => Err(StrategyError::MalformedOutput {
            message: format!(
                "asked twice for a JSON list of {n} questions, but {problem}; the answer starts: {}",
                snippet(answer.trim(), 200)
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_shapes() {
        let read = |s: &str| read_answer(s, 5);
        assert_eq!(read(r#"{"instructions": ["a", "b"]}"#).unwrap(), ["a", "b"]);
        assert_eq!(read(r#"["a", "b"]"#).unwrap(), ["a", "b"]);
        assert_eq!(
            read(r#"{"count": 2, "questions": ["a", "b"]}"#).unwrap(),
            ["a", "b"]
        );
        // A stray non-string array before the real answer is passed over.
        assert_eq!(
            read(r#"Step [1] done. {"instructions": ["a"]}"#).unwrap(),
            ["a"]
        );
    }

    #[test]
    fn rejected_and_nested_shapes() {
        // Not read whole, but the lenient scan then finds the first list inside.
        assert_eq!(
            read_answer(r#"{"a": ["x"], "b": ["y"]}"#, 3).unwrap(),
            ["x"]
        );
        assert!(read_answer(r#"{"a": [1], "b": [2]}"#, 3).is_err());
        assert!(read_answer(r#"{"instructions": [1, 2]}"#, 3).is_err());
        assert!(read_answer(r#"{"instructions": "a"}"#, 3).is_err());
        assert!(read_answer("just words", 3).is_err());
        assert_eq!(
            read_answer(r#"{"instructions": [" ", ""]}"#, 3).unwrap_err(),
            "its list of questions is empty"
        );
    }

    #[test]
    fn clean_trims_dedups_and_truncates() {
        let items = ["  a ", "b", "a", "", "c", "d"].map(String::from).to_vec();
        assert_eq!(clean(items.clone(), 3), ["a", "b", "c"]);
        assert_eq!(clean(items, 10), ["a", "b", "c", "d"]);
    }
}
