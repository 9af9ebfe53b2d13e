//! Bilinear resizing with PyTorch's `F.interpolate(mode="bilinear", align_corners=False)`
//! semantics on CPU, and the output-size rule of torchvision's detection transform
//! (`GeneralizedRCNNTransform`: `_resize_image_and_masks`, `batch_images`).
//!
//! PyTorch (`aten/src/ATen/native/UpSample.h`, `cpu/UpSampleKernel.cpp`), for an output size
//! given directly or recomputed from a scale factor (`recompute_scale_factor=True`, which is what
//! the detection transform uses), works per axis in `f32`:
//! * `ratio = in as f32 / out as f32`;
//! * source coordinate `src = ratio * (dst + 0.5) - 0.5`, clamped at 0 from below;
//! * `i0 = min(floor(src), in - 1)`, `i1 = i0 + 1` unless `i0` is the last index,
//!   `l1 = clamp(src - i0, 0, 1)`, `l0 = 1 - l1`; an axis whose size does not change copies;
//! * output `v00*(ly0*lx0) + v01*(ly0*lx1) + v10*(ly1*lx0) + v11*(ly1*lx1)`, summed left to right.
//!
//! PyTorch's x86 build compiles these kernels for AVX2/AVX-512 with floating-point contraction,
//! so the multiply-adds above are fused: `src = fma(ratio, dst + 0.5, -0.5)` and
//! `fma(v11, w11, fma(v10, w10, fma(v00, w00, v01 * w01)))`. Measured against torch 2.14.1 on
//! x86-64 with AVX2 this reproduces both the NCHW path (images) and the single-plane path
//! (`paste_mask_in_image`) bit for bit, where unfused arithmetic is off by up to ~1e-6; a PyTorch
//! running its non-AVX fallback kernels would itself differ by that much.

/// Per-axis taps: `(i0, i1, l0, l1)`, as PyTorch's `compute_source_index_and_lambda`.
fn axis_taps(in_len: usize, out_len: usize) -> Vec<(usize, usize, f32, f32)> {
    assert!(in_len > 0, "bilinear resize from an empty axis");
    if in_len == out_len {
        return (0..out_len).map(|i| (i, i, 1.0, 0.0)).collect();
    }
    let ratio = in_len as f32 / out_len as f32;
    (0..out_len)
        .map(|d| {
            let mut src = ratio.mul_add(d as f32 + 0.5, -0.5);
            if src < 0.0 {
                src = 0.0;
            }
            let i0 = (src.floor() as i64).min(in_len as i64 - 1);
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            let i0 = i0 as usize;
            let i1 = if i0 < in_len - 1 { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// One plane: `dst[oy][ox]` from `src` (`h x w`) with the given taps.
#[inline(always)]
fn plane_impl(
    src: &[f32],
    w: usize,
    ys: &[(usize, usize, f32, f32)],
    xs: &[(usize, usize, f32, f32)],
    dst: &mut [f32],
) {
    let ow = xs.len();
    for (row_out, &(y0, y1, ly0, ly1)) in dst.chunks_mut(ow).zip(ys) {
        let r0 = &src[y0 * w..(y0 + 1) * w];
        let r1 = &src[y1 * w..(y1 + 1) * w];
        for (o, &(x0, x1, lx0, lx1)) in row_out.iter_mut().zip(xs) {
            let (w00, w01, w10, w11) = (ly0 * lx0, ly0 * lx1, ly1 * lx0, ly1 * lx1);
            let s = r0[x0].mul_add(w00, r0[x1] * w01);
            let s = r1[x0].mul_add(w10, s);
            *o = r1[x1].mul_add(w11, s);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
fn plane_fma(
    src: &[f32],
    w: usize,
    ys: &[(usize, usize, f32, f32)],
    xs: &[(usize, usize, f32, f32)],
    dst: &mut [f32],
) {
    plane_impl(src, w, ys, xs, dst)
}

/// Resize one plane; fused multiply-adds in hardware where the CPU has them (same results as
/// the software `fmaf` otherwise, only slower).
fn plane(
    src: &[f32],
    w: usize,
    ys: &[(usize, usize, f32, f32)],
    xs: &[(usize, usize, f32, f32)],
    dst: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports FMA (checked just above).
            unsafe { plane_fma(src, w, ys, xs, dst) };
            return;
        }
    }
    plane_impl(src, w, ys, xs, dst)
}

/// Output size of torchvision's `_resize_image_and_masks` (no `fixed_size`, not scripted/traced):
/// `scale = min(min_size / min(h, w), max_size / max(h, w))` in `f64` (Python floats), then
/// `F.interpolate(..., scale_factor=scale, recompute_scale_factor=True)` makes the size
/// `floor(in as f64 * scale)` per axis. Returns `(out_h, out_w, scale)`.
///
/// The floor of a `f64` product bites: for a 398-pixel short side the scale is `800 / 398` and
/// `398 * (800 / 398)` is `799.999…`, so that side becomes 799, not 800 (397x396 is lucky:
/// 802x800). For 1024x2048 the max-size cap wins: 666x1333 (not 800x1600).
pub fn resized_size(h: usize, w: usize, min_size: usize, max_size: usize) -> (usize, usize, f64) {
    let min_side = h.min(w) as f64;
    let max_side = h.max(w) as f64;
    let a = min_size as f64 / min_side;
    let b = max_size as f64 / max_side;
    // Python's min(a, b) keeps the first argument on ties; the values are equal then anyway.
    let scale = if b < a { b } else { a };
    let oh = (h as f64 * scale).floor() as usize;
    let ow = (w as f64 * scale).floor() as usize;
    (oh, ow, scale)
}

/// Padded batch size of torchvision's `GeneralizedRCNNTransform.batch_images`:
/// `ceil(side / divisor) * divisor` per axis (`size_divisible = 32` for Mask R-CNN).
pub fn padded_size(h: usize, w: usize, divisor: usize) -> (usize, usize) {
    (h.div_ceil(divisor) * divisor, w.div_ceil(divisor) * divisor)
}

/// `F.interpolate(x[None], size=(oh, ow), mode="bilinear", align_corners=False)[0]` for a
/// contiguous `[c, h, w]` tensor (equivalently `scale_factor=s, recompute_scale_factor=True` once
/// the size is known); with `c = 1` also the mask resize of `paste_mask_in_image`. Returns
/// `[c, oh, ow]`; large outputs are computed in parallel over channels.
pub fn resize_bilinear_chw(
    src: &[f32],
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
) -> Vec<f32> {
    assert_eq!(src.len(), c * h * w, "resize_bilinear_chw: source size");
    let mut out = vec![0f32; c * oh * ow];
    if oh == 0 || ow == 0 || c == 0 {
        return out;
    }
    let ys = axis_taps(h, oh);
    let xs = axis_taps(w, ow);
    let work = |(p_in, p_out): (&[f32], &mut [f32])| plane(p_in, w, &ys, &xs, p_out);
    if c > 1 && c * oh * ow >= 1 << 16 {
        use rayon::prelude::*;
        src.par_chunks(h * w)
            .zip(out.par_chunks_mut(oh * ow))
            .for_each(work);
    } else {
        src.chunks(h * w)
            .zip(out.chunks_mut(oh * ow))
            .for_each(work);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::ops::tv_boxes::tv_fixture::Fixture;

    #[test]
    fn sizes_by_hand() {
        assert_eq!(resized_size(1024, 2048, 800, 1333).0, 666);
        assert_eq!(resized_size(1024, 2048, 800, 1333).1, 1333);
        assert_eq!(resized_size(480, 640, 800, 1333).0, 800);
        assert_eq!(resized_size(480, 640, 800, 1333).1, 1066);
        assert_eq!(padded_size(666, 1333, 32), (672, 1344));
        assert_eq!(padded_size(800, 1088, 32), (800, 1088));
    }

    #[test]
    fn taps_by_hand() {
        // 2 -> 4: ratio 0.5, src = 0.5 * (d + 0.5) - 0.5 = -0.25 (clamped), 0.25, 0.75, 1.25.
        let t = axis_taps(2, 4);
        assert_eq!(t[0], (0, 1, 1.0, 0.0));
        assert_eq!(t[1], (0, 1, 0.75, 0.25));
        assert_eq!(t[2], (0, 1, 0.25, 0.75));
        assert_eq!(t[3], (1, 1, 0.75, 0.25)); // last index: both taps on it
        let out = resize_bilinear_chw(&[0.0, 4.0], 1, 1, 2, 1, 4);
        assert_eq!(out, vec![0.0, 1.0, 3.0, 4.0]);
        // Same size copies exactly.
        let src: Vec<f32> = (0..12).map(|v| v as f32 * 0.1).collect();
        assert_eq!(resize_bilinear_chw(&src, 3, 2, 2, 2, 2), src);
    }

    #[test]
    fn matches_torch_interpolate() {
        let fx = Fixture::load("interp");
        let cases = fx.meta_usizes("cases");
        let mut worst = 0f32;
        for case in cases.chunks(5) {
            let (id, h, w, oh, ow) = (case[0], case[1], case[2], case[3], case[4]);
            let (src, shape) = fx.f32s(&format!("in_{id}"));
            assert_eq!(shape, vec![3, h, w]);
            let (want, wshape) = fx.f32s(&format!("out_{id}"));
            assert_eq!(wshape, vec![3, oh, ow]);
            let got = resize_bilinear_chw(&src, 3, h, w, oh, ow);
            let err = max_abs(&got, &want);
            assert!(
                err <= 1e-5,
                "interp case {id} {h}x{w}->{oh}x{ow}: max err {err}"
            );
            worst = worst.max(err);
        }
        eprintln!("interp small cases: max abs err {worst:e}");
    }

    #[test]
    fn matches_torch_transform_sizes() {
        let fx = Fixture::load("interp");
        let sizes = fx.meta_usizes("transform_sizes");
        for s in sizes.chunks(6) {
            let (h, w, oh, ow, ph, pw) = (s[0], s[1], s[2], s[3], s[4], s[5]);
            let (gh, gw, _) = resized_size(h, w, 800, 1333);
            assert_eq!((gh, gw), (oh, ow), "resized size of {h}x{w}");
            assert_eq!(padded_size(gh, gw, 32), (ph, pw), "padded size of {h}x{w}");
        }
    }

    #[test]
    fn matches_torch_transform_resize_rows() {
        // The transform's own resize of a 397x396 (and a 1024x2048) 3-channel image filled with
        // a formula both sides can generate; the fixture stores a few full output rows.
        let fx = Fixture::load("interp");
        let big = fx.meta_usizes("big_cases");
        let mut worst = 0f32;
        for case in big.chunks(5) {
            let (id, h, w, oh, ow) = (case[0], case[1], case[2], case[3], case[4]);
            assert_eq!(resized_size(h, w, 800, 1333).0, oh);
            assert_eq!(resized_size(h, w, 800, 1333).1, ow);
            let src = formula_image(h, w);
            let got = resize_bilinear_chw(&src, 3, h, w, oh, ow);
            let rows = fx.meta_usizes(&format!("big_rows_{id}"));
            let (want, shape) = fx.f32s(&format!("big_out_{id}"));
            assert_eq!(shape, vec![3, rows.len(), ow]);
            for ch in 0..3 {
                for (k, &r) in rows.iter().enumerate() {
                    let g = &got[(ch * oh + r) * ow..(ch * oh + r + 1) * ow];
                    let e = &want[(ch * rows.len() + k) * ow..(ch * rows.len() + k + 1) * ow];
                    worst = worst.max(max_abs(g, e));
                }
            }
            let (sums, _) = fx.f32s(&format!("big_sum_{id}"));
            for ch in 0..3 {
                let s: f64 = got[ch * oh * ow..(ch + 1) * oh * ow]
                    .iter()
                    .map(|&v| v as f64)
                    .sum();
                let rel = (s - sums[ch] as f64).abs() / (sums[ch] as f64).abs().max(1.0);
                assert!(rel < 1e-5, "channel sum {s} vs {}", sums[ch]);
            }
        }
        assert!(worst <= 1e-5, "transform resize rows: max err {worst}");
        eprintln!("interp transform rows: max abs err {worst:e}");
    }

    /// The fixture script's deterministic image: value `((y * 131 + x * 31 + c * 97) % 256) / 255`.
    fn formula_image(h: usize, w: usize) -> Vec<f32> {
        let mut v = Vec::with_capacity(3 * h * w);
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    v.push(((y * 131 + x * 31 + c * 97) % 256) as f32 / 255.0);
                }
            }
        }
        v
    }

    fn max_abs(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }
}
