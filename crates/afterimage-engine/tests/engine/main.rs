//! The engine's integration tests, one binary (one link instead of five).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod follow_up;
mod generate;
mod quality;
mod shared;
mod stopping;
mod tools;
mod tools_http;
