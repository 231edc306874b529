//! Embeddings without a model: feature hashing of lowercased words, so texts sharing
//! words have similar vectors and retrieval works end to end against the mock.

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::server::Answer;
use crate::text::{approx_tokens, word_count};

/// 64-bit FNV-1a (stable across builds, unlike `std`'s hasher).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The unit vector of `text` in `dimensions` buckets: each lowercased word adds one to
/// the bucket its hash picks. A text without words gets a zero vector.
pub(crate) fn embed(text: &str, dimensions: usize) -> Vec<f32> {
    let dimensions = dimensions.max(1);
    let mut vector = vec![0.0f32; dimensions];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let bucket = (fnv1a(word.to_lowercase().as_bytes()) % dimensions as u64) as usize;
        if let Some(slot) = vector.get_mut(bucket) {
            *slot += 1.0;
        }
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut vector {
            *x /= norm;
        }
    }
    vector
}

/// The dimensions a request asks for (OpenAI's `dimensions`, Gemini's
/// `outputDimensionality`), or the server's default.
fn dimensions(request: &Value, key: &str, default: usize) -> Result<usize, String> {
    match request.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(value) => value
            .as_u64()
            .filter(|&n| (1..=8192).contains(&n))
            .map(|n| n as usize)
            .ok_or_else(|| format!("`{key}` must be an integer between 1 and 8192.")),
    }
}

/// OpenAI `POST /embeddings`: `input` is a string or an array of strings.
pub(crate) fn openai(body: &Value, default_dimensions: usize) -> Result<Answer, String> {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or("you must provide a model parameter")?;
    let inputs: Vec<&str> = match body.get("input") {
        Some(Value::String(text)) => vec![text.as_str()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<_>>()
            .ok_or("`input` must be a string or an array of strings")?,
        _ => return Err("`input` must be a non-empty string or array of strings".to_owned()),
    };
    let dimensions = dimensions(body, "dimensions", default_dimensions)?;
    let words: usize = inputs.iter().map(|t| word_count(t)).sum();
    let tokens = approx_tokens(words);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            json!({"object": "embedding", "index": index, "embedding": embed(text, dimensions)})
        })
        .collect();
    Ok(Answer::json(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
    ))
}

/// The text of a Gemini `content`: its parts' texts joined.
fn content_text(request: &Value) -> Result<String, String> {
    let parts = request
        .get("content")
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .ok_or("* content.parts: a request needs content with parts")?;
    let texts: Vec<&str> = parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect();
    Ok(texts.join(" "))
}

fn output_dimensions(request: &Value, default: usize) -> Result<usize, String> {
    let key = if request.get("output_dimensionality").is_some() {
        "output_dimensionality"
    } else {
        "outputDimensionality"
    };
    dimensions(request, key, default)
}

/// Gemini `POST /models/{model}:batchEmbedContents`.
pub(crate) fn gemini_batch(body: &Value, default_dimensions: usize) -> Result<Answer, String> {
    let requests = body
        .get("requests")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
        .ok_or("* requests: at least one request is required")?;
    let embeddings = requests
        .iter()
        .map(|request| {
            let dimensions = output_dimensions(request, default_dimensions)?;
            Ok(json!({"values": embed(&content_text(request)?, dimensions)}))
        })
        .collect::<Result<Vec<Value>, String>>()?;
    Ok(Answer::json(
        StatusCode::OK,
        &json!({"embeddings": embeddings}),
    ))
}

/// Gemini `POST /models/{model}:embedContent`.
pub(crate) fn gemini_single(body: &Value, default_dimensions: usize) -> Result<Answer, String> {
    let dimensions = output_dimensions(body, default_dimensions)?;
    let values = embed(&content_text(body)?, dimensions);
    Ok(Answer::json(
        StatusCode::OK,
        &json!({"embedding": {"values": values}}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn shared_words_make_similar_vectors() {
        let refund = embed("How long does a REFUND take?", 64);
        assert_eq!(refund.len(), 64);
        assert!((cosine(&refund, &refund) - 1.0).abs() < 1e-6);
        assert_eq!(refund, embed("how long does a refund take", 64));
        let close = cosine(&refund, &embed("A refund takes 30 days", 64));
        let far = cosine(&refund, &embed("Shipping is free over 50 euros", 64));
        assert!(close > far, "{close} <= {far}");
        assert!(embed(" ,; ", 8).iter().all(|&x| x == 0.0));
    }
}
