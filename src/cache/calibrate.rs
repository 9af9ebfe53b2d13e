//! Calibration end to end, with no manual step: collect the medial dataset from unlabeled
//! frames, search and train a head per candidate layer, fit temperatures, assign thresholds
//! from the tolerance, select the subset of exits, and describe the result.

use super::calib::{
    budget, choose_threshold, curve, fit_temperature, predict, CurvePoint, TemperatureFit,
    ThresholdChoice, T_BOUNDS,
};
use super::enabled::{pooled_rows, Exit};
use super::head::{regrid, search_space, CacheHead, HeadArch};
use super::search::search;
use super::select::{best_subset, k_score, ExitRecord};
use super::store::{MedialStore, Sample, Split};
use super::train::{train_new, TrainConfig};
use super::{ExitOn, Prediction};
use crate::detect::maskrcnn::MaskRcnn;
use crate::detect::ssdlite::{tiles, SsdLite, TileMode};
use crate::detect::{FlopsProfile, Staged, TeacherTarget};
use crate::frame::RgbFrame;
use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

/// A unit's region in its frame: `(x, y, w, h)`.
pub type Region = (usize, usize, usize, usize);

/// A detector the cache engine can calibrate: frames become batches of units (tiles or whole
/// frames), each with a teacher target.
pub trait CacheableDetector: Staged
where
    Self::Output: TeacherTarget,
{
    /// Model name as the CLI spells it.
    fn model_name(&self) -> &'static str;
    /// A frame's units as one batch, and each unit's region in the frame `(x, y, w, h)`.
    fn frame_units(&self, frame: &RgbFrame) -> Result<(Self::Input, Vec<Region>)>;
    /// Candidate stages (paper 3.1): stage outputs the rest of the network depends on alone,
    /// excluding those too close to the output to save much.
    fn candidate_stages(&self, profile: &FlopsProfile) -> Vec<usize>;
    /// Teacher classes, and the class meaning "pedestrian present".
    fn classes(&self) -> usize;
    fn positive(&self) -> usize;
    /// Channels of stage `i`'s output.
    fn stage_channels(&self, i: usize) -> usize;
}

/// Keep stages after which at least `min_rest` of the network's FLOPs remain, deepest `max` of
/// them (a head is cheap; a late exit saves little).
pub fn stages_worth_caching(profile: &FlopsProfile, min_rest: f64, max: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..profile.through_stage.len())
        .filter(|&i| profile.after(i) as f64 >= min_rest * profile.full as f64)
        .collect();
    if v.len() > max {
        v.drain(..v.len() - max);
    }
    v
}

impl CacheableDetector for SsdLite {
    fn model_name(&self) -> &'static str {
        "ssdlite-ped"
    }
    fn frame_units(&self, frame: &RgbFrame) -> Result<(Tensor, Vec<Region>)> {
        let plan = tiles::plan(frame.width, frame.height, TileMode::Auto);
        Ok((
            self.preprocess(frame, &plan)?,
            plan.iter().map(|t| (t.x, t.y, t.w, t.h)).collect(),
        ))
    }
    fn candidate_stages(&self, profile: &FlopsProfile) -> Vec<usize> {
        // SSDLite: a 40% cut needs most hits before expanded_conv_9 (DESIGN); keep exits where at
        // least half of the detector is still ahead.
        stages_worth_caching(profile, 0.5, 4)
    }
    fn classes(&self) -> usize {
        2
    }
    fn positive(&self) -> usize {
        1
    }
    fn stage_channels(&self, i: usize) -> usize {
        [16, 24, 32, 64, 96, 160, 320][i]
    }
}

impl CacheableDetector for MaskRcnn {
    fn model_name(&self) -> &'static str {
        "maskrcnn-r50-fpn"
    }
    fn frame_units(
        &self,
        frame: &RgbFrame,
    ) -> Result<(
        crate::detect::maskrcnn::Transformed,
        Vec<(usize, usize, usize, usize)>,
    )> {
        Ok((
            self.preprocess(&[frame])?,
            vec![(0, 0, frame.width, frame.height)],
        ))
    }
    fn candidate_stages(&self, _profile: &FlopsProfile) -> Vec<usize> {
        // layer1..layer3 (layer4 leaves only the FPN and heads).
        vec![0, 1, 2]
    }
    fn classes(&self) -> usize {
        self.arch.num_classes
    }
    fn positive(&self) -> usize {
        crate::detect::maskrcnn::PERSON as usize
    }
    fn stage_channels(&self, i: usize) -> usize {
        self.arch.layers[i].2
    }
}

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

/// One candidate layer's outcome, as written to `exits.ron`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitEntry {
    pub layer: String,
    pub stage: usize,
    pub channels: usize,
    /// None when the layer was dropped (its best head was near chance).
    pub head: Option<HeadArch>,
    pub dropped: Option<String>,
    pub temperature: f32,
    pub threshold: f32,
    /// X / 2^n for this exit's 1-based position n among kept exits.
    pub budget: f64,
    pub selected: bool,
    /// Head FLOPs (pooling included) and the detector FLOPs after this layer, per unit.
    pub c1: u64,
    pub c2: u64,
}

impl ExitEntry {
    /// The deployable exit this entry describes, with its trained `head`.
    pub fn to_exit(&self, head: CacheHead) -> Exit {
        Exit {
            stage: self.stage,
            layer: self.layer.clone(),
            head,
            temperature: self.temperature,
            theta: self.threshold,
            c1: self.c1,
        }
    }
}

/// `exits.ron`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitsFile {
    pub model: String,
    pub policy: ExitOn,
    pub tolerance: f64,
    pub classes: usize,
    pub positive: usize,
    /// FLOPs of the full detector per unit.
    pub full_flops: u64,
    pub exits: Vec<ExitEntry>,
}

/// Per-exit figures for `report.json`.
#[derive(Clone, Debug, Serialize)]
pub struct ExitReport {
    pub layer: String,
    pub kept: bool,
    pub dropped: Option<String>,
    pub head: Option<String>,
    pub search: Vec<SearchRow>,
    pub val_accuracy: Option<f64>,
    pub temperature: Option<TemperatureFit>,
    pub threshold: Option<ThresholdChoice>,
    pub budget: f64,
    pub selected: bool,
    pub c1: u64,
    pub c2: u64,
    /// Hit rate / cache accuracy on the test split, as deployed in the selected subset.
    pub test_hits: Option<usize>,
    pub test_cache_accuracy: Option<f64>,
    pub curve_val: Vec<CurvePoint>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SearchRow {
    pub head: String,
    pub val_accuracy: f64,
    pub balanced_accuracy: f64,
    pub val_loss: f64,
    pub prior_loss: f64,
    pub flops: u64,
    pub score: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CalibReport {
    pub model: String,
    pub frames: usize,
    pub units: usize,
    pub split_sizes: [usize; 3],
    pub validation_samples: usize,
    pub tolerance: f64,
    pub policy: ExitOn,
    pub exits: Vec<ExitReport>,
    pub selected: Vec<String>,
    pub k_score_val: f64,
    /// Test split, selected subset: mean FLOPs per unit cached vs full, and disagreements with
    /// the detector.
    pub test_samples: usize,
    pub test_flops_cut: f64,
    pub test_disagreements: usize,
}

/// The calibrated result: file contents, trained heads, report.
pub struct Calibration {
    pub exits_file: ExitsFile,
    pub heads: Vec<(String, CacheHead)>,
    pub report: CalibReport,
}

/// A progress bar on a terminal; on a pipe, only the final line.
pub fn progress(what: &str, i: usize, n: usize) {
    use std::io::{IsTerminal, Write};
    if !std::io::stderr().is_terminal() {
        if i == n {
            eprintln!("[{what:>9}] {i}/{n}");
        }
        return;
    }
    let width = 30;
    let done = (i * width).checked_div(n).unwrap_or(width);
    eprint!(
        "\r[{what:>9}] [{}{}] {i}/{n}",
        "#".repeat(done),
        " ".repeat(width - done)
    );
    if i == n {
        eprintln!();
    }
    let _ = std::io::stderr().flush();
}

/// Run the detector over frames and fill a medial store: per unit, each candidate layer's pooled
/// activation and the teacher target. `gt(frame_index, unit_region)` gives ground truth if known.
pub fn collect<D>(
    det: &D,
    frames: &mut dyn Iterator<Item = crate::Result<RgbFrame>>,
    n_frames: usize,
    candidates: &[usize],
    store: &mut MedialStore,
    gt: &dyn Fn(usize, Region) -> Option<bool>,
) -> crate::Result<usize>
where
    D: CacheableDetector,
    D::Output: TeacherTarget,
{
    let mut units = 0;
    for (fi, frame) in frames.enumerate() {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                eprintln!("\nskipping bad frame: {}", e.one_line());
                continue;
            }
        };
        let (input, regions) = det.frame_units(&frame)?;
        let mut st = det.start(&input)?;
        let mut feats: Vec<Vec<Vec<f32>>> = vec![Vec::new(); regions.len()];
        for stage in 0..det.stage_names().len() {
            st = det.run_stage(stage, st)?;
            if let Some(l) = candidates.iter().position(|&c| c == stage) {
                let act = det.activation(&st);
                let (_, _, h, w) = act.dims4()?;
                if store.layer_sizes.len() <= l {
                    store.layer_sizes.resize(l + 1, (0, 0));
                }
                store.layer_sizes[l] = (h, w);
                let rows: Vec<Vec<f32>> = pooled_rows(act)?.flatten_from(1)?.to_vec2()?;
                for (u, r) in rows.into_iter().enumerate() {
                    feats[u].push(r);
                }
            }
        }
        let outs = det.finish(st)?;
        for (u, (out, f)) in outs.iter().zip(feats).enumerate() {
            store.push(Sample {
                id: (fi * 8 + u) as u64,
                feats: f,
                target: out.target(),
                gt: gt(fi, regions[u]),
            });
            units += 1;
        }
        progress("collect", fi + 1, n_frames);
    }
    Ok(units)
}

/// Index of the largest value (the first on ties).
pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
        .0
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
    let dev = Device::Cpu;
    let (train_s, val_s, test_s) = (
        store.split(Split::Train),
        store.split(Split::Val),
        store.split(Split::Test),
    );
    let classes = det.classes();
    let positive = det.positive();
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
        let layer = det.stage_names()[stage].to_string();
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
            Some(search(
                &tx,
                &tt,
                &vx,
                &vt,
                &space,
                &search_cfg,
                cfg.flops_weight,
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
        let (head, _) = train_new(
            &best.arch,
            channels,
            (
                cfg.seed.wrapping_add(77 + l as u64),
                cfg.seed.wrapping_add(5000 + l as u64),
            ),
            (&regrid(&tx, g)?, &tt),
            (&regrid(&vx, g)?, &vt),
            &cfg.train,
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
            model: det.model_name().into(),
            policy: cfg.policy,
            tolerance: cfg.tolerance,
            classes,
            positive,
            full_flops: profile.full,
            exits: entries,
        },
        heads,
        report: CalibReport {
            model: det.model_name().into(),
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

impl Calibration {
    /// The selected exits, ready for [`super::enabled::CacheEnabled`].
    pub fn selected_exits(&self) -> Vec<Exit> {
        self.exits_file
            .exits
            .iter()
            .filter(|e| e.selected)
            .filter_map(|e| {
                let head = self.heads.iter().find(|(l, _)| *l == e.layer)?.1.clone();
                Some(e.to_exit(head))
            })
            .collect()
    }
}
