//! The provider clients and middleware against wiremock servers, in one test binary:
//! each provider's own wire format in its module, the behaviour all chat clients
//! share (error mapping, auth, retry-after, timeouts, probes) in `shared`, run once
//! per provider.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod anthropic;
mod caching;
mod common;
mod embeddings;
mod gemini;
mod metrics;
mod openai;
mod real_servers;
mod resilience;
mod shared;
mod stack;
