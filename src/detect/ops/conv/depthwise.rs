//! Depthwise convolutions (one filter per channel) on the CPU.
//!
//! 3x3 layers at stride 1 or 2 without dilation (every depthwise layer of MobileNetV2/SSDLite)
//! take [`plane_3x3`]: the plane is first copied into a zero-padded scratch buffer split by
//! column phase (`stride` planes, so column `S*k + r` of the padded row is element `k` of phase
//! `r`), after which every tap of every output row is a contiguous slice and one pass per row
//! computes all nine taps with no bounds or border tests, vectorised for the process's kernel
//! path (AVX-512 or AVX2 through `#[target_feature]` copies of the same code). Other shapes take
//! the general row-wise kernel.

use super::isa::Isa;
use super::spec::{valid_range, Activation, ConvSpec, Epilogue, Geometry};
use rayon::prelude::*;

/// Depthwise convolution of whole batches (`x` and `out` are `[N*C, H, W]`); planes run in
/// parallel. `isa` picks the vector width of the 3x3 kernel (None: the baseline build's).
#[allow(clippy::too_many_arguments)]
pub(crate) fn depthwise(
    s: &ConvSpec,
    g: &Geometry,
    wt: &[f32],
    b: &[f32],
    x: &[f32],
    out: &mut [f32],
    epi: &Epilogue,
    isa: Option<Isa>,
) {
    let c = s.in_channels;
    let in_plane = g.h * g.w;
    let out_plane = g.oh * g.ow;
    if s.kernel == (3, 3) && s.dilation == 1 && (s.stride == 1 || s.stride == 2) {
        let shape = Padded::new(s.stride, g);
        out.par_chunks_mut(out_plane).enumerate().for_each_init(
            || vec![0f32; shape.len()],
            |scratch, (p, dst)| {
                let ch = p % c;
                let mut filt = [0f32; 9];
                filt.copy_from_slice(&wt[ch * 9..(ch + 1) * 9]);
                let plane = Plane {
                    src: &x[p * in_plane..(p + 1) * in_plane],
                    filt,
                    bias: b[ch],
                    residual: epi.residual.map(|r| &r[p * out_plane..(p + 1) * out_plane]),
                    act: epi.act,
                };
                shape.fill(plane.src, g, scratch);
                match isa {
                    // SAFETY: an `Isa` value is the proof that this CPU runs its instruction set.
                    Some(Isa::Avx512(_)) => unsafe { plane_avx512(&shape, &plane, scratch, dst) },
                    Some(Isa::Avx2(_)) => unsafe { plane_avx2(&shape, &plane, scratch, dst) },
                    None => plane_3x3(&shape, &plane, scratch, dst),
                }
            },
        );
        return;
    }
    out.par_chunks_mut(out_plane)
        .enumerate()
        .for_each(|(p, dst)| general_plane(s, g, wt, b, x, p, dst, epi));
}

/// The zero-padded, phase-split layout of one input plane for a 3x3 kernel at stride `S`:
/// `S` phases of `hp` rows by `wq` columns; padded pixel `(y, S*k + r)` is phase `r`, row `y`,
/// column `k`. Padded coordinates start `top` rows above and `left` columns left of the input.
struct Padded {
    stride: usize,
    hp: usize,
    wq: usize,
    oh: usize,
    ow: usize,
}

impl Padded {
    fn new(stride: usize, g: &Geometry) -> Self {
        // Output pixel (oy, ox) reads padded rows S*oy..S*oy+3 and columns S*ox..S*ox+3.
        let hp = stride * (g.oh.max(1) - 1) + 3;
        let wp = stride * (g.ow.max(1) - 1) + 3;
        Self {
            stride,
            hp,
            wq: wp.div_ceil(stride),
            oh: g.oh,
            ow: g.ow,
        }
    }

    fn len(&self) -> usize {
        self.stride * self.hp * self.wq
    }

    /// Copy `src` (`g.h x g.w`) into `buf` in this layout, zeros outside the input.
    fn fill(&self, src: &[f32], g: &Geometry, buf: &mut [f32]) {
        let (s, wq) = (self.stride, self.wq);
        let phase_len = self.hp * wq;
        for r in 0..s {
            let phase = &mut buf[r * phase_len..(r + 1) * phase_len];
            // Columns k whose input column S*k + r - left lies in [0, w).
            let (lo, hi) = valid_range(r as isize - g.left as isize, s, g.w, wq);
            for (yp, row) in phase.chunks_exact_mut(wq).enumerate() {
                let y = yp as isize - g.top as isize;
                if y < 0 || y >= g.h as isize || lo >= hi {
                    row.fill(0.0);
                    continue;
                }
                row[..lo].fill(0.0);
                row[hi..].fill(0.0);
                let srow = &src[y as usize * g.w..(y as usize + 1) * g.w];
                let first = s * lo + r - g.left;
                if s == 1 {
                    row[lo..hi].copy_from_slice(&srow[first..first + (hi - lo)]);
                } else {
                    for (d, v) in row[lo..hi].iter_mut().zip(srow[first..].iter().step_by(s)) {
                        *d = *v;
                    }
                }
            }
        }
    }
}

/// One plane's inputs to the 3x3 kernel.
struct Plane<'a> {
    src: &'a [f32],
    filt: [f32; 9],
    bias: f32,
    residual: Option<&'a [f32]>,
    act: Activation,
}

#[target_feature(enable = "avx512f")]
unsafe fn plane_avx512(shape: &Padded, plane: &Plane, buf: &[f32], dst: &mut [f32]) {
    plane_3x3(shape, plane, buf, dst)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn plane_avx2(shape: &Padded, plane: &Plane, buf: &[f32], dst: &mut [f32]) {
    plane_3x3(shape, plane, buf, dst)
}

/// All output rows of one plane from its padded copy `buf`: tap `(i, j)` of output row `oy` is
/// phase `j % S`, row `S*oy + i`, columns `j / S ..` — a contiguous run of `ow` values. Inlined
/// into the `#[target_feature]` copies above so the loop is compiled for their vector width.
#[inline(always)]
fn plane_3x3(shape: &Padded, plane: &Plane, buf: &[f32], dst: &mut [f32]) {
    let (s, wq, ow) = (shape.stride, shape.wq, shape.ow);
    let phase_len = shape.hp * wq;
    let w = &plane.filt;
    for (oy, drow) in dst.chunks_exact_mut(ow).enumerate().take(shape.oh) {
        let tap = |i: usize, j: usize| {
            let start = (j % s) * phase_len + (s * oy + i) * wq + j / s;
            &buf[start..start + ow]
        };
        let n = drow.len();
        let t = [
            tap(0, 0),
            tap(0, 1),
            tap(0, 2),
            tap(1, 0),
            tap(1, 1),
            tap(1, 2),
            tap(2, 0),
            tap(2, 1),
            tap(2, 2),
        ]
        .map(|v| &v[..n]);
        for (x, d) in drow.iter_mut().enumerate() {
            // Bias first, then the taps in (i, j) order, as the general kernel sums them.
            let mut a = plane.bias;
            for k in 0..9 {
                a += w[k] * t[k][x];
            }
            *d = a;
        }
        if let Some(res) = plane.residual {
            for (d, v) in drow.iter_mut().zip(&res[oy * ow..(oy + 1) * ow]) {
                *d += v;
            }
        }
        plane.act.apply(drow);
    }
}

/// Any kernel size, stride and dilation: each output row accumulates `kh * kw` shifted input
/// rows (contiguous slices at stride 1).
#[allow(clippy::too_many_arguments)]
fn general_plane(
    s: &ConvSpec,
    g: &Geometry,
    wt: &[f32],
    b: &[f32],
    x: &[f32],
    p: usize,
    dst: &mut [f32],
    epi: &Epilogue,
) {
    let (kh, kw) = s.kernel;
    let ch = p % s.in_channels;
    let in_plane = g.h * g.w;
    let out_plane = g.oh * g.ow;
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
                    for (d, v) in drow[lo..hi].iter_mut().zip(&srow[start..start + (hi - lo)]) {
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
}
