//! The GEMM path: grouped convs, and every dense conv on CPUs without the implicit-GEMM engine.
//!
//! GEMM-shaped convolutions are split into tiles of output pixels. Each tile is one task on the
//! thread pool: gather its input columns (im2col for that tile only, so the buffer stays in
//! cache; nothing at all for stride-1 1x1 convs, which read the input in place), write the bias
//! into its slice of the output, accumulate one single-threaded GEMM there, then add the residual
//! and apply the activation while the rows are hot. Tiles give both threads independent work
//! (no fork/join inside the GEMM) and keep the im2col buffer small.

use super::spec::{valid_range, ConvSpec, Epilogue, Geometry, OutPtr};
use rayon::prelude::*;

/// Output pixels per tile: enough tasks to keep every thread busy with some slack for balance,
/// at least 64 columns for GEMM efficiency, and an im2col tile of at most ~1 MB.
fn tile_columns(plane: usize, k: usize, threads: usize) -> usize {
    let balanced = plane.div_ceil(4 * threads.max(1));
    let cache_cap = ((1 << 18) / k.max(1)).max(16);
    let t = balanced.min(cache_cap).max(64).min(plane);
    t.div_ceil(16) * 16
}

/// Fill `buf[r * tn + q]` with the im2col value of row `r` (channel, tap) at output pixel
/// `c0 + q`, for one group.
fn im2col_tile(
    s: &ConvSpec,
    g: &Geometry,
    x: &[f32],
    grp: usize,
    c0: usize,
    tn: usize,
    buf: &mut [f32],
) {
    let (kh, kw) = s.kernel;
    let cin_g = s.in_channels / s.groups;
    for (r, row) in buf.chunks_exact_mut(tn).enumerate().take(cin_g * kh * kw) {
        let c = grp * cin_g + r / (kh * kw);
        let (i, j) = ((r % (kh * kw)) / kw, r % kw);
        let src = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        let off_x = (j * s.dilation) as isize - g.left as isize;
        let (lo, hi) = valid_range(off_x, s.stride, g.w, g.ow);
        let mut q = 0;
        while q < tn {
            let p = c0 + q;
            let (oy, ox0) = (p / g.ow, p % g.ow);
            let ox1 = (ox0 + (tn - q)).min(g.ow);
            let seg = &mut row[q..q + (ox1 - ox0)];
            let iy = (oy * s.stride + i * s.dilation) as isize - g.top as isize;
            if iy < 0 || iy >= g.h as isize {
                seg.fill(0.0);
            } else {
                let srow = &src[iy as usize * g.w..(iy as usize + 1) * g.w];
                for (k, d) in seg.iter_mut().enumerate() {
                    let ox = ox0 + k;
                    *d = if ox >= lo && ox < hi {
                        srow[((ox * s.stride) as isize + off_x) as usize]
                    } else {
                        0.0
                    };
                }
            }
            q += ox1 - ox0;
        }
    }
}

/// Strided 1x1: gather the subsampled input columns of a tile.
fn subsample_tile(s: &ConvSpec, g: &Geometry, x: &[f32], c0: usize, tn: usize, buf: &mut [f32]) {
    for (c, row) in buf.chunks_exact_mut(tn).enumerate().take(s.in_channels) {
        let src = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for (q, d) in row.iter_mut().enumerate() {
            let p = c0 + q;
            let (oy, ox) = (p / g.ow, p % g.ow);
            *d = src[oy * s.stride * g.w + ox * s.stride];
        }
    }
}

/// Any conv that is not depthwise, on one image: `x` is `[Cin, H, W]`, `out` `[Cout, OH, OW]`.
pub(crate) fn gemm_conv(
    s: &ConvSpec,
    g: &Geometry,
    wt: &[f32],
    bias: &[f32],
    x: &[f32],
    out: &mut [f32],
    epi: &Epilogue,
) {
    let (kh, kw) = s.kernel;
    let plane = g.oh * g.ow;
    let cin_g = s.in_channels / s.groups;
    let cout_g = s.out_channels / s.groups;
    let k = cin_g * kh * kw;
    // The raw-pointer writes and the GEMM's reads below rely on these sizes.
    assert!(
        Geometry::of(s, g.h, g.w).ok().as_ref() == Some(g),
        "gemm conv: geometry {g:?} is not that of {s:?}"
    );
    assert_eq!(x.len(), s.in_channels * g.h * g.w, "gemm conv: input size");
    assert_eq!(out.len(), s.out_channels * plane, "gemm conv: output size");
    assert_eq!(wt.len(), s.out_channels * k, "gemm conv: weight size");
    assert_eq!(bias.len(), s.out_channels, "gemm conv: bias size");
    if let Some(r) = epi.residual {
        assert_eq!(r.len(), s.out_channels * plane, "gemm conv: residual size");
    }
    // A stride-1 1x1 conv whose output is its input's size without padding reads its input in
    // place: row `c` of `x` is row `c` of the GEMM's right-hand side, `plane` values apart. Any
    // pad (also only at the bottom or right) changes the plane and goes through im2col.
    let pointwise = (kh, kw) == (1, 1) && s.groups == 1;
    let in_place = pointwise && s.stride == 1 && g.same_size_unpadded();
    // Strided 1x1 without padding: every output pixel samples a pixel inside the input.
    let pointwise_strided = pointwise
        && !in_place
        && g.top == 0
        && g.left == 0
        && (g.oh - 1) * s.stride < g.h
        && (g.ow - 1) * s.stride < g.w;
    let threads = crate::runtime::threads();
    let t = tile_columns(plane, k, threads);
    let tiles = plane.div_ceil(t);
    let tasks = s.groups * tiles;
    // Too few tasks to share out: let the GEMM split itself instead.
    let par = if tasks < threads && cout_g * t * k >= (1 << 20) {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let out_ptr = OutPtr(out.as_mut_ptr());
    let run = |buf: &mut Vec<f32>, task: usize| {
        let (grp, ti) = (task / tiles, task % tiles);
        let c0 = ti * t;
        let tn = t.min(plane - c0);
        let (rhs, rhs_rs): (*const f32, isize) = if in_place {
            (x[c0..].as_ptr(), plane as isize)
        } else {
            buf.resize(k * tn, 0.0);
            if pointwise_strided {
                subsample_tile(s, g, x, c0, tn, buf);
            } else {
                im2col_tile(s, g, x, grp, c0, tn, buf);
            }
            (buf.as_ptr(), tn as isize)
        };
        let row0 = grp * cout_g;
        // SAFETY: `out` holds `s.out_channels * plane` values (checked above), so row
        // `row0 + r < s.out_channels`, columns `c0..c0 + tn <= plane`, is inside it; this task
        // owns those columns of rows `row0..row0 + cout_g`, no other task touches them, and the
        // buffer lives until the parallel loop returns.
        let rows = |r: usize| unsafe {
            std::slice::from_raw_parts_mut(out_ptr.get().add((row0 + r) * plane + c0), tn)
        };
        for r in 0..cout_g {
            rows(r).fill(bias[row0 + r]);
        }
        let wg = &wt[grp * cout_g * k..(grp + 1) * cout_g * k];
        // SAFETY: dst is `cout_g x tn` at row stride `plane` inside `out` (as for `rows`); lhs is
        // `wg`, `cout_g x k` dense; rhs is `k x tn`: in place, rows `0..cin` of `x` from column
        // `c0`, `plane` apart, ending at `(cin - 1) * plane + c0 + tn <= cin * h * w = x.len()`
        // because `plane == h * w` there; otherwise the `k * tn` values just written to `buf`.
        unsafe {
            gemm::gemm(
                cout_g,
                tn,
                k,
                out_ptr.get().add(row0 * plane + c0),
                1,
                plane as isize,
                true,
                wg.as_ptr(),
                1,
                k as isize,
                rhs,
                1,
                rhs_rs,
                1.0,
                1.0,
                false,
                false,
                false,
                par,
            );
        }
        for r in 0..cout_g {
            let row = rows(r);
            if let Some(res) = epi.residual {
                let src = &res[(row0 + r) * plane + c0..(row0 + r) * plane + c0 + tn];
                row.iter_mut().zip(src).for_each(|(d, v)| *d += v);
            }
            epi.act.apply(row);
        }
    };
    if tasks == 1 {
        run(&mut Vec::new(), 0);
    } else {
        (0..tasks).into_par_iter().for_each_init(Vec::new, run);
    }
}
