//! The datasets crate's integration tests, one binary: export formats against golden
//! files, and the analysis of the same input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod analysis;
mod golden;
