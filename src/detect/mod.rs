//! Detectors as staged candle models, and the ops they share.
//!
//! Every detector exposes a *staged forward* (see [`Staged`]): its candidate cache layers in
//! order, a way to run the network one stage at a time, and the rest of the network after the
//! last stage. The cache engine stops between stages; `forward` is the same stages run back to
//! back, so both paths give identical results. [`registry`] loads either detector by name.

pub mod maskrcnn;
pub mod ops;
pub mod registry;
pub mod ssdlite;
pub mod weights;

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// One detected object, in original-image pixels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// `[x1, y1, x2, y2]`.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// 1 = pedestrian for SSDLite; COCO category id for Mask R-CNN.
    pub label: u32,
    pub score: f32,
    /// Pixels of the pasted instance mask above 0.5 (Mask R-CNN only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mask_area: Option<u64>,
}

/// Analytic cost of one batch item (2 x multiply-adds of convs and linears).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlopsProfile {
    /// FLOPs spent once stage `i` has run.
    pub through_stage: Vec<u64>,
    /// FLOPs of the whole network.
    pub full: u64,
}

impl FlopsProfile {
    /// The rest of the network after stage `i` (the paper's C2).
    pub fn after(&self, i: usize) -> u64 {
        self.full - self.through_stage[i]
    }
}

/// What a cache head learns from a detector's output for one batch item (paper 3.6).
pub trait TeacherTarget {
    /// The teacher's distribution over the head's classes.
    fn target(&self) -> Vec<f32>;
    /// Whether the full detector reports a pedestrian scoring at least `score_thresh`.
    fn pedestrian(&self, score_thresh: f32) -> bool;
    /// The teacher's distribution when its presence decision is made at `score_thresh`, the
    /// score the node alerts on: its most likely class is "pedestrian" exactly when
    /// [`Self::pedestrian`] says so. The default is [`Self::target`] (a teacher whose classes
    /// already mean that).
    fn target_at(&self, score_thresh: f32) -> Vec<f32> {
        let _ = score_thresh;
        self.target()
    }
}

/// `p` moved so that `at` maps to 1/2, on the logit scale (monotone, fixes 0 and 1): a
/// presence score judged against threshold `at` as a probability judged against 1/2.
pub fn recentre(p: f32, at: f32) -> f32 {
    let logit = |x: f32| {
        let x = x.clamp(1e-6, 1.0 - 1e-6);
        (x / (1.0 - x)).ln()
    };
    if p <= 0.0 || p >= 1.0 {
        return p.clamp(0.0, 1.0);
    }
    1.0 / (1.0 + (logit(at) - logit(p)).exp())
}

/// A network that can be run one candidate layer at a time.
pub trait Staged {
    /// What the network starts from (a preprocessed batch, with its sizes where needed).
    type Input;
    /// Intermediate state between stages (the activation plus anything later layers need).
    type State;
    /// What the network produces after the last stage, per batch item.
    type Output;

    /// Names of the candidate cache layers, in network order; stage `i` ends at layer `i`.
    fn stage_names(&self) -> &[&'static str];
    /// Begin from a preprocessed batch.
    fn start(&self, input: &Self::Input) -> Result<Self::State>;
    /// Run stage `i` (which must follow stage `i - 1`, or `start` for `i == 0`).
    fn run_stage(&self, i: usize, state: Self::State) -> Result<Self::State>;
    /// The candidate layer's activation held by a state, NCHW.
    fn activation<'a>(&self, state: &'a Self::State) -> &'a Tensor;
    /// Keep only the given batch items (for batch shrinking after cache hits).
    fn select(&self, state: &Self::State, keep: &[usize]) -> Result<Self::State>;
    /// The rest of the network after the last stage.
    fn finish(&self, state: Self::State) -> Result<Vec<Self::Output>>;
    /// [`Self::finish`], giving up with an error between its own steps once `cancel()` says so
    /// (a stopping node must not wait out a long one). By default the rest is one step.
    fn finish_until(
        &self,
        state: Self::State,
        cancel: &dyn Fn() -> bool,
    ) -> Result<Vec<Self::Output>> {
        let _ = cancel;
        self.finish(state)
    }
    /// Analytic FLOPs of one batch item: cumulative after each stage, and the whole network.
    fn flops_profile(&self, input: &Self::Input) -> Result<FlopsProfile>;

    /// All stages then the rest: the plain forward.
    fn forward_staged(&self, input: &Self::Input) -> Result<Vec<Self::Output>> {
        let mut st = self.start(input)?;
        for i in 0..self.stage_names().len() {
            st = self.run_stage(i, st)?;
        }
        self.finish(st)
    }
}

/// A detector's full output for one unit (a tile or a whole frame), in frame pixels.
pub trait FrameDetections {
    /// `(box [x1, y1, x2, y2], score, label)` at or above `score_thresh`, for a unit covering
    /// `region` `(x, y, w, h)` of the frame.
    fn frame_boxes(
        &self,
        region: (usize, usize, usize, usize),
        score_thresh: f32,
    ) -> Vec<([f32; 4], f32, u32)>;
    /// The label meaning "pedestrian".
    fn pedestrian_label(&self) -> u32;
}

impl FrameDetections for ssdlite::TileDetections {
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
                    ssdlite::PEDESTRIAN,
                )
            })
            .collect()
    }
    fn pedestrian_label(&self) -> u32 {
        ssdlite::PEDESTRIAN
    }
}

impl FrameDetections for maskrcnn::RcnnOutput {
    /// Mask R-CNN runs on the whole frame: its boxes are already in frame pixels.
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
        maskrcnn::PERSON
    }
}
