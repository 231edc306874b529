//! Steering applied by the built-in instruction generators: the question types a run
//! varies over, the note telling the writer what kind of question to ask and what was
//! asked already, and random sections of long documents.

use afterimage_core::{Document, QuestionType, Steering};

use crate::documents::{ChunkOptions, chunk_text, merge_contexts};

/// The built-in question types: `(name, what the writer is asked for)`.
pub const DEFAULT_QUESTION_TYPES: &[(&str, &str)] = &[
    (
        "how_to",
        "a how-to request: the person wants to get something done and asks for the steps",
    ),
    (
        "troubleshooting",
        "a troubleshooting message: something does not work as expected, the person describes the symptom and asks what to do",
    ),
    (
        "why",
        "a why question: the person wants to understand the reason or cause behind something",
    ),
    (
        "comparison",
        "a comparison: the person weighs two options, settings or approaches against each other",
    ),
    (
        "edge_case",
        "an edge case: an unusual situation, a limit, an exception or what happens when something goes wrong",
    ),
    (
        "opinion",
        "a request for advice or an opinion: what the assistant would recommend in the person's situation",
    ),
    (
        "detail",
        "a follow-up on one specific detail: a number, a condition, a name or a step, asked about precisely",
    ),
];

/// The built-in question type called `name`, if there is one.
pub fn builtin_question_type(name: &str) -> Option<QuestionType> {
    DEFAULT_QUESTION_TYPES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, d)| QuestionType::new(*n, *d))
}

/// Every built-in question type, in order.
pub fn default_question_types() -> Vec<QuestionType> {
    DEFAULT_QUESTION_TYPES
        .iter()
        .map(|(n, d)| QuestionType::new(*n, *d))
        .collect()
}

/// Heading of the question-type part of a steered instruction request.
pub(crate) const KIND_HEADING: &str = "# Kind of message";
/// Heading of the list of questions asked already.
pub(crate) const AVOID_HEADING: &str = "# Already asked";

/// What a steered request adds to the user message: the kind of question to ask and
/// the questions asked already (empty when there is neither).
pub(crate) fn steering_note(steering: &Steering, avoid: &[String]) -> String {
    let mut note = String::new();
    if let Some(kind) = &steering.question_type {
        note.push_str(&format!(
            "\n\n{KIND_HEADING}\nEvery message you write is {} (type: {}).",
            kind.description.trim(),
            kind.name
        ));
    }
    if !avoid.is_empty() {
        note.push_str(&format!(
            "\n\n{AVOID_HEADING}\nThese messages were written already. Do not repeat them or reword them: ask about other things the context covers, or from another angle.\n"
        ));
        for question in avoid {
            // One line each, so a question with line breaks cannot end the list.
            let line: Vec<&str> = question.split_whitespace().collect();
            note.push_str(&format!("- {}\n", line.join(" ")));
        }
        note.pop();
    }
    note
}

/// The context of a steered batch: each document whole, or, when it is longer than
/// the steering's section size, one section of it chosen with `seed` (a long document
/// otherwise draws questions about its start again and again).
pub(crate) fn steered_context(
    documents: &[Document],
    steering: Option<&Steering>,
    seed: u64,
) -> String {
    let Some(size) = steering.and_then(|s| s.section_chars) else {
        return merge_contexts(documents);
    };
    let sections: Vec<Document> = documents
        .iter()
        .enumerate()
        .map(|(i, document)| {
            let mut document = document.clone();
            if document.text.chars().count() > size {
                let chunks = chunk_text(&document.text, &ChunkOptions { size, overlap: 0 });
                let pick = seed
                    .wrapping_add(i as u64)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    >> 33;
                if let Some(chunk) = chunks.get(pick as usize % chunks.len().max(1)) {
                    document.text = chunk.clone();
                }
            }
            document
        })
        .collect();
    merge_contexts(&sections)
}

/// The row metadata a steered batch adds: `question_type`, when one was asked for.
pub(crate) fn steered_metadata(
    steering: Option<&Steering>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut metadata = serde_json::Map::new();
    if let Some(kind) = steering.and_then(|s| s.question_type.as_ref()) {
        metadata.insert("question_type".to_owned(), kind.name.clone().into());
    }
    metadata
}

/// The temperature of a batch: the generator's own, raised by the steering's pressure.
pub(crate) fn steered_temperature(steering: Option<&Steering>, base: f32) -> f32 {
    steering.map_or(base, |s| s.temperature(base))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use afterimage_core::AskedQuestions;

    #[test]
    fn the_note_names_the_kind_and_lists_what_to_avoid() {
        let asked = Arc::new(AskedQuestions::new(8));
        asked.record(&["d".to_owned()], "How do I reset\nthe router?");
        let steering = Steering::new(builtin_question_type("why")).avoiding(asked, 8, 500);
        let avoid = steering.avoid(&["d".to_owned()], 1);
        let note = steering_note(&steering, &avoid);
        assert!(
            note.contains("# Kind of message\nEvery message you write is a why question"),
            "{note}"
        );
        assert!(note.contains("(type: why)"), "{note}");
        assert!(note.ends_with("\n- How do I reset the router?"), "{note}");
        assert_eq!(steering_note(&Steering::default(), &[]), "");
        assert_eq!(steered_metadata(Some(&steering))["question_type"], "why");
        assert!(steered_metadata(None).is_empty());
    }

    #[test]
    fn long_documents_are_shown_as_a_section() {
        let text: String = (0..40)
            .map(|i| format!("Paragraph {i} says something.\n\n"))
            .collect();
        let documents = [Document::with_id("long", text.clone())];
        let whole = steered_context(&documents, None, 3);
        assert_eq!(whole, text);
        let steering = Steering::default().sections(Some(200));
        let sections: std::collections::HashSet<String> = (0..20)
            .map(|seed| steered_context(&documents, Some(&steering), seed))
            .collect();
        assert!(sections.iter().all(|s| s.chars().count() <= 200));
        assert!(
            sections.len() > 3,
            "sections vary with the seed: {sections:?}"
        );
        assert!(sections.iter().all(|s| text.contains(s.as_str())));
    }
}
