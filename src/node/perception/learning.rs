//! Perception's side of learning on the drive: starting the learner once the candidate layers
//! are known, telling its gauge when a frame runs, and offering units to the retrainer.

use super::{LearnPlan, Perception};
use crate::cache::calibration::CacheableDetector;
use crate::detect::{FrameDetections, Staged, TeacherTarget};
use crate::node::learn::pace::Gauge;
use crate::node::learn::{LearnSetup, Learner};
use crate::node::retrain::Retrainer;
use std::collections::HashMap;
use std::sync::Arc;

/// Perception's side of learning: the learner starts at the first frame (the candidate layers
/// depend on the detector's input).
pub(super) struct Learning<D: Staged> {
    pub(super) plan: LearnPlan,
    /// Versions in the learn dir are numbered after this one.
    pub(super) after: u32,
    pub(super) learner: Option<Learner<D>>,
    pub(super) candidates: Vec<usize>,
    /// Accumulates `audit_fraction` per frame a hit resolved; an audit is due at 1.
    pub(super) audit_credit: f64,
}

/// Tells the learner's gauge a frame is running while it lives, however the frame ends, and
/// whether another frame was waiting at its end.
pub(super) struct MidFrame {
    pub(super) gauge: Option<Arc<Gauge>>,
    pub(super) backlog: bool,
}

impl MidFrame {
    pub(super) fn new(gauge: Option<Arc<Gauge>>) -> Self {
        if let Some(g) = &gauge {
            g.frame_started();
        }
        Self {
            gauge,
            backlog: false,
        }
    }
}

impl Drop for MidFrame {
    fn drop(&mut self) {
        if let Some(g) = &self.gauge {
            g.frame_ended(self.backlog);
        }
    }
}

impl<D> Perception<D>
where
    D: CacheableDetector + Send + Sync + 'static,
    D::Input: Send + 'static,
    D::Output: TeacherTarget + FrameDetections,
{
    /// Start the learner at the first frame, once the candidate layers are known.
    pub(super) fn start_learning(
        &mut self,
        profile: &crate::detect::FlopsProfile,
    ) -> crate::Result<()> {
        let Some(l) = self.learning.as_mut().filter(|l| l.learner.is_none()) else {
            return Ok(());
        };
        let det = &*self.detector;
        let candidates = det.candidate_stages(profile);
        crate::ensure!(
            !candidates.is_empty(),
            "learning: {} has no candidate layer for cache exits on this input",
            det.model_name()
        );
        let facts = crate::cache::calibration::ModelFacts::of(det);
        self.layers = candidates
            .iter()
            .map(|&s| facts.stage_names[s].clone())
            .collect();
        for e in &self.live.load().exits {
            crate::ensure!(
                self.layers.contains(&e.layer),
                "learning: the starting exit {} is not a candidate layer ({:?})",
                e.layer,
                self.layers
            );
        }
        let setup = LearnSetup {
            channels: candidates.iter().map(|&s| det.stage_channels(s)).collect(),
            candidates: candidates.clone(),
            facts,
            learn_dir: l.plan.learn_dir.clone(),
            policy: self.exit_policy,
            score_thresh: self.cfg.score_thresh,
            device: det.device(),
            settings: l.plan.settings.clone(),
        };
        l.learner = Some(Learner::spawn(
            self.detector.clone(),
            self.live.clone(),
            setup,
            l.after,
        )?);
        l.candidates = candidates;
        Ok(())
    }
}

/// Offer unit `u` to the retrainer with its inputs at each exit (when every exit saw it).
pub(super) fn offer_retrainer(
    r: &mut Retrainer,
    frame: usize,
    u: usize,
    taps: &mut HashMap<usize, Vec<f32>>,
    exit_stages: &[usize],
    target: Vec<f32>,
) {
    if let Some(feats) = exit_stages.iter().map(|s| taps.remove(s)).collect() {
        // Ids only need to be distinct per unit: a frame has at most a few tiles.
        r.offer((frame * 8 + u) as u64, feats, target);
    }
}
