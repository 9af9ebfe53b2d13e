//! The sim harness: replay recorded sequences through the node (`crate::node`) with a detector
//! and its cache exits, then summarize the run as a report.

use crate::cache::calibration::{CacheableDetector, ExitsFile};
use crate::cache::enabled::{CacheEnabled, Exit, Resolution};
use crate::cli::demo::quantile;
use crate::detect::TeacherTarget;
use crate::frame::RgbFrame;
use crate::node::config::NodeConfig;
use crate::node::pipeline::Frame;
use crate::node::retrain::{LiveExits, RetrainConfig, RetrainStats, Retrainer};
use crate::node::{
    run_node, Alert, HarnessPlanner, HitPolicy, InputDefect, NodeSettings, SourceItem,
};
use crate::sim::groundtruth::{index_ground_truth, FrameTruth};
use crate::sim::metrics::Confusion;
use crate::sim::source::{read_frames, select_frames, FrameRef, Selection};
use candle_core::Tensor;
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Full-detector output in frame pixels.
pub trait FrameDetections {
    /// `(box [x1, y1, x2, y2], score, label)` at or above `score_thresh`, for a unit covering
    /// `region` of the frame.
    fn frame_boxes(
        &self,
        region: (usize, usize, usize, usize),
        score_thresh: f32,
    ) -> Vec<([f32; 4], f32, u32)>;
    /// The label meaning "pedestrian".
    fn pedestrian_label(&self) -> u32;
}

impl FrameDetections for crate::detect::ssdlite::TileDetections {
    fn frame_boxes(
        &self,
        (x0, y0, w, h): (usize, usize, usize, usize),
        score_thresh: f32,
    ) -> Vec<([f32; 4], f32, u32)> {
        let (x0, y0, w, h) = (x0 as f32, y0 as f32, w as f32, h as f32);
        self.boxes
            .iter()
            .zip(&self.scores)
            .filter(|(_, &s)| s >= score_thresh)
            .map(|(b, &s)| {
                // [ymin, xmin, ymax, xmax] normalised in the tile.
                (
                    [x0 + b[1] * w, y0 + b[0] * h, x0 + b[3] * w, y0 + b[2] * h],
                    s,
                    1,
                )
            })
            .collect()
    }
    fn pedestrian_label(&self) -> u32 {
        1
    }
}

impl FrameDetections for crate::detect::maskrcnn::RcnnOutput {
    fn frame_boxes(
        &self,
        _region: (usize, usize, usize, usize),
        score_thresh: f32,
    ) -> Vec<([f32; 4], f32, u32)> {
        self.detections
            .iter()
            .filter(|d| d.score >= score_thresh)
            .map(|d| (d.bbox, d.score, d.label))
            .collect()
    }
    fn pedestrian_label(&self) -> u32 {
        1
    }
}

/// What perception did with one frame.
#[derive(Clone, Debug, Default)]
pub struct FrameOutcome {
    pub width: usize,
    pub height: usize,
    pub units: usize,
    pub flops: u64,
    /// Full-detector FLOPs for the same frame (what a node without exits spends).
    pub full_flops: u64,
    /// Unit hits per exit.
    pub hits: Vec<usize>,
    /// The cache-enabled pass says "pedestrian".
    pub cached_pedestrian: bool,
    /// The full detector's answer, when it ran on every unit of the frame.
    pub full_pedestrian: Option<bool>,
    /// A hit resolved the frame but the deadline left no time for full detection.
    pub continue_skipped: bool,
    /// For each unit hit that the full detector also judged: (exit, same pedestrian answer).
    pub hit_agree: Vec<(usize, bool)>,
}

impl FrameOutcome {
    /// The node's answer: any pedestrian alert for the frame.
    pub fn pedestrian(&self) -> bool {
        self.cached_pedestrian || self.full_pedestrian == Some(true)
    }
}

/// Frames of the configured sources, after the sequence selection and the limit.
pub fn config_frames(cfg: &NodeConfig) -> crate::Result<Vec<FrameRef>> {
    let sel = Selection {
        part: None,
        seq_frames: cfg.seq_frames,
        only_seq: cfg.seq.clone(),
        not_seq: cfg.not_seq.clone(),
    };
    let mut frames = select_frames(&cfg.sources, &sel)?;
    crate::ensure!(!frames.is_empty(), "no frames in {:?}", cfg.sources);
    if cfg.limit > 0 {
        frames.truncate(cfg.limit);
    }
    Ok(frames)
}

/// Decode frames in order; a frame that does not decode, or whose size differs from the
/// sequence's (its first good frame), is a bad frame with its path and cause. `truth[i]`, when
/// given, is frame i's ground truth: a defective label map travels with its (good) frame as an
/// [`InputDefect`].
pub fn frame_source<'a>(
    frames: &'a [FrameRef],
    truth: &'a [FrameTruth],
) -> impl Iterator<Item = SourceItem<RgbFrame>> + 'a {
    let mut size: Option<(usize, usize)> = None;
    read_frames(frames).enumerate().map(move |(i, (fref, r))| {
        let path = fref.name();
        match r {
            Err(e) => {
                let cause = e.one_line();
                // The decoder's message starts with the path; the alert carries it apart.
                let cause = cause
                    .strip_prefix(&format!("{path}: "))
                    .map(str::to_string)
                    .unwrap_or(cause);
                SourceItem::Bad { path, cause }
            }
            Ok(f) => match size {
                Some((w, h)) if (w, h) != (f.width, f.height) => SourceItem::Bad {
                    path,
                    cause: format!("frame is {}x{}, the sequence is {w}x{h}", f.width, f.height),
                },
                _ => {
                    size = Some((f.width, f.height));
                    let defects = match truth.get(i) {
                        Some(FrameTruth::Defect { label_map, cause }) => vec![InputDefect {
                            path: label_map.display().to_string(),
                            cause: cause.clone(),
                        }],
                        _ => Vec::new(),
                    };
                    SourceItem::Frame {
                        path,
                        payload: f,
                        defects,
                    }
                }
            },
        }
    })
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct Percentiles {
    pub count: usize,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        let count = v.len();
        if count == 0 {
            return Self::default();
        }
        Self {
            count,
            mean: v.iter().sum::<f64>() / count as f64,
            p50: quantile(&v, 0.5),
            p95: quantile(&v, 0.95),
            p99: quantile(&v, 0.99),
            max: v[count - 1],
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ExitHits {
    pub layer: String,
    /// Units (tiles) answered at this exit.
    pub hits: usize,
    pub hit_rate: f64,
    /// Share of its hits whose pedestrian answer equals the full detector's on that unit, over
    /// the hits the full detector also ran on (`alert_then_continue`); `None` when none did.
    pub accuracy_vs_detector: Option<f64>,
    pub judged_hits: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct StageLatency {
    /// Capture -> perception picks the frame up.
    pub queue_ms: Percentiles,
    pub perception_ms: Percentiles,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReplayPresence {
    /// The cache-enabled answer vs the full detector, on frames where both ran
    /// (all frames under `alert_then_continue` when the deadline allows; misses under `exit`).
    pub vs_detector: Option<Confusion>,
    /// The node's answer (any pedestrian alert) vs ground truth, on frames with label maps.
    pub vs_ground_truth: Option<Confusion>,
    /// The full detector vs ground truth, on frames where it ran and labels exist.
    pub full_vs_ground_truth: Option<Confusion>,
    pub frames_with_ground_truth: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    pub model: String,
    /// Weights file, or the stand-in weights (latency only).
    pub weights: String,
    /// Where the detector and the cache heads ran (`cpu`, `cuda:N`).
    pub device: String,
    /// Calibration used (the split its exits were fitted on is in its report.json).
    pub calib: Option<String>,
    pub sources: Vec<String>,
    pub policy: HitPolicy,
    pub fps: Option<f64>,
    pub max_speed: bool,
    pub queue: usize,
    /// Frames the source produced (good and bad).
    pub frames: usize,
    pub processed: usize,
    pub dropped: usize,
    pub bad_frames: usize,
    /// Frames processed (or dropped) whose expected label map is missing or unusable, each
    /// reported once as `BadFrame` naming the label map (see `groundtruth::index_ground_truth`);
    /// they are left out of the presence figures vs ground truth.
    pub bad_label_maps: usize,
    pub deadline_ms: f64,
    pub deadline_misses: usize,
    /// Capture -> perception done, per processed frame.
    pub latency_ms: Percentiles,
    pub stage_ms: StageLatency,
    /// Capture -> first pedestrian alert at the planner, per frame with one.
    pub time_to_alert_ms: Percentiles,
    pub brake_frames: usize,
    pub exits: Vec<ExitHits>,
    /// Frames the full detector ran on, all units.
    pub full_detections: usize,
    /// Frames a hit resolved where `alert_then_continue` had no time left for full detection.
    pub continue_skipped: usize,
    pub presence: ReplayPresence,
    pub mean_flops_per_frame: f64,
    pub mean_full_flops_per_frame: f64,
    /// Retraining rounds run in the background (`retrain`), and what they did.
    pub retrains: usize,
    pub retrain: Option<RetrainStats>,
    pub source_max_push_ms: f64,
    pub interrupted: bool,
    pub wall_s: f64,
}

/// Replay `cfg`'s sources through the node with detector `det` and `exits` (empty = none).
pub fn replay<D>(
    det: &D,
    cfg: &NodeConfig,
    exits: Vec<Exit>,
    calib: Option<&ExitsFile>,
    alerts: Option<Box<dyn Write + Send>>,
    stop: &AtomicBool,
) -> crate::Result<ReplayReport>
where
    D: CacheableDetector,
    D::Output: TeacherTarget + FrameDetections,
{
    if let Some(f) = calib {
        crate::ensure!(
            f.model == det.model_name(),
            "calibration is for {}, not {}",
            f.model,
            det.model_name()
        );
    }
    let frames = config_frames(cfg)?;
    // Ground truth first, off the timed path; defective label maps travel with their frames.
    let truth = index_ground_truth(&frames, cfg.gt_min_pixels);
    let layers: Vec<String> = exits.iter().map(|e| e.layer.clone()).collect();
    let positive = calib.map_or(det.positive(), |f| f.positive);
    let exit_policy = calib.map_or_else(Default::default, |f| f.policy);
    let n_exits = exits.len();
    // The exits perception uses; the retrainer (when on) swaps them between frames.
    let live_exits = Arc::new(LiveExits::new(exits));
    let mut retrainer = match (cfg.retrain, calib) {
        (true, Some(f)) if n_exits > 0 => Some(Retrainer::spawn(
            live_exits.clone(),
            exit_policy,
            positive,
            RetrainConfig {
                tolerance: f.tolerance,
                ..RetrainConfig::default()
            },
        )?),
        (true, _) => crate::bail!("retrain needs a calibration with selected exits (calib)"),
        _ => None,
    };
    let settings = NodeSettings {
        fps: if cfg.max_speed { None } else { cfg.fps },
        queue: cfg.queue,
        deadline: Duration::from_secs_f64(cfg.deadline_ms / 1e3),
    };
    let deadline_ms = cfg.deadline_ms;
    let thresh = cfg.score_thresh;
    let total = frames.len();
    let live = std::io::stderr().is_terminal();
    // Running estimate of a full-detector pass, for alert_then_continue.
    let mut full_ms_est: Option<f64> = None;
    let perceive =
        |frame: &Frame<RgbFrame>, publish: &mut dyn FnMut(Alert)| -> crate::Result<FrameOutcome> {
            if live {
                eprint!("\rreplay: frame {}/{total}", frame.index + 1);
            }
            let img = &frame.payload;
            let (input, regions) = det.frame_units(img)?;
            let groups = vec![0usize; regions.len()];
            let profile = det.flops_profile(&input)?;
            let capture = frame.capture;
            let elapsed_ms = || capture.elapsed().as_secs_f64() * 1e3;
            // One set of exits for the whole frame (a swap lands between frames).
            let cached = CacheEnabled {
                detector: det,
                exits: live_exits.load().to_vec(),
                policy: exit_policy,
                positive,
            };
            // Per unit, its pooled input at each exit, kept for the retrainer.
            let mut taps: Vec<Vec<Option<Vec<f32>>>> = if retrainer.is_some() {
                vec![vec![None; n_exits]; regions.len()]
            } else {
                Vec::new()
            };
            let mut tap = |e: usize, alive: &[usize], pooled: &Tensor| {
                if taps.is_empty() {
                    return;
                }
                if let Ok(rows) = pooled.flatten_from(1).and_then(|t| t.to_vec2::<f32>()) {
                    for (&u, row) in alive.iter().zip(rows) {
                        taps[u][e] = Some(row);
                    }
                }
            };
            let out = cached.forward_tapped(
                &input,
                &groups,
                &mut |_, e, p| {
                    publish(Alert::EarlyAlert {
                        frame: frame.index,
                        exit: layers[e].clone(),
                        class: p.class,
                        pedestrian: p.class == positive,
                        confidence: p.confidence,
                        latency_ms: elapsed_ms(),
                    })
                },
                &mut tap,
            )?;
            // Offer the retrainer a unit the full detector labelled, when every exit saw it.
            let mut teach = |u: usize, target: Vec<f32>| {
                if let Some(r) = retrainer.as_mut() {
                    if let Some(feats) = taps.get_mut(u).and_then(|t| t.drain(..).collect()) {
                        r.offer((frame.index * 8 + u) as u64, feats, target);
                    }
                }
            };
            let mut o = FrameOutcome {
                width: img.width,
                height: img.height,
                units: regions.len(),
                flops: out.flops.iter().sum(),
                full_flops: profile.full * regions.len() as u64,
                hits: vec![0; layers.len()],
                ..Default::default()
            };
            let mut full_units = Vec::new();
            let mut unit_hits = Vec::new();
            for (u, r) in out.items.iter().enumerate() {
                match r {
                    Resolution::Hit { exit, prediction } => {
                        o.hits[*exit] += 1;
                        unit_hits.push((u, *exit, prediction.class == positive));
                        o.cached_pedestrian |= prediction.class == positive;
                    }
                    Resolution::Group { .. } => o.cached_pedestrian = true,
                    Resolution::Full(d) => {
                        o.cached_pedestrian |= d.pedestrian(thresh);
                        full_units.push((u, d));
                    }
                }
            }
            let publish_dets = |units: &[(usize, &D::Output)], publish: &mut dyn FnMut(Alert)| {
                let (mut boxes, mut scores, mut labels, mut peds) =
                    (Vec::new(), Vec::new(), Vec::new(), 0usize);
                for (u, d) in units {
                    for (b, s, l) in d.frame_boxes(regions[*u], thresh) {
                        peds += usize::from(l == d.pedestrian_label());
                        boxes.push(b);
                        scores.push(s);
                        labels.push(l);
                    }
                }
                publish(Alert::Detections {
                    frame: frame.index,
                    boxes,
                    scores,
                    labels,
                    pedestrians: peds,
                    latency_ms: capture.elapsed().as_secs_f64() * 1e3,
                });
            };
            if full_units.len() == regions.len() {
                o.full_pedestrian = Some(o.cached_pedestrian);
                publish_dets(&full_units, publish);
                for (u, d) in &full_units {
                    teach(*u, d.target());
                }
            } else {
                for (u, d) in &full_units {
                    teach(*u, d.target());
                }
                if !full_units.is_empty() {
                    publish_dets(&full_units, publish);
                }
                if cfg.policy == HitPolicy::AlertThenContinue {
                    let fits = full_ms_est.is_none_or(|est| elapsed_ms() + est <= deadline_ms);
                    if fits {
                        let t = Instant::now();
                        let full = det.forward_staged(&input)?;
                        let took = t.elapsed().as_secs_f64() * 1e3;
                        full_ms_est = Some(full_ms_est.map_or(took, |e| 0.8 * e + 0.2 * took));
                        o.flops += o.full_flops;
                        o.full_pedestrian = Some(full.iter().any(|d| d.pedestrian(thresh)));
                        o.hit_agree = unit_hits
                            .iter()
                            .map(|&(u, e, ped)| (e, full[u].pedestrian(thresh) == ped))
                            .collect();
                        let units: Vec<(usize, &D::Output)> = full.iter().enumerate().collect();
                        publish_dets(&units, publish);
                        for &(u, _, _) in &unit_hits {
                            teach(u, full[u].target());
                        }
                    } else {
                        o.continue_skipped = true;
                    }
                }
            }
            Ok(o)
        };
    let run = run_node(
        frame_source(&frames, &truth),
        perceive,
        HarnessPlanner::default(),
        alerts,
        &settings,
        stop,
    )?;
    if live {
        eprintln!();
    }
    let retrain = retrainer.map(Retrainer::finish).transpose()?;

    let (mut vs_det, mut vs_gt, mut full_gt) = (
        Confusion::default(),
        Confusion::default(),
        Confusion::default(),
    );
    let (mut have_det, mut gt_frames, mut full_gt_frames) = (false, 0usize, 0usize);
    let mut hits = vec![0usize; layers.len()];
    let mut judged = vec![(0usize, 0usize); layers.len()];
    let (mut units, mut flops, mut full_flops) = (0usize, 0f64, 0f64);
    for r in &run.records {
        let o = &r.outcome;
        units += o.units;
        flops += o.flops as f64;
        full_flops += o.full_flops as f64;
        for (h, n) in hits.iter_mut().zip(&o.hits) {
            *h += n;
        }
        for &(e, agree) in &o.hit_agree {
            judged[e].0 += 1;
            judged[e].1 += usize::from(agree);
        }
        if let Some(full) = o.full_pedestrian {
            have_det = true;
            vs_det.add(o.cached_pedestrian, full);
        }
        if let Some(&FrameTruth::Pedestrian(gt)) = truth.get(r.index) {
            gt_frames += 1;
            vs_gt.add(o.pedestrian(), gt);
            if let Some(full) = o.full_pedestrian {
                full_gt_frames += 1;
                full_gt.add(full, gt);
            }
        }
    }
    let n = run.records.len().max(1) as f64;
    let reactions: Vec<f64> = run
        .planner
        .decisions
        .values()
        .filter_map(|d| d.reaction_ms)
        .collect();
    let weights = match (&cfg.weights, cfg.standin_weights) {
        (_, true) => "stand-in (deterministic; latency only, detections mean nothing)".into(),
        (Some(w), false) => w.display().to_string(),
        (None, false) => crate::cli::detect::DEFAULT_SSDLITE_WEIGHTS.into(),
    };
    Ok(ReplayReport {
        model: det.model_name().into(),
        weights,
        device: cfg.device.clone(),
        calib: cfg.calib.as_ref().map(|c| c.display().to_string()),
        sources: cfg
            .sources
            .iter()
            .map(|s| s.display().to_string())
            .collect(),
        policy: cfg.policy,
        fps: settings.fps,
        max_speed: cfg.max_speed,
        queue: cfg.queue,
        frames: run.sourced,
        processed: run.records.len(),
        dropped: run.dropped.len(),
        bad_frames: run.bad.len(),
        bad_label_maps: run.defects.len(),
        deadline_ms,
        deadline_misses: run.deadline_misses,
        latency_ms: Percentiles::of(run.records.iter().map(|r| r.latency_ms).collect()),
        stage_ms: StageLatency {
            queue_ms: Percentiles::of(run.records.iter().map(|r| r.queue_ms).collect()),
            perception_ms: Percentiles::of(run.records.iter().map(|r| r.perceive_ms).collect()),
        },
        time_to_alert_ms: Percentiles::of(reactions),
        brake_frames: run.planner.decisions.values().filter(|d| d.brake).count(),
        exits: layers
            .iter()
            .zip(hits.iter().zip(&judged))
            .map(|(l, (&h, &(n, agree)))| ExitHits {
                layer: l.clone(),
                hits: h,
                hit_rate: h as f64 / units.max(1) as f64,
                accuracy_vs_detector: (n > 0).then(|| agree as f64 / n as f64),
                judged_hits: n,
            })
            .collect(),
        full_detections: run
            .records
            .iter()
            .filter(|r| r.outcome.full_pedestrian.is_some())
            .count(),
        continue_skipped: run
            .records
            .iter()
            .filter(|r| r.outcome.continue_skipped)
            .count(),
        presence: ReplayPresence {
            vs_detector: have_det.then_some(vs_det),
            vs_ground_truth: (gt_frames > 0).then_some(vs_gt),
            full_vs_ground_truth: (full_gt_frames > 0).then_some(full_gt),
            frames_with_ground_truth: gt_frames,
        },
        mean_flops_per_frame: flops / n,
        mean_full_flops_per_frame: full_flops / n,
        retrains: retrain.as_ref().map_or(0, |r| r.rounds),
        retrain,
        source_max_push_ms: run.source_max_push_ms,
        interrupted: run.interrupted,
        wall_s: run.wall_s,
    })
}

impl ReplayReport {
    /// The human summary printed after a run.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let rate = self
            .fps
            .map_or_else(|| "max speed".to_string(), |f| format!("{f} fps"));
        s += &format!(
            "replay {} ({}, policy {:?}, {}, queue {}){}\n",
            self.model,
            self.calib.as_deref().unwrap_or("no cache exits"),
            self.policy,
            rate,
            self.queue,
            if self.interrupted {
                " [interrupted]"
            } else {
                ""
            }
        );
        s += &format!("weights {} (device {})\n", self.weights, self.device);
        s += &format!(
            "frames {}  processed {}  dropped {}  bad {}  bad label maps {}  deadline misses {} (deadline {} ms)\n",
            self.frames,
            self.processed,
            self.dropped,
            self.bad_frames,
            self.bad_label_maps,
            self.deadline_misses,
            self.deadline_ms
        );
        let p =
            |x: &Percentiles| format!("p50 {:.1} / p95 {:.1} / p99 {:.1} ms", x.p50, x.p95, x.p99);
        s += &format!("latency {}\n", p(&self.latency_ms));
        s += &format!(
            "time to alert {} ({} frames braked)\n",
            p(&self.time_to_alert_ms),
            self.brake_frames
        );
        for e in &self.exits {
            s += &format!(
                "exit {}: {} hits (rate {:.3})\n",
                e.layer, e.hits, e.hit_rate
            );
        }
        s += &format!(
            "full detections {}  FLOPs/frame {:.0} MFLOP (full {:.0})\n",
            self.full_detections,
            self.mean_flops_per_frame / 1e6,
            self.mean_full_flops_per_frame / 1e6
        );
        if let Some(r) = &self.retrain {
            s += &format!(
                "retrainer: {} rounds, {} swaps, {} units learned from ({} unconfident, {} dropped){}\n",
                r.rounds,
                r.swaps,
                r.samples,
                r.unconfident,
                r.dropped,
                r.error
                    .as_deref()
                    .map_or_else(String::new, |e| format!(", last error: {e}"))
            );
        }
        if let Some(c) = &self.presence.vs_detector {
            s += &format!("presence vs detector: {c}\n");
        }
        if let Some(c) = &self.presence.vs_ground_truth {
            s += &format!(
                "presence vs ground truth ({} frames): {c}\n",
                self.presence.frames_with_ground_truth
            );
        }
        s
    }
}
