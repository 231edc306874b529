//! How many batch rounds a run takes: the longest chain of requests one dialog makes,
//! each waiting for the answer to the one before.

/// The rounds a dialog needs in batch mode, where each of its requests waits for the
/// round before: see [`predicted_rounds()`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundEstimate {
    /// Rounds a dialog of the most turns takes when nothing is regenerated (and every
    /// answer is readable the first time).
    pub floor: u32,
    /// Rounds it takes at worst when every regeneration allowed is used.
    pub with_regenerations: u32,
}

/// The rounds a run of dialogs of up to `max_turns` assistant replies takes in batch
/// mode, counting the requests one dialog makes one after another, as the engine makes
/// them:
///
/// - 1 to draw its first question: the instruction pool asks its generator when it
///   holds no question ready, which every dialog of the first wave finds (later dialogs
///   may take a question another call left, one round fewer);
/// - per turn, 1 respondent reply, and 1 correspondent follow-up before every reply
///   but the first (the first user message is the drawn question): `2 × max_turns − 1`;
/// - 1 judge call when `judged`;
/// - each of `max_regenerations` repeats the turns and the judge (the question and the
///   prompt are kept): `2 × max_turns − 1`, plus 1 when judged.
///
/// So `floor = 2 × max_turns + judged`. Not counted, as they are exceptions: a second
/// request when a judge or generator answer cannot be read, tool rounds, and dialogs
/// that fail and are replaced (spares, see
/// [`GenerateOptions::oversample`](crate::GenerateOptions::oversample), replace them
/// without a new set of rounds).
///
/// ```
/// use afterimage_engine::{RoundEstimate, predicted_rounds};
///
/// assert_eq!(
///     predicted_rounds(3, true, 2),
///     RoundEstimate { floor: 7, with_regenerations: 7 + 2 * 6 }
/// );
/// assert_eq!(predicted_rounds(1, false, 0), RoundEstimate { floor: 2, with_regenerations: 2 });
/// ```
pub fn predicted_rounds(max_turns: u32, judged: bool, max_regenerations: u32) -> RoundEstimate {
    let turns = max_turns.max(1);
    let judge = u32::from(judged);
    let conversation = turns.saturating_mul(2) - 1;
    let floor = conversation.saturating_add(1 + judge);
    let regeneration = conversation.saturating_add(judge);
    RoundEstimate {
        floor,
        with_regenerations: floor.saturating_add(max_regenerations.saturating_mul(regeneration)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_turn_adds_two_rounds_and_a_regeneration_repeats_all_but_the_question() {
        assert_eq!(predicted_rounds(1, true, 0).floor, 3);
        assert_eq!(predicted_rounds(4, false, 0).floor, 8);
        assert_eq!(predicted_rounds(2, true, 1).with_regenerations, 5 + 4);
        // No turns is not a dialog; it is counted as one turn rather than underflow.
        assert_eq!(predicted_rounds(0, false, 0), predicted_rounds(1, false, 0));
        assert_eq!(
            predicted_rounds(u32::MAX, true, u32::MAX).with_regenerations,
            u32::MAX
        );
    }
}
