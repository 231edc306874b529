//! Documents the dialogs are grounded in, and personas who ask about them.

use serde::{Deserialize, Serialize};

/// A piece of knowledge a dialog is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// A stable identifier (a file path, a source id, or a hash of the text).
    pub id: String,
    /// The text.
    pub text: String,
    /// Whatever the source knew about it.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl Document {
    /// A document whose id is a hash of its text, so the same text gets the same id in
    /// every run (which resume and coverage counting rely on).
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        Document {
            id: content_id(&text),
            text,
            metadata: serde_json::Map::new(),
        }
    }

    /// A document with an explicit id.
    pub fn with_id(id: impl Into<String>, text: impl Into<String>) -> Self {
        Document {
            id: id.into(),
            text: text.into(),
            metadata: serde_json::Map::new(),
        }
    }
}

/// `doc-` and 16 hex digits of a 64-bit FNV-1a hash: stable across builds and
/// platforms, unlike `std`'s `DefaultHasher`.
pub fn content_id(text: &str) -> String {
    format!("doc-{:016x}", fnv1a(text.as_bytes()))
}

/// 64-bit FNV-1a, stable across builds and platforms.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A simulated user: who they are and which persona layer they came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Persona {
    /// A short description ("A night-shift nurse who ...").
    pub description: String,
    /// 0 for personas drawn from a document, k+1 for personas derived from layer k.
    pub generation_depth: Option<u32>,
}

/// A document with the personas generated for it, in the shape Python afterimage's
/// documents file uses (`{id, text, personas: [{descriptions, metadata:
/// {generation_depth}}], metadata}`), so a run's personas can be saved and reused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonaDocument {
    /// The document's id.
    pub id: String,
    /// The document's text.
    pub text: String,
    /// One entry per generated layer (or per generating call), shallowest first.
    #[serde(default)]
    pub personas: Vec<PersonaLayer>,
    /// The document's metadata.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Personas generated together, all at one depth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonaLayer {
    /// The persona descriptions.
    pub descriptions: Vec<String>,
    /// Where in the persona tree they sit.
    pub metadata: PersonaLayerInfo,
}

/// The metadata of a [`PersonaLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonaLayerInfo {
    /// 0 for personas drawn from the document, k+1 for personas derived from layer k.
    pub generation_depth: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ids_are_stable_and_distinct() {
        assert_eq!(Document::new("a").id, Document::new("a").id);
        assert_ne!(Document::new("a").id, Document::new("b").id);
        // FNV-1a of the empty input is the offset basis.
        assert_eq!(content_id(""), "doc-cbf29ce484222325");
    }
}
