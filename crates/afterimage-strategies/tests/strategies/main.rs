//! The strategies crate's integration tests, one module per seam, in one test binary
//! so the crate and its dependencies are linked once rather than once per file.

mod chunking;
mod documents;
mod generators;
mod judge;
mod modifiers_correspondent;
mod personas;
mod retrieval;
mod sampling;
mod tools;
