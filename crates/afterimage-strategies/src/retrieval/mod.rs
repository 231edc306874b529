//! The retrieval seam: finding the passages a RAG assistant answers from.
//!
//! Both retrievers implement [`Retriever`](afterimage_core::Retriever): an in-memory
//! BM25 index (no server, no model) and cosine similarity over vectors from any
//! [`Embedder`](afterimage_core::Embedder).

mod bm25;
mod embedding;

pub use self::bm25::Bm25Retriever;
pub use self::embedding::EmbeddingRetriever;
