//! Mask R-CNN ResNet50-FPN, torchvision-compatible (`maskrcnn_resnet50_fpn`, v1): loads
//! torchvision's own weights (`.pth` or `.safetensors`, either key generation) and reproduces
//! its inference: transform, ResNet body, FPN, RPN, RoI heads, mask head, paste into the image.
//! Candidate cache layers are the body's `layer1..layer3` outputs.

pub mod fpn;
pub mod resnet;
pub mod roi_heads;
pub mod rpn;
pub mod standin;
pub mod transform;
pub mod weights;

use crate::detect::ops::paste::paste_window;
use crate::detect::ops::tv_boxes::resize_boxes;
use crate::detect::{Detection, Staged};
use crate::frame::RgbFrame;
use candle_core::{Device, Result, Tensor};
use std::path::Path;
pub use transform::{TransformConfig, Transformed};

/// COCO category id of "person".
pub const PERSON: u32 = 1;

const STAGE_NAMES: [&str; 4] = ["layer1", "layer2", "layer3", "layer4"];

#[derive(Clone, Debug)]
pub struct MaskRcnn {
    pub arch: weights::Arch,
    pub transform: TransformConfig,
    body: resnet::ResNetBody,
    fpn: fpn::Fpn,
    pub rpn: rpn::Rpn,
    pub roi_heads: roi_heads::RoiHeads,
    device: Device,
}

/// Between stages: the current body activation, the finished layer outputs, and the sizes.
#[derive(Clone, Debug)]
pub struct RcnnState {
    pub x: Tensor,
    pub layers: Vec<Tensor>,
    pub image_sizes: Vec<(usize, usize)>,
    pub original_sizes: Vec<(usize, usize)>,
}

/// A pasted instance mask, cropped to where it is non-zero (for overlays).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MaskCrop {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
    /// `w * h` bytes, 1 where the pasted probability is > 0.5.
    pub bits: Vec<u8>,
}

/// Everything the detector says about one image, in original-image pixels.
#[derive(Clone, Debug, Default)]
pub struct RcnnOutput {
    /// Sorted by score, with `mask_area` set.
    pub detections: Vec<Detection>,
    /// Box predictor softmax of each detection's RoI (the cache teacher's target).
    pub class_probs: Vec<Vec<f32>>,
    pub masks: Vec<MaskCrop>,
    /// RPN proposals in resized-image pixels (for parity tests and diagnostics).
    pub proposals: Vec<[f32; 4]>,
    /// Classes of the box predictor (91 for COCO, background = 0 included).
    pub num_classes: usize,
}

impl MaskRcnn {
    /// Load torchvision weights from a `.pth` or `.safetensors` file.
    pub fn load(path: &Path, device: &Device) -> crate::Result<Self> {
        let sd = weights::read_state_dict(path)?;
        let arch =
            weights::infer_arch(&sd).map_err(|e| crate::err!("loading {}: {e}", path.display()))?;
        weights::check(&sd, &weights::expected_shapes(&arch))
            .map_err(|e| crate::err!("loading {}: {e}", path.display()))?;
        let sd: std::collections::HashMap<String, Tensor> = sd
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_device(device)?)))
            .collect::<Result<_>>()?;
        Self::from_state_dict(&sd, arch, device)
            .map_err(|e| crate::err!("loading {}: {e}", path.display()))
    }

    pub fn from_state_dict(
        sd: &std::collections::HashMap<String, Tensor>,
        arch: weights::Arch,
        device: &Device,
    ) -> Result<Self> {
        let body = resnet::ResNetBody::load(sd, &arch)?;
        let outs: Vec<usize> = arch.layers.iter().map(|l| l.2).collect();
        let fpn = fpn::Fpn::load(sd, &outs, arch.fpn_channels)?;
        let rpn = rpn::Rpn::load(sd, arch.fpn_channels, arch.anchors_per_cell)?;
        let roi_heads = roi_heads::RoiHeads::load(
            sd,
            arch.fpn_channels,
            &arch.mask_layers,
            arch.mask_predictor_channels,
            arch.num_classes,
        )?;
        Ok(Self {
            arch,
            transform: TransformConfig::default(),
            body,
            fpn,
            rpn,
            roi_heads,
            device: device.clone(),
        })
    }

    pub fn body(&self) -> &resnet::ResNetBody {
        &self.body
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Transform a batch of frames (same padded size for all).
    pub fn preprocess(&self, frames: &[&RgbFrame]) -> Result<Transformed> {
        transform::transform(&self.transform, frames, &self.device)
    }

    /// FPN levels '0'..'3', 'pool' from the four body layer outputs.
    pub fn fpn(&self, layers: &[Tensor]) -> Result<Vec<Tensor>> {
        self.fpn.forward(layers)
    }

    /// Detect in frames; one output per frame.
    pub fn detect(&self, frames: &[&RgbFrame]) -> Result<Vec<RcnnOutput>> {
        self.forward_staged(&self.preprocess(frames)?)
    }

    /// Analytic FLOPs after the body for a padded `h x w` input: FPN, the RPN head on every level,
    /// the box head on `post_nms_top_n` RoIs and the mask head on `detections_per_img` RoIs (the
    /// most it runs; fewer detections cost less).
    pub fn heads_flops(&self, h: usize, w: usize) -> Result<u64> {
        let a = &self.arch;
        let c = a.fpn_channels as u64;
        let mut total = 0u64;
        let mut sizes = Vec::new();
        let (mut lh, mut lw) = (h / 4, w / 4);
        for &(_, _, out) in &a.layers {
            total += 2 * (out as u64) * c * (lh * lw) as u64 + 2 * 9 * c * c * (lh * lw) as u64;
            sizes.push((lh, lw));
            (lh, lw) = (lh.div_ceil(2), lw.div_ceil(2));
        }
        sizes.push((sizes[3].0.div_ceil(2), sizes[3].1.div_ceil(2)));
        let na = a.anchors_per_cell as u64;
        for (lh, lw) in sizes {
            total += (2 * 9 * c * c + 2 * c * 5 * na) * (lh * lw) as u64;
        }
        let r = a.representation as u64;
        let k = a.num_classes as u64;
        let rois = self.rpn.config.post_nms_top_n as u64;
        total += rois * 2 * (c * 49 * r + r * r + r * 5 * k);
        let dets = self.roi_heads.config.detections_per_img as u64;
        let mut cin = c;
        let mut per_roi = 0u64;
        for &m in &a.mask_layers {
            per_roi += 2 * 9 * cin * m as u64 * 14 * 14;
            cin = m as u64;
        }
        let mp = a.mask_predictor_channels as u64;
        per_roi += 2 * cin * mp * 4 * 14 * 14 + 2 * mp * k * 28 * 28;
        Ok(total + dets * per_roi)
    }

    /// Everything after the body, for one batch.
    pub fn heads(&self, state: RcnnState) -> Result<Vec<RcnnOutput>> {
        self.heads_until(state, &|| false)
    }

    /// [`Self::heads`], giving up between its steps (FPN, RPN, box head, mask head: each a
    /// sizeable share of a frame) once `cancel()` says so.
    pub fn heads_until(
        &self,
        state: RcnnState,
        cancel: &dyn Fn() -> bool,
    ) -> Result<Vec<RcnnOutput>> {
        let go_on = || {
            if cancel() {
                Err(candle_core::Error::Msg("cancelled".into()))
            } else {
                Ok(())
            }
        };
        let levels = self.fpn(&state.layers)?;
        go_on()?;
        let proposals = self.rpn.forward(&levels, &state.image_sizes)?;
        let mut outs = Vec::with_capacity(proposals.len());
        for (img, props) in proposals.into_iter().enumerate() {
            let size = state.image_sizes[img];
            let orig = state.original_sizes[img];
            go_on()?;
            let dets = self
                .roi_heads
                .detect_boxes(&levels[..4], img, &props, size)?;
            go_on()?;
            let masks = self
                .roi_heads
                .detect_masks(&levels[..4], img, &dets, size)?;
            let mut boxes = dets.boxes.clone();
            resize_boxes(&mut boxes, size, orig);
            let mut out = RcnnOutput {
                proposals: props,
                class_probs: dets.class_probs.clone(),
                num_classes: self.arch.num_classes,
                ..Default::default()
            };
            for (i, b) in boxes.iter().enumerate() {
                let crop = paste_window(&masks[i], 28, b, orig.0, orig.1, 1)
                    .map(|w| crop_mask(&w))
                    .unwrap_or_default();
                out.detections.push(Detection {
                    bbox: *b,
                    label: dets.labels[i],
                    score: dets.scores[i],
                    mask_area: Some(crop.bits.iter().map(|&v| v as u64).sum()),
                });
                out.masks.push(crop);
            }
            outs.push(out);
        }
        Ok(outs)
    }
}

/// The bounding window of a pasted mask's pixels > 0.5, as a bitmap.
fn crop_mask(win: &crate::detect::ops::paste::Window) -> MaskCrop {
    let (h, w) = (win.y1 - win.y0, win.x1 - win.x0);
    let m = &win.values;
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for y in 0..h {
        for x in 0..w {
            if m[y * w + x] > 0.5 {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            }
        }
    }
    if x1 <= x0 || y1 <= y0 {
        return MaskCrop::default();
    }
    let mut bits = Vec::with_capacity((x1 - x0) * (y1 - y0));
    for y in y0..y1 {
        bits.extend(m[y * w + x0..y * w + x1].iter().map(|&v| u8::from(v > 0.5)));
    }
    MaskCrop {
        x: win.x0 + x0,
        y: win.y0 + y0,
        w: x1 - x0,
        h: y1 - y0,
        bits,
    }
}

impl crate::detect::TeacherTarget for RcnnOutput {
    /// The box predictor's class distribution for the most confident detection (paper 3.6:
    /// "updating with the most confident object"), or all mass on class 0 ("none") when nothing
    /// passed the score threshold.
    fn target(&self) -> Vec<f32> {
        match self.class_probs.first() {
            Some(p) => p.clone(),
            None => {
                let mut v = vec![0.0; self.num_classes.max(1)];
                v[0] = 1.0;
                v
            }
        }
    }

    fn pedestrian(&self, score_thresh: f32) -> bool {
        self.detections
            .iter()
            .any(|d| d.label == PERSON && d.score >= score_thresh)
    }

    /// `target()` when the most confident detection reaches `score_thresh`, else all mass
    /// on "none": the teacher sees what the node would alert on.
    fn target_at(&self, score_thresh: f32) -> Vec<f32> {
        match self.detections.first() {
            Some(d) if d.score >= score_thresh => self.target(),
            _ => {
                let mut v = vec![0.0; self.num_classes.max(1)];
                v[0] = 1.0;
                v
            }
        }
    }
}

impl Staged for MaskRcnn {
    type Input = Transformed;
    type State = RcnnState;
    type Output = RcnnOutput;

    fn stage_names(&self) -> &[&'static str] {
        &STAGE_NAMES
    }

    fn start(&self, input: &Transformed) -> Result<RcnnState> {
        Ok(RcnnState {
            x: self.body.stem(&input.batch)?,
            layers: Vec::new(),
            image_sizes: input.image_sizes.clone(),
            original_sizes: input.original_sizes.clone(),
        })
    }

    fn run_stage(&self, i: usize, mut state: RcnnState) -> Result<RcnnState> {
        state.x = self.body.layer(i, &state.x)?;
        state.layers.push(state.x.clone());
        Ok(state)
    }

    fn activation<'a>(&self, state: &'a RcnnState) -> &'a Tensor {
        &state.x
    }

    fn select(&self, state: &RcnnState, keep: &[usize]) -> Result<RcnnState> {
        let idx = Tensor::from_vec(
            keep.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            keep.len(),
            state.x.device(),
        )?;
        Ok(RcnnState {
            x: state.x.index_select(&idx, 0)?,
            layers: state
                .layers
                .iter()
                .map(|l| l.index_select(&idx, 0))
                .collect::<Result<_>>()?,
            image_sizes: keep.iter().map(|&i| state.image_sizes[i]).collect(),
            original_sizes: keep.iter().map(|&i| state.original_sizes[i]).collect(),
        })
    }

    fn flops_profile(&self, input: &Transformed) -> Result<crate::detect::FlopsProfile> {
        let (h, w) = (input.batch.dim(2)?, input.batch.dim(3)?);
        let through_stage = (1..=4)
            .map(|n| Ok(self.body.flops(h, w, n)?.0))
            .collect::<Result<Vec<u64>>>()?;
        Ok(crate::detect::FlopsProfile {
            full: through_stage[3] + self.heads_flops(h, w)?,
            through_stage,
        })
    }

    fn finish(&self, state: RcnnState) -> Result<Vec<RcnnOutput>> {
        self.heads(state)
    }

    fn finish_until(&self, state: RcnnState, cancel: &dyn Fn() -> bool) -> Result<Vec<RcnnOutput>> {
        self.heads_until(state, cancel)
    }
}
