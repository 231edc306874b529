//! Embedding retrieval: chunks embedded once, queries ranked by cosine similarity.

use std::sync::Arc;

use afterimage_core::{Document, Embedder, Retrieved, Retriever, StrategyError};
use async_trait::async_trait;
use futures::StreamExt;

/// Ranks chunks by the cosine similarity of their embeddings to the query's.
///
/// [`build`](Self::build) embeds every chunk through an [`Embedder`] (any provider);
/// the vectors are normalised and kept in one flat `Vec<f32>`, so a query costs one
/// embedding call and one pass of dot products.
#[derive(Clone)]
pub struct EmbeddingRetriever {
    embedder: Arc<dyn Embedder>,
    chunks: Vec<Document>,
    vectors: Vec<f32>,
    dimensions: usize,
}

impl std::fmt::Debug for EmbeddingRetriever {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingRetriever")
            .field("embedder", &self.embedder)
            .field("chunks", &self.chunks.len())
            .field("dimensions", &self.dimensions)
            .finish()
    }
}

/// Embedding calls in flight while an index is built.
const BATCHES_IN_FLIGHT: usize = 4;

impl EmbeddingRetriever {
    /// Embeds `chunks` with `embedder`, `batch_size` texts per call, a few calls at
    /// once.
    ///
    /// Fails when there are no chunks, when `batch_size` is 0, or when the embedder
    /// answers with the wrong number of vectors or with vectors of differing sizes.
    pub async fn build(
        embedder: Arc<dyn Embedder>,
        chunks: Vec<Document>,
        batch_size: usize,
    ) -> Result<Self, StrategyError> {
        if chunks.is_empty() {
            return Err(StrategyError::NoDocuments {
                message: "the embedding retriever was given no chunks to index".to_owned(),
            });
        }
        if batch_size == 0 {
            return Err(StrategyError::Config(
                "the embedding batch size must be at least 1".to_owned(),
            ));
        }
        // A few batches at once: a corpus of 200k chunks is 2,000 requests, too many
        // to send one after the other, and a rate-limited key is still not flooded.
        let mut batches = futures::stream::iter(chunks.chunks(batch_size).map(|batch| {
            let texts: Vec<String> = batch.iter().map(|c| c.text.clone()).collect();
            let embedder = Arc::clone(&embedder);
            async move {
                let embedded = embedder.embed(&texts).await;
                (texts.len(), embedded)
            }
        }))
        .buffered(BATCHES_IN_FLIGHT)
        .enumerate();
        let mut vectors = Vec::new();
        let mut dimensions = 0;
        while let Some((batch_index, (asked, embedded))) = batches.next().await {
            let embedded = embedded?;
            if embedded.len() != asked {
                return Err(malformed(format!(
                    "the embedder returned {} vectors for {} texts (batch {})",
                    embedded.len(),
                    asked,
                    batch_index + 1
                )));
            }
            for (offset, vector) in embedded.into_iter().enumerate() {
                if dimensions == 0 {
                    dimensions = vector.len();
                    if dimensions == 0 {
                        return Err(malformed("the embedder returned an empty vector"));
                    }
                    vectors.reserve(dimensions * chunks.len());
                }
                if vector.len() != dimensions {
                    let chunk = batch_index * batch_size + offset;
                    return Err(malformed(format!(
                        "inconsistent embedding dimensions: chunk {chunk} has {} where earlier ones have {dimensions}",
                        vector.len()
                    )));
                }
                vectors.extend(normalised(vector));
            }
        }
        drop(batches);
        Ok(EmbeddingRetriever {
            embedder,
            chunks,
            vectors,
            dimensions,
        })
    }

    /// How many chunks are indexed.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether no chunk is indexed (never, since [`build`](Self::build) refuses that).
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The size of the embedding vectors.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Up to `limit` chunks with a positive cosine similarity to `query` (a vector of
    /// [`dimensions`](Self::dimensions) values, normalised here), best first; equal
    /// scores keep the chunks' order.
    pub fn search_vector(&self, query: Vec<f32>, limit: usize) -> Vec<Retrieved> {
        if limit == 0 || query.len() != self.dimensions {
            return Vec::new();
        }
        let query = normalised(query);
        let mut ranked: Vec<(usize, f32)> = self
            .vectors
            .chunks_exact(self.dimensions)
            .map(|v| v.iter().zip(&query).map(|(a, b)| a * b).sum::<f32>())
            .enumerate()
            .filter(|&(_, s)| s > 0.0)
            .collect();
        let order = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if ranked.len() > limit {
            ranked.select_nth_unstable_by(limit - 1, order);
            ranked.truncate(limit);
        }
        ranked.sort_unstable_by(order);
        ranked
            .into_iter()
            .filter_map(|(index, score)| {
                let chunk = self.chunks.get(index)?;
                Some(Retrieved {
                    id: chunk.id.clone(),
                    text: chunk.text.clone(),
                    score: f64::from(score),
                })
            })
            .collect()
    }
}

#[async_trait]
impl Retriever for EmbeddingRetriever {
    async fn retrieve(&self, query: &str, limit: usize) -> Result<Vec<Retrieved>, StrategyError> {
        let mut embedded = self.embedder.embed(&[query.to_owned()]).await?;
        if embedded.len() != 1 {
            return Err(malformed(format!(
                "the embedder returned {} vectors for one query",
                embedded.len()
            )));
        }
        let vector = embedded.remove(0);
        if vector.len() != self.dimensions {
            return Err(malformed(format!(
                "the query embedding has {} dimensions, the chunks' have {}",
                vector.len(),
                self.dimensions
            )));
        }
        Ok(self.search_vector(vector, limit))
    }

    fn name(&self) -> &str {
        "embedding"
    }
}

fn malformed(message: impl Into<String>) -> StrategyError {
    StrategyError::MalformedOutput {
        message: message.into(),
    }
}

/// `vector` scaled to length 1 (a zero vector stays zero and matches nothing).
fn normalised(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && norm.is_finite() {
        for x in &mut vector {
            *x /= norm;
        }
    }
    vector
}
