//! RoIAlign with torchvision's CPU-kernel semantics (`ops/roi_align.py`,
//! `csrc/ops/cpu/roi_align_kernel.cpp` + `roi_align_common.h`), and the FPN level assignment of
//! `ops/poolers.py` (`MultiScaleRoIAlign`, `LevelMapper`, `_infer_scale`).
//!
//! Kernel details reproduced (all arithmetic in `f32`, same operation order):
//! * `start = coord * spatial_scale - offset` with `offset = 0.5` when `aligned`, else 0;
//!   size `end - start`, forced to at least 1 when not `aligned` (never when `aligned`).
//! * bin size `size / pooled`; samples per bin `sampling_ratio`, or `ceil(size / pooled)` per axis
//!   when `sampling_ratio <= 0` (adaptive); the average divides by `max(grid_h * grid_w, 1)`.
//! * sample `y = (start_h + ph * bin_h) + ((iy + 0.5) * bin_h) / grid_h` (likewise `x`).
//! * a sample outside `[-1, height] x [-1, width]` (or NaN) contributes 0; otherwise coordinates
//!   `<= 0` snap to 0, `low = trunc(y)`, and a `low >= height - 1` snaps to the last row with the
//!   coordinate set to it (weight 1 on that row); weights `hy*hx, hy*lx, ly*hx, ly*lx`.
//! * per output value: `acc += ((w1*v1 + w2*v2) + w3*v3) + w4*v4` over the samples, then
//!   `acc / count`.

use rayon::prelude::*;

/// One pre-computed bilinear sample (torchvision's `PreCalc`).
#[derive(Clone, Copy)]
struct Sample {
    pos: [usize; 4],
    w: [f32; 4],
}

/// Sample positions and weights of one RoI (shared by all channels).
#[allow(clippy::too_many_arguments)]
fn pre_calc(
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
    start_h: f32,
    start_w: f32,
    bin_h: f32,
    bin_w: f32,
    grid_h: i64,
    grid_w: i64,
) -> Vec<Sample> {
    let (gh, gw) = (grid_h.max(0) as usize, grid_w.max(0) as usize);
    let mut out = Vec::with_capacity(out_h * out_w * gh * gw);
    let (hf, wf) = (h as f32, w as f32);
    for ph in 0..out_h {
        for pw in 0..out_w {
            for iy in 0..gh {
                let yy = start_h + ph as f32 * bin_h + (iy as f32 + 0.5) * bin_h / grid_h as f32;
                for ix in 0..gw {
                    let xx =
                        start_w + pw as f32 * bin_w + (ix as f32 + 0.5) * bin_w / grid_w as f32;
                    let (mut y, mut x) = (yy, xx);
                    if !(y >= -1.0 && y <= hf && x >= -1.0 && x <= wf) {
                        out.push(Sample {
                            pos: [0; 4],
                            w: [0.0; 4],
                        });
                        continue;
                    }
                    if y <= 0.0 {
                        y = 0.0;
                    }
                    if x <= 0.0 {
                        x = 0.0;
                    }
                    let mut y_low = y as usize;
                    let mut x_low = x as usize;
                    let y_high;
                    let x_high;
                    if y_low >= h - 1 {
                        y_low = h - 1;
                        y_high = h - 1;
                        y = y_low as f32;
                    } else {
                        y_high = y_low + 1;
                    }
                    if x_low >= w - 1 {
                        x_low = w - 1;
                        x_high = w - 1;
                        x = x_low as f32;
                    } else {
                        x_high = x_low + 1;
                    }
                    let ly = y - y_low as f32;
                    let lx = x - x_low as f32;
                    let hy = 1.0 - ly;
                    let hx = 1.0 - lx;
                    out.push(Sample {
                        pos: [
                            y_low * w + x_low,
                            y_low * w + x_high,
                            y_high * w + x_low,
                            y_high * w + x_high,
                        ],
                        w: [hy * hx, hy * lx, ly * hx, ly * lx],
                    });
                }
            }
        }
    }
    out
}

/// RoIAlign of one RoI on one image's `[c, h, w]` map into `out` (`[c, out_h, out_w]`).
#[allow(clippy::too_many_arguments)]
fn roi_align_one(
    feat: &[f32],
    c: usize,
    h: usize,
    w: usize,
    roi: &[f32; 4],
    spatial_scale: f32,
    out_h: usize,
    out_w: usize,
    sampling_ratio: i32,
    aligned: bool,
    out: &mut [f32],
) {
    let offset = if aligned { 0.5f32 } else { 0.0 };
    let start_w = roi[0] * spatial_scale - offset;
    let start_h = roi[1] * spatial_scale - offset;
    let end_w = roi[2] * spatial_scale - offset;
    let end_h = roi[3] * spatial_scale - offset;
    let mut roi_w = end_w - start_w;
    let mut roi_h = end_h - start_h;
    if !aligned {
        // std::max(roi_w, 1): NaN stays NaN.
        if roi_w < 1.0 {
            roi_w = 1.0;
        }
        if roi_h < 1.0 {
            roi_h = 1.0;
        }
    }
    let bin_h = roi_h / out_h as f32;
    let bin_w = roi_w / out_w as f32;
    let grid_h = if sampling_ratio > 0 {
        sampling_ratio as i64
    } else {
        (roi_h / out_h as f32).ceil() as i64
    };
    let grid_w = if sampling_ratio > 0 {
        sampling_ratio as i64
    } else {
        (roi_w / out_w as f32).ceil() as i64
    };
    let count = (grid_h * grid_w).max(1) as f32;
    let samples = pre_calc(
        h, w, out_h, out_w, start_h, start_w, bin_h, bin_w, grid_h, grid_w,
    );
    let per_bin = samples.len().checked_div(out_h * out_w).unwrap_or(0);
    for (plane, o) in feat
        .chunks_exact(h * w)
        .zip(out.chunks_exact_mut(out_h * out_w))
    {
        if per_bin == 0 {
            o.fill(0.0);
            continue;
        }
        for (v, bin) in o.iter_mut().zip(samples.chunks_exact(per_bin)) {
            let mut acc = 0f32;
            for s in bin {
                acc += s.w[0] * plane[s.pos[0]]
                    + s.w[1] * plane[s.pos[1]]
                    + s.w[2] * plane[s.pos[2]]
                    + s.w[3] * plane[s.pos[3]];
            }
            *v = acc / count;
        }
    }
    debug_assert_eq!(feat.len(), c * h * w);
}

/// `torchvision.ops.roi_align(feat[None], [rois], (out_h, out_w), spatial_scale, sampling_ratio,
/// aligned)` for one image: `feat` is `[c, h, w]`, `rois` are `[x1, y1, x2, y2]` in image
/// coordinates. `spatial_scale` is the `f32` the kernel uses (torch casts its `double` to the
/// tensor type). Returns `[R, c, out_h, out_w]`. Parallel over RoIs.
#[allow(clippy::too_many_arguments)]
pub fn roi_align(
    feat: &[f32],
    c: usize,
    h: usize,
    w: usize,
    rois: &[[f32; 4]],
    spatial_scale: f32,
    out_h: usize,
    out_w: usize,
    sampling_ratio: i32,
    aligned: bool,
) -> Vec<f32> {
    assert_eq!(feat.len(), c * h * w, "roi_align: feature size");
    let per_roi = c * out_h * out_w;
    let mut out = vec![0f32; rois.len() * per_roi];
    if per_roi == 0 || h == 0 || w == 0 {
        return out;
    }
    out.par_chunks_mut(per_roi)
        .zip(rois.par_iter())
        .for_each(|(o, roi)| {
            roi_align_one(
                feat,
                c,
                h,
                w,
                roi,
                spatial_scale,
                out_h,
                out_w,
                sampling_ratio,
                aligned,
                o,
            )
        });
    out
}

/// `roi_align` on a batch: `feat` is `[n, c, h, w]` and RoI `i` reads image `batch_idx[i]` (the
/// first column of torchvision's `[K, 5]` RoI tensor). Returns `[R, c, out_h, out_w]`.
#[allow(clippy::too_many_arguments)]
pub fn roi_align_batched(
    feat: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    rois: &[[f32; 4]],
    batch_idx: &[usize],
    spatial_scale: f32,
    out_h: usize,
    out_w: usize,
    sampling_ratio: i32,
    aligned: bool,
) -> Vec<f32> {
    assert_eq!(feat.len(), n * c * h * w, "roi_align_batched: feature size");
    assert_eq!(
        rois.len(),
        batch_idx.len(),
        "roi_align_batched: one batch index per RoI"
    );
    let per_roi = c * out_h * out_w;
    let mut out = vec![0f32; rois.len() * per_roi];
    if per_roi == 0 || h == 0 || w == 0 {
        return out;
    }
    let img = c * h * w;
    out.par_chunks_mut(per_roi)
        .zip(rois.par_iter().zip(batch_idx.par_iter()))
        .for_each(|(o, (roi, &b))| {
            assert!(b < n, "roi_align_batched: batch index {b} >= {n}");
            roi_align_one(
                &feat[b * img..(b + 1) * img],
                c,
                h,
                w,
                roi,
                spatial_scale,
                out_h,
                out_w,
                sampling_ratio,
                aligned,
                o,
            )
        });
    out
}

/// `LevelMapper` defaults in torchvision (`canonical_scale`, `canonical_level`, `eps`).
pub const CANONICAL_SCALE: f32 = 224.0;
pub const CANONICAL_LEVEL: f32 = 4.0;
pub const LEVEL_EPS: f32 = 1e-6;

/// Level index (`0` = `k_min`) for a box that torchvision's mapper cannot place: its area is
/// negative, so `sqrt` is NaN; torchvision's pooled output for it stays zero, and so does ours.
pub const NO_LEVEL: usize = usize::MAX;

/// `LevelMapper(k_min, k_max, canonical_scale, canonical_level, eps)(boxes)`: per box,
/// `floor(canonical_level + log2(sqrt(area) / canonical_scale) + eps)` in `f32`, clamped to
/// `[k_min, k_max]`, minus `k_min`. A NaN (negative area) gives [`NO_LEVEL`].
pub fn level_for_boxes(
    boxes: &[[f32; 4]],
    k_min: i32,
    k_max: i32,
    canonical_scale: f32,
    canonical_level: f32,
    eps: f32,
) -> Vec<usize> {
    boxes
        .iter()
        .map(|b| {
            let area = (b[2] - b[0]) * (b[3] - b[1]);
            let s = area.sqrt();
            let lvl = (canonical_level + (s / canonical_scale).log2() + eps).floor();
            if lvl.is_nan() {
                return NO_LEVEL;
            }
            let lvl = lvl.clamp(k_min as f32, k_max as f32);
            (lvl as i64 - k_min as i64) as usize
        })
        .collect()
}

/// torchvision `_infer_scale(feature, original_size)`: `2 ** round(log2(feature_h / image_h))`
/// with the ratio taken in `f64`, then (as `torch.tensor`) rounded to `f32` for `log2` and
/// `round` (half to even). Only the height decides, as in torchvision.
pub fn infer_scale(feature_size: (usize, usize), image_size: (usize, usize)) -> f32 {
    let approx = (feature_size.0 as f64 / image_size.0 as f64) as f32;
    let e = approx.log2().round_ties_even();
    2f64.powf(e as f64) as f32
}

/// One FPN level for [`multiscale_roi_align`]: a `[c, h, w]` map and its `c`, `h`, `w`.
pub type Level<'a> = (&'a [f32], usize, usize, usize);

/// `MultiScaleRoIAlign(featmap_names=["0", "1", "2", "3"], output_size, sampling_ratio)` for one
/// image: `levels` are the FPN maps finest first, `image_size` the unpadded image size that
/// torchvision infers the scales from (for a batch: the largest height and width over its images),
/// `rois` in image coordinates. Scales by [`infer_scale`], `k_min = -log2(first scale)`,
/// `k_max = -log2(last scale)`, levels by [`level_for_boxes`] with the defaults, then
/// [`roi_align`] (`aligned = false`) on each RoI's level. Returns `[R, c, out.0, out.1]`.
pub fn multiscale_roi_align(
    levels: &[Level<'_>],
    image_size: (usize, usize),
    rois: &[[f32; 4]],
    out: (usize, usize),
    sampling_ratio: i32,
) -> Vec<f32> {
    assert!(!levels.is_empty(), "multiscale_roi_align: no levels");
    let c = levels[0].1;
    assert!(levels.iter().all(|l| l.1 == c), "levels differ in channels");
    let scales: Vec<f32> = levels
        .iter()
        .map(|&(f, lc, lh, lw)| {
            assert_eq!(f.len(), lc * lh * lw, "level size");
            infer_scale((lh, lw), image_size)
        })
        .collect();
    if levels.len() == 1 {
        let (f, _, h, w) = levels[0];
        return roi_align(
            f,
            c,
            h,
            w,
            rois,
            scales[0],
            out.0,
            out.1,
            sampling_ratio,
            false,
        );
    }
    let k_min = -scales[0].log2();
    let k_max = -scales[scales.len() - 1].log2();
    let lvls = level_for_boxes(
        rois,
        k_min as i32,
        k_max as i32,
        CANONICAL_SCALE,
        CANONICAL_LEVEL,
        LEVEL_EPS,
    );
    let per_roi = c * out.0 * out.1;
    let mut res = vec![0f32; rois.len() * per_roi];
    if per_roi == 0 {
        return res;
    }
    res.par_chunks_mut(per_roi)
        .zip(rois.par_iter().zip(lvls.par_iter()))
        .for_each(|(o, (roi, &l))| {
            if l >= levels.len() {
                return; // unplaceable box: zeros, as torchvision
            }
            let (f, _, h, w) = levels[l];
            if h == 0 || w == 0 {
                return;
            }
            roi_align_one(
                f,
                c,
                h,
                w,
                roi,
                scales[l],
                out.0,
                out.1,
                sampling_ratio,
                false,
                o,
            );
        });
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::ops::tv_boxes::tv_fixture::{max_abs, Fixture};

    #[test]
    fn by_hand() {
        // 2x2 map, one RoI covering it with aligned=true: one bin, 2x2 samples at the pixel
        // centres -> the mean.
        let feat = [1.0, 2.0, 3.0, 4.0];
        let o = roi_align(&feat, 1, 2, 2, &[[0.0, 0.0, 2.0, 2.0]], 1.0, 1, 1, 2, true);
        assert_eq!(o, vec![2.5]);
        // Not aligned: samples at 0.5 and 1.5 -> 1.5 snaps to the last row/column.
        let o = roi_align(&feat, 1, 2, 2, &[[0.0, 0.0, 2.0, 2.0]], 1.0, 1, 1, 2, false);
        // (0.5,0.5)->2.5, (0.5,1.5)->3.0, (1.5,0.5)->3.5, (1.5,1.5)->4.0 => 3.25
        assert_eq!(o, vec![3.25]);
        // Entirely outside (y > height): zero.
        let o = roi_align(&feat, 1, 2, 2, &[[0.0, 5.0, 1.0, 6.0]], 1.0, 1, 1, 2, false);
        assert_eq!(o, vec![0.0]);
        assert_eq!(infer_scale((200, 272), (800, 1066)), 0.25);
        assert_eq!(infer_scale((13, 17), (800, 1066)), 1.0 / 64.0);
        let lv = level_for_boxes(
            &[
                [0.0, 0.0, 224.0, 224.0],
                [0.0, 0.0, 112.0, 112.0],
                [0.0, 0.0, 111.0, 112.0],
                [0.0, 0.0, 1000.0, 1000.0],
                [0.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, -1.0, 1.0],
            ],
            2,
            5,
            CANONICAL_SCALE,
            CANONICAL_LEVEL,
            LEVEL_EPS,
        );
        assert_eq!(lv, vec![2, 1, 0, 3, 0, NO_LEVEL]);
    }

    #[test]
    fn matches_torchvision_roi_align() {
        let fx = Fixture::load("roi_align");
        let (feat, shape) = fx.f32s("feat");
        let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
        let (rois5, _) = fx.f32s("rois");
        let rois: Vec<[f32; 4]> = rois5.chunks(5).map(|r| [r[1], r[2], r[3], r[4]]).collect();
        let bidx: Vec<usize> = rois5.chunks(5).map(|r| r[0] as usize).collect();
        let mut worst = 0f32;
        let mut cases = 0;
        for case in fx.meta_usizes("cases").chunks(5) {
            // [inverse scale, sampling ratio + 1, aligned, out_h, out_w]
            let (inv, sr, aligned, oh, ow) =
                (case[0], case[1] as i32 - 1, case[2] == 1, case[3], case[4]);
            let key = format!("out_s{inv}_sr{sr}_a{}_{oh}x{ow}", case[2]);
            let (want, _) = fx.f32s(&key);
            let scale = 1.0 / inv as f32;
            let got =
                roi_align_batched(&feat, n, c, h, w, &rois, &bidx, scale, oh, ow, sr, aligned);
            let err = max_abs(&got, &want);
            assert!(err <= 1e-5, "{key}: max abs err {err}");
            worst = worst.max(err);
            cases += 1;
            // The single-image entry point agrees on image 0's RoIs.
            let img0: Vec<[f32; 4]> = rois
                .iter()
                .zip(&bidx)
                .filter(|(_, &b)| b == 0)
                .map(|(r, _)| *r)
                .collect();
            let one = roi_align(
                &feat[..c * h * w],
                c,
                h,
                w,
                &img0,
                scale,
                oh,
                ow,
                sr,
                aligned,
            );
            let first: Vec<f32> = got
                .chunks(c * oh * ow)
                .zip(&bidx)
                .filter(|(_, &b)| b == 0)
                .flat_map(|(o, _)| o.to_vec())
                .collect();
            assert_eq!(one, first);
        }
        eprintln!("roi_align: {cases} configurations, max abs err {worst:e}");
    }

    #[test]
    fn matches_torchvision_multiscale() {
        let fx = Fixture::load("multiscale");
        let mut maps = Vec::new();
        for l in 0..4 {
            maps.push(fx.f32s(&format!("feat_{l}")));
        }
        let levels: Vec<Level<'_>> = maps
            .iter()
            .map(|(v, s)| (&v[..], s[1], s[2], s[3]))
            .collect();
        let img = fx.meta_usizes("image_size");
        let rois = fx.boxes("rois");
        let want_lv = fx.usizes("levels");
        let got_lv = level_for_boxes(&rois, 2, 5, CANONICAL_SCALE, CANONICAL_LEVEL, LEVEL_EPS);
        assert_eq!(got_lv, want_lv);
        let (scales, _) = fx.f32s("scales");
        for (l, s) in scales.iter().enumerate() {
            assert_eq!(
                infer_scale((levels[l].2, levels[l].3), (img[0], img[1])),
                *s
            );
        }
        let mut worst = 0f32;
        for (oh, sr) in [(7usize, 2i32), (14, 2), (7, 0)] {
            let key = format!("out_{oh}_sr{sr}");
            let (want, _) = fx.f32s(&key);
            let got = multiscale_roi_align(&levels, (img[0], img[1]), &rois, (oh, oh), sr);
            let err = max_abs(&got, &want);
            assert!(err <= 1e-5, "{key}: max abs err {err}");
            worst = worst.max(err);
        }
        // _infer_scale on extra (feature, image) pairs.
        let pairs = fx.meta_usizes("infer_pairs");
        let (want, _) = fx.f32s("infer_scales");
        for (p, s) in pairs.chunks(4).zip(&want) {
            assert_eq!(infer_scale((p[0], p[1]), (p[2], p[3])), *s, "{p:?}");
        }
        eprintln!("multiscale_roi_align: max abs err {worst:e}");
    }
}
