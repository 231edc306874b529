//! One document's personas: its layers, what was picked, and the picking.

use std::collections::HashSet;

use afterimage_core::{Document, Persona, PersonaDocument, PersonaLayer, PersonaLayerInfo};

use super::parse::normalise;
use super::policy::pick_index;

/// A document's layers (index = depth; a layer whose calls all failed is empty) and
/// the flattened personas, shallowest first, with their use counts.
#[derive(Debug)]
pub(crate) struct DocState {
    pub(crate) id: String,
    pub(crate) text: String,
    metadata: serde_json::Map<String, serde_json::Value>,
    /// Personas per depth, as kept (deduplicated across layers).
    pub(crate) layers: Vec<Vec<String>>,
    seen: HashSet<String>,
    flat: Vec<(String, u32)>,
    uses: Vec<u64>,
    /// Picks made so far.
    pub(crate) picks: u64,
}

impl DocState {
    /// A state for `document`, starting from `saved` when it is the same document.
    pub(crate) fn new(document: &Document, saved: Option<&PersonaDocument>) -> Self {
        let mut state = DocState {
            id: document.id.clone(),
            text: document.text.clone(),
            metadata: document.metadata.clone(),
            layers: Vec::new(),
            seen: HashSet::new(),
            flat: Vec::new(),
            uses: Vec::new(),
            picks: 0,
        };
        let Some(saved) = saved else {
            return state;
        };
        if saved.text != document.text {
            tracing::debug!(
                document = %document.id,
                "the saved personas are for a different text; generating new ones"
            );
            return state;
        }
        let deepest = saved
            .personas
            .iter()
            .map(|layer| layer.metadata.generation_depth)
            .max();
        if let Some(deepest) = deepest {
            for depth in 0..=deepest {
                let layer = saved
                    .personas
                    .iter()
                    .filter(|l| l.metadata.generation_depth == depth)
                    .flat_map(|l| l.descriptions.iter().cloned())
                    .collect();
                state.push_layer(layer);
            }
        }
        state
    }

    /// Personas so far.
    pub(crate) fn len(&self) -> usize {
        self.flat.len()
    }

    /// Whether another layer may be generated with `planned` the deepest allowed: the
    /// first always, a deeper one only below `planned` and from a non-empty layer.
    pub(crate) fn can_grow(&self, planned: u32) -> bool {
        match self.layers.last() {
            None => true,
            Some(last) => self.layers.len() as u32 <= planned && !last.is_empty(),
        }
    }

    /// Appends the next layer, without personas seen in any layer before; returns how
    /// many were kept.
    pub(crate) fn push_layer(&mut self, descriptions: Vec<String>) -> usize {
        let depth = self.layers.len() as u32;
        let mut kept = Vec::new();
        for description in descriptions {
            if self.seen.insert(normalise(&description)) {
                self.flat.push((description.clone(), depth));
                self.uses.push(0);
                kept.push(description);
            }
        }
        let count = kept.len();
        self.layers.push(kept);
        count
    }

    /// The next pick under the sampling policy, counted.
    pub(crate) fn pick(&mut self, target: Option<u64>, seed: u64) -> Option<Persona> {
        let depths: Vec<u32> = self.flat.iter().map(|(_, depth)| *depth).collect();
        let index = pick_index(&depths, target, self.picks, seed)?;
        self.picks += 1;
        self.uses[index] += 1;
        let (description, depth) = &self.flat[index];
        Some(Persona {
            description: description.clone(),
            generation_depth: Some(*depth),
        })
    }

    /// Every persona with its use count, shallowest first.
    pub(crate) fn uses(&self) -> Vec<(Persona, u64)> {
        self.flat
            .iter()
            .zip(&self.uses)
            .map(|((description, depth), uses)| {
                (
                    Persona {
                        description: description.clone(),
                        generation_depth: Some(*depth),
                    },
                    *uses,
                )
            })
            .collect()
    }

    /// The document with its non-empty layers, in the documents-file shape.
    pub(crate) fn to_document(&self) -> PersonaDocument {
        PersonaDocument {
            id: self.id.clone(),
            text: self.text.clone(),
            personas: self
                .layers
                .iter()
                .enumerate()
                .filter(|(_, layer)| !layer.is_empty())
                .map(|(depth, layer)| PersonaLayer {
                    descriptions: layer.clone(),
                    metadata: PersonaLayerInfo {
                        generation_depth: depth as u32,
                    },
                })
                .collect(),
            metadata: self.metadata.clone(),
        }
    }
}
