//! CPU kernels behind [`super::conv::Conv2d`].
//!
//! GEMM-shaped convolutions are split into tiles of output pixels. Each tile is one task on the
//! thread pool: gather its input columns (im2col for that tile only, so the buffer stays in
//! cache; nothing at all for stride-1 1x1 convs, which read the input in place), write the bias
//! into its slice of the output, accumulate one single-threaded GEMM there, then add the residual
//! and apply the activation while the rows are hot. Tiles give both threads independent work
//! (no fork/join inside the GEMM) and keep the im2col buffer small.

use super::conv::{Activation, ConvSpec};
use rayon::prelude::*;

pub(crate) struct Geometry {
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub top: usize,
    pub left: usize,
}

/// What happens after the GEMM, per output element: `act(acc + residual)`.
pub(crate) struct Epilogue<'a> {
    pub act: Activation,
    /// Same layout as the output image.
    pub residual: Option<&'a [f32]>,
}

impl Activation {
    #[inline]
    pub(crate) fn apply(self, row: &mut [f32]) {
        match self {
            Activation::None => {}
            Activation::Relu => row.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::Relu6 => row.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        }
    }
}

/// A raw output pointer shared by tasks that write disjoint parts of one buffer (column ranges
/// here, (channel block, tile) cells in the implicit-GEMM engine).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: tasks write disjoint cells of one buffer that outlives them.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Through a method, so closures capture the whole (Send) wrapper, not the raw field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Range of output columns `o` for which `o * stride + off` lands inside `[0, len)`.
#[inline]
pub(crate) fn valid_range(off: isize, stride: usize, len: usize, out_len: usize) -> (usize, usize) {
    let s = stride as isize;
    let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
    let hi = if (len as isize) - 1 - off < 0 {
        0
    } else {
        ((len as isize) - 1 - off) / s + 1
    };
    let lo = lo.clamp(0, out_len as isize) as usize;
    let hi = hi.clamp(0, out_len as isize) as usize;
    (lo, hi.max(lo))
}

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
    // A stride-1 1x1 conv without padding reads its input in place: rows of `x` are the columns.
    let in_place =
        (kh, kw) == (1, 1) && s.stride == 1 && g.top == 0 && g.left == 0 && s.groups == 1;
    let pointwise_strided =
        (kh, kw) == (1, 1) && g.top == 0 && g.left == 0 && s.groups == 1 && !in_place;
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
        // SAFETY: this task owns columns [c0, c0+tn) of rows [row0, row0+cout_g); no other task
        // touches them, and the buffer lives until the parallel loop returns.
        let rows = |r: usize| unsafe {
            std::slice::from_raw_parts_mut(out_ptr.get().add((row0 + r) * plane + c0), tn)
        };
        for r in 0..cout_g {
            rows(r).fill(bias[row0 + r]);
        }
        let wg = &wt[grp * cout_g * k..(grp + 1) * cout_g * k];
        // SAFETY: dst/lhs/rhs describe dense or row-strided matrices inside live buffers of the
        // sizes computed above.
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

/// Depthwise convolution, computed directly: each output row accumulates `kh * kw` shifted input
/// rows (contiguous slices at stride 1, so the inner loop vectorises). Planes run in parallel.
/// `x` and `out` hold whole batches (`[N*C, H, W]`).
pub(crate) fn depthwise(
    s: &ConvSpec,
    g: &Geometry,
    wt: &[f32],
    b: &[f32],
    x: &[f32],
    out: &mut [f32],
    epi: &Epilogue,
) {
    let (kh, kw) = s.kernel;
    let c = s.in_channels;
    let in_plane = g.h * g.w;
    let out_plane = g.oh * g.ow;
    out.par_chunks_mut(out_plane)
        .enumerate()
        .for_each(|(p, dst)| {
            let ch = p % c;
            let src = &x[p * in_plane..(p + 1) * in_plane];
            let filt = &wt[ch * kh * kw..(ch + 1) * kh * kw];
            let taps: Vec<(isize, usize, usize)> = (0..kw)
                .map(|j| {
                    let off = (j * s.dilation) as isize - g.left as isize;
                    let (lo, hi) = valid_range(off, s.stride, g.w, g.ow);
                    (off, lo, hi)
                })
                .collect();
            for oy in 0..g.oh {
                let drow = &mut dst[oy * g.ow..(oy + 1) * g.ow];
                drow.fill(b[ch]);
                for i in 0..kh {
                    let iy = (oy * s.stride + i * s.dilation) as isize - g.top as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let srow = &src[iy as usize * g.w..(iy as usize + 1) * g.w];
                    for (j, &(off, lo, hi)) in taps.iter().enumerate() {
                        let wv = filt[i * kw + j];
                        if lo >= hi {
                            continue;
                        }
                        if s.stride == 1 {
                            let start = (lo as isize + off) as usize;
                            for (d, v) in
                                drow[lo..hi].iter_mut().zip(&srow[start..start + (hi - lo)])
                            {
                                *d += wv * v;
                            }
                        } else {
                            for (o, d) in drow[lo..hi].iter_mut().enumerate() {
                                *d += wv * srow[(((o + lo) * s.stride) as isize + off) as usize];
                            }
                        }
                    }
                }
                if let Some(res) = epi.residual {
                    let r = &res[p * out_plane + oy * g.ow..p * out_plane + (oy + 1) * g.ow];
                    drow.iter_mut().zip(r).for_each(|(d, v)| *d += v);
                }
                epi.act.apply(drow);
            }
        });
}
