//! Automatic architecture search for one candidate layer (paper 3.2.1), with no manual export
//! step: every architecture of a space is trained briefly on the stored 4x4 grids (re-pooled to
//! its own grid), scored on val, and the winner comes back as a ready [`CacheHead`].
//!
//! Score = val accuracy − `flops_weight` × flops / (max flops in the space). Accuracy is argmax
//! agreement with the teacher (what a cache hit must get right); the FLOPs term, normalised to
//! [0, 1] within the space, prefers the cheaper of two heads that agree about as often, like the
//! paper's NNI evaluation which weighed accuracy against FLOPs.
//!
//! A layer is dropped (paper: "neither of the cache models converge") when its best-scoring head
//! is near chance: its val KL loss is above 0.9 × the prior's (the loss of always predicting the
//! train-set mean teacher distribution), or, when at least two classes occur in val, its balanced
//! accuracy is ≤ chance + 0.05 (0.55 for two classes) or within 2 standard errors of chance
//! ([`chance_bar`]: small val sets need the wider margin). Val is used only for scoring (candidates
//! early-stop on a slice of train), so these tests are not fooled by heads tuned to val's noise.

use super::head::{regrid, CacheHead, HeadArch, SplitMix64};
use super::train::{eval_loss, train_new_cancellable, Checkpoint, TrainConfig, Unchecked};
use candle_core::{bail, DType, Result, Tensor};
use std::collections::{hash_map::Entry, HashMap};

/// One evaluated architecture.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub arch: HeadArch,
    /// Share of val samples whose predicted class is the teacher's argmax.
    pub val_accuracy: f64,
    /// Mean per-class recall over the teacher classes present in val (robust to the swings in
    /// pedestrian share between drives that plain accuracy hides).
    pub balanced_accuracy: f64,
    /// Val KL loss of the trained head (best epoch).
    pub val_loss: f64,
    /// Val KL loss of the class prior (train-set mean teacher distribution).
    pub prior_loss: f64,
    /// Analytic cost, see [`HeadArch::flops`].
    pub flops: u64,
    /// Search score (module doc); higher is better.
    pub score: f64,
}

impl Candidate {
    /// Why this head is near chance, or `None` when it beats the prior clearly. `bar` is the
    /// balanced accuracy it must exceed ([`chance_bar`]; `None` when val has a single class).
    pub fn near_chance(&self, bar: Option<f64>) -> Option<String> {
        // With one class in val the prior (always that class, at its mean confidence) is already
        // a good predictor, so demanding a 10% margin over it would drop every layer of a scene
        // that is nearly always busy; there a head only has to do better than the prior at all.
        let factor = if bar.is_some() { 0.9 } else { 1.0 };
        if self.val_loss.is_nan() || self.val_loss >= factor * self.prior_loss {
            return Some(format!(
                "val loss {:.4} not below {factor} x prior loss {:.4}",
                self.val_loss, self.prior_loss
            ));
        }
        match bar {
            Some(bar) if self.balanced_accuracy <= bar => Some(format!(
                "balanced accuracy {:.3} <= {bar:.3}",
                self.balanced_accuracy
            )),
            _ => None,
        }
    }
}

/// Fewest val rows of a class for its balanced accuracy to be judged.
pub const MIN_ROWS_PER_CLASS: f64 = 8.0;

/// Balanced accuracy a head must exceed on val to count as better than chance: the larger of
/// chance + 0.05 (0.55 for two classes) and chance + 2 standard errors of a label-blind
/// predictor's balanced accuracy, (1/k)·sqrt(Σ_c 0.25/n_c) over the k classes present with n_c
/// rows each. On 40 val rows the error term rules (bar ≈ 0.66): with 0.55 alone, the best of 18
/// heads on a pure-noise layer passed (measured at C = 8 and C = 96). `None` with < 2 classes.
pub fn chance_bar(labels: &[u32], classes: usize) -> Option<f64> {
    let mut count = vec![0usize; classes];
    labels.iter().for_each(|&l| count[l as usize] += 1);
    let present: Vec<f64> = count
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| n as f64)
        .collect();
    // A class with only a handful of val rows cannot show whether a head separates it (the
    // error term alone would exceed 1): treat such a val set as one-class, where the head has
    // to beat the prior's loss instead. This is the busy-scene case (nearly every frame shows
    // pedestrians), where the prior itself is a confident, mostly correct answer.
    if present.len() < 2 || present.iter().any(|&n| n < MIN_ROWS_PER_CLASS) {
        return None;
    }
    let k = present.len() as f64;
    let se = present.iter().map(|n| 0.25 / n).sum::<f64>().sqrt() / k;
    Some(1.0 / k + (2.0 * se).max(0.05))
}

/// Every candidate tried (in space order) and the winner, or why the layer was dropped.
#[derive(Debug)]
pub struct SearchResult {
    pub tried: Vec<Candidate>,
    pub best: Option<(CacheHead, Candidate)>,
    pub dropped_reason: Option<String>,
}

/// Argmax per row as class indices.
fn argmax(t: &Tensor) -> Result<Vec<u32>> {
    t.argmax(1)?.to_vec1::<u32>()
}

/// (accuracy, balanced accuracy, number of classes present) of predictions against labels.
pub fn accuracies(pred: &[u32], label: &[u32], classes: usize) -> (f64, f64, usize) {
    let (mut hit, mut count) = (vec![0usize; classes], vec![0usize; classes]);
    for (&p, &l) in pred.iter().zip(label) {
        count[l as usize] += 1;
        hit[l as usize] += usize::from(p == l);
    }
    let acc = hit.iter().sum::<usize>() as f64 / label.len().max(1) as f64;
    let present: Vec<usize> = (0..classes).filter(|&c| count[c] > 0).collect();
    let bal = present
        .iter()
        .map(|&c| hit[c] as f64 / count[c] as f64)
        .sum::<f64>()
        / present.len().max(1) as f64;
    (acc, bal, present.len())
}

/// Val KL loss of always predicting the train-set mean teacher distribution (floored at 1e-6
/// and renormalised, so a class unseen in train gives a large but finite loss).
pub fn prior_loss(train_t: &Tensor, val_t: &Tensor) -> Result<f64> {
    let mean = train_t.to_dtype(DType::F64)?.mean(0)?.to_vec1::<f64>()?;
    let mean: Vec<f64> = mean.iter().map(|p| p.max(1e-6)).collect();
    let z: f64 = mean.iter().sum();
    let rows = val_t.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let total: f64 = rows
        .iter()
        .map(|r| {
            r.iter()
                .zip(&mean)
                .filter(|(&t, _)| t > 0.0)
                .map(|(&t, &m)| t * (t.ln() - (m / z).ln()))
                .sum::<f64>()
        })
        .sum();
    Ok(total / rows.len().max(1) as f64)
}

/// Deterministic split of `n` train rows into (fit, stop): every candidate trains on `fit` and
/// early-stops on `stop` (a fifth, at least 2 rows), so val is touched only for scoring. Early
/// stopping on val itself tunes each head to val's noise (the best of ~25 epochs), and a pure
/// noise layer then passes the near-chance test (measured: C=96, 40 val rows, 18 candidates).
fn fit_stop_split(n: usize, seed: u64) -> (Vec<u32>, Vec<u32>) {
    let mut idx: Vec<u32> = (0..n as u32).collect();
    if n < 10 {
        return (idx, Vec::new()); // too few to spare: stop on the train loss
    }
    SplitMix64::new(seed ^ 0x5EA2_C4ED).shuffle(&mut idx);
    let stop = idx.split_off(n - (n / 5).max(2));
    (idx, stop)
}

/// Search `space` for the layer whose stored grids are `train_x4` / `val_x4` (`[N,C,4,4]`) and
/// whose teacher distributions are `train_t` / `val_t` (`[N,classes]`). Each candidate `i` is
/// initialised and shuffled with seeds derived from `cfg.seed + i`, so the whole search is
/// deterministic. Candidates train on four fifths of the train split and early-stop on the rest
/// (see `fit_stop_split`); val only scores. `cfg` should be brief (e.g. 25 epochs); the
/// caller may retrain the winner longer. Runs on the inputs' device.
pub fn search(
    train_x4: &Tensor,
    train_t: &Tensor,
    val_x4: &Tensor,
    val_t: &Tensor,
    space: &[HeadArch],
    cfg: &TrainConfig,
    flops_weight: f64,
) -> Result<SearchResult> {
    search_with(
        (train_x4, train_t),
        (val_x4, val_t),
        space,
        cfg,
        flops_weight,
        &Unchecked,
    )
}

/// [`search`], with `checkpoint` reached before every mini-batch of every candidate's training
/// (a background learner pauses or gives up there).
pub fn search_with(
    (train_x4, train_t): (&Tensor, &Tensor),
    (val_x4, val_t): (&Tensor, &Tensor),
    space: &[HeadArch],
    cfg: &TrainConfig,
    flops_weight: f64,
    checkpoint: &dyn Checkpoint,
) -> Result<SearchResult> {
    let (n, c, _, _) = train_x4.dims4()?;
    let Some(classes) = space.first().map(|a| a.classes) else {
        bail!("architecture search over an empty space");
    };
    if let Some(a) = space.iter().find(|a| a.classes != classes) {
        bail!(
            "search space mixes class counts ({classes} and {})",
            a.classes
        );
    }
    let (nv, nvt) = (val_x4.dim(0)?, val_t.dim(0)?);
    if nv == 0 || nv != nvt {
        bail!("architecture search needs val samples ({nv} inputs, {nvt} targets)");
    }
    let prior = prior_loss(train_t, val_t)?;
    let labels = argmax(val_t)?;
    let bar = chance_bar(&labels, classes);
    let max_flops = space.iter().map(|a| a.flops(c)).max().unwrap_or(1).max(1) as f64;
    let (fit, stop) = fit_stop_split(n, cfg.seed);
    let rows = |x: &Tensor, idx: &[u32]| x.index_select(&Tensor::new(idx, x.device())?, 0);
    let (fit_t, stop_t) = (rows(train_t, &fit)?, rows(train_t, &stop)?);
    // Re-pool once per grid, not once per candidate: (fit, stop, val) inputs.
    let mut grids: HashMap<usize, [Tensor; 3]> = HashMap::new();
    let mut tried: Vec<Candidate> = Vec::with_capacity(space.len());
    let mut best: Option<(CacheHead, Candidate)> = None;
    for (i, arch) in space.iter().enumerate() {
        if let Entry::Vacant(slot) = grids.entry(arch.grid) {
            let x = regrid(train_x4, arch.grid)?;
            slot.insert([
                rows(&x, &fit)?,
                rows(&x, &stop)?,
                regrid(val_x4, arch.grid)?,
            ]);
        }
        let [fx, sx, vx] = &grids[&arch.grid];
        let seed = cfg.seed.wrapping_add(i as u64);
        let (head, report) = train_new_cancellable(
            arch,
            c,
            (seed.wrapping_mul(0x9E37_79B9), seed),
            (fx, &fit_t),
            (sx, &stop_t),
            cfg,
            checkpoint,
        )?;
        let (acc, bal, _) = accuracies(&argmax(&head.forward(vx)?)?, &labels, classes);
        let flops = arch.flops(c);
        let cand = Candidate {
            arch: arch.clone(),
            val_accuracy: acc,
            balanced_accuracy: bal,
            val_loss: eval_loss(&head, vx, val_t)?,
            prior_loss: prior,
            flops,
            score: acc - flops_weight * flops as f64 / max_flops,
        };
        log::debug!(
            "search: {} acc {acc:.3} bal {bal:.3} loss {:.4} (prior {prior:.4}) score {:.3} \
             ({} epochs)",
            arch.describe(),
            cand.val_loss,
            cand.score,
            report.epochs_run
        );
        if best.as_ref().is_none_or(|(_, b)| cand.score > b.score) {
            best = Some((head, cand.clone()));
        }
        tried.push(cand);
    }
    // The paper's test on the winner: a layer whose best head is near chance is not cacheable.
    let top = best.as_ref().map(|(_, b)| b).expect("space is not empty");
    let dropped_reason = top.near_chance(bar).map(|why| {
        format!(
            "best of {} heads ({}) is near chance: {why}",
            tried.len(),
            top.arch.describe()
        )
    });
    if dropped_reason.is_some() {
        best = None;
    }
    Ok(SearchResult {
        tried,
        best,
        dropped_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::head::search_space;
    use candle_core::Device;

    /// `n` samples with C channels; class 1 iff a hidden bit is set. With `signal`, channel 0
    /// is shifted by ±0.8 with the bit; without, activations are noise independent of targets.
    fn layer(n: usize, c: usize, signal: bool, seed: u64) -> (Tensor, Tensor) {
        let mut rng = SplitMix64::new(seed);
        let (mut x, mut t) = (Vec::with_capacity(n * c * 16), Vec::new());
        for _ in 0..n {
            let cls = rng.below(2);
            let shift = if cls == 1 { 0.8 } else { -0.8 };
            for ch in 0..c {
                for _ in 0..16 {
                    let v = (rng.next_f64() * 2.0 - 1.0) as f32;
                    x.push(v + if signal && ch == 0 { shift } else { 0.0 });
                }
            }
            t.extend(if cls == 1 {
                [0.15f32, 0.85]
            } else {
                [0.85, 0.15]
            });
        }
        let x = Tensor::from_vec(x, (n, c, 4, 4), &Device::Cpu).unwrap();
        (x, Tensor::from_vec(t, (n, 2), &Device::Cpu).unwrap())
    }

    fn cfg() -> TrainConfig {
        TrainConfig {
            epochs: 25,
            seed: 4,
            ..Default::default()
        }
    }

    fn small_space() -> Vec<HeadArch> {
        let sp = search_space(2);
        vec![sp[0].clone(), sp[3].clone(), sp[9].clone(), sp[14].clone()]
    }

    #[test]
    fn noise_layer_is_dropped() {
        let (tx, tt) = layer(100, 8, false, 1);
        let (vx, vt) = layer(40, 8, false, 2);
        let r = search(&tx, &tt, &vx, &vt, &small_space(), &cfg(), 0.05).unwrap();
        assert!(r.best.is_none(), "{:?}", r.tried);
        let why = r.dropped_reason.unwrap();
        assert!(why.contains("near chance"), "{why}");
        assert_eq!(r.tried.len(), 4);
    }

    #[test]
    fn signal_layer_is_kept_and_search_is_deterministic() {
        let (tx, tt) = layer(100, 8, true, 1);
        let (vx, vt) = layer(40, 8, true, 2);
        let r = search(&tx, &tt, &vx, &vt, &small_space(), &cfg(), 0.05).unwrap();
        let (head, best) = r.best.as_ref().expect("signal layer kept");
        assert!(r.dropped_reason.is_none());
        assert!(best.val_accuracy > 0.85 && best.val_loss < 0.9 * best.prior_loss);
        let again = search(&tx, &tt, &vx, &vt, &small_space(), &cfg(), 0.05).unwrap();
        assert_eq!(r.tried, again.tried);
        let x = regrid(&vx, head.arch.grid).unwrap();
        let a = head.forward(&x).unwrap().flatten_all().unwrap();
        let b = again.best.unwrap().0.forward(&x).unwrap().flatten_all();
        assert_eq!(
            a.to_vec1::<f32>().unwrap(),
            b.unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn accuracy_and_prior_helpers() {
        let (acc, bal, present) = accuracies(&[1, 1, 1, 1], &[1, 1, 1, 0], 2);
        assert_eq!((acc, bal, present), (0.75, 0.5, 2));
        assert_eq!(chance_bar(&[1, 1, 1], 2), None);
        let bar = |n: usize| chance_bar(&(0..n as u32).map(|i| i % 2).collect::<Vec<_>>(), 2);
        assert!((bar(40).unwrap() - (0.5 + 0.1f64.sqrt() / 2.0)).abs() < 1e-12); // ≈ 0.658
        assert_eq!(bar(4000).unwrap(), 0.55);
        let t = Tensor::new(&[[0.5f32, 0.5], [0.5, 0.5]], &Device::Cpu).unwrap();
        assert!(prior_loss(&t, &t).unwrap().abs() < 1e-9);
    }

    /// False keeps / drops over 8 data+train seeds: a layer that carries the class is never
    /// dropped, a layer of noise is rarely kept (the chance bar is a ~1 sigma margin, so an
    /// occasional noise head passes; measured: C=8, 4 heads: 0/8; C=96, 18 heads: 1/8).
    #[test]
    fn robustness_over_seeds() {
        for (c, space) in [(8, small_space()), (96, search_space(2))] {
            let (mut kept_noise, mut dropped_signal) = (0, 0);
            for s in 0..8u64 {
                let cfg = TrainConfig {
                    epochs: 25,
                    seed: 100 + s,
                    ..Default::default()
                };
                let (tx, tt) = layer(100, c, false, 10 + 2 * s);
                let (vx, vt) = layer(40, c, false, 11 + 2 * s);
                let r = search(&tx, &tt, &vx, &vt, &space, &cfg, 0.05).unwrap();
                kept_noise += usize::from(r.best.is_some());
                if let Some((_, b)) = &r.best {
                    println!("kept noise: {b:?}");
                }
                let (tx, tt) = layer(100, c, true, 10 + 2 * s);
                let (vx, vt) = layer(40, c, true, 11 + 2 * s);
                let r = search(&tx, &tt, &vx, &vt, &space, &cfg, 0.05).unwrap();
                if r.best.is_none() {
                    dropped_signal += 1;
                    println!("{:?}", r.dropped_reason);
                }
            }
            println!("C={c}: noise kept {kept_noise}/8, signal dropped {dropped_signal}/8");
            assert_eq!(
                dropped_signal, 0,
                "C={c}: a layer carrying the class was dropped"
            );
            assert!(kept_noise <= 2, "C={c}: noise kept {kept_noise}/8");
        }
    }

    /// The full default space on the brief's sizes (96 channels, 100 train / 40 val units): the
    /// signal layer gets a head, the noise layer none (`--nocapture` prints every candidate).
    #[test]
    fn full_default_space_c96_keeps_signal_drops_noise() {
        let (tx, tt) = layer(100, 96, true, 1);
        let (vx, vt) = layer(40, 96, true, 2);
        let space = search_space(2);
        let r = search(&tx, &tt, &vx, &vt, &space, &cfg(), 0.05).unwrap();
        println!("search: {} candidates", r.tried.len());
        for c in &r.tried {
            println!(
                "  {:45} acc {:.3} loss {:.4} prior {:.4} flops {} score {:.3}",
                c.arch.describe(),
                c.val_accuracy,
                c.val_loss,
                c.prior_loss,
                c.flops,
                c.score
            );
        }
        assert!(r.best.is_some());
        let (tx, tt) = layer(100, 96, false, 1);
        let (vx, vt) = layer(40, 96, false, 2);
        let r = search(&tx, &tt, &vx, &vt, &space, &cfg(), 0.05).unwrap();
        println!("noise layer: {:?}", r.dropped_reason);
        for c in &r.tried {
            println!(
                "  {:45} acc {:.3} bal {:.3} loss {:.4} prior {:.4}",
                c.arch.describe(),
                c.val_accuracy,
                c.balanced_accuracy,
                c.val_loss,
                c.prior_loss
            );
        }
        assert!(r.best.is_none());
    }
}
