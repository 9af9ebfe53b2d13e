//! A replay's report: what the node did with the sequence, measured against the full detector
//! and against ground truth (written as JSON, summarized for people).

use crate::node::learn::{AuditStats, LearnStats, VersionRecord};
use crate::node::retrain::RetrainStats;
use crate::node::{Ending, FrameOutcome, HitPolicy, NodeRun};
use crate::sim::groundtruth::FrameTruth;
use crate::sim::metrics::{Confusion, Percentiles};
use crate::sim::planner::Decision;
use crate::sim::scenario::Scenario;
use crate::sim::timeline::{timeline, TimelineRow};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

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
    /// Perception on frames the exits resolved whole (no full detection in perception).
    pub perception_exits_only_ms: Percentiles,
    /// Perception on frames where the full detector ran on at least one unit.
    pub perception_with_full_ms: Percentiles,
    /// The source reading and decoding each good frame (on its own thread, sharing the cores
    /// with perception).
    pub source_decode_ms: Percentiles,
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
    /// `completed` (the sequence ended), `interrupted` (stopped: Ctrl-C / SIGTERM) or `failed`
    /// (a stage failed: see `error`).
    pub status: String,
    /// The failure that ended the run, as one line naming the stage.
    pub error: Option<String>,
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
    /// Frames whose records the per-frame figures below cover: `processed`, or the latest
    /// `keep_records` of them.
    pub frames_in_figures: usize,
    /// Frames never perceived (perception behind, or left when the run stopped).
    pub dropped: usize,
    /// Of `dropped`, the frames left when the run stopped.
    pub dropped_at_stop: usize,
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
    /// Learning on the drive (`calib: auto`).
    pub learning: Option<LearningReport>,
    /// Hits audited against the full detector while learning.
    pub audit: Option<AuditStats>,
    /// Per 50 frames: hit rate, FLOPs, audited agreement, version, latency.
    pub timeline: Vec<TimelineRow>,
    pub source_max_push_ms: f64,
    pub interrupted: bool,
    pub wall_s: f64,
}

/// What the learner did (`calib: auto`).
#[derive(Clone, Debug, Serialize)]
pub struct LearningReport {
    /// Where the versions were written.
    pub learn_dir: String,
    /// The frame the learner had reached when the first set went live.
    pub first_adoption_frame: Option<usize>,
    /// Every version adopted, in order.
    pub versions: Vec<VersionRecord>,
    /// Calibrations run; candidates not adopted; live sets withdrawn for audited accuracy.
    pub calibrations: usize,
    pub rejected: usize,
    pub withdrawals: usize,
    /// Why the latest candidate was not adopted.
    pub last_rejection: Option<String>,
    /// Units taken into the store; units dropped because the learner was behind.
    pub units: usize,
    pub units_dropped: usize,
    /// Longest calibration, and time paused for perception, s.
    pub max_calibration_s: f64,
    pub paused_s: f64,
    /// A calibration or write that failed, as one line.
    pub error: Option<String>,
}

/// What a report is made from, besides the run itself.
pub struct ReportInputs<'a> {
    pub scenario: &'a Scenario,
    pub model: &'a str,
    pub weights: String,
    /// Exit layers in network order.
    pub layers: &'a [String],
    /// Ground truth per source frame.
    pub truth: &'a [FrameTruth],
    pub decisions: &'a BTreeMap<usize, Decision>,
    pub retrain: Option<RetrainStats>,
    pub learn: Option<LearnStats>,
    /// A failure after the run (stopping perception), when the run itself did not fail.
    pub late_failure: Option<&'a crate::Error>,
    /// The source's per-frame decode times.
    pub decode_ms: &'a [f64],
}

impl ReplayReport {
    /// The report of `run`.
    pub fn new(run: &NodeRun<FrameOutcome>, x: ReportInputs<'_>) -> Self {
        let sc = x.scenario;
        let (mut vs_det, mut vs_gt, mut full_gt) = (
            Confusion::default(),
            Confusion::default(),
            Confusion::default(),
        );
        let (mut have_det, mut gt_frames, mut full_gt_frames) = (false, 0usize, 0usize);
        let mut hits = vec![0usize; x.layers.len()];
        let mut judged = vec![(0usize, 0usize); x.layers.len()];
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
            if let Some(&FrameTruth::Pedestrian(gt)) = x.truth.get(r.index) {
                gt_frames += 1;
                vs_gt.add(o.pedestrian(), gt);
                if let Some(full) = o.full_pedestrian {
                    full_gt_frames += 1;
                    full_gt.add(full, gt);
                }
            }
        }
        let n = run.records.len().max(1) as f64;
        let reactions: Vec<f64> = x.decisions.values().filter_map(|d| d.reaction_ms).collect();
        let failure = run.failure().or(x.late_failure);
        let status = match (&run.ending, failure) {
            (_, Some(_)) => "failed",
            (Ending::Stopped, None) => "interrupted",
            _ => "completed",
        };
        Self {
            status: status.into(),
            error: failure.map(crate::Error::one_line),
            model: x.model.into(),
            weights: x.weights,
            device: sc.device.clone(),
            calib: sc.calib.as_ref().map(|c| c.display().to_string()),
            sources: sc.sources.iter().map(|s| s.display().to_string()).collect(),
            policy: sc.policy,
            fps: sc.rate(),
            max_speed: sc.max_speed,
            queue: sc.queue,
            frames: run.sourced,
            processed: run.processed,
            frames_in_figures: run.records.len(),
            dropped: run.dropped.len(),
            dropped_at_stop: run.dropped_at_stop,
            bad_frames: run.bad.len(),
            bad_label_maps: run.defects.len(),
            deadline_ms: sc.deadline_ms,
            deadline_misses: run.deadline_misses,
            latency_ms: Percentiles::of(run.records.iter().map(|r| r.latency_ms).collect()),
            stage_ms: StageLatency {
                queue_ms: Percentiles::of(run.records.iter().map(|r| r.queue_ms).collect()),
                perception_ms: Percentiles::of(run.records.iter().map(|r| r.perceive_ms).collect()),
                perception_exits_only_ms: perceive_where(&run.records, |o| o.full_units == 0),
                perception_with_full_ms: perceive_where(&run.records, |o| o.full_units > 0),
                source_decode_ms: Percentiles::of(x.decode_ms.to_vec()),
            },
            time_to_alert_ms: Percentiles::of(reactions),
            brake_frames: x.decisions.values().filter(|d| d.brake).count(),
            exits: x
                .layers
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
            retrains: x.retrain.as_ref().map_or(0, |r| r.rounds),
            retrain: x.retrain,
            timeline: timeline(&run.records.iter().collect::<Vec<_>>(), x.learn.as_ref()),
            audit: x.learn.as_ref().map(|l| l.audit.clone()),
            learning: x.learn.map(|l| LearningReport {
                learn_dir: sc.node().learn_dir_or_default().display().to_string(),
                first_adoption_frame: l.first_adoption_frame,
                versions: l.versions,
                calibrations: l.calibrations,
                rejected: l.rejected,
                last_rejection: l.last_rejection,
                withdrawals: l.withdrawals,
                units: l.units,
                units_dropped: l.units_dropped,
                max_calibration_s: l.max_calibration_s,
                paused_s: l.paused_s,
                error: l.error,
            }),
            source_max_push_ms: run.source_max_push_ms,
            interrupted: run.interrupted,
            wall_s: run.wall_s,
        }
    }

    /// The human summary printed after a run.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let rate = self
            .fps
            .map_or_else(|| "max speed".to_string(), |f| format!("{f} fps"));
        let status = match self.status.as_str() {
            "completed" => String::new(),
            other => format!(" [{other}]"),
        };
        s += &format!(
            "replay {} ({}, policy {:?}, {}, queue {}){status}\n",
            self.model,
            self.calib.as_deref().unwrap_or("no cache exits"),
            self.policy,
            rate,
            self.queue,
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
        if let Some(l) = &self.learning {
            let versions: Vec<String> = l
                .versions
                .iter()
                .map(|v| format!("v{} at frame {} ({:?})", v.version, v.frame, v.trigger))
                .collect();
            s += &format!(
                "learning ({}): {} calibrations, {} adopted [{}], {} rejected, {} withdrawn, {} units{}\n",
                l.learn_dir,
                l.calibrations,
                l.versions.len(),
                versions.join(", "),
                l.rejected,
                l.withdrawals,
                l.units,
                l.error
                    .as_deref()
                    .map_or_else(String::new, |e| format!(", last error: {e}"))
            );
        }
        if let Some(a) = &self.audit {
            s += &format!(
                "audit: {} hits audited on {} frames, {} disagreements, {} missed pedestrians ({} skipped)\n",
                a.hits_audited, a.frames_audited, a.disagreements, a.missed_pedestrians, a.skipped
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

/// Perception times of the frames whose outcome satisfies `keep`.
fn perceive_where(
    records: &[crate::node::FrameRecord<FrameOutcome>],
    keep: impl Fn(&FrameOutcome) -> bool,
) -> Percentiles {
    Percentiles::of(
        records
            .iter()
            .filter(|r| keep(&r.outcome))
            .map(|r| r.perceive_ms)
            .collect(),
    )
}

/// Write `value` as JSON, replaced whole or not at all ([`crate::fsio::write_atomic`]).
pub fn write_json_atomic(path: &Path, value: &impl Serialize) -> crate::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    crate::fsio::write_atomic(path, text.as_bytes())
}
