//! RoI heads (torchvision `RoIHeads` at test time): MultiScaleRoIAlign 7x7 -> TwoMLPHead ->
//! class scores and per-class box deltas -> post-processing; then MultiScaleRoIAlign 14x14 on the
//! kept boxes -> four 3x3 convs -> 2x2 transposed conv -> per-class 28x28 mask logits.

use super::weights::{conv_with_bias, tensor};
use crate::detect::ops::conv::{Activation, Conv2d, ConvSpec, Padding};
use crate::detect::ops::roi_align::multiscale_roi_align;
use crate::detect::ops::tv_boxes::{
    batched_nms, clip_to_image, decode, remove_small, ROI_HEADS_WEIGHTS,
};
use candle_core::{Result, Tensor, D};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub struct BoxConfig {
    /// Keep (box, class) pairs scoring strictly above this.
    pub score_thresh: f32,
    pub nms_thresh: f32,
    pub detections_per_img: usize,
    pub min_size: f32,
    pub weights: [f32; 4],
    pub sampling_ratio: i32,
}

impl Default for BoxConfig {
    fn default() -> Self {
        Self {
            score_thresh: 0.05,
            nms_thresh: 0.5,
            detections_per_img: 100,
            min_size: 1e-2,
            weights: ROI_HEADS_WEIGHTS,
            sampling_ratio: 2,
        }
    }
}

/// Kept detections of one image, in resized-image pixels.
#[derive(Clone, Debug, Default)]
pub struct BoxDetections {
    pub boxes: Vec<[f32; 4]>,
    pub scores: Vec<f32>,
    pub labels: Vec<u32>,
    /// The box predictor's softmax over all classes for the RoI each detection came from.
    pub class_probs: Vec<Vec<f32>>,
}

#[derive(Clone, Debug)]
struct Linear {
    w: Tensor,
    b: Tensor,
}

impl Linear {
    fn load(sd: &HashMap<String, Tensor>, p: &str) -> Result<Self> {
        Ok(Self {
            w: tensor(sd, &format!("{p}.weight"))?,
            b: tensor(sd, &format!("{p}.bias"))?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.w.t()?)?.broadcast_add(&self.b)
    }
}

#[derive(Clone, Debug)]
pub struct RoiHeads {
    fc6: Linear,
    fc7: Linear,
    cls_score: Linear,
    bbox_pred: Linear,
    mask_convs: Vec<Conv2d>,
    /// ConvTranspose2d(k=2, s=2) weight `[in, out, 2, 2]` and bias.
    deconv_w: Tensor,
    deconv_b: Tensor,
    mask_logits: Conv2d,
    pub config: BoxConfig,
}

impl RoiHeads {
    pub fn load(
        sd: &HashMap<String, Tensor>,
        c: usize,
        mask_layers: &[usize],
        mask_pred: usize,
        classes: usize,
    ) -> Result<Self> {
        let get = |k: &str| tensor(sd, k);
        let mut mask_convs = Vec::new();
        let mut cin = c;
        for (i, &w) in mask_layers.iter().enumerate() {
            let spec = ConvSpec::new(cin, w, 3)
                .padding(Padding::symmetric(1))
                .activation(Activation::Relu);
            mask_convs.push(conv_with_bias(
                sd,
                &format!("roi_heads.mask_head.{i}.0"),
                spec,
            )?);
            cin = w;
        }
        Ok(Self {
            fc6: Linear::load(sd, "roi_heads.box_head.fc6")?,
            fc7: Linear::load(sd, "roi_heads.box_head.fc7")?,
            cls_score: Linear::load(sd, "roi_heads.box_predictor.cls_score")?,
            bbox_pred: Linear::load(sd, "roi_heads.box_predictor.bbox_pred")?,
            mask_convs,
            deconv_w: get("roi_heads.mask_predictor.conv5_mask.weight")?,
            deconv_b: get("roi_heads.mask_predictor.conv5_mask.bias")?,
            mask_logits: Conv2d::new(
                ConvSpec::new(mask_pred, classes, 1),
                get("roi_heads.mask_predictor.mask_fcn_logits.weight")?,
                Some(get("roi_heads.mask_predictor.mask_fcn_logits.bias")?),
            )?,
            config: BoxConfig::default(),
        })
    }

    fn pool(
        levels: &[Tensor],
        img: usize,
        rois: &[[f32; 4]],
        out: usize,
        image_size: (usize, usize),
        sampling: i32,
    ) -> Result<Tensor> {
        let maps: Vec<Tensor> = levels
            .iter()
            .map(|l| l.get(img)?.contiguous())
            .collect::<Result<_>>()?;
        let data: Vec<Vec<f32>> = maps
            .iter()
            .map(|m| m.flatten_all()?.to_vec1())
            .collect::<Result<_>>()?;
        let dims: Vec<(usize, usize, usize)> =
            maps.iter().map(|m| m.dims3()).collect::<Result<_>>()?;
        let lv: Vec<(&[f32], usize, usize, usize)> = data
            .iter()
            .zip(&dims)
            .map(|(d, &(c, h, w))| (d.as_slice(), c, h, w))
            .collect();
        let c = dims[0].0;
        let v = multiscale_roi_align(&lv, image_size, rois, (out, out), sampling);
        Tensor::from_vec(v, (rois.len(), c, out, out), levels[0].device())
    }

    /// Box branch for image `img` of the batch. `levels` are the four FPN maps used for pooling.
    pub fn detect_boxes(
        &self,
        levels: &[Tensor],
        img: usize,
        proposals: &[[f32; 4]],
        image_size: (usize, usize),
    ) -> Result<BoxDetections> {
        let cfg = &self.config;
        if proposals.is_empty() {
            return Ok(BoxDetections::default());
        }
        let x = Self::pool(levels, img, proposals, 7, image_size, cfg.sampling_ratio)?;
        let x = x.flatten_from(1)?;
        let x = self.fc7.forward(&self.fc6.forward(&x)?.relu()?)?.relu()?;
        let probs: Vec<Vec<f32>> =
            candle_nn::ops::softmax(&self.cls_score.forward(&x)?, D::Minus1)?.to_vec2()?;
        let deltas: Vec<Vec<f32>> = self.bbox_pred.forward(&x)?.to_vec2()?;
        let k = probs[0].len();
        let (ih, iw) = image_size;
        let (mut boxes, mut scores, mut labels, mut src) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (r, p) in proposals.iter().enumerate() {
            for cls in 1..k {
                let d = &deltas[r][cls * 4..cls * 4 + 4];
                let mut b = [decode([d[0], d[1], d[2], d[3]], *p, cfg.weights)];
                clip_to_image(&mut b, ih, iw);
                let b = b[0];
                if probs[r][cls] > cfg.score_thresh {
                    boxes.push(b);
                    scores.push(probs[r][cls]);
                    labels.push(cls);
                    src.push(r);
                }
            }
        }
        let small_ok = remove_small(&boxes, cfg.min_size);
        let pick = |v: &[usize]| -> (Vec<[f32; 4]>, Vec<f32>, Vec<usize>, Vec<usize>) {
            (
                v.iter().map(|&i| boxes[i]).collect(),
                v.iter().map(|&i| scores[i]).collect(),
                v.iter().map(|&i| labels[i]).collect(),
                v.iter().map(|&i| src[i]).collect(),
            )
        };
        let (b2, s2, l2, r2) = pick(&small_ok);
        let mut keep = batched_nms(&b2, &s2, &l2, cfg.nms_thresh as f64);
        keep.truncate(cfg.detections_per_img);
        Ok(BoxDetections {
            boxes: keep.iter().map(|&i| b2[i]).collect(),
            scores: keep.iter().map(|&i| s2[i]).collect(),
            labels: keep.iter().map(|&i| l2[i] as u32).collect(),
            class_probs: keep.iter().map(|&i| probs[r2[i]].clone()).collect(),
        })
    }

    /// Mask probabilities `[N, 28, 28]` for the detections' own classes.
    pub fn detect_masks(
        &self,
        levels: &[Tensor],
        img: usize,
        dets: &BoxDetections,
        image_size: (usize, usize),
    ) -> Result<Vec<Vec<f32>>> {
        if dets.boxes.is_empty() {
            return Ok(Vec::new());
        }
        let mut x = Self::pool(
            levels,
            img,
            &dets.boxes,
            14,
            image_size,
            self.config.sampling_ratio,
        )?;
        for c in &self.mask_convs {
            x = c.forward(&x)?;
        }
        let x = self
            .mask_logits
            .forward(&conv_transpose_2x2(&x, &self.deconv_w, &self.deconv_b)?.relu()?)?;
        let (n, _, h, w) = x.dims4()?;
        let mut out = Vec::with_capacity(n);
        for (i, &label) in dets.labels.iter().enumerate() {
            let logits: Vec<f32> = x.get(i)?.get(label as usize)?.flatten_all()?.to_vec1()?;
            debug_assert_eq!(logits.len(), h * w);
            out.push(logits.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect());
        }
        Ok(out)
    }
}

/// ConvTranspose2d with kernel 2, stride 2, no padding: each input pixel writes its own 2x2 block,
/// so it is one GEMM `[N*H*W, Cin] x [Cin, Cout*4]` and a reshuffle.
pub fn conv_transpose_2x2(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (n, cin, h, wd) = x.dims4()?;
    let cout = w.dim(1)?;
    let rows = x.permute((0, 2, 3, 1))?.reshape((n * h * wd, cin))?;
    let y = rows.matmul(&w.reshape((cin, cout * 4))?)?; // [N*H*W, Cout*2*2]
    let y = y
        .reshape((n, h, wd, cout, 2, 2))?
        .permute((0, 3, 1, 4, 2, 5))?
        .reshape((n, cout, 2 * h, 2 * wd))?;
    y.broadcast_add(&b.reshape((1, cout, 1, 1))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn transposed_conv_matches_candle() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 2.0 * 3.0 * 4.0 * 5.0, &dev)
            .unwrap()
            .reshape((2, 3, 4, 5))
            .unwrap()
            .affine(0.01, -0.3)
            .unwrap();
        let w = Tensor::arange(0f32, 3.0 * 6.0 * 4.0, &dev)
            .unwrap()
            .reshape((3, 6, 2, 2))
            .unwrap()
            .cos()
            .unwrap();
        let b = Tensor::arange(0f32, 6.0, &dev).unwrap().sin().unwrap();
        let ours = conv_transpose_2x2(&x, &w, &b).unwrap();
        let reference = x
            .conv_transpose2d(&w, 0, 0, 2, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, 6, 1, 1)).unwrap())
            .unwrap();
        let e: f32 = (ours - reference)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(e < 1e-5, "{e}");
    }
}
