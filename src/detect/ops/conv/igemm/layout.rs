//! The phase-split, zero-padded input layout one call reads.

use super::super::spec::{ConvSpec, Geometry};
use rayon::prelude::*;

/// Floor division for the tap -> (decimated offset, phase) split.
fn split(v: isize, s: usize) -> (isize, usize) {
    let s = s as isize;
    (v.div_euclid(s), v.rem_euclid(s) as usize)
}

/// How one call lays out its input: decimated offsets per axis and the phases in use.
pub(super) struct Layout {
    pub(super) s: usize,
    /// Smallest decimated offset over taps, per axis (the plane starts there).
    pub(super) qmin: (isize, isize),
    pub(super) hq: usize,
    pub(super) wq: usize,
    /// Phases `(ry, rx)` some tap reads, and each one's slot in a channel's block of planes.
    pub(super) phases: Vec<(usize, usize)>,
    /// `true` when the input is used as it is (stride-1, unpadded 1x1).
    pub(super) identity: bool,
}

impl Layout {
    pub(super) fn new(spec: &ConvSpec, g: &Geometry) -> Self {
        let (kh, kw) = spec.kernel;
        let (s, d) = (spec.stride, spec.dilation);
        let taps = |n: usize, pad: usize| -> Vec<(isize, usize)> {
            (0..n)
                .map(|t| split((t * d) as isize - pad as isize, s))
                .collect()
        };
        let (ty, tx) = (taps(kh, g.top), taps(kw, g.left));
        let span = |t: &[(isize, usize)]| {
            let lo = t.iter().map(|v| v.0).min().unwrap_or(0);
            let hi = t.iter().map(|v| v.0).max().unwrap_or(0);
            (lo, (hi - lo) as usize)
        };
        let ((qy, ey), (qx, ex)) = (span(&ty), span(&tx));
        let mut phases = Vec::new();
        for &(_, ry) in &ty {
            for &(_, rx) in &tx {
                if !phases.contains(&(ry, rx)) {
                    phases.push((ry, rx));
                }
            }
        }
        let identity = (kh, kw) == (1, 1) && s == 1 && g.top == 0 && g.left == 0;
        Self {
            s,
            qmin: (qy, qx),
            hq: g.oh + ey,
            wq: g.ow + ex,
            phases,
            identity: identity && g.same_size_unpadded(),
        }
    }

    pub(super) fn plane(&self) -> usize {
        self.hq * self.wq
    }

    /// Offset of tap `k = (ci, ky, kx)` from padded coordinate 0, for every `k` in weight order.
    pub(super) fn offsets(&self, spec: &ConvSpec, g: &Geometry) -> Vec<usize> {
        let (kh, kw) = spec.kernel;
        let d = spec.dilation;
        let per_channel = self.phases.len() * self.plane();
        let mut offs = Vec::with_capacity(spec.in_channels * kh * kw);
        for ci in 0..spec.in_channels {
            for ky in 0..kh {
                let (qy, ry) = split((ky * d) as isize - g.top as isize, self.s);
                for kx in 0..kw {
                    let (qx, rx) = split((kx * d) as isize - g.left as isize, self.s);
                    let ph = self.phases.iter().position(|&p| p == (ry, rx)).unwrap_or(0);
                    let row = (qy - self.qmin.0) as usize;
                    let col = (qx - self.qmin.1) as usize;
                    offs.push(ci * per_channel + ph * self.plane() + row * self.wq + col);
                }
            }
        }
        offs
    }

    /// The phase-split, zero-padded copy of one image `x` (`[Cin, H, W]`).
    pub(super) fn build(&self, x: &[f32], cin: usize, g: &Geometry) -> Vec<f32> {
        let plane = self.plane();
        let per_channel = self.phases.len() * plane;
        let mut buf: Vec<f32> = Vec::with_capacity(cin * per_channel);
        let s = self.s as isize;
        buf.spare_capacity_mut()[..cin * per_channel]
            .par_chunks_mut(per_channel)
            .enumerate()
            .for_each(|(ci, dst)| {
                let src = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
                for (pi, &(ry, rx)) in self.phases.iter().enumerate() {
                    let pd = &mut dst[pi * plane..(pi + 1) * plane];
                    // Columns i whose source x = s*(i + qmin) + rx lies inside [0, W).
                    let x0 = self.qmin.1 * s + rx as isize;
                    let wq = self.wq as isize;
                    let lo = if x0 >= 0 {
                        0
                    } else {
                        ((-x0 + s - 1) / s).min(wq)
                    };
                    let hi = ((g.w as isize - x0 + s - 1) / s).clamp(lo, wq);
                    let (lo, hi) = (lo as usize, hi as usize);
                    for (j, row) in pd.chunks_exact_mut(self.wq).enumerate() {
                        let y = (j as isize + self.qmin.0) * s + ry as isize;
                        if y < 0 || y >= g.h as isize || lo >= hi {
                            row.fill(std::mem::MaybeUninit::new(0.0));
                            continue;
                        }
                        row[..lo].fill(std::mem::MaybeUninit::new(0.0));
                        row[hi..].fill(std::mem::MaybeUninit::new(0.0));
                        let srow = &src[y as usize * g.w..(y as usize + 1) * g.w];
                        let first = (lo as isize * s + x0) as usize;
                        if s == 1 {
                            let from = &srow[first..first + (hi - lo)];
                            // SAFETY: `row[lo..hi]` and `from` have the same length and do not
                            // overlap (one is the input, the other a fresh buffer).
                            unsafe {
                                std::ptr::copy_nonoverlapping(
                                    from.as_ptr(),
                                    row[lo..hi].as_mut_ptr().cast::<f32>(),
                                    hi - lo,
                                )
                            };
                        } else {
                            for (t, d) in row[lo..hi].iter_mut().enumerate() {
                                d.write(srow[first + t * self.s]);
                            }
                        }
                    }
                }
            });
        // SAFETY: every row of every (channel, phase) plane was written above.
        unsafe { buf.set_len(cin * per_channel) };
        buf
    }
}
