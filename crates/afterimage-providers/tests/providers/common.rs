//! Helpers shared by the provider tests.

use std::net::TcpListener;
use std::time::Duration;

use afterimage_core::ProviderError;

/// A key that must never show up in any error or `Debug` output.
pub(crate) const KEY: &str = "sk-test-0123456789-very-secret";

/// Short enough to keep the timeout tests fast, long enough for a loaded CI box.
pub(crate) const SHORT_TIMEOUT: Duration = Duration::from_millis(300);

/// A base URL where nothing listens: a port the OS just handed out and took back.
pub(crate) fn dead_url(path: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}{path}")
}

/// Fails if the key appears in the error's `Display` or `Debug`.
#[track_caller]
pub(crate) fn assert_hides_key(error: &ProviderError) {
    let shown = format!("{error} {error:?} {error:#}");
    assert!(!shown.contains(KEY), "key leaked: {shown}");
    assert!(!shown.contains("very-secret"), "key leaked: {shown}");
}
