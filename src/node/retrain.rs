//! The retrainer (paper 3.7): a background thread that keeps the node's cache exits fresh on the
//! drive it is on, and hot-swaps them between frames.
//!
//! - Perception offers it every unit the full detector labelled with a confident teacher target
//!   (the largest class probability at least `min_teacher_confidence`), with the unit's input at
//!   each exit (the activation pooled to the store's grid, as the heads see it). Offering never
//!   blocks perception: when the thread is behind, the sample is dropped and counted.
//! - The samples go into a bounded medial store (reservoir, split train/val/test by id). When the
//!   store holds at least `min_samples` and at least `fresh_fraction` of it is new since the last
//!   round, a round runs: each exit's head (same architecture) is trained afresh by distillation
//!   on the train split with early stopping on val, its temperature refitted on val; the
//!   calibrated threshold is kept (it is a confidence level, and the refitted temperature keeps
//!   confidences calibrated).
//! - The candidate set replaces the live one only if it is better on the held-out test split,
//!   judged as the calibration does (paper eq. 3, at set level) with the calibration's tolerance
//!   X: while the live set's cache error rate (its answers that differ from the teacher's, over
//!   the held-out units) is within X, a candidate must stay within X and hit more units; once the
//!   live set is over X (the drive changed), a candidate with a lower error rate wins. The swap is
//!   one `Arc` store under a write lock; perception loads the `Arc` once per frame, so a frame
//!   never sees two sets.
//!
//! Under the `exit` policy only misses reach the full detector, so the store sees misses only;
//! `alert_then_continue` also labels hits when the deadline allows (the audit DESIGN asks for).
//!
//! Lifecycle: [`Retrainer::spawn`], [`Retrainer::offer`] per labelled unit, [`Retrainer::check`]
//! for a failure (a panic in a round ends the node's run as the `retrainer` stage's failure),
//! and [`Retrainer::stop`]: it lets the thread finish what it holds, unless the given stop flag is
//! (or becomes) set; then the round in progress is cancelled between two mini-batches.

use crate::cache::calibration::{argmax, fit_temperature, T_BOUNDS};
use crate::cache::enabled::Exit;
use crate::cache::head::regrid;
use crate::cache::store::{MedialStore, Sample, Split};
use crate::cache::train::{train_new_cancellable, TrainConfig};
use crate::cache::ExitOn;
use crate::node::clock::{StopFlag, POLL};
pub use crate::node::live::{LiveExits, LiveSet};
use crate::node::supervise::FailureSlot;
use candle_core::{Device, Tensor};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use serde::Serialize;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
/// How the retrainer learns and when it retrains.
pub struct RetrainConfig {
    /// Medial store bound (units).
    pub store_capacity: usize,
    /// No round before the store holds this many units.
    pub min_samples: usize,
    /// Share of the store new since the last round that triggers one (paper: 20%).
    pub fresh_fraction: f64,
    /// Only units whose teacher is at least this sure of its class are learned from.
    pub min_teacher_confidence: f32,
    /// Samples waiting for the thread (beyond it they are dropped, perception never waits).
    pub queue: usize,
    /// Accuracy-drop budget X of the calibration (`exits.ron`'s `tolerance`).
    pub tolerance: f64,
    /// Training of each candidate head.
    pub train: TrainConfig,
    /// Seed of the store's split and the heads' initialisation.
    pub seed: u64,
}

impl Default for RetrainConfig {
    fn default() -> Self {
        Self {
            store_capacity: 1000,
            min_samples: 60,
            fresh_fraction: 0.2,
            min_teacher_confidence: 0.9,
            queue: 256,
            tolerance: 0.02,
            train: TrainConfig {
                epochs: 80,
                patience: 10,
                ..TrainConfig::default()
            },
            seed: 0,
        }
    }
}

/// One round on the held-out split: errors and hits of the live and the candidate set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoundReport {
    /// Units in the store.
    pub store: usize,
    /// Held-out (test split) units the sets were judged on.
    pub held_out: usize,
    /// The live set's answers that differ from the teacher's.
    pub live_errors: usize,
    /// Units the live set answered.
    pub live_hits: usize,
    /// The candidate set's answers that differ from the teacher's.
    pub candidate_errors: usize,
    /// Units the candidate set answered.
    pub candidate_hits: usize,
    /// Whether the candidate replaced the live set.
    pub swapped: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
/// What the retrainer did over a run.
pub struct RetrainStats {
    /// Units offered with a confident teacher and taken by the thread.
    pub samples: usize,
    /// Units offered whose teacher was not confident enough.
    pub unconfident: usize,
    /// Units dropped because the thread was behind.
    pub dropped: usize,
    /// Rounds run (heads retrained).
    pub rounds: usize,
    /// Rounds whose candidate replaced the live exits.
    pub swaps: usize,
    /// The last round's judgement.
    pub last_round: Option<RoundReport>,
    /// A round that failed (the live exits stay), as one line.
    pub error: Option<String>,
}

/// Handle on the retrainer thread.
pub struct Retrainer {
    tx: Option<Sender<Sample>>,
    /// Disconnects when the thread ends.
    done: Receiver<()>,
    shared: Arc<Shared>,
    min_confidence: f32,
    unconfident: usize,
    dropped: usize,
}

/// What the thread shares with its handle.
#[derive(Default)]
struct Shared {
    stats: Mutex<RetrainStats>,
    /// A panic in the thread, as one line.
    failure: FailureSlot,
    cancel: AtomicBool,
}

impl Retrainer {
    /// Start the thread for `live`'s exits (`policy`/`positive` as calibrated).
    pub fn spawn(
        live: Arc<LiveExits>,
        policy: ExitOn,
        positive: usize,
        cfg: RetrainConfig,
    ) -> crate::Result<Self> {
        let (tx, rx) = bounded::<Sample>(cfg.queue.max(1));
        let (done_tx, done) = bounded::<()>(0);
        let min_confidence = cfg.min_teacher_confidence;
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        std::thread::Builder::new()
            .name("retrainer".into())
            .spawn(move || {
                let _done = done_tx;
                let r = catch_unwind(AssertUnwindSafe(|| {
                    run(rx, &live, policy, positive, &cfg, &sh)
                }));
                if let Err(p) = r {
                    sh.failure.panicked("panicked", &*p);
                }
            })
            .map_err(|e| crate::err!("starting the retrainer thread: {e}"))?;
        Ok(Self {
            tx: Some(tx),
            done,
            shared,
            min_confidence,
            unconfident: 0,
            dropped: 0,
        })
    }

    /// Offer a unit the full detector labelled: `feats[e]` its pooled input at exit `e`,
    /// `target` the teacher's distribution. Never blocks; returns whether it was taken.
    pub fn offer(&mut self, id: u64, feats: Vec<Vec<f32>>, target: Vec<f32>) -> bool {
        if target.iter().copied().fold(0f32, f32::max) < self.min_confidence {
            self.unconfident += 1;
            return false;
        }
        let Some(tx) = &self.tx else { return false };
        let sample = Sample {
            id,
            feats,
            target,
            gt: None,
        };
        match tx.try_send(sample) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped += 1;
                false
            }
        }
    }

    /// `Err` ([`crate::Error::Stage`], stage `retrainer`) once the thread has failed.
    pub fn check(&self) -> crate::Result<()> {
        self.shared.failure.check("retrainer")
    }

    /// Close the queue and let the thread finish what it holds; when `cancel` is or becomes set,
    /// cancel its round instead and wait at most `grace` (then the thread is left behind).
    /// Returns what it did, or its failure.
    pub fn stop(mut self, cancel: &StopFlag, grace: Duration) -> crate::Result<RetrainStats> {
        self.tx = None;
        let mut cancelled_at: Option<Instant> = None;
        loop {
            match self.done.recv_timeout(POLL) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    if cancel.is_stopped() {
                        self.shared.cancel.store(true, Ordering::SeqCst);
                        let t = *cancelled_at.get_or_insert_with(Instant::now);
                        if t.elapsed() >= grace {
                            log::warn!("the retrainer did not stop within {grace:?}: left behind");
                            break;
                        }
                    }
                }
            }
        }
        self.check()?;
        let mut stats = self
            .shared
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        stats.unconfident = self.unconfident;
        stats.dropped = self.dropped;
        Ok(stats)
    }

    /// [`Self::stop`] without cancelling: wait until the thread has finished what it holds.
    pub fn finish(self) -> crate::Result<RetrainStats> {
        self.stop(&StopFlag::new(), Duration::ZERO)
    }
}

fn run(
    rx: Receiver<Sample>,
    live: &LiveExits,
    policy: ExitOn,
    positive: usize,
    cfg: &RetrainConfig,
    shared: &Shared,
) {
    let layers: Vec<(String, usize)> = live
        .load()
        .exits
        .iter()
        .map(|e| (e.layer.clone(), e.head.in_channels))
        .collect();
    let mut store = MedialStore::new(cfg.store_capacity, layers, cfg.seed);
    let stats = || shared.stats.lock().unwrap_or_else(|e| e.into_inner());
    let cancelled = || shared.cancel.load(Ordering::SeqCst);
    loop {
        let sample = match rx.recv_timeout(POLL) {
            Ok(s) => s,
            Err(RecvTimeoutError::Timeout) if !cancelled() => continue,
            Err(_) => return,
        };
        if cancelled() {
            return;
        }
        stats().samples += 1;
        store.push(sample);
        if store.len() < cfg.min_samples || store.fresh_fraction() < cfg.fresh_fraction {
            continue;
        }
        store.mark_trained();
        let n = stats().rounds as u64;
        log::debug!("retrainer: round {} started ({} units)", n + 1, store.len());
        let r = round(&store, live, policy, positive, cfg, n, &shared.cancel);
        if cancelled() {
            return; // the round was cut short: it neither counts nor failed
        }
        let mut st = stats();
        match r {
            Ok(Some(r)) => {
                st.rounds += 1;
                st.swaps += usize::from(r.swapped);
                st.last_round = Some(r);
            }
            Ok(None) => {}
            Err(e) => st.error = Some(format!("retraining round: {e}")),
        }
    }
}

/// Train a candidate set on the store and swap it in if it is not worse on held-out samples.
/// `None` when a split is empty (too few samples to train, stop early and judge).
fn round(
    store: &MedialStore,
    live: &LiveExits,
    policy: ExitOn,
    positive: usize,
    cfg: &RetrainConfig,
    round: u64,
    cancel: &AtomicBool,
) -> candle_core::Result<Option<RoundReport>> {
    let dev = Device::Cpu;
    let (train_s, val_s, test_s) = (
        store.split(Split::Train),
        store.split(Split::Val),
        store.split(Split::Test),
    );
    if train_s.is_empty() || val_s.is_empty() || test_s.is_empty() {
        return Ok(None);
    }
    let set = live.load();
    let current = &set.exits;
    let val_teacher: Vec<usize> = val_s.iter().map(|s| argmax(&s.target)).collect();
    let mut candidate = Vec::with_capacity(current.len());
    for (l, exit) in current.iter().enumerate() {
        let (tx, tt) = store.tensors(l, &train_s, &dev)?;
        let (vx, vt) = store.tensors(l, &val_s, &dev)?;
        let g = exit.head.arch.grid;
        let seed = cfg
            .seed
            .wrapping_add(round.wrapping_mul(1000))
            .wrapping_add(l as u64);
        let (head, _) = train_new_cancellable(
            &exit.head.arch,
            exit.head.in_channels,
            (seed, seed),
            (&regrid(&tx, g)?, &tt),
            (&regrid(&vx, g)?, &vt),
            &cfg.train,
            cancel,
        )?;
        let val_logits: Vec<Vec<f32>> = head.forward(&regrid(&vx, g)?)?.to_vec2()?;
        let t = fit_temperature(&val_logits, &val_teacher, T_BOUNDS).t;
        candidate.push(Exit {
            head,
            temperature: t,
            ..exit.clone()
        });
    }
    let (live_errors, live_hits) = cascade(current, store, &test_s, policy, positive, &dev)?;
    let (candidate_errors, candidate_hits) =
        cascade(&candidate, store, &test_s, policy, positive, &dev)?;
    let swapped = adopt(
        (live_errors, live_hits),
        (candidate_errors, candidate_hits),
        test_s.len(),
        cfg.tolerance,
    );
    if swapped {
        // Heads train on the CPU; the live set stays where the detector runs.
        let candidate = candidate
            .into_iter()
            .zip(current.iter())
            .map(|(c, l)| {
                Ok(Exit {
                    head: c.head.to_device(l.head.device())?,
                    ..c
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        // A refit keeps the version it refitted (retraining writes none).
        live.replace(LiveSet {
            version: set.version,
            exits: candidate,
        });
    }
    Ok(Some(RoundReport {
        store: store.len(),
        held_out: test_s.len(),
        live_errors,
        live_hits,
        candidate_errors,
        candidate_hits,
        swapped,
    }))
}

/// Whether a candidate set `(errors, hits)` on `n` held-out units replaces the live one, with
/// accuracy-drop budget `tolerance` (see the module doc).
pub fn adopt(live: (usize, usize), candidate: (usize, usize), n: usize, tolerance: f64) -> bool {
    let rate = |errors: usize| errors as f64 / n.max(1) as f64;
    if rate(live.0) <= tolerance {
        rate(candidate.0) <= tolerance && candidate.1 > live.1
    } else {
        candidate.0 < live.0
    }
}

/// The exits in order on stored samples, as the cache-enabled forward runs them: the first exit
/// that hits answers; exit `l` reads store layer `l`. Returns (answers that differ from the
/// teacher's class, hits).
pub fn cascade(
    exits: &[Exit],
    store: &MedialStore,
    samples: &[&Sample],
    policy: ExitOn,
    positive: usize,
    dev: &Device,
) -> candle_core::Result<(usize, usize)> {
    cascade_on(exits, store, samples, (policy, positive), dev, |l, _| Ok(l))
}

/// [`cascade`] with the store layer of each exit given by `layer_of(index, exit)`.
pub fn cascade_on(
    exits: &[Exit],
    store: &MedialStore,
    samples: &[&Sample],
    (policy, positive): (ExitOn, usize),
    dev: &Device,
    layer_of: impl Fn(usize, &Exit) -> candle_core::Result<usize>,
) -> candle_core::Result<(usize, usize)> {
    let mut answered = vec![false; samples.len()];
    let (mut errors, mut hits) = (0, 0);
    for (i, exit) in exits.iter().enumerate() {
        let (x4, _): (Tensor, Tensor) = store.tensors(layer_of(i, exit)?, samples, dev)?;
        for (i, p) in exit.predict_pooled(&x4)?.iter().enumerate() {
            if answered[i] || !p.hits(exit.theta, policy, positive) {
                continue;
            }
            answered[i] = true;
            hits += 1;
            errors += usize::from(p.class != argmax(&samples[i].target));
        }
    }
    Ok((errors, hits))
}

#[cfg(test)]
mod tests;
