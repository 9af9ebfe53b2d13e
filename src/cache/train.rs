//! Training a cache head by distillation (paper 3.2.2): minimise KL(teacher || head) over the
//! medial dataset's train split with AdamW, early-stop on the val split, keep the best epoch.
//!
//! Only the head's own `Var`s are handed to the optimiser and the inputs are stored activations
//! (plain tensors, no graph back into the detector), so the detector and the other heads are
//! frozen by construction, as the paper requires. Everything random (mini-batch order) comes from
//! a seeded [`SplitMix64`], so a fixed seed gives bit-identical weights.

use super::head::{CacheHead, HeadArch, SplitMix64};
use candle_core::{bail, DType, Device, Result, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};

/// Reached before every mini-batch: a background learner pauses there (leaving the CPU to
/// perception) or gives the training up with an `Err`.
pub trait Checkpoint {
    fn reached(&self) -> Result<()>;
}

/// A cancel flag: set means "give the training up".
impl Checkpoint for AtomicBool {
    fn reached(&self) -> Result<()> {
        if self.load(Ordering::Relaxed) {
            bail!("training cancelled");
        }
        Ok(())
    }
}

/// Never pauses, never cancels.
pub struct Unchecked;

impl Checkpoint for Unchecked {
    fn reached(&self) -> Result<()> {
        Ok(())
    }
}

/// Hyper-parameters of one training run. Defaults suit a few hundred samples per layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Upper bound on passes over the train split.
    pub epochs: usize,
    /// Mini-batch size (the last batch of an epoch may be smaller).
    pub batch: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW decoupled weight decay (regularises heads trained on few samples).
    pub weight_decay: f64,
    /// Epochs without a new best val loss before stopping.
    pub patience: usize,
    /// Seed of the mini-batch order (heads carry their own init seed).
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 60,
            batch: 32,
            lr: 3e-3,
            weight_decay: 1e-2,
            patience: 8,
            seed: 0,
        }
    }
}

/// What a training run did; the head holds the weights of `best_epoch` afterwards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Epochs actually run (< `epochs` when early stopping fired).
    pub epochs_run: usize,
    /// 1-based epoch whose weights were kept (0: no epoch improved on the initial weights).
    pub best_epoch: usize,
    /// Val KL loss of the kept weights (nats per sample).
    pub best_val_loss: f64,
    /// Mean mini-batch train loss during `best_epoch` (initial train loss when it is 0).
    pub train_loss: f64,
    /// Val loss of the initial weights, before any step.
    pub initial_val_loss: f64,
    /// Val loss after every epoch run.
    pub val_losses: Vec<f64>,
}

/// Σ_c t ln t per row (0 ln 0 = 0), `[N]`: the part of KL(t || p) that does not depend on the
/// head, computed once on the host so the graph never takes ln 0.
fn neg_entropy(t: &Tensor) -> Result<Tensor> {
    let rows = t.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let h: Vec<f32> = rows
        .iter()
        .map(|r| {
            r.iter()
                .filter(|&&p| p > 0.0)
                .map(|&p| p as f64 * (p as f64).ln())
                .sum::<f64>() as f32
        })
        .collect();
    Tensor::from_vec(h, rows.len(), t.device())
}

/// Batch-mean KL(t || softmax(logits)) = mean_i [Σ t ln t − Σ t · log_softmax(logits)], given
/// the precomputed per-row `Σ t ln t`.
pub fn kl_loss(logits: &Tensor, t: &Tensor, t_log_t: &Tensor) -> Result<Tensor> {
    let ls = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let cross = (t * ls)?.sum(D::Minus1)?;
    (t_log_t - cross)?.mean_all()
}

/// KL loss of `head` on a whole split (no training), as f64.
pub fn eval_loss(head: &CacheHead, x: &Tensor, t: &Tensor) -> Result<f64> {
    let t = t.to_dtype(DType::F32)?;
    let logits = head.forward(&x.to_dtype(DType::F32)?)?.detach();
    Ok(kl_loss(&logits, &t, &neg_entropy(&t)?)?.to_scalar::<f32>()? as f64)
}

fn check(x: &Tensor, t: &Tensor, head: &CacheHead, what: &str) -> Result<usize> {
    let n = x.dim(0)?;
    let (tn, tc) = t.dims2()?;
    if tn != n || tc != head.arch.classes {
        bail!(
            "{what}: {n} inputs but targets {tn}x{tc} (head has {} classes)",
            head.arch.classes
        );
    }
    Ok(n)
}

/// A new head of `arch`, initialised from `seeds.0` and trained (see [`train`]) with `cfg` under
/// the training seed `seeds.1`, on the device of the training inputs.
pub fn train_new(
    arch: &HeadArch,
    in_channels: usize,
    seeds: (u64, u64),
    (train_x, train_t): (&Tensor, &Tensor),
    (val_x, val_t): (&Tensor, &Tensor),
    cfg: &TrainConfig,
) -> Result<(CacheHead, TrainReport)> {
    train_new_cancellable(
        arch,
        in_channels,
        seeds,
        (train_x, train_t),
        (val_x, val_t),
        cfg,
        &Unchecked,
    )
}

/// [`train_new`], with `cancel` reached before every mini-batch (an `Err` there abandons the
/// training), so a background learner can pause or be stopped mid-round.
pub fn train_new_cancellable(
    arch: &HeadArch,
    in_channels: usize,
    seeds: (u64, u64),
    (train_x, train_t): (&Tensor, &Tensor),
    (val_x, val_t): (&Tensor, &Tensor),
    cfg: &TrainConfig,
    cancel: &dyn Checkpoint,
) -> Result<(CacheHead, TrainReport)> {
    let mut head = CacheHead::new(arch.clone(), in_channels, seeds.0, train_x.device())?;
    let cfg = TrainConfig {
        seed: seeds.1,
        ..cfg.clone()
    };
    let report = train_cancellable(&mut head, train_x, train_t, val_x, val_t, &cfg, cancel)?;
    Ok((head, report))
}

/// Train `head` in place (see the module doc). Targets are teacher distributions `[N, classes]`
/// whose rows sum to 1. Early stopping watches the val loss; with an empty val split it watches
/// the train loss instead (then nothing guards against overfitting: avoid). The best weights
/// are restored before returning.
pub fn train(
    head: &mut CacheHead,
    train_x: &Tensor,
    train_t: &Tensor,
    val_x: &Tensor,
    val_t: &Tensor,
    cfg: &TrainConfig,
) -> Result<TrainReport> {
    train_cancellable(head, train_x, train_t, val_x, val_t, cfg, &Unchecked)
}

/// [`train`], with `cancel` reached before every mini-batch (see [`train_new_cancellable`]); after
/// an `Err` there the head is left as it was mid-training.
pub fn train_cancellable(
    head: &mut CacheHead,
    train_x: &Tensor,
    train_t: &Tensor,
    val_x: &Tensor,
    val_t: &Tensor,
    cfg: &TrainConfig,
    cancel: &dyn Checkpoint,
) -> Result<TrainReport> {
    let n = check(train_x, train_t, head, "train split")?;
    let nv = check(val_x, val_t, head, "val split")?;
    if n == 0 || cfg.batch == 0 {
        bail!("training a cache head needs samples and a batch size > 0");
    }
    let dev: Device = head.vars()[0].device().clone();
    let to = |t: &Tensor| t.to_device(&dev)?.to_dtype(DType::F32);
    let (tx, tt, vx, vt) = (to(train_x)?, to(train_t)?, to(val_x)?, to(val_t)?);
    let t_ent = neg_entropy(&tt)?;
    let params = ParamsAdamW {
        lr: cfg.lr,
        weight_decay: cfg.weight_decay,
        ..Default::default()
    };
    let mut opt = AdamW::new(head.vars().to_vec(), params)?;
    let mut rng = SplitMix64::new(cfg.seed ^ 0x7261_696e_6865_6164);
    let mut order: Vec<u32> = (0..n as u32).collect();

    let watch = |h: &CacheHead| {
        if nv > 0 {
            eval_loss(h, &vx, &vt)
        } else {
            eval_loss(h, &tx, &tt)
        }
    };
    let initial = watch(head)?;
    let mut report = TrainReport {
        epochs_run: 0,
        best_epoch: 0,
        best_val_loss: initial,
        train_loss: eval_loss(head, &tx, &tt)?,
        initial_val_loss: initial,
        val_losses: Vec::new(),
    };
    let mut best = head.snapshot()?;
    let mut since_best = 0;
    for epoch in 1..=cfg.epochs {
        rng.shuffle(&mut order);
        let mut sum = 0f64;
        for chunk in order.chunks(cfg.batch) {
            cancel.reached()?;
            let idx = Tensor::new(chunk, &dev)?;
            let (x, t) = (tx.index_select(&idx, 0)?, tt.index_select(&idx, 0)?);
            let loss = kl_loss(&head.forward(&x)?, &t, &t_ent.index_select(&idx, 0)?)?;
            opt.backward_step(&loss)?;
            sum += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
        }
        let val = watch(head)?;
        report.epochs_run = epoch;
        report.val_losses.push(val);
        if !val.is_finite() {
            break; // diverged: keep the best finite weights
        }
        if val < report.best_val_loss {
            (report.best_epoch, report.best_val_loss) = (epoch, val);
            report.train_loss = sum / n as f64;
            best = head.snapshot()?;
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= cfg.patience {
                break;
            }
        }
    }
    head.restore(&best)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::head::{ConvDef, HeadArch};

    /// Class 1 iff channel 0's mean is positive; channels 1.. and the spatial pattern are noise.
    /// Teacher targets are soft (0.9 / 0.1), like a detector's presence score.
    pub(crate) fn separable(n: usize, c: usize, seed: u64) -> (Tensor, Tensor) {
        let mut rng = SplitMix64::new(seed);
        let (mut x, mut t) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let cls = rng.below(2);
            let shift = if cls == 1 { 0.8 } else { -0.8 };
            for ch in 0..c {
                for _ in 0..16 {
                    let noise = (rng.next_f64() * 2.0 - 1.0) as f32;
                    x.push(noise + if ch == 0 { shift } else { 0.0 });
                }
            }
            t.extend(if cls == 1 { [0.1f32, 0.9] } else { [0.9, 0.1] });
        }
        let x = Tensor::from_vec(x, (n, c, 4, 4), &Device::Cpu).unwrap();
        (x, Tensor::from_vec(t, (n, 2), &Device::Cpu).unwrap())
    }

    fn accuracy(head: &CacheHead, x: &Tensor, t: &Tensor) -> f64 {
        let p = head
            .forward(x)
            .unwrap()
            .argmax(1)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        let q = t.argmax(1).unwrap().to_vec1::<u32>().unwrap();
        p.iter().zip(&q).filter(|(a, b)| a == b).count() as f64 / p.len() as f64
    }

    fn arch() -> HeadArch {
        HeadArch {
            grid: 4,
            convs: vec![ConvDef {
                kernel: 3,
                stride: 2,
                out: 8,
            }],
            linears: vec![16],
            classes: 2,
        }
    }

    #[test]
    fn learns_a_separable_problem() {
        let (tx, tt) = separable(120, 6, 1);
        let (vx, vt) = separable(60, 6, 2);
        let mut head = CacheHead::new(arch(), 6, 3, &Device::Cpu).unwrap();
        let cfg = TrainConfig::default();
        let r = train(&mut head, &tx, &tt, &vx, &vt, &cfg).unwrap();
        assert!(r.best_val_loss < 0.5 * r.initial_val_loss, "{r:?}");
        assert!(r.best_epoch >= 1 && r.epochs_run <= cfg.epochs);
        // The restored weights are the best epoch's.
        let again = eval_loss(&head, &vx, &vt).unwrap();
        assert!((again - r.best_val_loss).abs() < 1e-6, "{again} vs {r:?}");
        assert!(accuracy(&head, &vx, &vt) > 0.9);
    }

    #[test]
    fn deterministic_for_a_seed() {
        let (tx, tt) = separable(64, 4, 5);
        let (vx, vt) = separable(32, 4, 6);
        let cfg = TrainConfig {
            epochs: 6,
            batch: 16,
            seed: 9,
            ..Default::default()
        };
        let run = |seed| {
            let mut h = CacheHead::new(arch(), 4, 1, &Device::Cpu).unwrap();
            let cfg = TrainConfig {
                seed,
                ..cfg.clone()
            };
            train(&mut h, &tx, &tt, &vx, &vt, &cfg).unwrap();
            let m = h.to_tensors("");
            let mut keys: Vec<_> = m.keys().cloned().collect();
            keys.sort();
            keys.iter()
                .flat_map(|k| m[k].flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .map(f32::to_bits)
                .collect::<Vec<u32>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }

    #[test]
    fn kl_loss_is_zero_at_the_teacher_and_handles_zeros() {
        let t = Tensor::new(&[[0f32, 1.0], [0.25, 0.75]], &Device::Cpu).unwrap();
        let logits = (t.clamp(1e-30, 1.0).unwrap().log().unwrap()).clone();
        let l: f32 = kl_loss(&logits, &t, &neg_entropy(&t).unwrap())
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(l.abs() < 1e-5, "{l}");
        let uniform = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        let l: f32 = kl_loss(&uniform, &t, &neg_entropy(&t).unwrap())
            .unwrap()
            .to_scalar()
            .unwrap();
        let want = 0.5 * ((2f64).ln() + (0.25 * (0.5f64).ln() + 0.75 * (1.5f64).ln()));
        assert!((l as f64 - want).abs() < 1e-5, "{l} vs {want}");
    }
}
