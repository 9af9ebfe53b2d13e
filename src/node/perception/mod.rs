//! The perception task: one frame in, alerts out, as soon as each is known.
//!
//! Per frame: the detector's units (tiles) run through the cache-enabled forward (paper
//! Algorithm 1); an exit that hits publishes an `EarlyAlert` at once. Units that reach the end of
//! the network publish `Detections`. Under `alert_then_continue`, a frame a hit resolved still
//! runs the full detector when the running estimate of its cost fits in what is left of the
//! deadline. Every unit the full detector labelled is offered to the retrainer (when on), with
//! its inputs at each exit.
//!
//! Lifecycle: [`Perception::new`] (a loaded detector, its calibrated exits, a
//! [`PerceptionConfig`]), [`Perception::process`] per frame (or a [`crate::node::Node`] calls it),
//! [`Perception::stop`] at the end. A frame the node cancels ends between two detector stages.

mod config;
mod learning;
mod outcome;

pub use config::{CacheExits, LearnPlan, PerceptionConfig};
pub use outcome::{FrameOutcome, PerceptionStats, Processed};

use super::alert::{Alert, HitPolicy};
use super::clock::{ms, StopFlag, SystemClock};
use super::detector::Cancellable;
use super::learn::{AuditJob, LabelledUnit, LearnStats, Learner, Verdict};
use super::live::{LiveExits, LiveSet};
use super::retrain::{RetrainConfig, Retrainer};
use super::source::Frame;
use super::task::{FrameCtx, Perceive};
use crate::cache::calibration::CacheableDetector;
use crate::cache::enabled::{CacheEnabled, Resolution};
use crate::cache::ExitOn;
use crate::detect::{FrameDetections, Staged, TeacherTarget};
use crate::frame::RgbFrame;
use candle_core::Tensor;
use learning::{offer_retrainer, Learning, MidFrame};
use outcome::publish_detections;
use std::collections::HashMap;
use std::sync::Arc;

/// The perception task (see the module doc).
pub struct Perception<D: Staged> {
    detector: Arc<D>,
    live: Arc<LiveExits>,
    /// The layers hits are counted on: the calibration's exits, or (learning) every candidate.
    layers: Vec<String>,
    exit_policy: ExitOn,
    positive: usize,
    cfg: PerceptionConfig,
    retrainer: Option<Retrainer>,
    learning: Option<Learning<D>>,
    /// Running estimate of a full-detector pass, ms, for `alert_then_continue`.
    full_ms_est: Option<f64>,
}

impl<D> Perception<D>
where
    D: CacheableDetector + Send + Sync + 'static,
    D::Input: Send + 'static,
    D::Output: TeacherTarget + FrameDetections,
{
    /// Perception with `detector` and its calibrated `exits` (`None`: full detection on every
    /// frame, or, with `cfg.learn`, until the learner adopts a set). Starts the retrainer when
    /// `cfg.retrain` is set (it needs exits).
    pub fn new(
        detector: D,
        exits: Option<CacheExits>,
        cfg: PerceptionConfig,
    ) -> crate::Result<Self> {
        if let Some(x) = &exits {
            // Model, and each exit's layer at its stage, channels and classes.
            crate::cache::calibration::check_exits(&detector, "cache exits", &x.model, &x.exits)?;
        }
        let positive = exits.as_ref().map_or(detector.positive(), |x| x.positive);
        let exit_policy = exits.as_ref().map_or_else(ExitOn::default, |x| x.policy);
        let tolerance = exits.as_ref().map(|x| x.tolerance);
        let version = exits.as_ref().and_then(|x| x.version);
        let exits = exits.map_or_else(Vec::new, |x| x.exits);
        let layers = exits.iter().map(|e| e.layer.clone()).collect();
        let n_exits = exits.len();
        let live = Arc::new(LiveExits::new(LiveSet { version, exits }));
        if cfg.learn.is_some() && cfg.retrain.is_some() {
            crate::bail!("learn and retrain are two ways to keep exits fresh: choose one");
        }
        let retrainer = match (&cfg.retrain, tolerance) {
            (Some(r), Some(tolerance)) if n_exits > 0 => Some(Retrainer::spawn(
                live.clone(),
                exit_policy,
                positive,
                RetrainConfig {
                    tolerance,
                    ..r.clone()
                },
            )?),
            (Some(_), _) => crate::bail!("retrain needs a calibration with selected exits (calib)"),
            (None, _) => None,
        };
        let learning = match &cfg.learn {
            Some(plan) => {
                let on_disk = super::learn::versions::latest(&plan.learn_dir)?.unwrap_or(0);
                Some(Learning {
                    plan: plan.clone(),
                    after: on_disk.max(version.unwrap_or(0)),
                    learner: None,
                    candidates: Vec::new(),
                    audit_credit: 0.0,
                })
            }
            None => None,
        };
        Ok(Self {
            detector: Arc::new(detector),
            live,
            layers,
            exit_policy,
            positive,
            cfg,
            retrainer,
            learning,
            full_ms_est: None,
        })
    }

    /// Run the full detector once on `frame` and drop the result, before the camera starts:
    /// the first frame otherwise pays for the thread pool starting, code and weights paging in
    /// and the heap growing to a frame's working set (up to ~140 ms instead of ~25 here).
    /// Nothing is counted, learned or published.
    pub fn warm_up(&self, frame: &RgbFrame) -> crate::Result<()> {
        let (input, _) = self.detector.frame_units(frame)?;
        self.detector.forward_staged(&input)?;
        Ok(())
    }

    /// The detector perception runs.
    pub fn detector(&self) -> &D {
        &self.detector
    }

    /// The layers hits are counted on, in network order (`FrameOutcome::hits` follows them):
    /// the calibration's exits, or, when learning, every candidate layer (known from the first
    /// frame on).
    pub fn exit_layers(&self) -> &[String] {
        &self.layers
    }

    /// How perception runs.
    pub fn config(&self) -> &PerceptionConfig {
        &self.cfg
    }

    /// What the learner has done so far (`None` when not learning).
    pub fn learn_stats(&self) -> Option<LearnStats> {
        self.learning
            .as_ref()
            .map(|l| l.learner.as_ref().map(Learner::stats).unwrap_or_default())
    }

    /// Process one frame on this thread with the system clock; the alerts come back together.
    pub fn process(&mut self, frame: &Frame<RgbFrame>) -> crate::Result<Processed> {
        let mut alerts = Vec::new();
        let never = StopFlag::new();
        let mut publish = |a: Alert| alerts.push(a);
        let mut ctx = FrameCtx::new(&mut publish, &never, &SystemClock);
        let outcome = self.process_with(frame, &mut ctx)?;
        Ok(Processed { alerts, outcome })
    }

    /// Process one frame, publishing each alert through `ctx` as soon as it is known.
    /// [`crate::Error::Cancelled`] when `ctx` cancels the frame before it is done (checked
    /// between detector stages).
    pub fn process_with(
        &mut self,
        frame: &Frame<RgbFrame>,
        ctx: &mut FrameCtx<'_>,
    ) -> crate::Result<FrameOutcome> {
        let cancel = ctx.cancel_flag().clone();
        self.frame(frame, ctx, &cancel).map_err(|e| {
            if cancel.is_stopped() {
                crate::Error::Cancelled
            } else {
                e
            }
        })
    }

    fn frame(
        &mut self,
        frame: &Frame<RgbFrame>,
        ctx: &mut FrameCtx<'_>,
        stop: &StopFlag,
    ) -> crate::Result<FrameOutcome> {
        let (input, regions) = self.detector.frame_units(&frame.payload)?;
        let profile = self.detector.flops_profile(&input)?;
        self.start_learning(&profile)?;
        if let Some(l) = self.learning.as_ref().and_then(|l| l.learner.as_ref()) {
            l.at_frame(frame.index);
        }
        let mut mid = MidFrame::new(
            self.learning
                .as_ref()
                .and_then(|l| l.learner.as_ref())
                .map(Learner::gauge),
        );
        let det = Cancellable {
            inner: &*self.detector,
            stop,
        };
        let (thresh, positive) = (self.cfg.score_thresh, self.positive);
        let deadline_ms = ms(self.cfg.deadline);
        let img = &frame.payload;
        let groups = vec![0usize; regions.len()];
        let capture = frame.capture;
        // One set of exits for the whole frame (a swap lands between frames).
        let set = self.live.load();
        let version = set.version;
        let cached = CacheEnabled {
            detector: &det,
            exits: set.exits.clone(),
            policy: self.exit_policy,
            positive,
        };
        // Stages whose pooled output the retrainer or the learner keeps, per unit.
        let tap_stages: Vec<usize> = match (&self.learning, &self.retrainer) {
            (Some(l), _) => l.candidates.clone(),
            (None, Some(_)) => cached.exits.iter().map(|e| e.stage).collect(),
            (None, None) => Vec::new(),
        };
        let mut taps: Vec<HashMap<usize, Vec<f32>>> = if tap_stages.is_empty() {
            Vec::new()
        } else {
            vec![HashMap::new(); regions.len()]
        };
        let mut sizes: HashMap<usize, (usize, usize)> = HashMap::new();
        let mut tap = |stage: usize, alive: &[usize], pooled: &Tensor, hw: (usize, usize)| {
            if taps.is_empty() || !tap_stages.contains(&stage) {
                return;
            }
            sizes.insert(stage, hw);
            if let Ok(rows) = pooled.flatten_from(1).and_then(|t| t.to_vec2::<f32>()) {
                for (&u, row) in alive.iter().zip(rows) {
                    taps[u].insert(stage, row);
                }
            }
        };
        // Hits are counted on `self.layers`; the exits of this set map onto them.
        let slot: Vec<usize> = cached
            .exits
            .iter()
            .map(|e| self.layers.iter().position(|l| *l == e.layer).unwrap_or(0))
            .collect();
        let exit_names: Vec<String> = cached.exits.iter().map(|e| e.layer.clone()).collect();
        let out = cached.forward_tapped(
            &input,
            &groups,
            &tap_stages,
            // Called as each hit is known, before the rest of the batch goes on: the alert
            // leaves now.
            &mut |_, e, p| {
                let latency_ms = ms(ctx.now().saturating_duration_since(capture));
                ctx.publish(Alert::EarlyAlert {
                    frame: frame.index,
                    exit: exit_names[e].clone(),
                    version,
                    class: p.class,
                    pedestrian: p.class == positive,
                    confidence: p.confidence,
                    latency_ms,
                })
            },
            &mut tap,
        )?;
        let mut o = FrameOutcome {
            width: img.width,
            height: img.height,
            units: regions.len(),
            flops: out.flops.iter().sum(),
            full_flops: profile.full * regions.len() as u64,
            hits: vec![0; self.layers.len()],
            version,
            ..Default::default()
        };
        let mut full_units = Vec::new();
        let mut unit_hits = Vec::new();
        let mut resolved_early = Vec::new();
        for (u, r) in out.items.iter().enumerate() {
            match r {
                Resolution::Hit { exit, prediction } => {
                    o.hits[slot[*exit]] += 1;
                    unit_hits.push((u, *exit, prediction.class == positive));
                    resolved_early.push(u);
                    o.cached_pedestrian |= prediction.class == positive;
                }
                Resolution::Group { .. } => {
                    o.cached_pedestrian = true;
                    resolved_early.push(u);
                }
                Resolution::Full(d) => {
                    o.cached_pedestrian |= d.pedestrian(thresh);
                    full_units.push((u, d));
                }
            }
        }
        let detections = |units: &[(usize, &D::Output)], ctx: &mut FrameCtx<'_>| {
            publish_detections((frame.index, capture), &regions, units, thresh, ctx)
        };
        o.full_units = full_units.len();
        if !full_units.is_empty() {
            detections(&full_units, ctx);
        }
        let exit_stages: Vec<usize> = cached.exits.iter().map(|e| e.stage).collect();
        if let Some(r) = self.retrainer.as_mut() {
            for (u, d) in &full_units {
                offer_retrainer(
                    r,
                    frame.index,
                    *u,
                    &mut taps[*u],
                    &exit_stages,
                    d.target_at(thresh),
                );
            }
        }
        let mut learned: Vec<LabelledUnit> = Vec::new();
        if let Some(l) = &self.learning {
            for (u, d) in &full_units {
                if let Some(feats) = l.candidates.iter().map(|s| taps[*u].remove(s)).collect() {
                    learned.push(LabelledUnit {
                        unit: *u,
                        feats,
                        target: d.target_at(thresh),
                    });
                }
            }
        }
        if full_units.len() == regions.len() {
            o.full_pedestrian = Some(o.cached_pedestrian);
        } else if self.cfg.policy == HitPolicy::AlertThenContinue {
            let elapsed_ms = ms(ctx.now().saturating_duration_since(capture));
            let fits = self
                .full_ms_est
                .is_none_or(|est| elapsed_ms + est <= deadline_ms);
            if fits {
                let t = ctx.now();
                let cands = self
                    .learning
                    .as_ref()
                    .map_or(&[][..], |l| &l.candidates[..]);
                let full = super::learn::taps::full_tapped(&det, &input, cands, &|| Ok(()))?;
                let took = ms(ctx.now().saturating_duration_since(t));
                self.full_ms_est = Some(self.full_ms_est.map_or(took, |e| 0.8 * e + 0.2 * took));
                o.flops += o.full_flops;
                o.full_units = regions.len();
                o.full_pedestrian = Some(full.outputs.iter().any(|d| d.pedestrian(thresh)));
                o.hit_agree = unit_hits
                    .iter()
                    .map(|&(u, e, ped)| (slot[e], full.outputs[u].pedestrian(thresh) == ped))
                    .collect();
                let units: Vec<(usize, &D::Output)> = full.outputs.iter().enumerate().collect();
                detections(&units, ctx);
                if let Some(r) = self.retrainer.as_mut() {
                    for &(u, _, _) in &unit_hits {
                        let target = full.outputs[u].target_at(thresh);
                        offer_retrainer(r, frame.index, u, &mut taps[u], &exit_stages, target);
                    }
                }
                if let Some(l) = self.learning.as_mut().and_then(|l| l.learner.as_mut()) {
                    let verdicts = unit_hits
                        .iter()
                        .map(|&(u, _, ped)| Verdict::of(ped, full.outputs[u].pedestrian(thresh)))
                        .collect();
                    l.verdicts(frame.index, version, verdicts);
                    let mut feats = full.feats;
                    for &u in &resolved_early {
                        learned.push(LabelledUnit {
                            unit: u,
                            feats: std::mem::take(&mut feats[u]),
                            target: full.outputs[u].target_at(thresh),
                        });
                    }
                }
                resolved_early.clear(); // judged here: nothing left to audit
            } else {
                o.continue_skipped = true;
            }
        }
        let waiting = ctx.frames_waiting();
        mid.backlog = waiting > 0;
        if let Some(l) = self.learning.as_mut() {
            let frame_sizes = l
                .candidates
                .iter()
                .map(|s| sizes.get(s).copied().unwrap_or((0, 0)))
                .collect();
            let Some(learner) = l.learner.as_mut() else {
                return Ok(o);
            };
            learner.offer_units(frame.index, learned, frame_sizes, profile.clone());
            if !resolved_early.is_empty() && version.is_some() {
                l.audit_credit += l.plan.settings.audit_fraction;
                let sampled = l.audit_credit >= 1.0;
                if sampled {
                    l.audit_credit -= 1.0;
                }
                let idle = l.plan.settings.audit_when_idle && waiting == 0 && learner.audit_idle();
                if sampled || idle {
                    let job = AuditJob {
                        frame: frame.index,
                        version,
                        input,
                        hits: unit_hits.iter().map(|&(u, _, ped)| (u, ped)).collect(),
                        unlabelled: resolved_early,
                    };
                    learner.offer_audit(job, sampled);
                }
            }
        }
        Ok(o)
    }

    /// `Err` once a background part (the retrainer, the learner) has failed.
    pub fn check(&mut self) -> crate::Result<()> {
        self.retrainer.as_ref().map_or(Ok(()), Retrainer::check)?;
        match self.learning.as_ref().and_then(|l| l.learner.as_ref()) {
            Some(l) => l.check(),
            None => Ok(()),
        }
    }

    /// End perception: the retrainer and the learner finish what they hold, or, when `cancel`
    /// is (or becomes) set, cancel their work and are waited for at most
    /// [`PerceptionConfig::stop_grace`].
    pub fn stop(self, cancel: &StopFlag) -> crate::Result<PerceptionStats> {
        let retrain = match self.retrainer {
            Some(r) => Some(r.stop(cancel, self.cfg.stop_grace)?),
            None => None,
        };
        let learn = match self.learning {
            Some(Learning {
                learner: Some(l), ..
            }) => Some(l.stop(cancel, self.cfg.stop_grace)?),
            Some(_) => Some(LearnStats::default()),
            None => None,
        };
        Ok(PerceptionStats { retrain, learn })
    }
}

impl<D> Perceive for Perception<D>
where
    D: CacheableDetector + Send + Sync + 'static,
    D::Input: Send + 'static,
    D::Output: TeacherTarget + FrameDetections,
{
    type Payload = RgbFrame;
    type Outcome = FrameOutcome;

    fn perceive(
        &mut self,
        frame: &Frame<RgbFrame>,
        ctx: &mut FrameCtx<'_>,
    ) -> crate::Result<FrameOutcome> {
        self.process_with(frame, ctx)
    }

    fn check(&mut self) -> crate::Result<()> {
        Perception::check(self)
    }
}
