//! The one error of config resolution: the key at fault and what to do about it.

/// Why a config cannot run: the key path at fault (`model.api_key_env`,
/// `generation.stopping[2].n`, `output.path`) and a message naming the cause and the
/// fix. Shown as one line, `<key>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SettingsError {
    key: String,
    message: String,
}

impl SettingsError {
    /// An error at `key` (a dotted path into the config file).
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        SettingsError {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The key path at fault, e.g. `generation.stopping[2].n`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The cause and the fix, without the key.
    pub fn message(&self) -> &str {
        &self.message
    }
}
