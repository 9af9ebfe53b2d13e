//! The detectors by name: one [`load`] for every command and for programs that embed the node
//! (`ssdlite-ped` from its converted weights, `maskrcnn-r50-fpn` from torchvision's file or from
//! deterministic stand-in weights), and [`AnyDetector`], either of them behind one type.
//!
//! [`AnyDetector`] is a [`Staged`] network like each detector it holds (its inputs, states and
//! outputs are enums over theirs), so the cache engine and the node take it as they take either
//! detector; the results are the held detector's, unchanged.
#![warn(missing_docs)]

use super::maskrcnn::{MaskCrop, MaskRcnn, RcnnOutput, RcnnState, Transformed};
use super::ssdlite::{SsdLite, SsdState, TileDetections, TileMode};
use super::{Detection, FlopsProfile, FrameDetections, Staged, TeacherTarget};
use crate::frame::RgbFrame;
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};

/// Default location of the converted SSDLite weights (made by `models/fetch.sh`).
pub const DEFAULT_SSDLITE_WEIGHTS: &str = "models/ssdlite_ped.safetensors";

/// The detectors this crate knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelName {
    /// SSDLite-MobileNetV2 pedestrian detector (the default).
    SsdlitePed,
    /// torchvision Mask R-CNN ResNet50-FPN.
    MaskRcnnR50Fpn,
}

impl ModelName {
    /// Every model, in the order the help text lists them.
    pub const ALL: [ModelName; 2] = [ModelName::SsdlitePed, ModelName::MaskRcnnR50Fpn];

    /// The name as commands and configs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelName::SsdlitePed => "ssdlite-ped",
            ModelName::MaskRcnnR50Fpn => "maskrcnn-r50-fpn",
        }
    }
}

impl std::fmt::Display for ModelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ModelName {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                crate::err!("unknown model {s:?} (known: ssdlite-ped, maskrcnn-r50-fpn)")
            })
    }
}

/// Where a detector's weights come from.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Weights {
    /// The model's default file (SSDLite: [`DEFAULT_SSDLITE_WEIGHTS`]; Mask R-CNN has none).
    #[default]
    Default,
    /// A weights file.
    File(PathBuf),
    /// Mask R-CNN only: deterministic stand-in weights (real shapes and compute, meaningless
    /// detections), for latency runs without torchvision's file.
    Standin,
}

impl Weights {
    /// How reports name these weights for `model`.
    pub fn describe(&self, model: ModelName) -> String {
        match (self, model) {
            (Weights::Standin, _) => {
                "stand-in (deterministic; latency only, detections mean nothing)".into()
            }
            (Weights::File(p), _) => p.display().to_string(),
            (Weights::Default, ModelName::SsdlitePed) => DEFAULT_SSDLITE_WEIGHTS.into(),
            (Weights::Default, ModelName::MaskRcnnR50Fpn) => "none".into(),
        }
    }
}

/// Load detector `model` (a name, see [`ModelName`]) with `weights` onto `device`. Errors name
/// the file and the cause, and say how to get missing weights.
pub fn load(model: &str, weights: &Weights, device: &Device) -> crate::Result<AnyDetector> {
    let name: ModelName = model.parse()?;
    Ok(match (name, weights) {
        (ModelName::SsdlitePed, Weights::Standin) => {
            crate::bail!("stand-in weights exist for maskrcnn-r50-fpn only, not ssdlite-ped")
        }
        (ModelName::SsdlitePed, w) => {
            let given = match w {
                Weights::File(p) => Some(p.as_path()),
                _ => None,
            };
            let path = given.unwrap_or(Path::new(DEFAULT_SSDLITE_WEIGHTS));
            crate::ensure!(
                path.exists(),
                "loading {}: file not found{}",
                path.display(),
                if given.is_none() {
                    " (run models/fetch.sh to download and convert it)"
                } else {
                    ""
                }
            );
            AnyDetector::Ssd(Box::new(SsdLite::load(path, device)?))
        }
        (ModelName::MaskRcnnR50Fpn, Weights::File(p)) => {
            AnyDetector::Rcnn(Box::new(MaskRcnn::load(p, device)?))
        }
        (ModelName::MaskRcnnR50Fpn, Weights::Standin) => {
            AnyDetector::Rcnn(Box::new(standin_maskrcnn(device)?))
        }
        (ModelName::MaskRcnnR50Fpn, Weights::Default) => crate::bail!(
            "model maskrcnn-r50-fpn needs --weights FILE (torchvision's COCO .pth; see README, \
             Models and data) or stand-in weights"
        ),
    })
}

/// The state dict of [`Weights::Standin`]: Mask R-CNN ResNet50-FPN at full width with
/// deterministic weights (`detect::maskrcnn::standin`, hash variant), torchvision's names.
pub fn standin_state_dict(
    device: &Device,
) -> crate::Result<std::collections::HashMap<String, Tensor>> {
    use super::maskrcnn::standin::{resnet50_fpn_arch, state_dict, Variant};
    state_dict(&resnet50_fpn_arch(), Variant::Hash, device)
        .map_err(|e| crate::err!("building stand-in Mask R-CNN weights: {e}"))
}

fn standin_maskrcnn(device: &Device) -> crate::Result<MaskRcnn> {
    let arch = super::maskrcnn::standin::resnet50_fpn_arch();
    Ok(MaskRcnn::from_state_dict(
        &standin_state_dict(device)?,
        arch,
        device,
    )?)
}

/// Either detector.
#[derive(Clone, Debug)]
pub enum AnyDetector {
    /// `ssdlite-ped`.
    Ssd(Box<SsdLite>),
    /// `maskrcnn-r50-fpn`.
    Rcnn(Box<MaskRcnn>),
}

/// An [`AnyDetector`]'s preprocessed batch.
#[derive(Clone, Debug)]
pub enum AnyInput {
    /// SSDLite's tiles, `[tiles, 3, 300, 300]`.
    Ssd(Tensor),
    /// Mask R-CNN's resized, padded batch.
    Rcnn(Transformed),
}

/// An [`AnyDetector`]'s state between stages.
#[derive(Clone, Debug)]
pub enum AnyState {
    /// SSDLite's state.
    Ssd(SsdState),
    /// Mask R-CNN's state.
    Rcnn(RcnnState),
}

/// An [`AnyDetector`]'s output for one batch item.
#[derive(Clone, Debug)]
pub enum AnyOutput {
    /// SSDLite's detections in one tile.
    Ssd(TileDetections),
    /// Mask R-CNN's detections in one frame.
    Rcnn(RcnnOutput),
}

fn mismatch() -> candle_core::Error {
    candle_core::Error::Msg("a batch or state of the other detector".into())
}

impl AnyDetector {
    /// Which model this is.
    pub fn name(&self) -> ModelName {
        match self {
            AnyDetector::Ssd(_) => ModelName::SsdlitePed,
            AnyDetector::Rcnn(_) => ModelName::MaskRcnnR50Fpn,
        }
    }

    /// Keep Mask R-CNN's detections down to `score_thresh` when it is below the model's own
    /// floor (torchvision's 0.05), so a low threshold sees the whole top-100. No-op for SSDLite.
    pub fn lower_score_floor(&mut self, score_thresh: f32) {
        if let AnyDetector::Rcnn(m) = self {
            let c = &mut m.roi_heads.config;
            c.score_thresh = c.score_thresh.min(score_thresh.max(0.0));
        }
    }

    /// Detections scoring at least `score_thresh` in frame pixels, best first, and their masks
    /// (Mask R-CNN). `tiles`: SSDLite's tiling of wide frames.
    pub fn detect(
        &self,
        frame: &RgbFrame,
        tiles: TileMode,
        score_thresh: f32,
    ) -> candle_core::Result<(Vec<Detection>, Vec<MaskCrop>)> {
        match self {
            AnyDetector::Ssd(m) => Ok((m.detect(frame, tiles, score_thresh)?, Vec::new())),
            AnyDetector::Rcnn(m) => {
                let out = m.detect(&[frame])?.remove(0);
                Ok(out
                    .detections
                    .into_iter()
                    .zip(out.masks)
                    .filter(|(d, _)| d.score >= score_thresh)
                    .unzip())
            }
        }
    }
}

impl Staged for AnyDetector {
    type Input = AnyInput;
    type State = AnyState;
    type Output = AnyOutput;

    fn stage_names(&self) -> &[&'static str] {
        match self {
            AnyDetector::Ssd(m) => m.stage_names(),
            AnyDetector::Rcnn(m) => m.stage_names(),
        }
    }

    fn start(&self, input: &AnyInput) -> candle_core::Result<AnyState> {
        match (self, input) {
            (AnyDetector::Ssd(m), AnyInput::Ssd(x)) => Ok(AnyState::Ssd(m.start(x)?)),
            (AnyDetector::Rcnn(m), AnyInput::Rcnn(x)) => Ok(AnyState::Rcnn(m.start(x)?)),
            _ => Err(mismatch()),
        }
    }

    fn run_stage(&self, i: usize, state: AnyState) -> candle_core::Result<AnyState> {
        match (self, state) {
            (AnyDetector::Ssd(m), AnyState::Ssd(s)) => Ok(AnyState::Ssd(m.run_stage(i, s)?)),
            (AnyDetector::Rcnn(m), AnyState::Rcnn(s)) => Ok(AnyState::Rcnn(m.run_stage(i, s)?)),
            _ => Err(mismatch()),
        }
    }

    fn activation<'a>(&self, state: &'a AnyState) -> &'a Tensor {
        // Each state holds its own activation; which detector made it does not matter here.
        match state {
            AnyState::Ssd(s) => &s.x,
            AnyState::Rcnn(s) => &s.x,
        }
    }

    fn select(&self, state: &AnyState, keep: &[usize]) -> candle_core::Result<AnyState> {
        match (self, state) {
            (AnyDetector::Ssd(m), AnyState::Ssd(s)) => Ok(AnyState::Ssd(m.select(s, keep)?)),
            (AnyDetector::Rcnn(m), AnyState::Rcnn(s)) => Ok(AnyState::Rcnn(m.select(s, keep)?)),
            _ => Err(mismatch()),
        }
    }

    fn finish(&self, state: AnyState) -> candle_core::Result<Vec<AnyOutput>> {
        match (self, state) {
            (AnyDetector::Ssd(m), AnyState::Ssd(s)) => {
                Ok(m.finish(s)?.into_iter().map(AnyOutput::Ssd).collect())
            }
            (AnyDetector::Rcnn(m), AnyState::Rcnn(s)) => {
                Ok(m.finish(s)?.into_iter().map(AnyOutput::Rcnn).collect())
            }
            _ => Err(mismatch()),
        }
    }

    fn finish_until(
        &self,
        state: AnyState,
        cancel: &dyn Fn() -> bool,
    ) -> candle_core::Result<Vec<AnyOutput>> {
        match (self, state) {
            (AnyDetector::Ssd(m), AnyState::Ssd(s)) => Ok(m
                .finish_until(s, cancel)?
                .into_iter()
                .map(AnyOutput::Ssd)
                .collect()),
            (AnyDetector::Rcnn(m), AnyState::Rcnn(s)) => Ok(m
                .finish_until(s, cancel)?
                .into_iter()
                .map(AnyOutput::Rcnn)
                .collect()),
            _ => Err(mismatch()),
        }
    }

    fn flops_profile(&self, input: &AnyInput) -> candle_core::Result<FlopsProfile> {
        match (self, input) {
            (AnyDetector::Ssd(m), AnyInput::Ssd(x)) => m.flops_profile(x),
            (AnyDetector::Rcnn(m), AnyInput::Rcnn(x)) => m.flops_profile(x),
            _ => Err(mismatch()),
        }
    }
}

impl TeacherTarget for AnyOutput {
    fn target(&self) -> Vec<f32> {
        match self {
            AnyOutput::Ssd(o) => o.target(),
            AnyOutput::Rcnn(o) => o.target(),
        }
    }

    fn pedestrian(&self, score_thresh: f32) -> bool {
        match self {
            AnyOutput::Ssd(o) => o.pedestrian(score_thresh),
            AnyOutput::Rcnn(o) => o.pedestrian(score_thresh),
        }
    }

    fn target_at(&self, score_thresh: f32) -> Vec<f32> {
        match self {
            AnyOutput::Ssd(o) => o.target_at(score_thresh),
            AnyOutput::Rcnn(o) => o.target_at(score_thresh),
        }
    }
}

impl FrameDetections for AnyOutput {
    fn frame_boxes(
        &self,
        region: (usize, usize, usize, usize),
        score_thresh: f32,
    ) -> Vec<([f32; 4], f32, u32)> {
        match self {
            AnyOutput::Ssd(o) => o.frame_boxes(region, score_thresh),
            AnyOutput::Rcnn(o) => o.frame_boxes(region, score_thresh),
        }
    }

    fn pedestrian_label(&self) -> u32 {
        match self {
            AnyOutput::Ssd(o) => o.pedestrian_label(),
            AnyOutput::Rcnn(o) => o.pedestrian_label(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_known() {
        for m in ModelName::ALL {
            assert_eq!(m.as_str().parse::<ModelName>().unwrap(), m);
        }
        let e = "yolo9000".parse::<ModelName>().unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown model \"yolo9000\" (known: ssdlite-ped, maskrcnn-r50-fpn)"
        );
    }

    #[test]
    fn weights_that_cannot_exist_are_refused_before_any_file_is_read() {
        let dev = Device::Cpu;
        let e = load("ssdlite-ped", &Weights::Standin, &dev).unwrap_err();
        assert!(e.to_string().contains("maskrcnn-r50-fpn only"), "{e}");
        let e = load("maskrcnn-r50-fpn", &Weights::Default, &dev).unwrap_err();
        assert!(e.to_string().contains("needs --weights"), "{e}");
        let missing = Weights::File("/nonexistent/x.safetensors".into());
        let e = load("ssdlite-ped", &missing, &dev).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.safetensors"), "{e}");
    }
}
