//! The prompts of the persona generator and the user messages it sends.
//!
//! Every default template is public so that a custom one can start from it.

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

/// Sent after an answer that held no usable persona list.
pub(crate) const PERSONAS_CORRECTION: &str = r#"That answer could not be used. Reply again with JSON only, in exactly this shape, holding five descriptions of at most 40 words each and no personal data: {"personas": ["first description", "second description"]}"#;

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
