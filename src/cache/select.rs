//! Subset selection (paper section 3.4, eq. 4).
//!
//! Each exit looks good on its own, but in the cache-enabled model an exit only sees the samples
//! that every earlier selected exit missed, and it charges its head's FLOPs to each of them.
//! So the exits are chosen together: every subset `S` is scored with
//! `K(S) = Σ_{Δ∈S} |H_Δ|·(C2_Δ − C1_Δ) − |M_Δ|·C1_Δ` from the *recorded* per-sample predictions
//! of each exit on the validation split — no re-run of the detector per subset. `K(S)` is
//! exactly the FLOPs the subset saves against the plain detector on that split (checked in the
//! tests against an independent simulation), so the best subset is the one with the largest K.
//!
//! Scores are `i128` so the identity holds exactly: FLOP counts are integers and a float sum
//! over thousands of samples of billions of FLOPs would round.

use super::{ExitOn, Prediction};
use serde::{Deserialize, Serialize};

/// Largest number of exits [`best_subset`] will enumerate (2^16 subsets). The design expects
/// 2-4 selected out of at most ~12 candidates; beyond this the exhaustive search stops being
/// cheap, and a caller with that many exits should prune candidates first.
pub const MAX_EXITS: usize = 16;

/// What was recorded for one exit on the validation split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The head's (calibrated) prediction per sample; the same sample order for all exits, so
    /// sample `i` can be followed through the network.
    pub preds: Vec<Prediction>,
    /// The exit's threshold (from [`super::calibration::choose_threshold`]).
    pub theta: f32,
    /// FLOPs of the cache head: paid by every sample that reaches this exit.
    pub c1: u64,
    /// FLOPs of the detector after this exit's layer: saved by every sample that hits here.
    pub c2: u64,
}

/// Score of one subset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KScore {
    /// `K(S)`: FLOPs saved on the recorded samples against running the detector alone. Can be
    /// negative (heads that cost more than they save).
    pub k: i128,
    /// `|H_Δ|` per exit of the subset, in subset order.
    pub hits: Vec<usize>,
    /// `|M_Δ|` per exit of the subset, in subset order.
    pub misses: Vec<usize>,
}

/// Checks that `subset` is strictly increasing (network order, no repeats) and in range, and
/// that all exits recorded the same samples. Returns the sample count.
fn check(exits: &[ExitRecord], subset: &[usize]) -> usize {
    assert!(
        subset.windows(2).all(|w| w[0] < w[1]),
        "subset must be strictly increasing exit indices (network order): {subset:?}"
    );
    if let Some(&last) = subset.last() {
        assert!(
            last < exits.len(),
            "subset index {last} out of range for {} exits",
            exits.len()
        );
    }
    let n = exits.first().map_or(0, |e| e.preds.len());
    assert!(
        exits.iter().all(|e| e.preds.len() == n),
        "all exits must record the same samples"
    );
    n
}

/// Scores `subset` (increasing exit indices) by eq. 4.
///
/// Each sample walks the subset's exits in network order: the first exit where it hits
/// ([`Prediction::hits`] at that exit's θ under `policy`) takes it (`H`), and every earlier exit
/// of the subset that it passed without hitting counts it as a miss (`M`) — the head ran, its
/// FLOPs were spent for nothing. A sample that misses everywhere is a miss at every exit. The
/// empty subset scores 0 (the plain detector).
///
/// # Panics
/// If `subset` is not strictly increasing, an index is out of range, or the exits recorded
/// different numbers of samples.
pub fn k_score(exits: &[ExitRecord], subset: &[usize], policy: ExitOn, positive: usize) -> KScore {
    let n = check(exits, subset);
    let mut hits = vec![0usize; subset.len()];
    let mut misses = vec![0usize; subset.len()];
    for s in 0..n {
        for (j, &e) in subset.iter().enumerate() {
            let exit = &exits[e];
            if exit.preds[s].hits(exit.theta, policy, positive) {
                hits[j] += 1;
                break;
            }
            misses[j] += 1;
        }
    }
    let k = subset
        .iter()
        .enumerate()
        .map(|(j, &e)| {
            let (c1, c2) = (exits[e].c1 as i128, exits[e].c2 as i128);
            hits[j] as i128 * (c2 - c1) - misses[j] as i128 * c1
        })
        .sum();
    KScore { k, hits, misses }
}

/// Scores every subset of `exits` (all `2^n`, the empty one included) and returns the one with
/// the largest `K`. Ties go to fewer exits (less to run and maintain for the same saving), then
/// to the lexicographically smaller index list (deterministic). Exhaustive because `n` is small
/// and K is cheap to evaluate from the recorded predictions; greedy choices go wrong exactly
/// where exits interact, which is what this step is for.
///
/// # Panics
/// If there are more than [`MAX_EXITS`] exits, or on the conditions of [`k_score`].
pub fn best_subset(exits: &[ExitRecord], policy: ExitOn, positive: usize) -> (Vec<usize>, KScore) {
    assert!(
        exits.len() <= MAX_EXITS,
        "best_subset: {} exits, at most {MAX_EXITS} supported",
        exits.len()
    );
    let mut best: (Vec<usize>, KScore) = (Vec::new(), k_score(exits, &[], policy, positive));
    for mask in 1u32..(1u32 << exits.len()) {
        let subset: Vec<usize> = (0..exits.len()).filter(|i| mask >> i & 1 == 1).collect();
        let score = k_score(exits, &subset, policy, positive);
        let better = score.k > best.1.k
            || (score.k == best.1.k
                && (subset.len() < best.0.len()
                    || (subset.len() == best.0.len() && subset < best.0)));
        if better {
            best = (subset, score);
        }
    }
    best
}

/// Outcome of [`simulate_flops`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimResult {
    /// FLOPs the cache-enabled model spends on all recorded samples.
    pub total_flops: u64,
    /// Per sample, the exit (an index into `exits`, not into the subset) that answered it, or
    /// `None` when the full detector did.
    pub per_sample_exit: Vec<Option<usize>>,
}

/// Replays Algorithm 1 on the recorded predictions and counts the FLOPs actually spent: the
/// whole batch enters the detector; at each selected exit every remaining sample pays the
/// head's `C1`, the hits leave having paid the detector's layers up to that exit
/// (`full_flops − C2`), and the batch shrinks; whatever is left at the end pays the full
/// detector. Deliberately written batch-wise (exit by exit), not sample-wise like [`k_score`],
/// so the two are independent ways to the same number: `full_flops·n − total_flops == K(S)`.
///
/// # Panics
/// If an exit of the subset has `c2 > full_flops` (the rest of the detector cannot cost more
/// than all of it), the total overflows `u64`, or on the conditions of [`k_score`].
pub fn simulate_flops(
    exits: &[ExitRecord],
    subset: &[usize],
    policy: ExitOn,
    positive: usize,
    full_flops: u64,
) -> SimResult {
    let n = check(exits, subset);
    let mut per_sample_exit = vec![None; n];
    let mut total: u64 = 0;
    let add = |total: &mut u64, v: u64| {
        *total = total
            .checked_add(v)
            .expect("simulate_flops: FLOP total overflows u64");
    };
    let mut batch: Vec<usize> = (0..n).collect();
    for &e in subset {
        let exit = &exits[e];
        assert!(
            exit.c2 <= full_flops,
            "exit {e}: c2 = {} exceeds full_flops = {full_flops}",
            exit.c2
        );
        let prefix = full_flops - exit.c2;
        let mut remaining = Vec::with_capacity(batch.len());
        for &s in &batch {
            add(&mut total, exit.c1);
            if exit.preds[s].confidence >= exit.theta
                && (policy == ExitOn::Any || exit.preds[s].class == positive)
            {
                add(&mut total, prefix);
                per_sample_exit[s] = Some(e);
            } else {
                remaining.push(s);
            }
        }
        batch = remaining;
    }
    for _ in &batch {
        add(&mut total, full_flops);
    }
    SimResult {
        total_flops: total,
        per_sample_exit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Lcg(u64);
    impl Lcg {
        fn next_u32(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next_u32() as u64 % n
        }
        fn unit(&mut self) -> f32 {
            self.next_u32() as f32 / (1u64 << 31) as f32
        }
    }

    fn pred(class: usize, confidence: f32) -> Prediction {
        Prediction { class, confidence }
    }

    fn exit(preds: Vec<Prediction>, theta: f32, c1: u64, c2: u64) -> ExitRecord {
        ExitRecord {
            preds,
            theta,
            c1,
            c2,
        }
    }

    fn all_subsets(n: usize) -> Vec<Vec<usize>> {
        (0u32..1 << n)
            .map(|m| (0..n).filter(|i| m >> i & 1 == 1).collect())
            .collect()
    }

    #[test]
    fn k_score_by_hand() {
        // 3 samples, 2 exits, full detector 100 FLOPs.
        // Exit 0 (c1 = 2, c2 = 80): hits sample 0 only.
        // Exit 1 (c1 = 3, c2 = 40): would hit samples 0 and 1.
        let exits = vec![
            exit(vec![pred(1, 0.9), pred(1, 0.5), pred(1, 0.1)], 0.8, 2, 80),
            exit(vec![pred(1, 0.9), pred(1, 0.9), pred(1, 0.1)], 0.8, 3, 40),
        ];
        // {0}: H = 1, M = 2 -> 1*78 - 2*2 = 74.
        let s0 = k_score(&exits, &[0], ExitOn::Any, 1);
        assert_eq!(
            (s0.k, s0.hits.clone(), s0.misses.clone()),
            (74, vec![1], vec![2])
        );
        // {1}: H = 2, M = 1 -> 2*37 - 3 = 71.
        assert_eq!(k_score(&exits, &[1], ExitOn::Any, 1).k, 71);
        // {0, 1}: exit 0 takes sample 0 (H=1) and misses 1, 2 (M=2); exit 1 sees 1, 2 and
        // hits 1 (H=1), misses 2 (M=1). 78 - 4 + 37 - 3 = 108. Sample 2 missed at both.
        let s01 = k_score(&exits, &[0, 1], ExitOn::Any, 1);
        assert_eq!(s01.k, 108);
        assert_eq!(s01.hits, vec![1, 1]);
        assert_eq!(s01.misses, vec![2, 1]);
        assert_eq!(k_score(&exits, &[], ExitOn::Any, 1).k, 0);
        let (best, score) = best_subset(&exits, ExitOn::Any, 1);
        assert_eq!((best, score.k), (vec![0, 1], 108));
        // Simulation: sample 0 = 2 + 20, sample 1 = 2 + 3 + 60, sample 2 = 2 + 3 + 100.
        let sim = simulate_flops(&exits, &[0, 1], ExitOn::Any, 1, 100);
        assert_eq!(sim.total_flops, 22 + 65 + 105);
        assert_eq!(sim.per_sample_exit, vec![Some(0), Some(1), None]);
        assert_eq!(300 - sim.total_flops as i128, s01.k);
    }

    #[test]
    fn pedestrian_policy_blocks_empty_exits() {
        // Confident "empty" answers (class 0) cannot exit under Pedestrian.
        let exits = vec![exit(vec![pred(0, 0.99), pred(1, 0.99)], 0.5, 1, 50)];
        let any = k_score(&exits, &[0], ExitOn::Any, 1);
        let ped = k_score(&exits, &[0], ExitOn::Pedestrian, 1);
        assert_eq!((any.hits[0], any.misses[0]), (2, 0));
        assert_eq!((ped.hits[0], ped.misses[0]), (1, 1));
        assert_eq!(ped.k, 49 - 1);
        let sim = simulate_flops(&exits, &[0], ExitOn::Pedestrian, 1, 100);
        assert_eq!(sim.per_sample_exit, vec![None, Some(0)]);
    }

    #[test]
    fn costly_heads_lose_to_the_empty_subset_and_ties_prefer_fewer_exits() {
        // A head that never hits only costs: the plain detector (empty subset) wins.
        let never = vec![exit(vec![pred(1, 0.1); 4], 0.9, 5, 50)];
        let (best, score) = best_subset(&never, ExitOn::Any, 1);
        assert!(best.is_empty());
        assert_eq!(score.k, 0);
        // A free head that never hits ties with leaving it out: fewer exits win.
        let exits = vec![
            exit(vec![pred(1, 0.9); 4], 0.5, 1, 10),
            exit(vec![pred(1, 0.1); 4], 0.5, 0, 5),
        ];
        let (best, score) = best_subset(&exits, ExitOn::Any, 1);
        assert_eq!((best, score.k), (vec![0], 36));
        // Two identical exits: same K alone, and together the second never sees a sample (its
        // c1 = 0, so K ties too): the single, lower index wins.
        let twin = exit(vec![pred(1, 0.9); 4], 0.5, 0, 10);
        let (best, _) = best_subset(&[twin.clone(), twin], ExitOn::Any, 1);
        assert_eq!(best, vec![0]);
    }

    #[test]
    #[should_panic(expected = "strictly increasing")]
    fn rejects_unordered_subset() {
        let exits = vec![
            exit(vec![pred(1, 0.9)], 0.5, 1, 10),
            exit(vec![pred(1, 0.9)], 0.5, 1, 10),
        ];
        k_score(&exits, &[1, 0], ExitOn::Any, 1);
    }

    /// Random recorded predictions: K(S) must equal the simulated saving for every subset, and
    /// best_subset must minimise the simulated FLOPs.
    #[test]
    fn k_equals_simulated_saving_and_best_subset_minimises_flops() {
        let mut rng = Lcg(0x5eed);
        for trial in 0..60 {
            let n_exits = 3 + rng.below(3) as usize;
            let samples = 200;
            let full_flops = 1_000_000 + rng.below(1_000_000_000);
            // Deeper exits leave less of the detector to skip; heads sometimes cost more than
            // they save, so the empty or partial subsets can win.
            let mut c2s: Vec<u64> = (0..n_exits).map(|_| rng.below(full_flops + 1)).collect();
            c2s.sort_unstable_by(|a, b| b.cmp(a));
            let policy = if trial % 2 == 0 {
                ExitOn::Any
            } else {
                ExitOn::Pedestrian
            };
            let exits: Vec<ExitRecord> = c2s
                .iter()
                .map(|&c2| {
                    let preds = (0..samples)
                        .map(|_| pred(rng.below(2) as usize, rng.unit()))
                        .collect();
                    let c1 = if rng.below(4) == 0 {
                        rng.below(full_flops / 2 + 1)
                    } else {
                        rng.below(full_flops / 1000 + 1)
                    };
                    exit(preds, rng.unit(), c1, c2)
                })
                .collect();

            let mut min_flops = u64::MAX;
            for subset in all_subsets(n_exits) {
                let k = k_score(&exits, &subset, policy, 1);
                let sim = simulate_flops(&exits, &subset, policy, 1, full_flops);
                let baseline = full_flops as i128 * samples as i128;
                assert_eq!(
                    baseline - sim.total_flops as i128,
                    k.k,
                    "trial {trial} subset {subset:?}"
                );
                // Hit counts agree too: per exit, how many samples the simulation sent out there.
                for (j, &e) in subset.iter().enumerate() {
                    let out = sim
                        .per_sample_exit
                        .iter()
                        .filter(|&&x| x == Some(e))
                        .count();
                    assert_eq!(out, k.hits[j], "trial {trial} subset {subset:?}");
                }
                min_flops = min_flops.min(sim.total_flops);
            }
            let (best, score) = best_subset(&exits, policy, 1);
            let sim = simulate_flops(&exits, &best, policy, 1, full_flops);
            assert_eq!(sim.total_flops, min_flops, "trial {trial}: best {best:?}");
            assert!(score.k >= 0);
        }
    }
}
