//! Thresholds from the tolerance (paper section 3.3, eq. 3; DESIGN "Thresholds").
//!
//! Each head's threshold is the lowest confidence that keeps the paper's accuracy-drop upper
//! bound `HR(θ)·(1−CA(θ))` within that head's share of the tolerance, `X/2^n` for the n-th exit
//! in network order. Runs on recorded predictions, so it can be re-run cheaply whenever the
//! validation split changes.

use crate::cache::{ExitOn, Prediction};
use serde::{Deserialize, Serialize};

/// Exit `n`'s share of the accuracy-drop tolerance: `tolerance / 2^n`, `n` 1-based in network
/// order (paper section 3.3). Shallow exits get the larger shares because they see every sample
/// and save the most per hit; the shares sum to less than `tolerance` for any number of exits,
/// so the eq. 3 bounds of all exits together stay within it.
///
/// # Panics
/// If `n == 0` (the index is 1-based; 0 would hand one exit the whole tolerance).
pub fn budget(tolerance: f64, n: usize) -> f64 {
    assert!(n >= 1, "budget: exit index is 1-based, got 0");
    // powi takes i32; beyond 2^-1074 the budget is 0 anyway.
    tolerance * 0.5f64.powi(n.min(2000) as i32)
}

/// A threshold and what it does on the validation set it was chosen on.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdChoice {
    /// The threshold; `f32::INFINITY` means "never hit" (no θ with hits met the budget).
    pub theta: f32,
    /// Hits / samples.
    pub hit_rate: f64,
    /// Correct hits / hits, where correct means the teacher's class equals the cached class.
    /// 1.0 when there are no hits (no cached answer was wrong).
    pub cache_accuracy: f64,
    /// The eq. 3 upper bound on the accuracy drop, `HR·(1−CA)` = errors / samples.
    pub bound: f64,
    pub hits: usize,
    pub errors: usize,
    pub samples: usize,
}

/// The largest whole number of errors that fits `budget` on `samples` samples.
///
/// `HR·(1−CA) = errors/samples`, so the test `errors/samples ≤ budget` is the integer test
/// `errors ≤ ⌊budget·samples⌋`. The `1e-9` guard keeps representation error from costing a
/// whole error (e.g. `0.3 · 10 = 2.9999999999999996` in `f64`).
fn allowed_errors(budget: f64, samples: usize) -> f64 {
    (budget * samples as f64 + 1e-9).floor()
}

/// Chooses the LOWEST threshold θ with `HR(θ)·(1−CA(θ)) ≤ budget` on this (validation) set
/// (paper eq. 3). Lower θ means more hits, so the lowest admissible θ is the fastest one the
/// budget allows.
///
/// Candidates are the distinct confidences of the predictions that can hit under `policy` (all
/// of them under [`ExitOn::Any`], only class `positive` under [`ExitOn::Pedestrian`]), plus
/// `f32::INFINITY` for "never hit", which always qualifies. Any θ between two such confidences
/// hits the same validation samples as the upper one, so the candidates cover every distinct
/// outcome, and each candidate is the tightest threshold supported by the data: the confidence
/// of the least confident cached answer. (Confidences of predictions that can never hit would
/// only add thresholds that the validation set says nothing about.)
///
/// Cache accuracy is not monotone in θ, but the bound is: `HR·(1−CA) = errors/samples` with a
/// fixed denominator, and lowering θ can only add errors. The scan still visits every candidate
/// and keeps the lowest admissible one, so it stays correct without leaning on that argument.
/// Small sets make `budget < 1/samples`: the rule then becomes "no error on val".
/// A negative budget behaves like 0 with no candidate but "never hit" able to meet it. NaN
/// confidences never hit and are ignored.
///
/// # Panics
/// If `preds` and `teacher` differ in length.
pub fn choose_threshold(
    preds: &[Prediction],
    teacher: &[usize],
    budget: f64,
    policy: ExitOn,
    positive: usize,
) -> ThresholdChoice {
    assert_eq!(
        preds.len(),
        teacher.len(),
        "choose_threshold: {} predictions but {} teacher labels",
        preds.len(),
        teacher.len()
    );
    let samples = preds.len();
    let allowed = allowed_errors(budget, samples);
    let choice = |theta: f32, hits: usize, errors: usize| ThresholdChoice {
        theta,
        hit_rate: ratio(hits, samples, 0.0),
        cache_accuracy: 1.0 - ratio(errors, hits, 0.0),
        bound: ratio(errors, samples, 0.0),
        hits,
        errors,
        samples,
    };

    // Eligible predictions, most confident first: lowering θ through this order adds hits.
    let mut eligible: Vec<(f32, bool)> = preds
        .iter()
        .zip(teacher)
        .filter(|(p, _)| !p.confidence.is_nan() && (policy == ExitOn::Any || p.class == positive))
        .map(|(p, &t)| (p.confidence, p.class != t))
        .collect();
    eligible.sort_by(|x, y| y.0.total_cmp(&x.0));

    let mut best = choice(f32::INFINITY, 0, 0);
    if allowed < 0.0 {
        return best;
    }
    let (mut hits, mut errors) = (0usize, 0usize);
    let mut i = 0;
    while i < eligible.len() {
        // θ = this confidence hits every sample with confidence >= it: take the whole tie group.
        let theta = eligible[i].0;
        while i < eligible.len() && eligible[i].0 == theta {
            hits += 1;
            errors += eligible[i].1 as usize;
            i += 1;
        }
        if errors as f64 <= allowed {
            best = choice(theta, hits, errors);
        }
    }
    best
}

/// `num/den`, or `empty` when `den == 0`.
fn ratio(num: usize, den: usize, empty: f64) -> f64 {
    if den == 0 {
        empty
    } else {
        num as f64 / den as f64
    }
}

/// One point of a hit-rate / accuracy curve (the paper's Fig. 2).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub theta: f32,
    /// Hits / samples.
    pub hit_rate: f64,
    /// Among hits, agreement with the teacher's class (1.0 with no hits).
    pub cache_accuracy: f64,
    /// Among hits, agreement of the cached presence answer (`class == positive`) with the
    /// ground-truth presence; `None` without ground truth, 1.0 with no hits.
    pub gt_accuracy: Option<f64>,
}

/// Hit rate, cache accuracy and (optionally) ground-truth accuracy of the cached answers for θ
/// from 0 to 1 in `points` evenly spaced values (both ends included; `points == 1` gives θ = 0
/// only). For plots and reports: it shows how much speed each extra point of accuracy costs.
///
/// # Panics
/// If `teacher` (or `gt`) differs in length from `preds`.
pub fn curve(
    preds: &[Prediction],
    teacher: &[usize],
    gt: Option<&[bool]>,
    policy: ExitOn,
    positive: usize,
    points: usize,
) -> Vec<CurvePoint> {
    assert_eq!(preds.len(), teacher.len(), "curve: teacher length mismatch");
    if let Some(gt) = gt {
        assert_eq!(preds.len(), gt.len(), "curve: ground-truth length mismatch");
    }
    (0..points)
        .map(|i| {
            let theta = if points <= 1 {
                0.0
            } else {
                (i as f64 / (points - 1) as f64) as f32
            };
            let (mut hits, mut teacher_ok, mut gt_ok) = (0usize, 0usize, 0usize);
            for (k, p) in preds.iter().enumerate() {
                if p.hits(theta, policy, positive) {
                    hits += 1;
                    teacher_ok += (p.class == teacher[k]) as usize;
                    if let Some(gt) = gt {
                        gt_ok += ((p.class == positive) == gt[k]) as usize;
                    }
                }
            }
            CurvePoint {
                theta,
                hit_rate: ratio(hits, preds.len(), 0.0),
                cache_accuracy: ratio(teacher_ok, hits, 1.0),
                gt_accuracy: gt.map(|_| ratio(gt_ok, hits, 1.0)),
            }
        })
        .collect()
}
