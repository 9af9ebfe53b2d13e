//! Temperature scaling (paper section 3.3, DESIGN "Calibration").
//!
//! A cache head's confidence decides whether its answer is final, so the confidence must mean
//! what it says: an over-confident head exits on wrong answers, an under-confident one rarely
//! exits. We therefore fit one temperature per head on the validation split (temperature scaling,
//! Guo et al. 2017) before any threshold is chosen.
//!
//! Plain `f32`/`f64` math on slices: it runs on recorded logits, never on the model.

use crate::cache::Prediction;
use serde::{Deserialize, Serialize};

/// Default search interval for the temperature. Wide enough for heads that are several times
/// over- or under-confident; a fit that ends on either end is flagged as clamped
/// ([`TemperatureFit::clamped`]) because it usually means a degenerate validation set (one class,
/// or all answers right/wrong) rather than a real calibration.
pub const T_BOUNDS: (f32, f32) = (0.05, 20.0);

/// Width of the final golden-section bracket in `ln T`. 1e-7 in log space is a relative error of
/// 1e-7 in T, below `f32` resolution of the returned temperature.
const LOG_T_TOL: f64 = 1e-7;

/// Numerically stable softmax of `logits / t`.
///
/// Subtracting the maximum before exponentiating keeps `exp` in `(0, 1]`, so logits in the
/// thousands (or a small `t`) neither overflow to `inf` nor produce `NaN`. Computed in `f64` and
/// rounded once, so the probabilities sum to 1 within `f32` rounding.
///
/// An empty slice gives an empty vector.
///
/// # Panics
/// If `t` is not finite and strictly positive: a temperature of zero or below has no meaning,
/// and silently returning garbage would corrupt every threshold derived from it.
pub fn softmax_t(logits: &[f32], t: f32) -> Vec<f32> {
    assert!(
        t.is_finite() && t > 0.0,
        "temperature must be finite and > 0, got {t}"
    );
    softmax_f64(logits, t as f64)
        .into_iter()
        .map(|p| p as f32)
        .collect()
}

/// `f64` softmax of `logits / t`, shared by [`softmax_t`] and [`predict`].
fn softmax_f64(logits: &[f32], t: f64) -> Vec<f64> {
    if logits.is_empty() {
        return Vec::new();
    }
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &z| m.max(z as f64));
    let exps: Vec<f64> = logits
        .iter()
        .map(|&z| ((z as f64 - max) / t).exp())
        .collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The head's answer at temperature `t`: the arg-max class (lowest index on ties, so the answer
/// is deterministic) and its softmax probability, which is the confidence the thresholds compare.
///
/// Temperature never changes the arg-max, only the confidence; that is why calibration can be
/// fitted after training without touching cache accuracy.
///
/// # Panics
/// If `logits` is empty (a head always has at least one class) or `t` is invalid as in
/// [`softmax_t`].
pub fn predict(logits: &[f32], t: f32) -> Prediction {
    assert!(!logits.is_empty(), "predict: empty logits");
    let probs = softmax_t(logits, t);
    let mut class = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > probs[class] {
            class = i;
        }
    }
    Prediction {
        class,
        confidence: probs[class],
    }
}

/// Mean negative log-likelihood of `labels` under `softmax(logits / t)`, in `f64`.
///
/// This is the objective temperature scaling minimises; the labels are the teacher's arg-max
/// (the cache imitates the detector, so the detector's answer is the "truth" here). Each term is
/// computed as `logsumexp(z/t) − z_y/t`, which stays finite even when the label's probability
/// underflows `f64`. An empty set has NLL 0 (there is nothing to be wrong about).
///
/// # Panics
/// If `logits` and `labels` differ in length, a label is out of range, or `t` is invalid.
pub fn nll(logits: &[Vec<f32>], labels: &[usize], t: f32) -> f64 {
    assert!(
        t.is_finite() && t > 0.0,
        "temperature must be finite and > 0, got {t}"
    );
    nll_f64(logits, labels, t as f64)
}

pub(super) fn nll_f64(logits: &[Vec<f32>], labels: &[usize], t: f64) -> f64 {
    assert_eq!(
        logits.len(),
        labels.len(),
        "nll: {} logit rows but {} labels",
        logits.len(),
        labels.len()
    );
    if logits.is_empty() {
        return 0.0;
    }
    let total: f64 = logits
        .iter()
        .zip(labels)
        .map(|(row, &y)| {
            assert!(
                y < row.len(),
                "nll: label {y} out of range for {} classes",
                row.len()
            );
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &z| m.max(z as f64));
            let lse: f64 = row
                .iter()
                .map(|&z| ((z as f64 - max) / t).exp())
                .sum::<f64>()
                .ln();
            lse - (row[y] as f64 - max) / t
        })
        .sum();
    total / logits.len() as f64
}

/// Result of [`fit_temperature`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TemperatureFit {
    /// The fitted temperature (divide logits by it before the softmax).
    pub t: f32,
    /// Validation NLL at `t = 1`, i.e. of the head as trained: reported so a run shows what
    /// calibration bought.
    pub nll_before: f64,
    /// Validation NLL at the fitted `t`.
    pub nll_after: f64,
    /// The optimum lies on (or within the search tolerance of) a bound. Typical for a one-class
    /// or all-correct validation set, where the NLL keeps falling as `T → 0`: the temperature is
    /// then an artefact of the bounds, and the caller should say so rather than trust it.
    pub clamped: bool,
}

/// Fits the temperature that minimises the validation NLL ([`nll`]) of the hard `labels`
/// (teacher arg-max), searching `ln T` in `[ln lo, ln hi]` by golden-section search.
///
/// Why golden-section is enough: with `β = 1/T`, each sample's NLL `logsumexp(β·z) − β·z_y` is
/// convex in `β`, so the mean is convex, hence unimodal in `β` and — because `β = e^{−ln T}` is
/// monotone — unimodal in `ln T`. Searching in log space spends the evaluations evenly across
/// scales (0.05 → 20 is a factor of 400).
///
/// Golden-section never evaluates the bracket ends, so the bounds are compared explicitly; and
/// when 1 lies inside the bounds the result is never worse than `T = 1` (flat plateaus and
/// rounding could otherwise let a fit cost a hair of NLL). Empty `logits` give `T = 1`.
///
/// # Panics
/// If the bounds are not `0 < lo <= hi < inf`, or on the conditions of [`nll`].
pub fn fit_temperature(
    logits: &[Vec<f32>],
    labels: &[usize],
    bounds: (f32, f32),
) -> TemperatureFit {
    let (lo, hi) = bounds;
    assert!(
        lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi,
        "temperature bounds must satisfy 0 < lo <= hi < inf, got ({lo}, {hi})"
    );
    assert_eq!(
        logits.len(),
        labels.len(),
        "fit_temperature: {} logit rows but {} labels",
        logits.len(),
        labels.len()
    );
    if logits.is_empty() {
        return TemperatureFit {
            t: 1.0,
            nll_before: 0.0,
            nll_after: 0.0,
            clamped: false,
        };
    }
    let f = |u: f64| nll_f64(logits, labels, u.exp());
    let (a0, b0) = ((lo as f64).ln(), (hi as f64).ln());

    // Golden-section search for the minimum of the unimodal f on [a0, b0].
    let inv_phi = (5f64.sqrt() - 1.0) / 2.0; // 1/φ ≈ 0.618
    let (mut a, mut b) = (a0, b0);
    let mut c = b - inv_phi * (b - a);
    let mut d = a + inv_phi * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    while b - a > LOG_T_TOL {
        if fc <= fd {
            b = d;
            d = c;
            fd = fc;
            c = b - inv_phi * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + inv_phi * (b - a);
            fd = f(d);
        }
    }
    let interior = (a + b) / 2.0;

    // Candidates as the f32 temperatures we would actually return, so nll_after is exactly the
    // NLL of the returned value. Ties prefer the earlier candidate (interior before bounds).
    let mut candidates = vec![(interior.exp() as f32).clamp(lo, hi), lo, hi];
    if (lo..=hi).contains(&1.0) {
        candidates.push(1.0);
    }
    let mut best_t = candidates[0];
    let mut best_nll = nll(logits, labels, best_t);
    for &t in &candidates[1..] {
        let v = nll(logits, labels, t);
        if v < best_nll {
            best_t = t;
            best_nll = v;
        }
    }
    let ln_best = (best_t as f64).ln();
    // "At a bound" up to the search tolerance plus f32 rounding of T (~6e-8 relative).
    let near = |bound: f64| (ln_best - bound).abs() <= 4.0 * LOG_T_TOL;
    TemperatureFit {
        t: best_t,
        nll_before: nll(logits, labels, 1.0),
        nll_after: best_nll,
        clamped: near(a0) || near(b0),
    }
}
