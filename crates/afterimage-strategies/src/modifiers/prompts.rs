//! The respondent prompt templates of the modifiers, and the note for a retrieval that
//! found nothing.
//!
//! Every default template is public so that a custom one can start from it.

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
