//! Stalls the batch protocols at one point so a crash test can kill its client there
//! ([`crate::MockServer::stall_batches`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::sync::watch;

use super::Route;

/// Where [`crate::MockServer::stall_batches`] makes batch requests hang.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStall {
    /// OpenAI's file upload and Gemini's resumable upload (the `upload, finalize`
    /// step) hang before the file is stored; once released they are refused (503),
    /// storing nothing.
    Upload,
    /// A batch create hangs before the batch exists; once released it is refused
    /// (503), creating nothing.
    CreateBefore,
    /// A batch create makes the batch, then its response hangs.
    CreateAfter,
    /// Every get of one batch hangs.
    Poll,
    /// Downloads of results hang: OpenAI file content, Anthropic `/results`, Gemini's
    /// responses file. (An inline Gemini batch brings its results with the get of the
    /// batch: stall [`BatchStall::Poll`] for it.)
    Results,
}

impl BatchStall {
    /// The stall point a request of `route` waits at before it is handled, if any.
    pub(crate) fn before(route: &Route, upload_command: &str) -> Option<BatchStall> {
        match route {
            Route::OpenAiUpload => Some(BatchStall::Upload),
            Route::GeminiUpload if !upload_command.to_ascii_lowercase().contains("start") => {
                Some(BatchStall::Upload)
            }
            Route::OpenAiCreate | Route::AnthropicCreate | Route::GeminiCreate(_) => {
                Some(BatchStall::CreateBefore)
            }
            Route::OpenAiGet(_) | Route::AnthropicGet(_) | Route::GeminiGet(_) => {
                Some(BatchStall::Poll)
            }
            Route::OpenAiFileContent(_) | Route::AnthropicResults(_) | Route::GeminiDownload(_) => {
                Some(BatchStall::Results)
            }
            _ => None,
        }
    }

    /// Whether a request held here would create something (a file, a batch): one
    /// released from such a stall is refused rather than handled.
    pub(crate) fn writes(self) -> bool {
        matches!(self, BatchStall::Upload | BatchStall::CreateBefore)
    }

    /// The stall point a request of `route` waits at once it has been handled.
    pub(crate) fn after(route: &Route) -> Option<BatchStall> {
        matches!(
            route,
            Route::OpenAiCreate | Route::AnthropicCreate | Route::GeminiCreate(_)
        )
        .then_some(BatchStall::CreateAfter)
    }
}

/// The stall point in force and the requests hanging at it.
#[derive(Debug)]
pub(crate) struct Stall {
    point: watch::Sender<Option<BatchStall>>,
    hanging: AtomicU64,
}

impl Default for Stall {
    fn default() -> Stall {
        Stall {
            point: watch::Sender::new(None),
            hanging: AtomicU64::new(0),
        }
    }
}

/// Counts one hanging request for as long as it lives (a killed client drops it).
struct Hanging<'a>(&'a AtomicU64);

impl Drop for Hanging<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Stall {
    /// Stalls `point` from now on (`None`: nothing), releasing requests hung elsewhere.
    pub(crate) fn set(&self, point: Option<BatchStall>) {
        self.point.send_replace(point);
    }

    /// Requests hanging now.
    pub(crate) fn hanging(&self) -> u64 {
        self.hanging.load(Relaxed)
    }

    /// Waits while `point` is the stall point in force; whether it waited at all.
    pub(crate) async fn wait(&self, point: Option<BatchStall>) -> bool {
        let Some(point) = point else { return false };
        let mut receiver = self.point.subscribe();
        if *receiver.borrow_and_update() != Some(point) {
            return false;
        }
        self.hanging.fetch_add(1, Relaxed);
        let _hanging = Hanging(&self.hanging);
        // An error only means the server is gone; the request ends either way.
        let _ = receiver.wait_for(|now| *now != Some(point)).await;
        true
    }
}
