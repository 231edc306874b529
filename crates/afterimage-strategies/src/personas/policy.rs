//! How deep persona layers go for a target, and which persona a dialog gets.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::parse::PERSONAS_PER_CALL;

/// Personas a document has with every layer down to `depth` complete: 5, 30, 155,
/// 780, ... (each persona of a layer yields five in the next).
pub fn expected_persona_count(depth: u32) -> u64 {
    let per_call = PERSONAS_PER_CALL as u64;
    let mut layer = per_call;
    let mut total = 0u64;
    for _ in 0..=depth {
        total = total.saturating_add(layer);
        layer = layer.saturating_mul(per_call);
    }
    total
}

/// The depth whose complete persona count is closest to `target` dialogs per
/// document, ties going to the shallower one, capped at `max_depth` (targets 1-17
/// give 0, 18-92 give 1, 93-467 give 2, as in Python afterimage).
pub fn persona_depth_for(target: u64, max_depth: u32) -> u32 {
    let mut best = 0;
    let mut best_distance = expected_persona_count(0).abs_diff(target);
    for depth in 1..=max_depth {
        let count = expected_persona_count(depth);
        let distance = count.abs_diff(target);
        if distance < best_distance {
            best = depth;
            best_distance = distance;
        }
        if count >= target {
            break;
        }
    }
    best
}

/// Which of a document's personas (flattened, shallowest first, `depths[i]` being the
/// depth of the i-th) the `n`-th pick for that document gets.
///
/// - No target: round-robin over all.
/// - Target `t` at most the supply: the deeper personas are pruned and the first `t`
///   are cycled.
/// - Target above the supply: one round over all (nothing paid for goes unused),
///   then weighted random reuse, a persona at depth `d` weighing
///   `(max_depth - d + 1) / count_at_depth(d)`, so each layer's share shrinks with
///   depth.
///
/// `None` when there are no personas.
pub(crate) fn pick_index(depths: &[u32], target: Option<u64>, n: u64, seed: u64) -> Option<usize> {
    let total = depths.len() as u64;
    if total == 0 {
        return None;
    }
    let index = match target {
        None => n % total,
        Some(t) if t <= total => n % t.max(1),
        Some(_) if n < total => n,
        Some(_) => {
            return Some(weighted(
                depths,
                seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ));
        }
    };
    usize::try_from(index).ok()
}

/// A weighted draw by layer: `(max_depth - depth + 1) / count_at_depth`.
fn weighted(depths: &[u32], seed: u64) -> usize {
    let deepest = depths.iter().copied().max().unwrap_or(0);
    let mut counts = vec![0u32; deepest as usize + 1];
    for depth in depths {
        counts[*depth as usize] += 1;
    }
    let weight = |depth: u32| f64::from(deepest - depth + 1) / f64::from(counts[depth as usize]);
    let total: f64 = depths.iter().map(|d| weight(*d)).sum();
    let mut target = StdRng::seed_from_u64(seed).random::<f64>() * total;
    for (index, depth) in depths.iter().enumerate() {
        let w = weight(*depth);
        if target < w {
            return index;
        }
        target -= w;
    }
    // Rounding can leave `target` just past the last weight.
    depths.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_auto_depths_match_python() {
        let counts: Vec<u64> = (0..4).map(expected_persona_count).collect();
        assert_eq!(counts, [5, 30, 155, 780]);
        for target in 1..=17 {
            assert_eq!(persona_depth_for(target, 3), 0, "target {target}");
        }
        for target in 18..=92 {
            assert_eq!(persona_depth_for(target, 3), 1, "target {target}");
        }
        assert_eq!(persona_depth_for(93, 3), 2);
        assert_eq!(persona_depth_for(100, 3), 2);
        assert_eq!(persona_depth_for(200, 3), 2);
        assert_eq!(persona_depth_for(467, 3), 2);
        assert_eq!(persona_depth_for(468, 3), 3);
        assert_eq!(persona_depth_for(1_000_000, 3), 3);
        // The cap wins.
        assert_eq!(persona_depth_for(200, 1), 1);
        assert_eq!(persona_depth_for(200, 0), 0);
        assert_eq!(persona_depth_for(0, 3), 0);
    }

    #[test]
    fn pruning_cycles_the_shallowest() {
        let depths = [0, 0, 0, 0, 0, 1, 1, 1];
        let picks: Vec<_> = (0..7)
            .map(|n| pick_index(&depths, Some(3), n, n).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
        let picks: Vec<_> = (0..10)
            .map(|n| pick_index(&depths, None, n, n).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]);
        assert_eq!(pick_index(&[], Some(3), 0, 0), None);
    }

    #[test]
    fn reuse_is_weighted_by_depth() {
        // 5 at depth 0 and 25 at depth 1: weights 2/5 and 1/25, layer shares 2/3, 1/3.
        let depths: Vec<u32> = [vec![0; 5], vec![1; 25]].concat();
        // The first round uses every persona once.
        let first: Vec<_> = (0..30)
            .map(|n| pick_index(&depths, Some(100), n, 7).unwrap())
            .collect();
        assert_eq!(first, (0..30).collect::<Vec<_>>());
        let mut per_index = [0u32; 30];
        for n in 30..30_030u64 {
            per_index[pick_index(&depths, Some(100), n, 11).unwrap()] += 1;
        }
        let shallow: u32 = per_index[..5].iter().sum();
        let share = f64::from(shallow) / 30_000.0;
        assert!((share - 2.0 / 3.0).abs() < 0.02, "depth-0 share {share}");
        // Within a layer the draw is even: each depth-0 persona near 4000.
        for hits in &per_index[..5] {
            assert!((3600..4400).contains(hits), "{per_index:?}");
        }
        // The same seed and history give the same pick; the history moves it on.
        assert_eq!(
            pick_index(&depths, Some(100), 31, 42),
            pick_index(&depths, Some(100), 31, 42)
        );
        assert!((31..60).any(
            |n| pick_index(&depths, Some(100), n, 42) != pick_index(&depths, Some(100), 30, 42)
        ));
    }
}
