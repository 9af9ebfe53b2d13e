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

use super::alert::{Alert, HitPolicy};
use super::clock::{ms, StopFlag, SystemClock};
use super::config::NodeConfig;
use super::detector::Cancellable;
use super::retrain::{LiveExits, RetrainConfig, RetrainStats, Retrainer};
use super::source::Frame;
use super::task::{FrameCtx, Perceive};
use crate::cache::calibration::CacheableDetector;
use crate::cache::enabled::{CacheEnabled, Exit, Resolution};
use crate::cache::ExitOn;
use crate::detect::{FrameDetections, Staged, TeacherTarget};
use crate::frame::RgbFrame;
use candle_core::{Device, Tensor};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How perception uses the detector and its exits.
#[derive(Clone, Debug)]
pub struct PerceptionConfig {
    /// What a cache hit does to the rest of the frame.
    pub policy: HitPolicy,
    /// Detector score at which a detection counts as a pedestrian.
    pub score_thresh: f32,
    /// Capture -> last alert; `alert_then_continue` runs full detection only within it.
    pub deadline: Duration,
    /// Retrain the exits in the background (`None`: off). Its `tolerance` is replaced by the
    /// calibration's.
    pub retrain: Option<RetrainConfig>,
    /// At stop, how long to wait for the retrainer once it was told to cancel.
    pub stop_grace: Duration,
}

impl Default for PerceptionConfig {
    fn default() -> Self {
        Self {
            policy: HitPolicy::Exit,
            score_thresh: 0.5,
            deadline: Duration::from_millis(100),
            retrain: None,
            stop_grace: Duration::from_millis(500),
        }
    }
}

impl PerceptionConfig {
    /// The perception part of a node config (already validated).
    pub fn from_node_config(cfg: &NodeConfig) -> Self {
        Self {
            policy: cfg.policy,
            score_thresh: cfg.score_thresh,
            deadline: Duration::from_secs_f64(cfg.deadline_ms / 1e3),
            retrain: cfg.retrain.then(RetrainConfig::default),
            ..Self::default()
        }
    }
}

/// Calibrated cache exits, as perception uses them.
#[derive(Clone, Debug)]
pub struct CacheExits {
    /// The model they were calibrated for.
    pub model: String,
    /// The selected exits, in network order.
    pub exits: Vec<Exit>,
    /// Which answers may exit early.
    pub policy: ExitOn,
    /// Class meaning "pedestrian present".
    pub positive: usize,
    /// The calibration's accuracy-drop budget (the retrainer judges candidates with it).
    pub tolerance: f64,
}

impl CacheExits {
    /// Load a calibration folder (`exits.ron` + `heads.safetensors`), heads on `device` (the
    /// detector's).
    pub fn load(dir: &Path, device: &Device) -> crate::Result<Self> {
        let (f, exits) = crate::cache::files::load(dir, device)?;
        Ok(Self {
            model: f.model,
            exits,
            policy: f.policy,
            positive: f.positive,
            tolerance: f.tolerance,
        })
    }
}

/// What perception did with one frame.
#[derive(Clone, Debug, Default)]
pub struct FrameOutcome {
    /// Frame width, pixels.
    pub width: usize,
    /// Frame height, pixels.
    pub height: usize,
    /// Units (tiles) the frame was split into.
    pub units: usize,
    /// Analytic FLOPs spent on the frame (stages run, heads evaluated).
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

/// [`Perception::process`]'s result: the alerts in publishing order, and the outcome.
#[derive(Clone, Debug)]
pub struct Processed {
    /// Alerts in publishing order.
    pub alerts: Vec<Alert>,
    /// What perception did with the frame.
    pub outcome: FrameOutcome,
}

/// What perception leaves when it stops.
#[derive(Clone, Debug, Default)]
pub struct PerceptionStats {
    /// The retrainer's work, when it was on.
    pub retrain: Option<RetrainStats>,
}

/// The perception task (see the module doc).
pub struct Perception<D> {
    detector: D,
    live: Arc<LiveExits>,
    layers: Vec<String>,
    exit_policy: ExitOn,
    positive: usize,
    cfg: PerceptionConfig,
    retrainer: Option<Retrainer>,
    /// Running estimate of a full-detector pass, ms, for `alert_then_continue`.
    full_ms_est: Option<f64>,
}

impl<D> Perception<D>
where
    D: CacheableDetector,
    D::Output: TeacherTarget + FrameDetections,
{
    /// Perception with `detector` and its calibrated `exits` (`None`: full detection on every
    /// frame). Starts the retrainer when `cfg.retrain` is set (it needs exits).
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
        let exits = exits.map_or_else(Vec::new, |x| x.exits);
        let layers = exits.iter().map(|e| e.layer.clone()).collect();
        let n_exits = exits.len();
        let live = Arc::new(LiveExits::new(exits));
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
        Ok(Self {
            detector,
            live,
            layers,
            exit_policy,
            positive,
            cfg,
            retrainer,
            full_ms_est: None,
        })
    }

    /// The detector perception runs.
    pub fn detector(&self) -> &D {
        &self.detector
    }

    /// The layers of the exits, in network order (`EarlyAlert::exit` names one of them).
    pub fn exit_layers(&self) -> &[String] {
        &self.layers
    }

    /// How perception runs.
    pub fn config(&self) -> &PerceptionConfig {
        &self.cfg
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
        let det = Cancellable {
            inner: &self.detector,
            stop,
        };
        let (thresh, positive) = (self.cfg.score_thresh, self.positive);
        let deadline_ms = ms(self.cfg.deadline);
        let img = &frame.payload;
        let (input, regions) = self.detector.frame_units(img)?;
        let groups = vec![0usize; regions.len()];
        let profile = self.detector.flops_profile(&input)?;
        let capture = frame.capture;
        // One set of exits for the whole frame (a swap lands between frames).
        let cached = CacheEnabled {
            detector: &det,
            exits: self.live.load().to_vec(),
            policy: self.exit_policy,
            positive,
        };
        let n_exits = cached.exits.len();
        let learning = self.retrainer.is_some();
        // Per unit, its pooled input at each exit, kept for the retrainer.
        let mut taps: Vec<Vec<Option<Vec<f32>>>> = if learning {
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
        let layers = &self.layers;
        let out = cached.forward_tapped(
            &input,
            &groups,
            // Called as each hit is known, before the rest of the batch goes on: the alert
            // leaves now.
            &mut |_, e, p| {
                let latency_ms = ms(ctx.now().saturating_duration_since(capture));
                ctx.publish(Alert::EarlyAlert {
                    frame: frame.index,
                    exit: layers[e].clone(),
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
            hits: vec![0; n_exits],
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
        let mut teach = Teacher {
            retrainer: self.retrainer.as_mut(),
            taps,
            frame: frame.index,
        };
        let detections = |units: &[(usize, &D::Output)], ctx: &mut FrameCtx<'_>| {
            publish_detections((frame.index, capture), &regions, units, thresh, ctx)
        };
        if !full_units.is_empty() {
            detections(&full_units, ctx);
        }
        for (u, d) in &full_units {
            teach.offer(*u, d.target());
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
                let full = det.forward_staged(&input)?;
                let took = ms(ctx.now().saturating_duration_since(t));
                self.full_ms_est = Some(self.full_ms_est.map_or(took, |e| 0.8 * e + 0.2 * took));
                o.flops += o.full_flops;
                o.full_pedestrian = Some(full.iter().any(|d| d.pedestrian(thresh)));
                o.hit_agree = unit_hits
                    .iter()
                    .map(|&(u, e, ped)| (e, full[u].pedestrian(thresh) == ped))
                    .collect();
                let units: Vec<(usize, &D::Output)> = full.iter().enumerate().collect();
                detections(&units, ctx);
                for &(u, _, _) in &unit_hits {
                    teach.offer(u, full[u].target());
                }
            } else {
                o.continue_skipped = true;
            }
        }
        Ok(o)
    }

    /// `Err` once a background part (the retrainer) has failed.
    pub fn check(&mut self) -> crate::Result<()> {
        self.retrainer.as_ref().map_or(Ok(()), Retrainer::check)
    }

    /// End perception: the retrainer finishes what it holds, or, when `cancel` is (or becomes)
    /// set, cancels its round and is waited for at most [`PerceptionConfig::stop_grace`].
    pub fn stop(self, cancel: &StopFlag) -> crate::Result<PerceptionStats> {
        let retrain = match self.retrainer {
            Some(r) => Some(r.stop(cancel, self.cfg.stop_grace)?),
            None => None,
        };
        Ok(PerceptionStats { retrain })
    }
}

impl<D> Perceive for Perception<D>
where
    D: CacheableDetector,
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

/// Offers the units the full detector labelled to the retrainer, with their inputs at each exit.
struct Teacher<'a> {
    retrainer: Option<&'a mut Retrainer>,
    taps: Vec<Vec<Option<Vec<f32>>>>,
    frame: usize,
}

impl Teacher<'_> {
    /// Offer unit `u` with the teacher's `target`, when every exit saw it (once per unit).
    fn offer(&mut self, u: usize, target: Vec<f32>) {
        let Some(r) = self.retrainer.as_deref_mut() else {
            return;
        };
        if let Some(feats) = self.taps.get_mut(u).and_then(|t| t.drain(..).collect()) {
            // Ids only need to be distinct per unit: a frame has at most a few tiles.
            r.offer((self.frame * 8 + u) as u64, feats, target);
        }
    }
}

/// One `Detections` alert for the given units of a frame, boxes in frame pixels.
fn publish_detections<O: FrameDetections>(
    (frame, capture): (usize, std::time::Instant),
    regions: &[(usize, usize, usize, usize)],
    units: &[(usize, &O)],
    thresh: f32,
    ctx: &mut FrameCtx<'_>,
) {
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
    let latency_ms = ms(ctx.now().saturating_duration_since(capture));
    ctx.publish(Alert::Detections {
        frame,
        boxes,
        scores,
        labels,
        pedestrians: peds,
        latency_ms,
    });
}
