//! Tests of temperature scaling and thresholds, against closed forms and brute force.

use super::temperature::*;
use super::threshold::*;
use crate::cache::{ExitOn, Prediction};

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
