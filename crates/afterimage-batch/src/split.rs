//! Cutting a round's requests into provider batches, and reading what an ended batch
//! left out.

use std::collections::HashSet;

use crate::types::{BatchError, BatchItem, BatchLimits, ItemOutcome, LineError};

/// Cuts `items` into batches within `limits`: at most `max_requests` each, at most
/// `max_bytes` of serialized lines (as `line_bytes` measures them, one newline each),
/// and with `one_model_per_batch` one model per batch. Order is kept within a model.
/// A single item larger than `max_bytes` is an error, as are ids the provider refuses
/// or repeated ids.
pub fn split(
    items: Vec<BatchItem>,
    limits: &BatchLimits,
    line_bytes: impl Fn(&BatchItem) -> Result<usize, BatchError>,
) -> Result<Vec<Vec<BatchItem>>, BatchError> {
    check_ids(&items, limits)?;
    let mut groups: Vec<Vec<BatchItem>> = Vec::new();
    for item in items {
        let group = limits
            .one_model_per_batch
            .then(|| groups.iter().position(|g| g[0].model == item.model))
            .flatten()
            .or((!limits.one_model_per_batch && !groups.is_empty()).then_some(0));
        match group {
            Some(i) => groups[i].push(item),
            None => groups.push(vec![item]),
        }
    }
    let mut batches = Vec::new();
    for group in groups {
        batches.extend(cut(group, limits, &line_bytes)?);
    }
    Ok(batches)
}

fn cut(
    group: Vec<BatchItem>,
    limits: &BatchLimits,
    line_bytes: &impl Fn(&BatchItem) -> Result<usize, BatchError>,
) -> Result<Vec<Vec<BatchItem>>, BatchError> {
    let mut batches = Vec::new();
    let mut current: Vec<BatchItem> = Vec::new();
    let mut bytes = 0;
    for item in group {
        let size = line_bytes(&item)? + 1;
        if size > limits.max_bytes {
            return Err(BatchError::Invalid(format!(
                "request `{}` is {size} bytes serialized, over the provider's {} bytes per batch; shorten the conversation or use the synchronous API",
                item.custom_id, limits.max_bytes
            )));
        }
        if !current.is_empty()
            && (current.len() >= limits.max_requests.max(1) || bytes + size > limits.max_bytes)
        {
            batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(item);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    Ok(batches)
}

/// Refuses ids the provider would reject, and repeated ids.
pub(crate) fn check_ids(items: &[BatchItem], limits: &BatchLimits) -> Result<(), BatchError> {
    let mut seen = HashSet::new();
    for item in items {
        if !limits.id_rule.accepts(&item.custom_id) {
            return Err(BatchError::Invalid(format!(
                "the id `{}` is not accepted by this provider (use 1 to 64 of A-Z, a-z, 0-9, `_` and `-`)",
                item.custom_id
            )));
        }
        if !seen.insert(item.custom_id.as_str()) {
            return Err(BatchError::Invalid(format!(
                "the id `{}` appears twice; ids must be unique within a batch",
                item.custom_id
            )));
        }
    }
    Ok(())
}

/// The ids of an ended batch that have no result: each is retryable, never waited
/// for. `submitted` in submission order, `results` as parsed.
pub fn missing(submitted: &[String], results: &[(String, ItemOutcome)]) -> Vec<String> {
    let answered: HashSet<&str> = results.iter().map(|(id, _)| id.as_str()).collect();
    submitted
        .iter()
        .filter(|id| !answered.contains(id.as_str()))
        .cloned()
        .collect()
}

/// The line errors of a batch that failed validation, mapped back onto the ids of
/// `submitted` (in submission order; lines are 1-based). Errors naming no line, or a
/// line out of range, are returned apart: they concern the batch as a whole.
pub fn line_errors_to_ids(
    submitted: &[String],
    errors: &[LineError],
) -> (Vec<(String, ItemOutcome)>, Vec<LineError>) {
    let mut mapped = Vec::new();
    let mut whole = Vec::new();
    for error in errors {
        let id = error
            .line
            .and_then(|line| usize::try_from(line).ok())
            .and_then(|line| line.checked_sub(1))
            .and_then(|index| submitted.get(index));
        match id {
            Some(id) => {
                let reason = format!("{}: {}", error.code, error.message);
                mapped.push((id.clone(), ItemOutcome::Permanent(reason)));
            }
            None => whole.push(error.clone()),
        }
    }
    (mapped, whole)
}
