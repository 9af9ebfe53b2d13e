//! Calibration and thresholds (paper section 3.3, DESIGN "Calibration" and "Thresholds").
//!
//! A cache head's confidence decides whether its answer is final, so the confidence must mean
//! what it says: an over-confident head exits on wrong answers, an under-confident one rarely
//! exits. We therefore fit one temperature per head on the validation split (temperature scaling,
//! Guo et al. 2017), then pick each head's threshold as the lowest confidence that keeps the
//! paper's accuracy-drop upper bound `HR(θ)·(1−CA(θ))` (eq. 3) within that head's share of the
//! tolerance, `X/2^n` for the n-th exit in network order.
//!
//! Everything here is plain `f32`/`f64` math on slices: it runs on recorded predictions, never on
//! the model, so it can be re-run cheaply whenever the validation split changes.

use super::{ExitOn, Prediction};
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

fn nll_f64(logits: &[Vec<f32>], labels: &[usize], t: f64) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Small deterministic generator (64-bit LCG, Knuth's constants), so tests need no crates.
    struct Lcg(u64);
    impl Lcg {
        fn next_u32(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
        /// Uniform in [0, 1).
        fn unit(&mut self) -> f64 {
            self.next_u32() as f64 / (1u64 << 31) as f64
        }
        fn below(&mut self, n: usize) -> usize {
            (self.unit() * n as f64) as usize
        }
        /// Approximately standard normal (sum of 12 uniforms − 6).
        fn normal(&mut self) -> f64 {
            (0..12).map(|_| self.unit()).sum::<f64>() - 6.0
        }
    }

    /// Logits for `n` samples over `classes`: the arg-max is the label with probability
    /// `p_correct`, margins and noise multiplied by `scale`.
    fn synthetic(
        rng: &mut Lcg,
        n: usize,
        classes: usize,
        p_correct: f64,
        scale: f64,
    ) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut logits = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..n {
            let y = rng.below(classes);
            let top = if rng.unit() < p_correct {
                y
            } else {
                (y + 1 + rng.below(classes - 1)) % classes
            };
            let row: Vec<f32> = (0..classes)
                .map(|c| {
                    let base = if c == top { 2.0 } else { 0.0 };
                    (scale * (base + 0.3 * rng.normal())) as f32
                })
                .collect();
            logits.push(row);
            labels.push(y);
        }
        (logits, labels)
    }

    #[test]
    fn softmax_matches_closed_form_and_is_stable() {
        // Two classes: softmax is the logistic function of the difference.
        let p = softmax_t(&[1.0, 3.0], 2.0);
        let want = 1.0 / (1.0 + (-(3.0f64 - 1.0) / 2.0).exp());
        assert!((p[1] as f64 - want).abs() < 1e-6, "{p:?} vs {want}");
        assert!((p[0] as f64 - (1.0 - want)).abs() < 1e-6);
        // Huge logits and a tiny temperature: no inf/NaN, same as the shifted logits.
        let big = softmax_t(&[1000.0, 1001.0, 999.0], 0.05);
        let shifted = softmax_t(&[1.0, 2.0, 0.0], 0.05);
        assert!(big.iter().all(|v| v.is_finite()));
        for (a, b) in big.iter().zip(&shifted) {
            assert!((a - b).abs() < 1e-6);
        }
        // Sums to one, and temperature t equals dividing the logits by t.
        let z = [0.3f32, -1.2, 2.5, 0.0];
        let s: f32 = softmax_t(&z, 0.7).iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
        let scaled: Vec<f32> = z.iter().map(|v| v / 0.7).collect();
        for (a, b) in softmax_t(&z, 0.7).iter().zip(softmax_t(&scaled, 1.0)) {
            assert!((a - b).abs() < 1e-6);
        }
        assert!(softmax_t(&[], 1.0).is_empty());
    }

    #[test]
    #[should_panic(expected = "temperature")]
    fn softmax_rejects_zero_temperature() {
        softmax_t(&[1.0, 2.0], 0.0);
    }

    #[test]
    fn predict_is_argmax_with_its_probability() {
        let p = predict(&[0.1, 2.0, -1.0], 1.0);
        assert_eq!(p.class, 1);
        let want = 2f64.exp() / (0.1f64.exp() + 2f64.exp() + (-1f64).exp());
        assert!((p.confidence as f64 - want).abs() < 1e-6);
        // Ties go to the lowest index.
        let t = predict(&[1.0, 5.0, 5.0], 1.0);
        assert_eq!(t.class, 1);
        // A higher temperature lowers the confidence but not the class.
        let hot = predict(&[0.1, 2.0, -1.0], 4.0);
        assert_eq!(hot.class, 1);
        assert!(hot.confidence < p.confidence);
    }

    #[test]
    fn nll_matches_closed_form() {
        // Sample 1: two classes, label 0 -> -ln(1/(1+e^{(z1-z0)/t})) = ln(1+e^{(z1-z0)/t}).
        // Sample 2: three equal logits -> ln 3 at any t.
        let logits = vec![vec![2.0, 0.5], vec![7.0, 7.0, 7.0]];
        let labels = [0, 2];
        let t = 0.5;
        let want = ((1.0f64 + ((0.5 - 2.0) / 0.5f64).exp()).ln() + 3f64.ln()) / 2.0;
        assert!((nll(&logits, &labels, t) - want).abs() < 1e-12);
        // A label whose probability underflows f64 still gives a finite loss: (1000 - 0)/t, with
        // t the f32 0.05 (not exactly 1/20).
        let far = nll(&[vec![0.0, 1000.0]], &[0], 0.05);
        assert!((far - 1000.0 / 0.05f32 as f64).abs() < 1e-9, "{far}");
        assert_eq!(nll(&[], &[], 1.0), 0.0);
    }

    /// Dense grid over ln T (step 1e-3), the reference the golden-section search must match.
    fn grid_min(logits: &[Vec<f32>], labels: &[usize], bounds: (f32, f32)) -> (f64, f64) {
        let (a, b) = ((bounds.0 as f64).ln(), (bounds.1 as f64).ln());
        let steps = ((b - a) / 1e-3).ceil() as usize;
        let mut best = (f64::INFINITY, a);
        for i in 0..=steps {
            let u = (a + i as f64 * 1e-3).min(b);
            let v = nll_f64(logits, labels, u.exp());
            if v < best.0 {
                best = (v, u);
            }
        }
        best
    }

    #[test]
    fn over_confident_head_gets_t_above_one() {
        let mut rng = Lcg(7);
        // Right 70% of the time but margins x5: far too sure of itself.
        let (logits, labels) = synthetic(&mut rng, 400, 3, 0.7, 5.0);
        let fit = fit_temperature(&logits, &labels, T_BOUNDS);
        assert!(fit.t > 1.0, "{fit:?}");
        assert!(fit.nll_after < fit.nll_before, "{fit:?}");
        assert!(!fit.clamped, "{fit:?}");
        assert!((fit.nll_before - nll(&logits, &labels, 1.0)).abs() < 1e-12);
        assert!((fit.nll_after - nll(&logits, &labels, fit.t)).abs() < 1e-12);
    }

    #[test]
    fn under_confident_head_gets_t_below_one() {
        let mut rng = Lcg(11);
        // Right 97% of the time but margins x0.3: too timid.
        let (logits, labels) = synthetic(&mut rng, 400, 3, 0.97, 0.3);
        let fit = fit_temperature(&logits, &labels, T_BOUNDS);
        assert!(fit.t < 1.0, "{fit:?}");
        assert!(fit.nll_after < fit.nll_before, "{fit:?}");
        assert!(!fit.clamped, "{fit:?}");
    }

    #[test]
    fn golden_section_matches_dense_grid() {
        let mut rng = Lcg(2024);
        for (p, scale) in [
            (0.7, 5.0),
            (0.97, 0.3),
            (0.85, 1.0),
            (0.5, 3.0),
            (0.95, 2.0),
        ] {
            let (logits, labels) = synthetic(&mut rng, 300, 4, p, scale);
            let fit = fit_temperature(&logits, &labels, T_BOUNDS);
            let (grid_nll, grid_u) = grid_min(&logits, &labels, T_BOUNDS);
            // The golden-section optimum is at least as good as the best grid point...
            assert!(
                fit.nll_after <= grid_nll + 1e-9,
                "p={p} scale={scale}: {fit:?} vs grid {grid_nll}"
            );
            // ...and sits at the grid's minimiser within a grid step or two.
            let du = ((fit.t as f64).ln() - grid_u).abs();
            assert!(du < 2e-3, "p={p} scale={scale}: ln T off by {du}");
        }
    }

    #[test]
    fn fitting_never_increases_nll_when_one_is_inside_bounds() {
        let mut rng = Lcg(99);
        for trial in 0..20 {
            let p = 0.3 + 0.7 * rng.unit();
            let scale = 0.1 + 6.0 * rng.unit();
            let (n, classes) = (50 + rng.below(200), 2 + rng.below(4));
            let (logits, labels) = synthetic(&mut rng, n, classes, p, scale);
            for bounds in [T_BOUNDS, (0.5, 2.0), (1.0, 1.0), (0.9, 1.0)] {
                let fit = fit_temperature(&logits, &labels, bounds);
                assert!(
                    fit.nll_after <= fit.nll_before,
                    "trial {trial} bounds {bounds:?}: {fit:?}"
                );
                assert!(fit.t >= bounds.0 && fit.t <= bounds.1);
            }
        }
        // Constant logits: the NLL is flat in T and the fit must not move off 1 for nothing.
        let flat = vec![vec![0.0, 0.0]; 10];
        let fit = fit_temperature(&flat, &[0; 10], T_BOUNDS);
        assert_eq!(fit.nll_after, fit.nll_before);
    }

    #[test]
    fn degenerate_sets_clamp_to_a_bound() {
        // One class, always right: the NLL keeps falling as T -> 0.
        let logits: Vec<Vec<f32>> = (0..20).map(|i| vec![2.0 + i as f32 * 0.1, 0.0]).collect();
        let labels = vec![0; 20];
        let fit = fit_temperature(&logits, &labels, T_BOUNDS);
        assert!(fit.clamped, "{fit:?}");
        assert_eq!(fit.t, T_BOUNDS.0);
        // Always wrong: the NLL keeps falling as T -> inf.
        let wrong = fit_temperature(&logits, &[1; 20], T_BOUNDS);
        assert!(wrong.clamped, "{wrong:?}");
        assert_eq!(wrong.t, T_BOUNDS.1);
        // Empty: T = 1, nothing clamped.
        let empty = fit_temperature(&[], &[], T_BOUNDS);
        assert_eq!(empty.t, 1.0);
        assert!(!empty.clamped);
    }

    #[test]
    fn budget_halves_per_exit() {
        assert_eq!(budget(0.04, 1), 0.02);
        assert_eq!(budget(0.04, 2), 0.01);
        assert_eq!(budget(0.04, 3), 0.005);
        // The shares of any number of exits sum to less than the tolerance.
        let total: f64 = (1..=12).map(|n| budget(0.05, n)).sum();
        assert!(total < 0.05);
    }

    fn pred(class: usize, confidence: f32) -> Prediction {
        Prediction { class, confidence }
    }

    /// Errors/hits at θ by the definition, one sample at a time through `Prediction::hits`.
    fn brute_counts(
        preds: &[Prediction],
        teacher: &[usize],
        theta: f32,
        policy: ExitOn,
        positive: usize,
    ) -> (usize, usize) {
        let mut hits = 0;
        let mut errors = 0;
        for (p, &t) in preds.iter().zip(teacher) {
            if p.hits(theta, policy, positive) {
                hits += 1;
                if p.class != t {
                    errors += 1;
                }
            }
        }
        (hits, errors)
    }

    #[test]
    fn threshold_agrees_with_brute_force_over_a_fine_grid() {
        let mut rng = Lcg(5);
        for trial in 0..300 {
            let n = 1 + rng.below(60);
            let classes = 2 + rng.below(2);
            let policy = if trial % 2 == 0 {
                ExitOn::Any
            } else {
                ExitOn::Pedestrian
            };
            let positive = 1;
            // Confidences on a 1/64 lattice (exact in f32), so a 1/128 grid puts a point
            // strictly between any two distinct confidences.
            let preds: Vec<Prediction> = (0..n)
                .map(|_| pred(rng.below(classes), (16 + rng.below(49)) as f32 / 64.0))
                .collect();
            // Teacher agrees more often at high confidence, so errors are not monotone.
            let teacher: Vec<usize> = preds
                .iter()
                .map(|p| {
                    if rng.unit() < p.confidence as f64 * 0.9 {
                        p.class
                    } else {
                        rng.below(classes)
                    }
                })
                .collect();
            let b = [0.0, 0.01, 0.05, 0.1, 0.3][rng.below(5)];
            let got = choose_threshold(&preds, &teacher, b, policy, positive);

            // The choice honours the bound and its statistics are right.
            let (h, e) = brute_counts(&preds, &teacher, got.theta, policy, positive);
            assert_eq!(
                (got.hits, got.errors, got.samples),
                (h, e, n),
                "trial {trial}"
            );
            assert!(e as f64 / n as f64 <= b + 1e-12, "trial {trial}: {got:?}");
            assert!((got.bound - got.hit_rate * (1.0 - got.cache_accuracy)).abs() < 1e-12);

            // Fine grid 0, 1/128, ..., 1 and beyond: lowest grid θ meeting the bound.
            let grid_best = (0..=129)
                .map(|i| i as f32 / 128.0)
                .find(|&th| {
                    let (_, e) = brute_counts(&preds, &teacher, th, policy, positive);
                    e as f64 / n as f64 <= b + 1e-12
                })
                .unwrap_or(f32::INFINITY);
            // The grid can only go lower (it has points between confidences), but it must
            // produce exactly the same hits.
            assert!(
                grid_best <= got.theta,
                "trial {trial}: {grid_best} vs {got:?}"
            );
            if got.theta.is_finite() {
                assert_eq!(
                    brute_counts(&preds, &teacher, grid_best, policy, positive),
                    (h, e),
                    "trial {trial}"
                );
            } else {
                assert_eq!(
                    brute_counts(&preds, &teacher, grid_best, policy, positive).0,
                    0
                );
            }
            // No eligible confidence below the chosen θ meets the bound (O(n^2) reference).
            for p in &preds {
                if p.hits(0.0, policy, positive) && p.confidence < got.theta {
                    let (_, e) = brute_counts(&preds, &teacher, p.confidence, policy, positive);
                    assert!(e as f64 / n as f64 > b + 1e-12, "trial {trial}");
                }
            }
        }
    }

    #[test]
    fn cache_accuracy_is_not_monotone_but_the_bound_is() {
        // Sorted by confidence: 0.9 right, 0.8 wrong, then 0.7 .. 0.1 and 0.05 right.
        // CA: 1 at θ=0.9, 0.5 at θ=0.8, rising again to 0.9 at θ=0.05; errors/samples: 0, then
        // 0.1 from θ=0.8 down. Budget 0.1 on 10 samples allows one error: θ = 0.05; budget
        // 0.05 allows none: θ = 0.9.
        let mut preds = vec![pred(0, 0.9), pred(1, 0.8)];
        preds.extend((1..=7).rev().map(|i| pred(0, i as f32 / 10.0)));
        preds.push(pred(0, 0.05));
        let teacher = vec![0; 10];
        let pts = curve(&preds, &teacher, None, ExitOn::Any, 1, 101);
        let ca_at = |th: usize| pts[th].cache_accuracy;
        assert!(
            ca_at(85) > ca_at(75) && ca_at(75) < ca_at(10),
            "CA not monotone"
        );
        for w in pts.windows(2) {
            let bound = |p: &CurvePoint| p.hit_rate * (1.0 - p.cache_accuracy);
            assert!(
                bound(&w[1]) <= bound(&w[0]) + 1e-12,
                "bound is monotone in θ"
            );
        }
        let loose = choose_threshold(&preds, &teacher, 0.1, ExitOn::Any, 1);
        assert_eq!(loose.theta, 0.05);
        assert_eq!((loose.hits, loose.errors), (10, 1));
        assert!((loose.cache_accuracy - 0.9).abs() < 1e-12);
        let tight = choose_threshold(&preds, &teacher, 0.05, ExitOn::Any, 1);
        assert_eq!(tight.theta, 0.9);
        assert_eq!((tight.hits, tight.errors), (1, 0));
    }

    #[test]
    fn pedestrian_policy_never_exits_on_empty() {
        // A very confident, correct "empty" (class 0) answer: under Any it is the best hit,
        // under Pedestrian it can never hit, whatever the budget.
        let preds = [pred(0, 0.99), pred(1, 0.8), pred(1, 0.6)];
        let teacher = [0, 1, 0];
        let any = choose_threshold(&preds, &teacher, 0.0, ExitOn::Any, 1);
        assert_eq!((any.theta, any.hits), (0.8, 2));
        let ped = choose_threshold(&preds, &teacher, 0.0, ExitOn::Pedestrian, 1);
        assert_eq!((ped.theta, ped.hits, ped.errors), (0.8, 1, 0));
        let ped_loose = choose_threshold(&preds, &teacher, 1.0, ExitOn::Pedestrian, 1);
        assert_eq!((ped_loose.theta, ped_loose.hits), (0.6, 2));
        assert!(!preds[0].hits(ped_loose.theta, ExitOn::Pedestrian, 1));
    }

    #[test]
    fn zero_budget_allows_no_errors() {
        let preds = [pred(1, 0.95), pred(1, 0.9), pred(1, 0.85), pred(1, 0.5)];
        let teacher = [1, 1, 0, 1];
        let c = choose_threshold(&preds, &teacher, 0.0, ExitOn::Any, 1);
        assert_eq!((c.theta, c.hits, c.errors), (0.9, 2, 0));
        assert_eq!(c.cache_accuracy, 1.0);
        // Wrong at the top: no θ with hits is error-free, so the exit never hits.
        let c = choose_threshold(&preds, &[0, 1, 1, 1], 0.0, ExitOn::Any, 1);
        assert_eq!(
            (c.theta, c.hits, c.hit_rate, c.bound),
            (f32::INFINITY, 0, 0.0, 0.0)
        );
    }

    #[test]
    fn tiny_validation_set_degenerates_to_no_error_on_val() {
        // 20 samples, tolerance 5% on exit 2: budget 1.25% < 1/20 = 5%, so a single error is
        // over budget and the rule is "no error on val".
        let b = budget(0.05, 2);
        assert!(b < 1.0 / 20.0);
        let mut preds: Vec<Prediction> = (0..20).map(|i| pred(1, 0.99 - i as f32 * 0.01)).collect();
        let mut teacher = vec![1; 20];
        teacher[15] = 0; // One error, at the 16th most confident answer.
        let c = choose_threshold(&preds, &teacher, b, ExitOn::Any, 1);
        assert_eq!(c.errors, 0);
        assert_eq!(c.hits, 15);
        assert_eq!(c.theta, preds[14].confidence);
        // Same budget on 100 samples is worth one whole error (1.25 -> 1): the error at rank
        // 16 is now affordable and every sample hits.
        preds = (0..100).map(|i| pred(1, 0.99 - i as f32 * 0.005)).collect();
        teacher = vec![1; 100];
        teacher[15] = 0;
        let c = choose_threshold(&preds, &teacher, b, ExitOn::Any, 1);
        assert_eq!((c.hits, c.errors), (100, 1));
        assert_eq!(c.theta, preds[99].confidence);
    }

    #[test]
    fn empty_and_negative_budget() {
        let c = choose_threshold(&[], &[], 0.1, ExitOn::Any, 1);
        assert_eq!((c.theta, c.samples, c.hit_rate), (f32::INFINITY, 0, 0.0));
        let c = choose_threshold(&[pred(1, 0.9)], &[1], -0.1, ExitOn::Any, 1);
        assert_eq!(c.theta, f32::INFINITY);
        // Representation error must not cost a whole error: 0.3 * 10 = 2.9999999999999996.
        let preds: Vec<Prediction> = (0..10).map(|i| pred(1, 1.0 - i as f32 * 0.05)).collect();
        let teacher = [0, 0, 0, 1, 1, 1, 1, 1, 1, 1];
        let c = choose_threshold(&preds, &teacher, 0.3, ExitOn::Any, 1);
        assert_eq!((c.hits, c.errors), (10, 3));
    }

    #[test]
    fn curve_counts_by_definition() {
        let preds = [pred(1, 0.9), pred(0, 0.8), pred(1, 0.55), pred(0, 0.4)];
        let teacher = [1, 1, 1, 0];
        let gt = [true, false, false, false];
        let pts = curve(&preds, &teacher, Some(&gt), ExitOn::Any, 1, 11);
        assert_eq!(pts.len(), 11);
        assert_eq!(pts[0].theta, 0.0);
        assert_eq!(pts[10].theta, 1.0);
        // θ = 0: all hit; teacher agrees on 0, 2, 3; gt presence agrees on 0, 1, 3.
        assert_eq!(pts[0].hit_rate, 1.0);
        assert_eq!(pts[0].cache_accuracy, 0.75);
        assert_eq!(pts[0].gt_accuracy, Some(0.75));
        // θ = 0.5: samples 0, 1, 2 hit; teacher agrees on 0, 2; gt on 0, 1.
        assert_eq!(pts[5].hit_rate, 0.75);
        assert!((pts[5].cache_accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert!((pts[5].gt_accuracy.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        // θ = 1: nothing hits.
        assert_eq!(pts[10].hit_rate, 0.0);
        assert_eq!(pts[10].cache_accuracy, 1.0);
        // Pedestrian policy at θ = 0: only samples 0 and 2 hit; no ground truth given.
        let ped = curve(&preds, &teacher, None, ExitOn::Pedestrian, 1, 2);
        assert_eq!(ped[0].hit_rate, 0.5);
        assert_eq!(ped[0].cache_accuracy, 1.0);
        assert_eq!(ped[0].gt_accuracy, None);
        assert!(curve(&preds, &teacher, None, ExitOn::Any, 1, 0).is_empty());
    }
}
