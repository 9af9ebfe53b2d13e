//! The detector as perception runs it: the registry's [`AnyDetector`] as a cacheable detector,
//! and [`Cancellable`], which makes any staged detector stop between two stages once the node is
//! stopping.

use super::clock::StopFlag;
use crate::cache::calibration::{CacheableDetector, Region};
use crate::detect::registry::{AnyDetector, AnyInput};
use crate::detect::{FlopsProfile, Staged};
use crate::frame::RgbFrame;
use candle_core::{Result, Tensor};

// Here rather than in `cache/`: the cache engine has no need to know the registry; this impl
// only forwards to the held detector's own (`cache::calibration`).
impl CacheableDetector for AnyDetector {
    fn model_name(&self) -> &'static str {
        self.name().as_str()
    }

    fn frame_units(&self, frame: &RgbFrame) -> Result<(AnyInput, Vec<Region>)> {
        Ok(match self {
            AnyDetector::Ssd(m) => {
                let (x, r) = m.frame_units(frame)?;
                (AnyInput::Ssd(x), r)
            }
            AnyDetector::Rcnn(m) => {
                let (x, r) = m.frame_units(frame)?;
                (AnyInput::Rcnn(x), r)
            }
        })
    }

    fn candidate_stages(&self, profile: &FlopsProfile) -> Vec<usize> {
        match self {
            AnyDetector::Ssd(m) => m.candidate_stages(profile),
            AnyDetector::Rcnn(m) => m.candidate_stages(profile),
        }
    }

    fn classes(&self) -> usize {
        match self {
            AnyDetector::Ssd(m) => m.classes(),
            AnyDetector::Rcnn(m) => m.classes(),
        }
    }

    fn positive(&self) -> usize {
        match self {
            AnyDetector::Ssd(m) => m.positive(),
            AnyDetector::Rcnn(m) => m.positive(),
        }
    }

    fn stage_channels(&self, i: usize) -> usize {
        match self {
            AnyDetector::Ssd(m) => m.stage_channels(i),
            AnyDetector::Rcnn(m) => m.stage_channels(i),
        }
    }

    fn device(&self) -> candle_core::Device {
        match self {
            AnyDetector::Ssd(m) => CacheableDetector::device(&**m),
            AnyDetector::Rcnn(m) => CacheableDetector::device(&**m),
        }
    }
}

/// A staged detector that refuses to start a stage (or the rest of the network) once `stop` is
/// set, so a frame in flight ends within one stage of a stop.
pub struct Cancellable<'a, D> {
    /// The detector that does the work.
    pub inner: &'a D,
    /// Set: no further stage starts.
    pub stop: &'a StopFlag,
}

impl<D> Cancellable<'_, D> {
    fn go_on(&self) -> Result<()> {
        if self.stop.is_stopped() {
            Err(candle_core::Error::Msg(
                "cancelled: the node is stopping".into(),
            ))
        } else {
            Ok(())
        }
    }
}

impl<D: Staged> Staged for Cancellable<'_, D> {
    type Input = D::Input;
    type State = D::State;
    type Output = D::Output;

    fn stage_names(&self) -> &[&'static str] {
        self.inner.stage_names()
    }
    fn start(&self, input: &D::Input) -> Result<D::State> {
        self.go_on()?;
        self.inner.start(input)
    }
    fn run_stage(&self, i: usize, state: D::State) -> Result<D::State> {
        self.go_on()?;
        self.inner.run_stage(i, state)
    }
    fn activation<'a>(&self, state: &'a D::State) -> &'a Tensor {
        self.inner.activation(state)
    }
    fn select(&self, state: &D::State, keep: &[usize]) -> Result<D::State> {
        self.inner.select(state, keep)
    }
    fn finish(&self, state: D::State) -> Result<Vec<D::Output>> {
        self.go_on()?;
        self.inner.finish_until(state, &|| self.stop.is_stopped())
    }
    fn flops_profile(&self, input: &D::Input) -> Result<FlopsProfile> {
        self.inner.flops_profile(input)
    }
}
