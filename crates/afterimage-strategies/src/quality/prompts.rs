//! The judge's default criteria, its prompt, and the correction it sends after an
//! unusable answer.
//!
//! The default criteria and prompt are public so that custom ones can start from them.

/// The criteria [`LlmJudge`](crate::LlmJudge) scores by default, in the order it
/// lists them to the model.
pub const DEFAULT_JUDGE_CRITERIA: [&str; 5] = [
    "coherence",
    "factuality",
    "grounding",
    "helpfulness",
    "relevance",
];

/// System prompt of [`LlmJudge`](crate::LlmJudge); `{criteria}` is replaced by one
/// line per criterion and `{shape}` by the JSON answer expected.
pub const DEFAULT_JUDGE_PROMPT: &str = r#"You review conversations that will be used to train AI assistants. The next message shows the background material of one conversation (if it had any) and the conversation itself: a user talking to an AI assistant, one numbered message at a time. Grade the conversation on each criterion below.

Criteria:
{criteria}

Scoring:
- Give every criterion a score from 0 to 1. 1 means there is nothing worth fixing; around 0.5 means clear problems a careful editor would fix; 0 means the conversation fails the criterion entirely. Use the whole range, with decimals such as 0.65; a score is not a reward for effort.
- Score each criterion separately: a flaw lowers every criterion it breaks, and only those.
- Base every score on what the conversation and the material actually say, not on how confident the assistant sounds.
- Feedback: one or two sentences per criterion naming the concrete problem and where it is (for example "message 4 gives the wrong opening hours"), or saying briefly why nothing is wrong.

Reply with JSON only, one entry per criterion, in exactly this shape:
{shape}"#;

/// What each default criterion means, as the judge's system prompt explains it.
pub(crate) const JUDGE_CRITERION_DESCRIPTIONS: [(&str, &str); 5] = [
    (
        "coherence",
        "the conversation hangs together. Every assistant message answers the message just before it, later turns build on what was already said, and the assistant neither contradicts itself nor loses track of the user's situation.",
    ),
    (
        "factuality",
        "nothing the assistant states is false. Facts, figures, names, steps and reasoning are correct, whether they come from the material or from general knowledge; invented details count as false.",
    ),
    (
        "grounding",
        "the assistant's answers are backed by the material it was given: what it asserts can be found in or follows from that material, nothing contradicts it, and anything beyond it is general knowledge or marked as such. When the assistant was given no material, judge instead how carefully it handles what it cannot check: specific claims (prices, versions, dates, policies, figures) are hedged or left out rather than stated with invented certainty. Having no material to check against never earns a free 1.",
    ),
    (
        "helpfulness",
        "the assistant really helps the user get what they came for: specific, complete and usable answers of a sensible length, with a question back when details are missing, rather than vague, evasive, padded or boilerplate replies.",
    ),
    (
        "relevance",
        "the conversation stays on its subject. The user's questions are about the material (or, without material, about the subject of the first message), and the assistant's answers address those questions without drifting into unrelated content.",
    ),
];

/// Sent after a judge answer that lacked a criterion or a numeric score; `{problem}`
/// says what was wrong, `{names}` lists the criteria and `{shape}` is the JSON shape.
pub(crate) const JUDGE_CORRECTION: &str = r#"That answer could not be used: {problem}. Reply again with JSON only, with an entry for each of {names}, each score a number from 0 to 1, in exactly this shape:
{shape}"#;
