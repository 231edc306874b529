//! What the run does with dialogs the judge could not grade, and the sampling settings
//! of each role.

/// What happens to an attempt whose judge answer could not be read (in a config:
/// `keep`, `drop` or `stop`).
///
/// An unjudged attempt never passes: it is regenerated like a low score. The policies
/// differ in whether it may still be kept when no attempt passes, and in whether a
/// judge that never answers readably stops the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnjudgedPolicy {
    /// Keep an unjudged attempt when no attempt passes (and the policy keeps the
    /// best); never stop the run over unreadable answers.
    Keep,
    /// Never store an unjudged attempt: the dialog is regenerated, or fails, like one
    /// scored too low.
    Drop,
    /// As [`Keep`](Self::Keep) for the occasional unreadable answer, but stop the run
    /// when the judge never works: the first 10 answers all unreadable, or 15 of the
    /// first 20. Rows written before are kept.
    #[default]
    Stop,
}

/// Sampling settings of one role's requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sampling {
    pub(crate) temperature: f32,
    /// Most tokens per reply (`None`: the endpoint's default).
    pub(crate) max_tokens: Option<u32>,
}

impl Sampling {
    /// `request` with these settings.
    pub(crate) fn apply(
        self,
        request: afterimage_core::ChatRequest,
    ) -> afterimage_core::ChatRequest {
        let mut request = request.temperature(self.temperature);
        request.max_tokens = self.max_tokens;
        request
    }
}
