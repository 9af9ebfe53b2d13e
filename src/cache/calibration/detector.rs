//! What the cache engine needs from a detector to calibrate it: frames as batches of units, the
//! candidate layers, the teacher's classes and each stage's channel count.

use crate::detect::maskrcnn::MaskRcnn;
use crate::detect::ssdlite::{tiles, SsdLite, TileMode};
use crate::detect::{FlopsProfile, Staged, TeacherTarget};
use crate::frame::RgbFrame;
use candle_core::{Result, Tensor};

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
    /// Where the detector runs (heads trained elsewhere move there).
    fn device(&self) -> candle_core::Device {
        candle_core::Device::Cpu
    }
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
        let plan = tiles::plan(frame.width, frame.height, TileMode::Auto)
            .map_err(|e| candle_core::Error::Msg(e.one_line()))?;
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
    fn device(&self) -> candle_core::Device {
        SsdLite::device(self).clone()
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
    fn device(&self) -> candle_core::Device {
        MaskRcnn::device(self).clone()
    }
}
