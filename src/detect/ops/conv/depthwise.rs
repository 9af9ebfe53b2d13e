//! Depthwise convolutions (one filter per channel) on the CPU.
//!
//! 3x3 layers at stride 1 or 2 without dilation (every depthwise layer of MobileNetV2/SSDLite)
//! take [`plane_3x3`]: the plane is first copied into a zero-padded scratch buffer split into
//! `stride x stride` phases (see [`Padded`]), after which every tap is one contiguous run at a
//! fixed offset from the output's flat index, so the whole plane is a single loop with no
//! bounds or border tests, vectorised for the process's kernel path (AVX-512 or AVX2 through
//! `#[target_feature]` copies of the same code) even on 10x10 or 5x5 maps where a per-row loop
//! would be all tail. Other shapes take the general row-wise kernel.

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
    let fast = s.kernel == (3, 3)
        && s.dilation == 1
        && (s.stride == 1 || s.stride == 2)
        && g.h > 0
        && g.w > 0
        && g.top <= 2
        && g.left <= 2;
    if fast {
        let shape = Padded::new(s.stride, g);
        out.par_chunks_mut(out_plane).enumerate().for_each_init(
            || vec![0f32; shape.len()],
            |scratch, (p, dst)| {
                let ch = p % c;
                let mut filt = [0f32; 9];
                filt.copy_from_slice(&wt[ch * 9..(ch + 1) * 9]);
                let plane = Plane {
                    src: &x[p * in_plane..(p + 1) * in_plane],
                    geometry: g,
                    filt,
                    bias: b[ch],
                    residual: epi.residual.map(|r| &r[p * out_plane..(p + 1) * out_plane]),
                    act: epi.act,
                };
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
/// `S*S` phases of `hq` rows by `wq` columns; padded pixel `(S*yq + ry, S*xq + rx)` is phase
/// `(ry, rx)`, row `yq`, column `xq`. Padded coordinates start `top` rows above and `left`
/// columns left of the input. Output pixel `(oy, ox)` at flat index `q = oy * wq + ox` then
/// reads tap `(i, j)` at phase `(i % S, j % S)`, flat index `q + (i / S) * wq + j / S`: a fixed
/// offset per tap, so a whole plane is one run over `q` (the `wq - ow` columns past each output
/// row are computed and dropped; `wq` is `ow + 2` at stride 1 and `ow + 1` at stride 2).
struct Padded {
    stride: usize,
    hq: usize,
    wq: usize,
    oh: usize,
    ow: usize,
}

impl Padded {
    fn new(stride: usize, g: &Geometry) -> Self {
        let reach = 2 / stride; // how far past an output row/column the taps reach, per phase
        Self {
            stride,
            hq: g.oh + reach,
            wq: g.ow + reach,
            oh: g.oh,
            ow: g.ow,
        }
    }

    fn phase_len(&self) -> usize {
        self.hq * self.wq
    }

    /// Scratch floats per plane: the phases, then the flat output run.
    fn len(&self) -> usize {
        self.stride * self.stride * self.phase_len() + self.run_len()
    }

    /// Flat outputs computed per plane: up to the last output row's last real column.
    fn run_len(&self) -> usize {
        if self.oh == 0 || self.ow == 0 {
            0
        } else {
            (self.oh - 1) * self.wq + self.ow
        }
    }
}

/// One plane's inputs to the 3x3 kernel.
struct Plane<'a> {
    src: &'a [f32],
    geometry: &'a Geometry,
    filt: [f32; 9],
    bias: f32,
    residual: Option<&'a [f32]>,
    act: Activation,
}

#[target_feature(enable = "avx512f")]
unsafe fn plane_avx512(shape: &Padded, plane: &Plane, buf: &mut [f32], dst: &mut [f32]) {
    plane_3x3(shape, plane, buf, dst)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn plane_avx2(shape: &Padded, plane: &Plane, buf: &mut [f32], dst: &mut [f32]) {
    plane_3x3(shape, plane, buf, dst)
}

/// One plane: copy it into the phase layout, run the nine taps over the flat output index, and
/// store the real columns with residual and activation. Inlined into the `#[target_feature]`
/// copies above so every loop is compiled for their vector width.
#[inline(always)]
fn plane_3x3(shape: &Padded, plane: &Plane, buf: &mut [f32], dst: &mut [f32]) {
    let (s, wq, ow) = (shape.stride, shape.wq, shape.ow);
    let phase_len = shape.phase_len();
    let (phases, run) = buf.split_at_mut(s * s * phase_len);
    fill_phases(shape, plane.src, plane.geometry, phases);
    let n = shape.run_len();
    let run = &mut run[..n];
    let phases = &*phases;
    let tap = |i: usize, j: usize| {
        let start = ((i % s) * s + j % s) * phase_len + (i / s) * wq + j / s;
        &phases[start..start + n]
    };
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
    ];
    // Without a residual the activation is applied in the same pass (every depthwise layer of
    // MobileNetV2); with one it has to follow the add.
    let act = match plane.residual {
        None => plane.act,
        Some(_) => Activation::None,
    };
    match act {
        Activation::None => taps_3x3(run, &t, &plane.filt, plane.bias, |a| a),
        Activation::Relu => taps_3x3(run, &t, &plane.filt, plane.bias, |a| a.max(0.0)),
        Activation::Relu6 => taps_3x3(run, &t, &plane.filt, plane.bias, |a| a.clamp(0.0, 6.0)),
    }
    for (oy, drow) in dst.chunks_exact_mut(ow).enumerate().take(shape.oh) {
        drow.copy_from_slice(&run[oy * wq..oy * wq + ow]);
        if let Some(res) = plane.residual {
            for (d, v) in drow.iter_mut().zip(&res[oy * ow..(oy + 1) * ow]) {
                *d += v;
            }
            plane.act.apply(drow);
        }
    }
}

/// `run[q] = act(bias + sum_k w[k] * t[k][q])`, bias first and the taps in (i, j) order as the
/// general kernel sums them.
#[inline(always)]
fn taps_3x3(run: &mut [f32], t: &[&[f32]; 9], w: &[f32; 9], bias: f32, act: impl Fn(f32) -> f32) {
    for (q, d) in run.iter_mut().enumerate() {
        let mut a = bias;
        for k in 0..9 {
            a += w[k] * t[k][q];
        }
        *d = act(a);
    }
}

/// Copy `src` (`g.h x g.w`) into the phase layout, zeros outside the input.
#[inline(always)]
fn fill_phases(shape: &Padded, src: &[f32], g: &Geometry, phases: &mut [f32]) {
    let (s, wq) = (shape.stride, shape.wq);
    let phase_len = shape.phase_len();
    // Padded rows S*yq + ry for every phase row; only pad rows and pad columns are zeroed, so
    // each scratch value is written once per plane.
    for yp in 0..s * shape.hq {
        let (yq, ry) = (yp / s, yp % s);
        let row = |rx: usize| (ry * s + rx) * phase_len + yq * wq;
        let Some(srow) = yp
            .checked_sub(g.top)
            .filter(|&y| y < g.h)
            .map(|y| &src[y * g.w..(y + 1) * g.w])
        else {
            for rx in 0..s {
                phases[row(rx)..row(rx) + wq].fill(0.0);
            }
            continue;
        };
        if s == 1 {
            // Padded column x + left; columns the outputs never read are cut off.
            let prow = &mut phases[row(0)..row(0) + wq];
            let len = g.w.min(wq.saturating_sub(g.left));
            let end = (g.left + len).min(wq);
            prow[..g.left.min(wq)].fill(0.0);
            prow[g.left.min(wq)..end].copy_from_slice(&srow[..end - g.left.min(wq)]);
            prow[end..].fill(0.0);
            continue;
        }
        // Stride 2: input column x goes to phase (x + left) % 2, column (x + left) / 2.
        let (a, b) = (row(g.left % 2), row(1 - g.left % 2));
        let (first_a, first_b) = (g.left / 2, g.left.div_ceil(2));
        let pairs = (g.w / 2)
            .min(wq.saturating_sub(first_a))
            .min(wq.saturating_sub(first_b));
        for (start, first) in [(a, first_a), (b, first_b)] {
            let prow = &mut phases[start..start + wq];
            prow[..first.min(wq)].fill(0.0);
            prow[(first + pairs).min(wq)..].fill(0.0);
        }
        let (lo, hi) = if a < b {
            let (lo, hi) = phases.split_at_mut(b);
            (
                &mut lo[a + first_a..a + first_a + pairs],
                &mut hi[first_b..first_b + pairs],
            )
        } else {
            let (lo, hi) = phases.split_at_mut(a);
            (
                &mut hi[first_a..first_a + pairs],
                &mut lo[b + first_b..b + first_b + pairs],
            )
        };
        for ((pa, pb), pair) in lo.iter_mut().zip(hi.iter_mut()).zip(srow.chunks_exact(2)) {
            *pa = pair[0];
            *pb = pair[1];
        }
        // The last column of an odd-width row, and any pair cut short above.
        for (x, &v) in srow.iter().enumerate().skip(2 * pairs) {
            let xp = x + g.left;
            if xp / 2 < wq {
                phases[row(xp % 2) + xp / 2] = v;
            }
        }
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
