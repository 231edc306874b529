//! The documents seam: where a run's documents come from and how the instruction
//! generators draw on them.
//!
//! The sources implement [`DocumentSource`](afterimage_core::DocumentSource): a list in
//! memory, a folder of text files, files matching a glob, JSONL files. Chunking splits
//! long documents before they are used; the sampler and its pool pick documents for
//! each instruction batch, balanced, weighted and seeded, with per-document visit
//! targets.

mod chunking;
mod sampling;
mod sources;

pub use self::chunking::{ChunkOptions, chunk_documents, chunk_text};
pub use self::sampling::{
    CONTEXT_SEPARATOR, DocumentPool, DocumentSampler, Reservation, merge_contexts,
};
pub use self::sources::{
    DirectoryDocumentProvider, FileGlobDocumentProvider, InMemoryDocumentProvider, IntoDocument,
    JsonlDocumentProvider,
};
