//! The tools seam: the tools a function-calling dialog offers, and who answers their
//! calls.
//!
//! Tool specs are read from OpenAI-style function specs, and a call's arguments are
//! checked against the tool's JSON Schema. The executors implement
//! [`ToolExecutor`](afterimage_core::ToolExecutor): a model playing the tool, or Rust
//! handlers the user registers.

mod handlers;
mod prompts;
mod simulator;
mod specs;

pub use self::handlers::ToolHandlers;
pub use self::simulator::LlmToolSimulator;
pub use self::specs::{parse_tool_specs, validate_arguments, validate_tool_call};
