//! The batches' shared in-memory state: uploaded files, batches on a clock, line
//! faults, settled results and the counters tests read.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::MockConfig;
use crate::text::Rng;

/// Salt of the per-line and per-batch fault draws, apart from the reply streams.
const FAULT_SALT: u64 = 0xba7c_4f00_d1e5_0001;

/// Everything the batch routes share: the state behind one lock, and the stall switch.
#[derive(Debug, Default)]
pub(crate) struct Store {
    inner: Mutex<Inner>,
    pub(crate) stall: super::stall::Stall,
}

impl Store {
    /// The state, also after a handler panicked while holding it.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The state under the lock.
#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub(crate) files: HashMap<String, File>,
    /// In creation order.
    pub(crate) batches: Vec<Batch>,
    /// Requests submitted per `custom_id` (Gemini: metadata `key`), over all batches.
    pub(crate) submissions: BTreeMap<String, u64>,
    /// Batch lines answered by the model (faults and unfinished lines not counted).
    pub(crate) answered: u64,
    /// Files deleted through the OpenAI or Gemini Files API.
    pub(crate) files_deleted: u64,
    next_id: u64,
}

/// An uploaded (or result) file.
#[derive(Debug, Clone)]
pub(crate) struct File {
    pub(crate) key: String,
    pub(crate) filename: String,
    pub(crate) purpose: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) created_at: u64,
}

/// Which protocol a batch was created through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    OpenAi,
    Anthropic,
    Gemini,
}

/// One request of a batch.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub(crate) custom_id: String,
    pub(crate) body: Value,
    /// Gemini: the whole `metadata` map, echoed with the result.
    pub(crate) metadata: Value,
    fault: LineFault,
}

/// What the fault switches decided for a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineFault {
    None,
    Retryable,
    Permanent,
    Missing,
}

/// What a batch as a whole is fated to do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fate {
    Run,
    /// Fails validation with these `{code, line, message}` errors.
    Fail(Vec<Value>),
    Expire,
}

/// The result of one line once the batch has ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// The body the synchronous endpoint would have answered.
    Ok(Value),
    /// A retryable error; `server` picks 5xx over 429.
    Retryable { server: bool },
    /// A permanent error with its message.
    Permanent(String),
    /// Left out of the results.
    Missing,
    /// Not run: the batch was cancelled or expired first.
    Unfinished,
    /// Not run: the account's credit ran out ([`MockConfig::batch_credit`]).
    NoCredit,
}

/// Where a batch is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// OpenAI `validating`, Gemini `PENDING`.
    Queued,
    /// Running, with this many lines done.
    Running(usize),
    /// OpenAI `finalizing`.
    Finalizing,
    /// Cancel asked, not yet effective.
    Cancelling,
    Ended(End),
}

/// How a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Completed,
    Failed,
    Expired,
    Cancelled,
}

/// A batch of any protocol.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    pub(crate) id: String,
    pub(crate) protocol: Protocol,
    /// The API key that created it.
    pub(crate) key: String,
    pub(crate) model: String,
    /// OpenAI `metadata`, Gemini display name (as a string), Anthropic null.
    pub(crate) metadata: Value,
    pub(crate) input_file_id: String,
    pub(crate) lines: Vec<Line>,
    pub(crate) fate: Fate,
    pub(crate) created_at: u64,
    started: Instant,
    phase: Duration,
    cancelled: Option<Instant>,
    pub(crate) cancelled_at: Option<u64>,
    /// Set once the batch has ended: per line, in input order.
    pub(crate) outcomes: Option<Vec<Outcome>>,
    /// The order results are written in (shuffled for OpenAI and Anthropic).
    pub(crate) order: Vec<usize>,
    pub(crate) output_file_id: Option<String>,
    pub(crate) error_file_id: Option<String>,
    /// OpenAI: the output and error files have been written.
    pub(crate) files_written: bool,
}

/// A new batch's inputs.
#[derive(Debug)]
pub(crate) struct NewBatch {
    pub(crate) protocol: Protocol,
    pub(crate) key: String,
    pub(crate) model: String,
    pub(crate) metadata: Value,
    pub(crate) input_file_id: String,
    /// `(custom_id, body, metadata)` per request.
    pub(crate) requests: Vec<(String, Value, Value)>,
    /// Validation errors found in the input (the batch fails with them).
    pub(crate) errors: Vec<Value>,
}

impl Inner {
    /// A fresh id with `prefix`, unique on this server.
    pub(crate) fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        let mut rng = Rng::for_request(FAULT_SALT, self.next_id);
        format!("{prefix}{:016x}{:04}", rng.next_u64(), self.next_id)
    }

    /// Creates a batch (counting its submissions) and returns its index.
    pub(crate) fn create(&mut self, new: NewBatch, config: &MockConfig, now: u64) -> usize {
        let prefix = match new.protocol {
            Protocol::OpenAi => "batch_",
            Protocol::Anthropic => "msgbatch_",
            Protocol::Gemini => "batches/",
        };
        let id = self.new_id(prefix);
        let mut rng = Rng::for_request(config.seed ^ FAULT_SALT, self.next_id);
        let draw = rng.next_f64();
        let validation = if new.protocol == Protocol::Anthropic {
            0.0
        } else {
            config.batch_validation_failure_rate
        };
        let fate = if !new.errors.is_empty() {
            Fate::Fail(new.errors)
        } else if draw < validation {
            Fate::Fail(vec![serde_json::json!({
                "code": "invalid_request", "line": 1, "param": null,
                "message": "The batch failed validation (injected by afterimage-mock).",
            })])
        } else if new.protocol == Protocol::OpenAi
            && draw < validation + config.batch_token_limit_rate
        {
            Fate::Fail(vec![serde_json::json!({
                "code": "token_limit_exceeded", "line": null, "param": null,
                "message": format!("Enqueued token limit reached for {} (injected by afterimage-mock). Wait for your batches to finish before submitting more.", new.model),
            })])
        } else if draw < validation + token_limit(new.protocol, config) + config.batch_expiry_rate {
            Fate::Expire
        } else {
            Fate::Run
        };
        let lines = new
            .requests
            .into_iter()
            .map(|(custom_id, body, metadata)| {
                *self.submissions.entry(custom_id.clone()).or_default() += 1;
                Line {
                    custom_id,
                    body,
                    metadata,
                    fault: line_fault(config, rng.next_f64()),
                }
            })
            .collect::<Vec<_>>();
        let mut order: Vec<usize> = (0..lines.len()).collect();
        if new.protocol != Protocol::Gemini {
            // Real batches return lines out of order; Gemini documents input order.
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i + 1));
            }
        }
        self.batches.push(Batch {
            id,
            protocol: new.protocol,
            key: new.key,
            model: new.model,
            metadata: new.metadata,
            input_file_id: new.input_file_id,
            lines,
            fate,
            created_at: now,
            started: Instant::now(),
            phase: config.batch_phase,
            cancelled: None,
            cancelled_at: None,
            outcomes: None,
            order,
            output_file_id: None,
            error_file_id: None,
            files_written: false,
        });
        self.batches.len() - 1
    }

    /// The index of batch `id` if `key` may see it.
    pub(crate) fn find(&self, id: &str, key: &str, pin: bool) -> Option<usize> {
        self.batches
            .iter()
            .position(|b| b.id == id && (!pin || b.key == key))
    }
}

/// The token-limit rate that applies to `protocol` (OpenAI only).
fn token_limit(protocol: Protocol, config: &MockConfig) -> f64 {
    if protocol == Protocol::OpenAi {
        config.batch_token_limit_rate
    } else {
        0.0
    }
}

fn line_fault(config: &MockConfig, draw: f64) -> LineFault {
    let retryable = config.batch_retryable_rate;
    let permanent = retryable + config.batch_permanent_rate;
    if draw < retryable {
        LineFault::Retryable
    } else if draw < permanent {
        LineFault::Permanent
    } else if draw < permanent + config.batch_missing_rate {
        LineFault::Missing
    } else {
        LineFault::None
    }
}

impl Batch {
    /// How long ago the batch was created.
    pub(crate) fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// Phases elapsed at `now`, fractional.
    fn phases_at(&self, at: Instant) -> f64 {
        let phase = self.phase.as_secs_f64();
        if phase <= 0.0 {
            return f64::INFINITY;
        }
        at.saturating_duration_since(self.started).as_secs_f64() / phase
    }

    /// Lines done by `at` while running (the second phase), in input order.
    fn done_at(&self, at: Instant) -> usize {
        let progress = (self.phases_at(at) - 1.0).clamp(0.0, 1.0);
        (progress * self.lines.len() as f64).floor() as usize
    }

    /// The stage at `now`.
    pub(crate) fn stage(&self, now: Instant) -> Stage {
        if let Some(cancelled) = self.cancelled {
            let effective = cancelled + self.phase;
            return if now >= effective {
                Stage::Ended(End::Cancelled)
            } else {
                Stage::Cancelling
            };
        }
        let phases = self.phases_at(now);
        match (&self.fate, phases) {
            (Fate::Fail(_), p) if p >= 1.0 => Stage::Ended(End::Failed),
            (_, p) if p < 1.0 => Stage::Queued,
            (Fate::Expire, p) if p >= 2.0 => Stage::Ended(End::Expired),
            (_, p) if p < 2.0 => Stage::Running(self.done_at(now)),
            (_, p) if p < 3.0 => Stage::Finalizing,
            _ => Stage::Ended(End::Completed),
        }
    }

    /// Asks to cancel; `false` when the batch has already ended.
    pub(crate) fn cancel(&mut self, now: Instant, unix: u64) -> bool {
        match self.stage(now) {
            Stage::Ended(_) => false,
            Stage::Cancelling => true,
            _ => {
                self.cancelled = Some(now);
                self.cancelled_at = Some(unix);
                true
            }
        }
    }

    /// How many lines run before the batch ended as `end`.
    fn finished(&self, end: End) -> usize {
        match end {
            End::Completed => self.lines.len(),
            End::Failed => 0,
            // Gemini's expired jobs "will not have any results".
            End::Expired if self.protocol == Protocol::Gemini => 0,
            End::Expired => self.lines.len() / 2,
            End::Cancelled => self.cancelled.map_or(0, |at| self.done_at(at)),
        }
    }

    /// Settles the results once the batch has ended, answering each finished line
    /// with `answer`; returns the stage and how many lines got a model answer.
    pub(crate) fn settle(
        &mut self,
        now: Instant,
        answer: &mut dyn FnMut(&Line, usize) -> Result<Value, String>,
    ) -> (Stage, u64) {
        let stage = self.stage(now);
        let Stage::Ended(end) = stage else {
            return (stage, 0);
        };
        if self.outcomes.is_some() {
            return (stage, 0);
        }
        let finished = self.finished(end);
        let mut answered = 0;
        let outcomes = self
            .lines
            .iter()
            .enumerate()
            .map(|(i, line)| match line.fault {
                _ if i >= finished => Outcome::Unfinished,
                LineFault::Retryable => Outcome::Retryable { server: i % 2 == 1 },
                LineFault::Permanent => Outcome::Permanent(
                    "The request is invalid (injected by afterimage-mock).".to_string(),
                ),
                LineFault::Missing => Outcome::Missing,
                LineFault::None => match answer(line, i) {
                    Ok(body) => {
                        answered += 1;
                        Outcome::Ok(body)
                    }
                    Err(message) => Outcome::Permanent(message),
                },
            })
            .collect();
        self.outcomes = Some(outcomes);
        (stage, answered)
    }

    /// Turns the answered lines after the first `paid` (in input order) into
    /// [`Outcome::NoCredit`]: the credit ran out mid-batch.
    pub(crate) fn refuse_beyond(&mut self, paid: u64) {
        let mut left = paid;
        for outcome in self.outcomes.iter_mut().flatten() {
            if let Outcome::Ok(_) = outcome {
                if left == 0 {
                    *outcome = Outcome::NoCredit;
                } else {
                    left -= 1;
                }
            }
        }
    }

    /// The settled outcomes in result order, with their lines.
    pub(crate) fn results(&self) -> Vec<(&Line, &Outcome)> {
        let Some(outcomes) = &self.outcomes else {
            return Vec::new();
        };
        self.order
            .iter()
            .filter_map(|&i| Some((self.lines.get(i)?, outcomes.get(i)?)))
            .collect()
    }

    /// Unix seconds of the start of phase `k` (0 is creation).
    pub(crate) fn phase_at(&self, k: u32) -> u64 {
        self.created_at + (self.phase * k).as_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(config: &MockConfig, n: usize) -> (Inner, usize) {
        let mut inner = Inner::default();
        let requests = (0..n)
            .map(|i| (format!("r{i}"), Value::Null, Value::Null))
            .collect();
        let new = NewBatch {
            protocol: Protocol::OpenAi,
            key: "k".to_string(),
            model: "m".to_string(),
            metadata: Value::Null,
            input_file_id: String::new(),
            requests,
            errors: Vec::new(),
        };
        let i = inner.create(new, config, 0);
        (inner, i)
    }

    #[test]
    fn stages_follow_the_phases_and_results_are_shuffled() {
        let config = MockConfig::default().with_batch_phase(Duration::from_secs(10));
        let (mut inner, i) = batch(&config, 20);
        let b = &mut inner.batches[i];
        let t0 = b.started;
        assert_eq!(b.stage(t0), Stage::Queued);
        assert_eq!(b.stage(t0 + Duration::from_secs(15)), Stage::Running(10));
        assert_eq!(b.stage(t0 + Duration::from_secs(25)), Stage::Finalizing);
        let end = t0 + Duration::from_secs(30);
        let (stage, answered) = b.settle(end, &mut |_, i| Ok(Value::from(i)));
        assert_eq!((stage, answered), (Stage::Ended(End::Completed), 20));
        let order: Vec<usize> = b.order.clone();
        assert_ne!(order, (0..20).collect::<Vec<_>>());
        assert_eq!(inner.submissions.len(), 20);
        assert_eq!(inner.find(&inner.batches[i].id, "other", true), None);
    }

    #[test]
    fn a_cancel_keeps_the_lines_done_before_it() {
        let config = MockConfig::default().with_batch_phase(Duration::from_secs(10));
        let (mut inner, i) = batch(&config, 10);
        let b = &mut inner.batches[i];
        let t0 = b.started;
        assert!(b.cancel(t0 + Duration::from_secs(13), 0));
        assert_eq!(b.stage(t0 + Duration::from_secs(14)), Stage::Cancelling);
        let (stage, answered) = b.settle(t0 + Duration::from_secs(23), &mut |_, _| Ok(Value::Null));
        assert_eq!((stage, answered), (Stage::Ended(End::Cancelled), 3));
        assert!(!b.cancel(t0 + Duration::from_secs(30), 0));
    }
}
