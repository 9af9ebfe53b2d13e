//! Mask pasting with torchvision's semantics (`models/detection/roi_heads.py`: `expand_masks`,
//! `expand_boxes`, `paste_mask_in_image`, `paste_masks_in_image`).
//!
//! Per mask (an `m x m` grid of probabilities, box in image pixels):
//! 1. zero-pad the mask by `padding` on every side and take `scale = (m + 2p) / m` (a `f64`
//!    that the `float32` multiply uses as `f32`);
//! 2. expand the box about its centre: `half = (x2 - x1) * 0.5 * scale`, `cx = (x2 + x1) * 0.5`,
//!    `[cx - half_w, cy - half_h, cx + half_w, cy + half_h]`, all in `f32`;
//! 3. convert to integers by truncation toward zero (`.to(torch.int64)`), so `-3.7 -> -3`;
//! 4. resize the padded mask bilinearly (`align_corners=False`) to
//!    `h = max(y2 - y1 + 1, 1)`, `w = max(x2 - x1 + 1, 1)` ([`resize_bilinear_chw`] with one
//!    channel);
//! 5. copy the window `y in [max(y1, 0), min(y2 + 1, img_h))`, `x` likewise, from the resized
//!    mask at `(y - y1, x - x1)`; everything else is 0.
//!
//! A box that lies entirely right of or below the image makes torchvision's slice assignment
//! fail; here it simply pastes nothing.

use super::interp::resize_bilinear_chw;
use rayon::prelude::*;

/// The integer box torchvision pastes into (steps 1–3), for an `m x m` mask with `padding`.
pub fn expanded_int_box(b: &[f32; 4], m: usize, padding: usize) -> [i64; 4] {
    let scale = ((m + 2 * padding) as f64 / m as f64) as f32;
    let mut w_half = (b[2] - b[0]) * 0.5;
    let mut h_half = (b[3] - b[1]) * 0.5;
    let x_c = (b[2] + b[0]) * 0.5;
    let y_c = (b[3] + b[1]) * 0.5;
    w_half *= scale;
    h_half *= scale;
    [
        (x_c - w_half) as i64,
        (y_c - h_half) as i64,
        (x_c + w_half) as i64,
        (y_c + h_half) as i64,
    ]
}

/// The zero-padded `(m + 2p) x (m + 2p)` mask (`F.pad(mask, (p,) * 4)`).
fn pad_mask(mask: &[f32], m: usize, p: usize) -> Vec<f32> {
    let mp = m + 2 * p;
    let mut out = vec![0f32; mp * mp];
    for y in 0..m {
        out[(y + p) * mp + p..(y + p) * mp + p + m].copy_from_slice(&mask[y * m..(y + 1) * m]);
    }
    out
}

/// The pasted window of one mask: image rows `y0..y1` and columns `x0..x1` (half-open), and the
/// resized mask values there, row-major `(y1 - y0) x (x1 - x0)`. Pixels outside are 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub y0: usize,
    pub y1: usize,
    pub x0: usize,
    pub x1: usize,
    pub values: Vec<f32>,
}

/// Steps 1–5 for one mask, returning only the window inside the image (`None` when it is
/// empty).
pub fn paste_window(
    mask: &[f32],
    m: usize,
    b: &[f32; 4],
    img_h: usize,
    img_w: usize,
    padding: usize,
) -> Option<Window> {
    assert_eq!(mask.len(), m * m, "paste: mask size");
    let [bx1, by1, bx2, by2] = expanded_int_box(b, m, padding);
    let w = (bx2 - bx1 + 1).max(1);
    let h = (by2 - by1 + 1).max(1);
    let x0 = bx1.max(0);
    let x1 = (bx2 + 1).min(img_w as i64);
    let y0 = by1.max(0);
    let y1 = (by2 + 1).min(img_h as i64);
    if x1 <= x0 || y1 <= y0 {
        return None;
    }
    let mp = m + 2 * padding;
    let padded = pad_mask(mask, m, padding);
    let resized = resize_bilinear_chw(&padded, 1, mp, mp, h as usize, w as usize);
    let (ww, wh) = ((x1 - x0) as usize, (y1 - y0) as usize);
    let mut values = Vec::with_capacity(ww * wh);
    for y in y0..y1 {
        let row = ((y - by1) * w + (x0 - bx1)) as usize;
        values.extend_from_slice(&resized[row..row + ww]);
    }
    Some(Window {
        y0: y0 as usize,
        y1: y1 as usize,
        x0: x0 as usize,
        x1: x1 as usize,
        values,
    })
}

/// `paste_mask_in_image` for one mask into a zeroed `img_h x img_w` plane `out`.
pub fn paste_mask_into(
    mask: &[f32],
    m: usize,
    b: &[f32; 4],
    img_h: usize,
    img_w: usize,
    padding: usize,
    out: &mut [f32],
) {
    assert_eq!(out.len(), img_h * img_w, "paste: output size");
    out.fill(0.0);
    if let Some(win) = paste_window(mask, m, b, img_h, img_w, padding) {
        let ww = win.x1 - win.x0;
        for (k, y) in (win.y0..win.y1).enumerate() {
            out[y * img_w + win.x0..y * img_w + win.x1]
                .copy_from_slice(&win.values[k * ww..(k + 1) * ww]);
        }
    }
}

/// `paste_masks_in_image(masks[:, None], boxes, (img_h, img_w), padding)[:, 0]`: `masks` is
/// `N x m x m` probabilities, `boxes` in image pixels. Returns `N x img_h x img_w` (parallel over
/// masks). Memory is `N * img_h * img_w` floats, as in torchvision; prefer [`paste_window`] or
/// [`mask_area_and_bbox`] when only part of that is needed.
pub fn paste_masks_in_image(
    masks: &[f32],
    m: usize,
    boxes: &[[f32; 4]],
    img_h: usize,
    img_w: usize,
    padding: usize,
) -> Vec<f32> {
    assert_eq!(masks.len(), boxes.len() * m * m, "paste: masks vs boxes");
    let mut out = vec![0f32; boxes.len() * img_h * img_w];
    if img_h * img_w == 0 {
        return out;
    }
    out.par_chunks_mut(img_h * img_w)
        .zip(masks.par_chunks(m * m).zip(boxes.par_iter()))
        .for_each(|(o, (mask, b))| paste_mask_into(mask, m, b, img_h, img_w, padding, o));
    out
}

/// Pixels of the pasted mask strictly above `thresh` (torchvision users threshold at 0.5) and
/// their bounding box `[x1, y1, x2, y2]` (inclusive pixel indices), without materialising the
/// full image plane.
pub fn mask_area_and_bbox(
    mask: &[f32],
    m: usize,
    b: &[f32; 4],
    img_h: usize,
    img_w: usize,
    padding: usize,
    thresh: f32,
) -> (u64, Option<[usize; 4]>) {
    let Some(win) = paste_window(mask, m, b, img_h, img_w, padding) else {
        return (0, None);
    };
    let ww = win.x1 - win.x0;
    let mut area = 0u64;
    let mut bb = [usize::MAX, usize::MAX, 0, 0];
    for (k, row) in win.values.chunks_exact(ww).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            if v > thresh {
                area += 1;
                let (x, y) = (win.x0 + j, win.y0 + k);
                bb[0] = bb[0].min(x);
                bb[1] = bb[1].min(y);
                bb[2] = bb[2].max(x);
                bb[3] = bb[3].max(y);
            }
        }
    }
    (area, (area > 0).then_some(bb))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::ops::tv_boxes::tv_fixture::{max_abs, Fixture};

    #[test]
    fn by_hand() {
        // 2x2 mask, padding 1 -> scale 2: box [10, 10, 14, 14] (centre 12, half 2 -> 4)
        // expands to [8, 8, 16, 16].
        assert_eq!(
            expanded_int_box(&[10.0, 10.0, 14.0, 14.0], 2, 1),
            [8, 8, 16, 16]
        );
        // Truncation toward zero on negative coordinates.
        assert_eq!(
            expanded_int_box(&[-3.0, -3.0, 1.0, 1.0], 2, 1),
            [-5, -5, 3, 3]
        );
        assert_eq!(expanded_int_box(&[-2.9, 0.0, 0.0, 2.0], 2, 1)[0], -4);
        let mask = [1.0f32; 4];
        let img = paste_masks_in_image(&mask, 2, &[[10.0, 10.0, 14.0, 14.0]], 20, 20, 1);
        // The box centre is inside the mask, the image corner is not.
        assert!(img[12 * 20 + 12] > 0.9);
        assert_eq!(img[0], 0.0);
        let (area, bb) = mask_area_and_bbox(&mask, 2, &[10.0, 10.0, 14.0, 14.0], 20, 20, 1, 0.5);
        let above = img.iter().filter(|&&v| v > 0.5).count() as u64;
        assert_eq!(area, above);
        assert!(bb.is_some());
        // Entirely outside: nothing pasted.
        let img = paste_masks_in_image(&mask, 2, &[[30.0, 30.0, 34.0, 34.0]], 20, 20, 1);
        assert!(img.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn matches_torchvision() {
        let fx = Fixture::load("paste");
        let (masks, mshape) = fx.f32s("masks");
        let m = mshape[2];
        let boxes = fx.boxes("boxes");
        let size = fx.meta_usizes("image_size");
        // The fixture keeps each plane's non-zero bounding box; the rest is zero.
        let (crops, _) = fx.f32s("pasted_crops");
        let windows = fx.meta_usizes("windows");
        let mut want = vec![0f32; boxes.len() * size[0] * size[1]];
        let mut at = 0;
        for (i, win) in windows.chunks(4).enumerate() {
            let plane = &mut want[i * size[0] * size[1]..(i + 1) * size[0] * size[1]];
            for y in win[0]..win[1] {
                let n = win[3] - win[2];
                plane[y * size[1] + win[2]..y * size[1] + win[3]]
                    .copy_from_slice(&crops[at..at + n]);
                at += n;
            }
        }
        assert_eq!(at, crops.len());
        let got = paste_masks_in_image(&masks, m, &boxes, size[0], size[1], 1);
        let err = max_abs(&got, &want);
        let same = got
            .iter()
            .zip(&want)
            .filter(|(g, w)| (**g > 0.5) == (**w > 0.5))
            .count();
        let frac = same as f64 / want.len() as f64;
        eprintln!(
            "paste: max abs err {err:e}, {:.4}% pixels agree after > 0.5 ({} of {})",
            frac * 100.0,
            same,
            want.len()
        );
        assert!(frac >= 0.999, "paste agreement {frac}");
        assert!(err <= 1e-5, "paste max abs err {err}");
        for (i, b) in boxes.iter().enumerate() {
            let plane = &want[i * size[0] * size[1]..(i + 1) * size[0] * size[1]];
            let above = plane.iter().filter(|&&v| v > 0.5).count() as u64;
            let (area, _) = mask_area_and_bbox(
                &masks[i * m * m..(i + 1) * m * m],
                m,
                b,
                size[0],
                size[1],
                1,
                0.5,
            );
            assert_eq!(area, above, "mask {i} area");
        }
    }
}
