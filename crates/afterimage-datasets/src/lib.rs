//! Datasets out of afterimage runs: export for fine-tuning tools, and an analysis
//! report people can look at.
//!
//! - [`read_dataset`] reads the stored rows, run record and documents back from any
//!   storage backend ([`StorageSpec`](afterimage_storage::StorageSpec): a JSONL file,
//!   `sqlite:FILE` or `postgres://...`); the other functions take rows.
//! - [`export`] filters ([`RowFilter`]), shuffles, splits and writes rows in each
//!   [`ExportFormat`] (`openai`, `sharegpt`, `alpaca`, `llama_factory`, `raw`); a row a
//!   format cannot express is skipped and counted ([`SkipReason`]), never written half.
//! - [`analyze`] computes the figures ([`Analysis`], serialisable as JSON) and
//!   [`render_html`] turns them into one self-contained HTML page with inline SVG.
//!   Its diversity figures are the literature's (distinct-n, Self-BLEU, compression
//!   ratio, near-duplicate pairs, looping rows), on bounded samples ([`Sampled`]);
//!   [`embedding_similarity`] adds the mean cosine of first questions with an embedder.
//! - [`compare`] puts two analyses side by side, each change marked better or worse
//!   ([`render_comparison_html`]).
//!
//! ```
//! use afterimage_core::{ConversationRow, Message};
//! use afterimage_datasets::{ExportFormat, FormatOptions, convert, AnalyzeOptions, analyze, render_html};
//!
//! let row: ConversationRow = serde_json::from_str(
//!     r#"{"conversations":[{"role":"user","content":"Hi?"},{"role":"assistant","content":"Hello."}]}"#,
//! ).unwrap();
//! let records = convert(ExportFormat::Alpaca, &row, &FormatOptions::default()).unwrap();
//! assert_eq!(records[0], r#"{"instruction":"Hi?","input":"","output":"Hello."}"#);
//!
//! let analysis = analyze(&[row], &AnalyzeOptions::default());
//! assert_eq!(analysis.summary.rows, 1);
//! assert!(render_html(&analysis, "demo").contains("id=\"diversity\""));
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub use crate::{
    compare::{Change, Compared, Comparison, Verdict, compare, render_comparison_html},
    diversity::{
        DIVERSITY_SAMPLE, EMBEDDING_SAMPLE, EmbeddingSimilarity, Loops, NEAR_DUPLICATE_THRESHOLD,
        SAMPLE_SEED, Sampled, ScopeDiversity, embedding_similarity,
    },
    error::DatasetError,
    export::{
        ExportOptions, ExportReport, FormatReport, RowFilter, WrittenFile, export, has_tool_calls,
        turns,
    },
    format::{ExportFormat, FormatOptions, SkipReason, convert},
    pairs::DEFAULT_MIN_SCORE_GAP,
    read::read_dataset,
    report::{SECTIONS, escape, render_html},
    stats::{
        Analysis, AnalyzeOptions, Bucket, Coverage, CriterionStats, Diversity, Judge, LengthStats,
        Lengths, LowDialog, Personas, Summary, TextDiversity, analyze,
    },
};

mod compare;
mod diversity;
mod error;
mod export;
mod format;
mod pairs;
mod read;
mod report;
mod stats;
