//! API keys that never print.

/// An API key. Its `Debug` and `Display` never show the key; only
/// [`ApiKey::expose`] does, for the one place that puts it on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself, for an HTTP header. Never log what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A short name for the key that does not reveal it (`k` and 8 hex digits of a
    /// 64-bit FNV-1a hash): enough to tell a pool's keys apart in a journal or a log.
    ///
    /// ```
    /// use afterimage_core::ApiKey;
    ///
    /// let fp = ApiKey::new("sk-secret-one").fingerprint();
    /// assert_eq!(fp.len(), 9);
    /// assert_ne!(fp, ApiKey::new("sk-secret-two").fingerprint());
    /// assert!(!fp.contains("secret"));
    /// ```
    pub fn fingerprint(&self) -> String {
        format!("k{:08x}", crate::fnv1a(self.0.as_bytes()) >> 32)
    }

    /// Replaces every occurrence of the key in `text` (a server may echo it back in an
    /// error body) so the text is safe to log or store.
    pub fn redact(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_owned();
        }
        text.replace(&self.0, "[redacted]")
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> Self {
        ApiKey(key)
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> Self {
        ApiKey(key.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_key() {
        let key = ApiKey::new("sk-very-secret");
        assert!(!format!("{key:?}").contains("secret"));
        assert!(!format!("{key}").contains("secret"));
        assert_eq!(key.redact("bad key sk-very-secret!"), "bad key [redacted]!");
    }
}
