//! Calibration end to end from a filled store, with no manual step: search and train a head per
//! candidate layer, fit temperatures, assign thresholds from the tolerance, select the subset of
//! exits, and describe the result.

use super::collect::{argmax, progress};
use super::detector::CacheableDetector;
use super::exits::{CalibReport, Calibration, ExitEntry, ExitReport, ExitsFile, SearchRow};
use super::temperature::{fit_temperature, predict, T_BOUNDS};
use super::threshold::{budget, choose_threshold, curve};
use crate::cache::head::{regrid, search_space, CacheHead};
use crate::cache::search::search_with;
use crate::cache::select::{best_subset, k_score, ExitRecord};
use crate::cache::store::{MedialStore, Sample, Split};
use crate::cache::train::{train_new_cancellable, Checkpoint, TrainConfig, Unchecked};
use crate::cache::{ExitOn, Prediction};
use crate::detect::{FlopsProfile, TeacherTarget};
use candle_core::{Device, Result};
use serde::{Deserialize, Serialize};

/// Settings of a calibration run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CalibConfig {
    /// Accuracy-drop budget X (fraction, e.g. 0.02).
    pub tolerance: f64,
    pub policy: ExitOn,
    pub seed: u64,
    pub store_capacity: usize,
    /// Brief training per search candidate, then the winner's full training.
    pub search: TrainConfig,
    pub train: TrainConfig,
    /// Weight of normalised FLOPs against validation accuracy in the search score.
    pub flops_weight: f64,
}

impl Default for CalibConfig {
    fn default() -> Self {
        Self {
            tolerance: 0.02,
            policy: ExitOn::Pedestrian,
            seed: 0,
            store_capacity: 4000,
            search: TrainConfig {
                epochs: 25,
                patience: 6,
                ..TrainConfig::default()
            },
            train: TrainConfig {
                epochs: 80,
                patience: 10,
                ..TrainConfig::default()
            },
            flops_weight: 0.05,
        }
    }
}

/// Logits of a head on store samples of layer `l`.
fn logits(
    head: &CacheHead,
    store: &MedialStore,
    l: usize,
    samples: &[&Sample],
    dev: &Device,
) -> Result<Vec<Vec<f32>>> {
    if samples.is_empty() {
        return Ok(Vec::new());
    }
    let (x4, _) = store.tensors(l, samples, dev)?;
    head.forward(&regrid(&x4, head.arch.grid)?)?.to_vec2()
}

/// What calibration needs to know of a detector, owned (a learner on another thread keeps a
/// copy instead of the detector).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFacts {
    /// Model name as the CLI spells it.
    pub model: String,
    /// The detector's stage names, in network order.
    pub stage_names: Vec<String>,
    /// Teacher classes, and the class meaning "pedestrian present".
    pub classes: usize,
    pub positive: usize,
}

impl ModelFacts {
    /// The facts of `det`.
    pub fn of<D>(det: &D) -> Self
    where
        D: CacheableDetector,
        D::Output: TeacherTarget,
    {
        Self {
            model: det.model_name().into(),
            stage_names: det.stage_names().iter().map(|s| s.to_string()).collect(),
            classes: det.classes(),
            positive: det.positive(),
        }
    }
}

/// Calibrate from a filled store. `stages`/`names` are the candidate layers (network order).
pub fn calibrate_store<D>(
    det: &D,
    store: &MedialStore,
    stages: &[usize],
    profile: &FlopsProfile,
    cfg: &CalibConfig,
) -> Result<Calibration>
where
    D: CacheableDetector,
    D::Output: TeacherTarget,
{
    calibrate_with(
        &ModelFacts::of(det),
        store,
        stages,
        profile,
        cfg,
        &Unchecked,
    )
}

/// [`calibrate_store`] from the detector's facts, with `checkpoint` reached before every
/// mini-batch of every head's training (a background learner pauses or gives up there).
pub fn calibrate_with(
    det: &ModelFacts,
    store: &MedialStore,
    stages: &[usize],
    profile: &FlopsProfile,
    cfg: &CalibConfig,
    checkpoint: &dyn Checkpoint,
) -> Result<Calibration> {
    let dev = Device::Cpu;
    let (train_s, val_s, test_s) = (
        store.split(Split::Train),
        store.split(Split::Val),
        store.split(Split::Test),
    );
    let (classes, positive) = (det.classes, det.positive);
    let teacher = |s: &[&Sample]| s.iter().map(|x| argmax(&x.target)).collect::<Vec<usize>>();
    let (val_teacher, test_teacher) = (teacher(&val_s), teacher(&test_s));
    let val_gt: Option<Vec<bool>> = val_s.iter().map(|s| s.gt).collect();
    let space = search_space(classes);
    let mut entries = Vec::new();
    let mut reports = Vec::new();
    let mut heads = Vec::new();
    let mut records = Vec::new(); // (entry index, val preds, test preds)
    for (l, &stage) in stages.iter().enumerate() {
        progress("search", l, stages.len());
        let layer = det
            .stage_names
            .get(stage)
            .cloned()
            .unwrap_or_else(|| format!("stage {stage}"));
        let channels = store.layers[l].1;
        let (tx, tt) = store.tensors(l, &train_s, &dev)?;
        let (vx, vt) = store.tensors(l, &val_s, &dev)?;
        let search_cfg = TrainConfig {
            seed: cfg.seed.wrapping_add(1000 * l as u64),
            ..cfg.search.clone()
        };
        let found = if train_s.is_empty() || val_s.is_empty() {
            None
        } else {
            Some(search_with(
                (&tx, &tt),
                (&vx, &vt),
                &space,
                &search_cfg,
                cfg.flops_weight,
                checkpoint,
            )?)
        };
        let rows: Vec<SearchRow> = found
            .iter()
            .flat_map(|r| r.tried.iter())
            .map(|c| SearchRow {
                head: c.arch.describe(),
                val_accuracy: c.val_accuracy,
                balanced_accuracy: c.balanced_accuracy,
                val_loss: c.val_loss,
                prior_loss: c.prior_loss,
                flops: c.flops,
                score: c.score,
            })
            .collect();
        let c2 = profile.after(stage);
        let winner = found
            .as_ref()
            .and_then(|r| r.best.as_ref().map(|(_, c)| c.clone()));
        let Some(best) = winner else {
            let why = found
                .and_then(|r| r.dropped_reason)
                .unwrap_or_else(|| "too few samples".into());
            entries.push(ExitEntry {
                layer: layer.clone(),
                stage,
                channels,
                head: None,
                dropped: Some(why.clone()),
                temperature: 1.0,
                threshold: f32::INFINITY,
                budget: 0.0,
                selected: false,
                c1: 0,
                c2,
            });
            reports.push(ExitReport {
                layer,
                kept: false,
                dropped: Some(why),
                head: None,
                search: rows,
                val_accuracy: None,
                temperature: None,
                threshold: None,
                budget: 0.0,
                selected: false,
                c1: 0,
                c2,
                test_hits: None,
                test_cache_accuracy: None,
                curve_val: Vec::new(),
            });
            continue;
        };
        // Retrain the winning architecture longer, from a fresh deterministic init.
        let g = best.arch.grid;
        let (head, _) = train_new_cancellable(
            &best.arch,
            channels,
            (
                cfg.seed.wrapping_add(77 + l as u64),
                cfg.seed.wrapping_add(5000 + l as u64),
            ),
            (&regrid(&tx, g)?, &tt),
            (&regrid(&vx, g)?, &vt),
            &cfg.train,
            checkpoint,
        )?;
        let val_logits = logits(&head, store, l, &val_s, &dev)?;
        let fit = fit_temperature(&val_logits, &val_teacher, T_BOUNDS);
        let val_preds: Vec<Prediction> = val_logits.iter().map(|z| predict(z, fit.t)).collect();
        let test_preds: Vec<Prediction> = logits(&head, store, l, &test_s, &dev)?
            .iter()
            .map(|z| predict(z, fit.t))
            .collect();
        let val_acc = val_preds
            .iter()
            .zip(&val_teacher)
            .filter(|(p, t)| p.class == **t)
            .count() as f64
            / val_preds.len().max(1) as f64;
        // Pooling reads every activation value once; then the head itself.
        let (h, w) = store.layer_sizes.get(l).copied().unwrap_or((0, 0));
        let c1 = (channels * h * w) as u64 + best.arch.flops(channels);
        entries.push(ExitEntry {
            layer: layer.clone(),
            stage,
            channels,
            head: Some(best.arch.clone()),
            dropped: None,
            temperature: fit.t,
            threshold: f32::INFINITY,
            budget: 0.0,
            selected: false,
            c1,
            c2,
        });
        reports.push(ExitReport {
            layer: layer.clone(),
            kept: true,
            dropped: None,
            head: Some(best.arch.describe()),
            search: rows,
            val_accuracy: Some(val_acc),
            temperature: Some(fit),
            threshold: None,
            budget: 0.0,
            selected: false,
            c1,
            c2,
            test_hits: None,
            test_cache_accuracy: None,
            curve_val: curve(
                &val_preds,
                &val_teacher,
                val_gt.as_deref(),
                cfg.policy,
                positive,
                51,
            ),
        });
        heads.push((layer, head));
        records.push((entries.len() - 1, val_preds, test_preds));
    }
    progress("search", stages.len(), stages.len());
    // Thresholds: kept exit n (1-based, shallow first) gets X / 2^n.
    for (n, (ei, val_preds, _)) in records.iter().enumerate() {
        let b = budget(cfg.tolerance, n + 1);
        let choice = choose_threshold(val_preds, &val_teacher, b, cfg.policy, positive);
        entries[*ei].threshold = choice.theta;
        entries[*ei].budget = b;
        reports[*ei].budget = b;
        reports[*ei].threshold = Some(choice);
    }
    // Subset selection on validation predictions.
    let val_records: Vec<ExitRecord> = records
        .iter()
        .map(|(ei, p, _)| ExitRecord {
            preds: p.clone(),
            theta: entries[*ei].threshold,
            c1: entries[*ei].c1,
            c2: entries[*ei].c2,
        })
        .collect();
    let (subset, score) = best_subset(&val_records, cfg.policy, positive);
    for &k in &subset {
        entries[records[k].0].selected = true;
        reports[records[k].0].selected = true;
    }
    // The selected subset on the test split.
    let test_records: Vec<ExitRecord> = records
        .iter()
        .map(|(ei, _, p)| ExitRecord {
            preds: p.clone(),
            theta: entries[*ei].threshold,
            c1: entries[*ei].c1,
            c2: entries[*ei].c2,
        })
        .collect();
    let (mut cut, mut disagree) = (0.0, 0usize);
    if !test_s.is_empty() {
        let ks = k_score(&test_records, &subset, cfg.policy, positive);
        cut = ks.k as f64 / (profile.full as f64 * test_s.len() as f64);
        for (j, &k) in subset.iter().enumerate() {
            let (ei, _, preds) = &records[k];
            // Samples this exit actually answers in the subset: not hit by an earlier one.
            let mut hits = 0;
            let mut correct = 0;
            for (si, p) in preds.iter().enumerate() {
                let earlier = subset[..j].iter().any(|&q| {
                    records[q].2[si].hits(entries[records[q].0].threshold, cfg.policy, positive)
                });
                if !earlier && p.hits(entries[*ei].threshold, cfg.policy, positive) {
                    hits += 1;
                    correct += usize::from(p.class == test_teacher[si]);
                    disagree +=
                        usize::from((p.class == positive) != (test_teacher[si] == positive));
                }
            }
            reports[*ei].test_hits = Some(hits);
            reports[*ei].test_cache_accuracy = Some(correct as f64 / hits.max(1) as f64);
        }
    }
    let selected = subset
        .iter()
        .map(|&k| entries[records[k].0].layer.clone())
        .collect();
    Ok(Calibration {
        exits_file: ExitsFile {
            model: det.model.clone(),
            policy: cfg.policy,
            tolerance: cfg.tolerance,
            classes,
            positive,
            full_flops: profile.full,
            exits: entries,
            heads_sha256: None,
            source: None,
        },
        heads,
        report: CalibReport {
            model: det.model.clone(),
            frames: 0,
            units: store.len(),
            split_sizes: [train_s.len(), val_s.len(), test_s.len()],
            validation_samples: val_s.len(),
            tolerance: cfg.tolerance,
            policy: cfg.policy,
            exits: reports,
            selected,
            k_score_val: score.k as f64,
            test_samples: test_s.len(),
            test_flops_cut: cut,
            test_disagreements: disagree,
        },
    })
}
