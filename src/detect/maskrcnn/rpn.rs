//! Region proposal network (torchvision `RPNHead` + `RegionProposalNetwork` at test time):
//! 3x3 conv + ReLU shared over levels, objectness and box deltas per anchor, per-level top-n by
//! objectness, decode, clip, drop small and low-scoring boxes, NMS per level, keep the best.

use super::weights::conv_with_bias;
use crate::detect::ops::anchors::AnchorGenerator;
use crate::detect::ops::conv::{Activation, Conv2d, ConvSpec, Padding};
use crate::detect::ops::tv_boxes::{batched_nms, clip_to_image, decode, remove_small, RPN_WEIGHTS};
use candle_core::{Result, Tensor};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub struct RpnConfig {
    pub pre_nms_top_n: usize,
    pub post_nms_top_n: usize,
    pub nms_thresh: f32,
    pub score_thresh: f32,
    pub min_size: f32,
}

impl Default for RpnConfig {
    /// torchvision's test-time settings.
    fn default() -> Self {
        Self {
            pre_nms_top_n: 1000,
            post_nms_top_n: 1000,
            nms_thresh: 0.7,
            score_thresh: 0.0,
            min_size: 1e-3,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Rpn {
    conv: Conv2d,
    cls_logits: Conv2d,
    bbox_pred: Conv2d,
    anchors: AnchorGenerator,
    pub config: RpnConfig,
}

impl Rpn {
    pub fn load(sd: &HashMap<String, Tensor>, c: usize, anchors_per_cell: usize) -> Result<Self> {
        Ok(Self {
            conv: conv_with_bias(
                sd,
                "rpn.head.conv.0.0",
                ConvSpec::new(c, c, 3)
                    .padding(Padding::symmetric(1))
                    .activation(Activation::Relu),
            )?,
            cls_logits: conv_with_bias(
                sd,
                "rpn.head.cls_logits",
                ConvSpec::new(c, anchors_per_cell, 1),
            )?,
            bbox_pred: conv_with_bias(
                sd,
                "rpn.head.bbox_pred",
                ConvSpec::new(c, 4 * anchors_per_cell, 1),
            )?,
            anchors: AnchorGenerator::maskrcnn_default(),
            config: RpnConfig::default(),
        })
    }

    /// Proposals `[x1, y1, x2, y2]` in resized-image pixels, per image, best first.
    pub fn forward(
        &self,
        levels: &[Tensor],
        image_sizes: &[(usize, usize)],
    ) -> Result<Vec<Vec<[f32; 4]>>> {
        let (b, _, hp, wp) = levels[0].dims4()?;
        // Padded input size: the finest level is 1/4 of it.
        let (pad_h, pad_w) = (hp * 4, wp * 4);
        let cfg = &self.config;
        // Per image: (box, objectness logit, level) of each level's top-n.
        let mut cands: Vec<Vec<([f32; 4], f32, usize)>> = vec![Vec::new(); b];
        for (lvl, feat) in levels.iter().enumerate() {
            let t = self.conv.forward(feat)?;
            let obj = self.cls_logits.forward(&t)?;
            let deltas = self.bbox_pred.forward(&t)?;
            let (_, a, h, w) = obj.dims4()?;
            let obj: Vec<Vec<f32>> = obj
                .permute((0, 2, 3, 1))?
                .reshape((b, h * w * a))?
                .to_vec2()?;
            let deltas: Vec<Vec<f32>> = deltas
                .reshape((b, a, 4, h, w))?
                .permute((0, 3, 4, 1, 2))?
                .reshape((b, h * w * a * 4))?
                .to_vec2()?;
            let anchors = self.anchors.grid_anchors(lvl, h, w, pad_h / h, pad_w / w);
            for (img, cand) in cands.iter_mut().enumerate() {
                let o = &obj[img];
                let mut order: Vec<usize> = (0..o.len()).collect();
                order.sort_by(|&x, &y| o[y].total_cmp(&o[x]));
                order.truncate(cfg.pre_nms_top_n.min(o.len()));
                for i in order {
                    let d = &deltas[img][i * 4..i * 4 + 4];
                    let bx = decode([d[0], d[1], d[2], d[3]], anchors[i], RPN_WEIGHTS);
                    cand.push((bx, o[i], lvl));
                }
            }
        }
        let mut out = Vec::with_capacity(b);
        for (img, cand) in cands.into_iter().enumerate() {
            let (ih, iw) = image_sizes[img];
            let mut boxes: Vec<[f32; 4]> = cand.iter().map(|c| c.0).collect();
            clip_to_image(&mut boxes, ih, iw);
            let scores: Vec<f32> = cand.iter().map(|c| 1.0 / (1.0 + (-c.1).exp())).collect();
            let levels: Vec<usize> = cand.iter().map(|c| c.2).collect();
            let keep: Vec<usize> = remove_small(&boxes, cfg.min_size)
                .into_iter()
                .filter(|&i| scores[i] >= cfg.score_thresh)
                .collect();
            let kb: Vec<[f32; 4]> = keep.iter().map(|&i| boxes[i]).collect();
            let ks: Vec<f32> = keep.iter().map(|&i| scores[i]).collect();
            let kl: Vec<usize> = keep.iter().map(|&i| levels[i]).collect();
            let mut sel = batched_nms(&kb, &ks, &kl, cfg.nms_thresh as f64);
            sel.truncate(cfg.post_nms_top_n);
            out.push(sel.into_iter().map(|i| kb[i]).collect());
        }
        Ok(out)
    }
}
