//! Box utilities with torchvision's exact semantics (the TF-order decoder for SSDLite lives in
//! `boxes.rs`). Boxes are `[x1, y1, x2, y2]` in pixels, `f32` throughout, as torchvision computes
//! them on `float32` tensors.
//!
//! Counterparts: [`decode`] = `models/detection/_utils.py` `BoxCoder.decode_single`;
//! [`clip_to_image`] = `ops.boxes.clip_boxes_to_image`; [`remove_small`] =
//! `ops.boxes.remove_small_boxes`; [`nms`] = `ops.nms` (CPU kernel); [`batched_nms`] =
//! `ops.boxes.batched_nms` including its choice between the coordinate-offset trick and the
//! per-class loop; [`resize_boxes`] = `models/detection/transform.py` `resize_boxes`.

/// `BoxCoder`'s `bbox_xform_clip = math.log(1000.0 / 16)`, as the `f32` that `torch.clamp`
/// compares a `float32` tensor with.
pub const BBOX_XFORM_CLIP: f32 = 4.135_166_6;

/// RPN box-coder weights in torchvision's Mask R-CNN.
pub const RPN_WEIGHTS: [f32; 4] = [1.0, 1.0, 1.0, 1.0];
/// RoI-heads box-coder weights in torchvision's Mask R-CNN.
pub const ROI_HEADS_WEIGHTS: [f32; 4] = [10.0, 10.0, 5.0, 5.0];

/// `BoxCoder(weights).decode_single` for one box: `rel = [dx, dy, dw, dh]` relative to `b`,
/// `weights = (wx, wy, ww, wh)`. Same operation order as torchvision in `f32`: the deltas are
/// divided by the weights, `dw`/`dh` clamped from above at [`BBOX_XFORM_CLIP`] (not from below),
/// centres at `x1 + 0.5 * w`, half sizes `0.5 * exp(dw) * w`.
pub fn decode(rel: [f32; 4], b: [f32; 4], weights: [f32; 4]) -> [f32; 4] {
    let widths = b[2] - b[0];
    let heights = b[3] - b[1];
    let ctr_x = b[0] + 0.5 * widths;
    let ctr_y = b[1] + 0.5 * heights;
    let dx = rel[0] / weights[0];
    let dy = rel[1] / weights[1];
    let dw = clamp_max(rel[2] / weights[2], BBOX_XFORM_CLIP);
    let dh = clamp_max(rel[3] / weights[3], BBOX_XFORM_CLIP);
    let pred_ctr_x = dx * widths + ctr_x;
    let pred_ctr_y = dy * heights + ctr_y;
    let pred_w = dw.exp() * widths;
    let pred_h = dh.exp() * heights;
    let c_to_c_h = 0.5 * pred_h;
    let c_to_c_w = 0.5 * pred_w;
    [
        pred_ctr_x - c_to_c_w,
        pred_ctr_y - c_to_c_h,
        pred_ctr_x + c_to_c_w,
        pred_ctr_y + c_to_c_h,
    ]
}

/// `torch.clamp(x, max=m)`: NaN stays NaN.
fn clamp_max(x: f32, m: f32) -> f32 {
    if x > m {
        m
    } else {
        x
    }
}

/// `torch.clamp(x, min=lo, max=hi)`: NaN stays NaN.
fn clamp(x: f32, lo: f32, hi: f32) -> f32 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

/// `clip_boxes_to_image(boxes, (img_h, img_w))`, in place: x into `[0, img_w]`, y into
/// `[0, img_h]` (the image size itself, not size - 1).
pub fn clip_to_image(boxes: &mut [[f32; 4]], img_h: usize, img_w: usize) {
    let (h, w) = (img_h as f32, img_w as f32);
    for b in boxes {
        b[0] = clamp(b[0], 0.0, w);
        b[1] = clamp(b[1], 0.0, h);
        b[2] = clamp(b[2], 0.0, w);
        b[3] = clamp(b[3], 0.0, h);
    }
}

/// `remove_small_boxes(boxes, min_size)`: indices (ascending) of the boxes whose width and height
/// are both `>= min_size` (compared in `f32`; RPN uses `1e-3`, the box head `1e-2`).
pub fn remove_small(boxes: &[[f32; 4]], min_size: f32) -> Vec<usize> {
    boxes
        .iter()
        .enumerate()
        .filter(|(_, b)| b[2] - b[0] >= min_size && b[3] - b[1] >= min_size)
        .map(|(i, _)| i)
        .collect()
}

/// `torchvision.ops.nms` (CPU kernel): visit boxes by descending score (ties: lower index
/// first), keep a box unless an already kept box overlaps it with IoU `> iou_thresh`. The IoU is
/// computed in `f32` as the kernel does (`inter / (area_i + area_j - inter)`, no degenerate-box
/// special case) and compared with the threshold in `f64`, as C++ promotes it. Returns kept
/// indices, best first.
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], iou_thresh: f64) -> Vec<usize> {
    assert_eq!(
        boxes.len(),
        scores.len(),
        "nms: boxes and scores differ in length"
    );
    let order = sort_desc(scores, (0..scores.len()).collect());
    let areas: Vec<f32> = boxes
        .iter()
        .map(|b| (b[2] - b[0]) * (b[3] - b[1]))
        .collect();
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (oi, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let bi = &boxes[i];
        for &j in &order[oi + 1..] {
            if suppressed[j] {
                continue;
            }
            let bj = &boxes[j];
            let xx1 = max_c(bi[0], bj[0]);
            let yy1 = max_c(bi[1], bj[1]);
            let xx2 = min_c(bi[2], bj[2]);
            let yy2 = min_c(bi[3], bj[3]);
            let w = max_c(0.0, xx2 - xx1);
            let h = max_c(0.0, yy2 - yy1);
            let inter = w * h;
            let ovr = inter / (areas[i] + areas[j] - inter);
            if ovr as f64 > iou_thresh {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// `std::max(a, b)`: returns `a` unless `a < b`.
fn max_c(a: f32, b: f32) -> f32 {
    if a < b {
        b
    } else {
        a
    }
}

/// `std::min(a, b)`: returns `a` unless `b < a`.
fn min_c(a: f32, b: f32) -> f32 {
    if b < a {
        b
    } else {
        a
    }
}

/// Stable sort of `idx` by descending `scores[i]` (NaN last).
fn sort_desc(scores: &[f32], mut idx: Vec<usize>) -> Vec<usize> {
    idx.sort_by(|&a, &b| {
        let (sa, sb) = (scores[a], scores[b]);
        match (sa.is_nan(), sb.is_nan()) {
            (false, false) => sb.partial_cmp(&sa).unwrap(),
            (x, y) => x.cmp(&y),
        }
    });
    idx
}

/// `torchvision.ops.batched_nms(boxes, scores, idxs, iou_thresh)`: NMS run independently per
/// category `idxs[i]`; kept indices sorted by descending score.
///
/// Like torchvision on CPU this takes one of two routes, which can differ in the last bits: with
/// more than 1000 boxes (`boxes.numel() > 4000`) it runs [`nms`] per category; otherwise it
/// shifts every box by `idx * (max_coordinate + 1)` in `f32` and runs one [`nms`] on the shifted
/// boxes (the offset changes the rounding of the IoU, so both routes are reproduced).
pub fn batched_nms(
    boxes: &[[f32; 4]],
    scores: &[f32],
    idxs: &[usize],
    iou_thresh: f64,
) -> Vec<usize> {
    assert_eq!(boxes.len(), scores.len(), "batched_nms: boxes and scores");
    assert_eq!(boxes.len(), idxs.len(), "batched_nms: boxes and idxs");
    if boxes.is_empty() {
        return Vec::new();
    }
    if boxes.len() * 4 > 4000 {
        batched_nms_vanilla(boxes, scores, idxs, iou_thresh)
    } else {
        batched_nms_coordinate_trick(boxes, scores, idxs, iou_thresh)
    }
}

/// torchvision's `_batched_nms_coordinate_trick`.
fn batched_nms_coordinate_trick(
    boxes: &[[f32; 4]],
    scores: &[f32],
    idxs: &[usize],
    iou_thresh: f64,
) -> Vec<usize> {
    // `boxes.max()` propagates NaN; a NaN offset makes every IoU NaN (nothing suppressed).
    let mut max_coord = f32::NEG_INFINITY;
    for v in boxes.iter().flatten() {
        if v.is_nan() || *v > max_coord {
            max_coord = *v;
            if v.is_nan() {
                break;
            }
        }
    }
    let step = max_coord + 1.0;
    let shifted: Vec<[f32; 4]> = boxes
        .iter()
        .zip(idxs)
        .map(|(b, &k)| {
            let off = k as f32 * step;
            [b[0] + off, b[1] + off, b[2] + off, b[3] + off]
        })
        .collect();
    nms(&shifted, scores, iou_thresh)
}

/// torchvision's `_batched_nms_vanilla`.
fn batched_nms_vanilla(
    boxes: &[[f32; 4]],
    scores: &[f32],
    idxs: &[usize],
    iou_thresh: f64,
) -> Vec<usize> {
    let mut classes: Vec<usize> = idxs.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let mut keep_mask = vec![false; boxes.len()];
    for k in classes {
        let members: Vec<usize> = (0..boxes.len()).filter(|&i| idxs[i] == k).collect();
        let b: Vec<[f32; 4]> = members.iter().map(|&i| boxes[i]).collect();
        let s: Vec<f32> = members.iter().map(|&i| scores[i]).collect();
        for local in nms(&b, &s, iou_thresh) {
            keep_mask[members[local]] = true;
        }
    }
    let kept: Vec<usize> = (0..boxes.len()).filter(|&i| keep_mask[i]).collect();
    sort_desc(scores, kept)
}

/// `transform.resize_boxes(boxes, original_size=from, new_size=to)`, in place: x scaled by
/// `to_w as f32 / from_w as f32`, y by the height ratio (ratios in `f32`, like torchvision).
pub fn resize_boxes(boxes: &mut [[f32; 4]], from: (usize, usize), to: (usize, usize)) {
    let ratio_h = to.0 as f32 / from.0 as f32;
    let ratio_w = to.1 as f32 / from.1 as f32;
    for b in boxes {
        b[0] *= ratio_w;
        b[1] *= ratio_h;
        b[2] *= ratio_w;
        b[3] *= ratio_h;
    }
}

/// Test-only loader for the fixtures that `scripts/torch_ops_reference.py` writes into
/// `tests/fixtures/tv_ops/` (safetensors with metadata; see the script).
#[cfg(test)]
pub(crate) mod tv_fixture {
    use safetensors::{Dtype, SafeTensors};
    use std::collections::HashMap;

    pub(crate) struct Fixture {
        name: String,
        bytes: Vec<u8>,
        meta: HashMap<String, String>,
    }

    impl Fixture {
        pub(crate) fn load(name: &str) -> Fixture {
            let path = format!(
                "{}/tests/fixtures/tv_ops/{name}.safetensors",
                env!("CARGO_MANIFEST_DIR")
            );
            let bytes = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("{path}: {e} (generate with scripts/torch_ops_reference.py)")
            });
            let (_, md) = SafeTensors::read_metadata(&bytes).expect("safetensors header");
            let meta = md.metadata().clone().unwrap_or_default();
            Fixture {
                name: name.to_string(),
                bytes,
                meta,
            }
        }

        fn view(&self) -> SafeTensors<'_> {
            SafeTensors::deserialize(&self.bytes).expect("safetensors")
        }

        pub(crate) fn has(&self, key: &str) -> bool {
            self.view().names().contains(&key)
        }

        /// An `F32` tensor and its shape.
        pub(crate) fn f32s(&self, key: &str) -> (Vec<f32>, Vec<usize>) {
            let st = self.view();
            let t = st
                .tensor(key)
                .unwrap_or_else(|e| panic!("{}: {key}: {e}", self.name));
            assert_eq!(t.dtype(), Dtype::F32, "{}: {key} dtype", self.name);
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (v, t.shape().to_vec())
        }

        /// An `I64` tensor and its shape.
        pub(crate) fn i64s(&self, key: &str) -> (Vec<i64>, Vec<usize>) {
            let st = self.view();
            let t = st
                .tensor(key)
                .unwrap_or_else(|e| panic!("{}: {key}: {e}", self.name));
            assert_eq!(t.dtype(), Dtype::I64, "{}: {key} dtype", self.name);
            let v = t
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (v, t.shape().to_vec())
        }

        /// `[N, 4]` `F32` tensor as boxes.
        pub(crate) fn boxes(&self, key: &str) -> Vec<[f32; 4]> {
            let (v, shape) = self.f32s(key);
            assert_eq!(shape.len(), 2, "{key}: not [N, 4]");
            assert_eq!(shape[1], 4, "{key}: not [N, 4]");
            v.chunks_exact(4)
                .map(|c| [c[0], c[1], c[2], c[3]])
                .collect()
        }

        /// An `I64` or `I32` tensor of non-negative values.
        pub(crate) fn usizes(&self, key: &str) -> Vec<usize> {
            let st = self.view();
            let t = st
                .tensor(key)
                .unwrap_or_else(|e| panic!("{}: {key}: {e}", self.name));
            match t.dtype() {
                Dtype::I64 => self.i64s(key).0.into_iter().map(|v| v as usize).collect(),
                Dtype::I32 => t
                    .data()
                    .chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
                    .collect(),
                d => panic!("{}: {key}: integer tensor expected, got {d:?}", self.name),
            }
        }

        /// Metadata value: a JSON array of non-negative integers.
        pub(crate) fn meta_usizes(&self, key: &str) -> Vec<usize> {
            let s = self
                .meta
                .get(key)
                .unwrap_or_else(|| panic!("{}: metadata {key} missing", self.name));
            serde_json::from_str(s).unwrap_or_else(|e| panic!("{key}: {e}"))
        }

        /// Metadata value: a JSON number.
        pub(crate) fn meta_f64(&self, key: &str) -> f64 {
            let s = self
                .meta
                .get(key)
                .unwrap_or_else(|| panic!("{}: metadata {key} missing", self.name));
            serde_json::from_str(s).unwrap_or_else(|e| panic!("{key}: {e}"))
        }
    }

    pub(crate) fn max_abs(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "length");
        a.iter()
            .zip(b)
            .map(|(x, y)| {
                if x.to_bits() == y.to_bits() {
                    0.0
                } else {
                    (x - y).abs()
                }
            })
            .fold(0f32, |m, e| if e.is_nan() || e > m { e } else { m })
    }
}

#[cfg(test)]
mod tests {
    use super::tv_fixture::{max_abs, Fixture};
    use super::*;

    #[test]
    fn clip_constant_is_torch_float() {
        assert_eq!(BBOX_XFORM_CLIP, (1000f64 / 16.0).ln() as f32);
    }

    #[test]
    fn decode_by_hand() {
        // Zero deltas give the box back; dw = ln 2 doubles the width around the centre.
        let b = [10.0, 20.0, 30.0, 60.0];
        assert_eq!(decode([0.0; 4], b, RPN_WEIGHTS), b);
        let d = decode([0.0, 0.0, 2f32.ln() * 5.0, 0.0], b, ROI_HEADS_WEIGHTS);
        assert!((d[0] - 0.0).abs() < 1e-5 && (d[2] - 40.0).abs() < 1e-5);
        // Huge dw is clamped at log(1000/16): width * 62.5.
        let d = decode([0.0, 0.0, 100.0, -100.0], [0.0, 0.0, 2.0, 2.0], RPN_WEIGHTS);
        assert!((d[2] - d[0] - 125.0).abs() < 1e-3);
        assert!(d[3] - d[1] < 1e-6);
    }

    #[test]
    fn nms_by_hand() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 9.0],
            [20.0, 20.0, 30.0, 30.0],
            [0.0, 0.0, 10.0, 5.0], // IoU exactly 0.5 with #0: kept at 0.5
        ];
        let scores = [0.95, 0.9, 0.5, 0.4];
        assert_eq!(nms(&boxes, &scores, 0.5), vec![0, 2, 3]);
        // Same box in two classes survives in both; result sorted by score.
        assert_eq!(
            batched_nms(&boxes, &scores, &[0, 1, 0, 0], 0.5),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            remove_small(&[[0.0, 0.0, 1.0, 0.5], [0.0, 0.0, 1.0, 1.0]], 1.0),
            vec![1]
        );
        let mut b = [[-5.0, 3.0, 80.0, 60.0]];
        clip_to_image(&mut b, 50, 70);
        assert_eq!(b[0], [0.0, 3.0, 70.0, 50.0]);
        resize_boxes(&mut b, (50, 70), (100, 35));
        assert_eq!(b[0], [0.0, 6.0, 35.0, 100.0]);
    }

    #[test]
    fn decode_matches_torchvision() {
        let fx = Fixture::load("boxes");
        let anchors = fx.boxes("anchors");
        let mut worst_abs = 0f32;
        let mut worst_rel = 0f32;
        for (tag, weights) in [("w1", RPN_WEIGHTS), ("w10", ROI_HEADS_WEIGHTS)] {
            let rel = fx.boxes(&format!("rel_{tag}"));
            let want = fx.boxes(&format!("decoded_{tag}"));
            for ((r, a), w) in rel.iter().zip(&anchors).zip(&want) {
                let got = decode(*r, *a, weights);
                for k in 0..4 {
                    let e = max_abs(&got[k..k + 1], &w[k..k + 1]);
                    worst_abs = worst_abs.max(e);
                    worst_rel = worst_rel.max(e / w[k].abs().max(1.0));
                }
            }
        }
        eprintln!("decode: max abs err {worst_abs:e}, max rel err {worst_rel:e}");
        // exp() may differ by one ulp between libm and PyTorch's vectorised exp; boxes that hit the
        // clamp reach thousands of pixels, so allow 1e-5 absolute or two f32 ulps relative.
        assert!(worst_rel <= 2.5e-7 || worst_abs <= 1e-5, "decode error");
    }

    #[test]
    fn clip_small_resize_match_torchvision() {
        let fx = Fixture::load("boxes");
        let mut boxes = fx.boxes("decoded_w1");
        let (h, w) = (
            fx.meta_f64("clip_h") as usize,
            fx.meta_f64("clip_w") as usize,
        );
        clip_to_image(&mut boxes, h, w);
        assert_eq!(
            max_abs(boxes.as_flattened(), fx.boxes("clipped").as_flattened()),
            0.0
        );
        let keep = remove_small(&boxes, fx.meta_f64("min_size") as f32);
        assert_eq!(keep, fx.usizes("small_keep"));
        let from = fx.meta_usizes("resize_from");
        let to = fx.meta_usizes("resize_to");
        resize_boxes(&mut boxes, (from[0], from[1]), (to[0], to[1]));
        assert_eq!(
            max_abs(boxes.as_flattened(), fx.boxes("resized").as_flattened()),
            0.0
        );
    }

    #[test]
    fn nms_matches_torchvision() {
        let fx = Fixture::load("nms");
        for set in fx.meta_usizes("sets") {
            let boxes = fx.boxes(&format!("boxes_{set}"));
            let (scores, _) = fx.f32s(&format!("scores_{set}"));
            let idxs = fx.usizes(&format!("idxs_{set}"));
            for (tag, thr) in [("05", 0.5), ("07", 0.7), ("03", 0.3)] {
                let key = format!("nms_{set}_{tag}");
                if fx.has(&key) {
                    assert_eq!(nms(&boxes, &scores, thr), fx.usizes(&key), "{key}");
                }
                let key = format!("batched_{set}_{tag}");
                if fx.has(&key) {
                    assert_eq!(
                        batched_nms(&boxes, &scores, &idxs, thr),
                        fx.usizes(&key),
                        "{key}"
                    );
                }
            }
        }
    }
}
