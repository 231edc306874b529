//! End-to-end tests across the crates, one binary: the library's flows over real HTTP
//! against the mock server (and wiremock where a test reads the requests).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod rag;
mod support_bot;
mod tools;
