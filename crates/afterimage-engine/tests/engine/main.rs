//! The engine's integration tests, one binary (one link instead of five).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod batch_mode;
mod follow_up;
mod generate;
mod hooks;
mod preference;
mod quality;
mod shared;
mod steering;
mod stopping;
mod structured;
mod tools;
mod tools_http;
