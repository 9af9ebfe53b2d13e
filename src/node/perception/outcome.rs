//! What perception reports per frame and at its end, and the `Detections` alert it publishes.

use super::super::clock::ms;
use super::super::learn::LearnStats;
use super::super::retrain::RetrainStats;
use super::super::task::FrameCtx;
use super::Alert;
use crate::detect::FrameDetections;

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
    /// The version of the exit set the frame ran with (`None`: a calibration folder of its
    /// own, or no set).
    pub version: Option<u32>,
    /// Units the full detector ran on in perception (misses, or every unit when
    /// `alert_then_continue` ran it after a hit); 0 when exits resolved the whole frame.
    pub full_units: usize,
}

impl FrameOutcome {
    /// The node's answer: any pedestrian alert for the frame.
    pub fn pedestrian(&self) -> bool {
        self.cached_pedestrian || self.full_pedestrian == Some(true)
    }
}

/// [`super::Perception::process`]'s result: the alerts in publishing order, and the outcome.
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
    /// The learner's work, when it was on.
    pub learn: Option<LearnStats>,
}

/// One `Detections` alert for the given units of a frame, boxes in frame pixels.
pub(super) fn publish_detections<O: FrameDetections>(
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
