//! Depthwise convolutions (one filter per channel) on the CPU.

use super::spec::{valid_range, ConvSpec, Epilogue, Geometry};
use rayon::prelude::*;

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
