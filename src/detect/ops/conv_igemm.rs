//! Implicit-GEMM convolution on AVX-512: weights packed once at load, no im2col buffer.
//!
//! A conv is `out[m, p] = sum_k A[m, k] * B[k, p]` with `k = (ci, ky, kx)`. Instead of copying
//! `B` (im2col), the input is rearranged once per call into a *phase-split, padded* image:
//! for stride `s`, every tap `ky*d - pad = s*q + r` reads phase `r` of the input at decimated
//! row `oy + q`. Each (channel, phase) plane is laid out with a fixed row pitch `wq`, so output
//! pixel `(oy, ox)` has the padded coordinate `p = oy*wq + ox`, and the tap `k` reads the plane
//! at `p + off[k]` — contiguous in `p`. One micro-kernel therefore serves 1x1, 3x3, 7x7, any
//! stride, padding and dilation: it loads `NR` consecutive values per tap and broadcasts `MR`
//! packed weights against them. The `wq - ow` pad columns per row are computed and dropped at
//! store time (lane masks), which costs 1-6% at the ResNet widths; a stride-1 1x1 conv without
//! padding reads its input as it is (no copy at all).
//!
//! Work: tiles of `NR` padded pixels x blocks of `MR` output channels, each accumulated over the
//! whole `K` in registers (no partial sums written back), then bias, residual and activation
//! applied on the registers and stored once. Tasks are contiguous tile ranges (and channel
//! ranges when there are few tiles) handed to the rayon pool, so threads share nothing.

use super::conv::{Activation, ConvSpec};
use super::conv_kernels::{Geometry, OutPtr};
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output channels per micro-tile (divides every ResNet/MobileNet width we run).
pub(crate) const MR: usize = 8;
/// Padded pixels per tile: three 16-lane vectors, so an 8x48 tile keeps 24 accumulators in
/// the 32 vector registers.
const NR: usize = 48;

/// Whether this CPU runs the engine (checked once; otherwise the caller keeps its GEMM path).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX512.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `[M, K]` weights regrouped as `[ceil(M/MR)][K][MR]` (missing rows zero), so the kernel reads
/// one contiguous run of `MR` values per tap.
#[derive(Debug)]
pub(crate) struct PackedWeights {
    m: usize,
    k: usize,
    data: Vec<f32>,
}

impl PackedWeights {
    pub(crate) fn new(w: &[f32], m: usize, k: usize) -> Self {
        let blocks = m.div_ceil(MR);
        let mut data = vec![0f32; blocks * k * MR];
        for (row, src) in w.chunks_exact(k).enumerate().take(m) {
            let (blk, i) = (row / MR, row % MR);
            let panel = &mut data[blk * k * MR..(blk + 1) * k * MR];
            for (kk, &v) in src.iter().enumerate() {
                panel[kk * MR + i] = v;
            }
        }
        Self { m, k, data }
    }
}

/// Floor division for the tap -> (decimated offset, phase) split.
fn split(v: isize, s: usize) -> (isize, usize) {
    let s = s as isize;
    (v.div_euclid(s), v.rem_euclid(s) as usize)
}

/// How one call lays out its input: decimated offsets per axis and the phases in use.
struct Layout {
    s: usize,
    /// Smallest decimated offset over taps, per axis (the plane starts there).
    qmin: (isize, isize),
    hq: usize,
    wq: usize,
    /// Phases `(ry, rx)` some tap reads, and each one's slot in a channel's block of planes.
    phases: Vec<(usize, usize)>,
    /// `true` when the input is used as it is (stride-1, unpadded 1x1).
    identity: bool,
}

impl Layout {
    fn new(spec: &ConvSpec, g: &Geometry) -> Self {
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
            identity: identity && g.ow == g.w && g.oh == g.h,
        }
    }

    fn plane(&self) -> usize {
        self.hq * self.wq
    }

    /// Offset of tap `k = (ci, ky, kx)` from padded coordinate 0, for every `k` in weight order.
    fn offsets(&self, spec: &ConvSpec, g: &Geometry) -> Vec<usize> {
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
    fn build(&self, x: &[f32], cin: usize, g: &Geometry) -> Vec<f32> {
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

/// One image: `x` is `[Cin, H, W]`; returns `[Cout, OH, OW]`.
pub(crate) fn conv(
    spec: &ConvSpec,
    g: &Geometry,
    wt: &PackedWeights,
    bias: &[f32],
    x: &[f32],
    residual: Option<&[f32]>,
    out: &mut [std::mem::MaybeUninit<f32>],
) {
    let lay = Layout::new(spec, g);
    let offs = lay.offsets(spec, g);
    let owned;
    let input: &[f32] = if lay.identity {
        x
    } else {
        owned = lay.build(x, spec.in_channels, g);
        &owned
    };
    let m = wt.m;
    let padded = g.oh * lay.wq;
    let tiles = padded.div_ceil(NR);
    let blocks = m.div_ceil(MR);
    let threads = crate::runtime::threads().max(1);
    // Enough tasks for balance; split channel blocks too when the image has few tiles.
    let want = 8 * threads;
    let tiles_per_task = tiles.div_ceil(want).max(1);
    let tile_tasks = tiles.div_ceil(tiles_per_task);
    let block_split = want.div_ceil(tile_tasks).clamp(1, blocks);
    let blocks_per_task = blocks.div_ceil(block_split);
    let block_tasks = blocks.div_ceil(blocks_per_task);
    let out_ptr = OutPtr(out.as_mut_ptr().cast::<f32>());
    // A stride-1 1x1 conv reads its input in place, and with the power-of-two planes of the
    // ResNet body every channel row of a tile falls into the same cache sets (rows 128 KB
    // apart at 512x1024): copying the tile's K rows into one contiguous panel first turns
    // those conflict misses into a single streaming read. Bounded so the panel stays in L2.
    let pack = lay.identity && wt.k <= 1024;
    let panel_offs: Vec<usize> = (0..wt.k).map(|k| k * NR).collect();
    let job = Job {
        k: wt.k,
        m,
        wq: lay.wq,
        ow: g.ow,
        plane_out: g.oh * g.ow,
        padded,
        act: spec.activation,
        offs: &offs,
        panel_offs: &panel_offs,
        input,
        weights: &wt.data,
        bias,
        residual,
    };
    // Tiles go in runs: for each block of output channels the run's tiles are done back to
    // back, so the weights stay in L1 and each output row is written as one long stream
    // instead of a few lines per tile (rows 128 KB apart share cache sets). The run's `B`
    // values (panels or input rows) are sized to stay in L2.
    let run_len = ((256 << 10) / (wt.k * NR * 4)).clamp(1, 16);
    (0..tile_tasks * block_tasks).into_par_iter().for_each_init(
        || (Vec::new(), Vec::new()),
        |(panels, segs), task| {
            let (tt, bt) = (task / block_tasks, task % block_tasks);
            let t_end = ((tt + 1) * tiles_per_task).min(tiles);
            let b_range = bt * blocks_per_task..((bt + 1) * blocks_per_task).min(blocks);
            let mut t0 = tt * tiles_per_task;
            while t0 < t_end {
                let run = t0..(t0 + run_len).min(t_end);
                segs.clear();
                for t in run.clone() {
                    segs.push(job.segments(t * NR));
                }
                if pack {
                    panels.resize(run.len() * job.k * NR, 0.0);
                    for (t, panel) in run.clone().zip(panels.chunks_exact_mut(job.k * NR)) {
                        job.pack(t * NR, panel);
                    }
                }
                for b in b_range.clone() {
                    for (i, t) in run.clone().enumerate() {
                        let src = if pack {
                            Source::Panel(&panels[i * job.k * NR..(i + 1) * job.k * NR])
                        } else {
                            Source::Input
                        };
                        let (seg, n) = &segs[i];
                        // SAFETY: (tile t, block b) cells are written by this task only.
                        unsafe { job.tile(t * NR, b * MR, &src, &seg[..*n], out_ptr.get()) };
                    }
                }
                t0 = run.end;
            }
        },
    );
}

/// Where a tile's `B` values come from.
enum Source<'a> {
    /// The (phase-split) input, at `p0 + offs[k]`.
    Input,
    /// A contiguous `[K][NR]` copy made for this tile.
    Panel(&'a [f32]),
}

/// Everything a micro-tile needs, shared read-only by all tasks of one call.
struct Job<'a> {
    k: usize,
    m: usize,
    wq: usize,
    ow: usize,
    plane_out: usize,
    padded: usize,
    act: Activation,
    offs: &'a [usize],
    /// `k * NR`: the offsets of a packed panel.
    panel_offs: &'a [usize],
    input: &'a [f32],
    weights: &'a [f32],
    bias: &'a [f32],
    residual: Option<&'a [f32]>,
}

impl Job<'_> {
    /// Destination runs of the tile starting at padded pixel `p0`: (lane mask, destination
    /// index of lane 0), one per output row the tile touches.
    fn segments(&self, p0: usize) -> ([(u64, isize); NR + 1], usize) {
        let mut out = [(0u64, 0isize); NR + 1];
        let mut n = 0;
        let end = (p0 + NR).min(self.padded);
        let mut p = p0;
        while p < end {
            let (oy, ox) = (p / self.wq, p % self.wq);
            let run = (self.wq - ox).min(end - p);
            let valid = run.min(self.ow.saturating_sub(ox));
            if valid > 0 {
                let lo = p - p0;
                let mask = lane_mask(lo, lo + valid);
                out[n] = (mask, (oy * self.ow + ox) as isize - lo as isize);
                n += 1;
            }
            p += run;
        }
        (out, n)
    }

    /// Copy the `K x NR` values of the tile at `p0` into `panel`, zero past the image.
    fn pack(&self, p0: usize, panel: &mut [f32]) {
        let n = (self.padded - p0).min(NR);
        // Two tiles ahead: each channel row is its own stream, too many for the hardware
        // prefetcher to follow.
        let ahead = 2 * NR;
        for (row, &off) in panel.chunks_exact_mut(NR).zip(self.offs) {
            #[cfg(target_arch = "x86_64")]
            if p0 + off + ahead + NR <= self.input.len() {
                let at = self.input[p0 + off + ahead..].as_ptr();
                for line in 0..NR / 16 {
                    // SAFETY: prefetch of an in-bounds address; it never faults.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(at.add(16 * line).cast()) };
                }
            }
            row[..n].copy_from_slice(&self.input[p0 + off..p0 + off + n]);
            row[n..].fill(0.0);
        }
    }

    /// # Safety
    /// `out` holds `m * plane_out` values; no other task writes rows `m0..m0+MR` of this tile.
    unsafe fn tile(
        &self,
        p0: usize,
        m0: usize,
        src: &Source,
        segs: &[(u64, isize)],
        out: *mut f32,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            let rows = (self.m - m0).min(MR);
            let a = self.weights.as_ptr().add((m0 / MR) * self.k * MR);
            let t = Tile {
                rows,
                bias: self.bias.as_ptr().add(m0),
                out: out.add(m0 * self.plane_out),
                res: self
                    .residual
                    .map_or(std::ptr::null(), |r| r.as_ptr().add(m0 * self.plane_out)),
                plane: self.plane_out,
                act: self.act,
                segs,
            };
            // The image's last tile may be short (a 7x7 layer is 49 pixels: 48 + 1): run it
            // with as few 16-lane vectors as cover it instead of a full-width tile.
            let lanes = (self.padded - p0).min(NR);
            let (b, offs, tail) = match src {
                Source::Panel(p) => (p.as_ptr(), self.panel_offs.as_ptr(), false),
                Source::Input => (
                    self.input.as_ptr().wrapping_add(p0),
                    self.offs.as_ptr(),
                    !lanes.is_multiple_of(16),
                ),
            };
            let load = lane_mask(0, lanes);
            match (lanes.div_ceil(16), tail) {
                (3, false) => kernel::<3, false>(self.k, a, b, offs, load, &t),
                (3, true) => kernel::<3, true>(self.k, a, b, offs, load, &t),
                (2, false) => kernel::<2, false>(self.k, a, b, offs, load, &t),
                (2, true) => kernel::<2, true>(self.k, a, b, offs, load, &t),
                (_, false) => kernel::<1, false>(self.k, a, b, offs, load, &t),
                (_, true) => kernel::<1, true>(self.k, a, b, offs, load, &t),
            }
        }
    }
}

/// Bits `lo..hi` set.
fn lane_mask(lo: usize, hi: usize) -> u64 {
    let upto = |n: usize| if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
    upto(hi) & !upto(lo)
}

/// Where a micro-tile's results go.
struct Tile<'a> {
    rows: usize,
    bias: *const f32,
    out: *mut f32,
    res: *const f32,
    plane: usize,
    act: Activation,
    segs: &'a [(u64, isize)],
}

/// `MR x NR` outputs accumulated over all `k` taps in registers, then the epilogue.
///
/// # Safety
/// AVX-512F present; `a` holds `k * MR` packed weights; for every tap `b + offs[kk]` plus the
/// lanes set in `load` lies inside the input; `t` describes writable rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const NV: usize, const TAIL: bool>(
    k: usize,
    a: *const f32,
    b: *const f32,
    offs: *const usize,
    load: u64,
    t: &Tile,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let mut lmask: [__mmask16; NV] = [0; NV];
    for (v, l) in lmask.iter_mut().enumerate() {
        *l = (load >> (16 * v)) as __mmask16;
    }
    for kk in 0..k {
        let bp = b.wrapping_add(*offs.add(kk));
        let mut bv = [_mm512_setzero_ps(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = if TAIL {
                _mm512_maskz_loadu_ps(lmask[v], bp.wrapping_add(16 * v))
            } else {
                _mm512_loadu_ps(bp.add(16 * v))
            };
        }
        let ap = a.add(kk * MR);
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm512_set1_ps(*ap.add(i));
            for (v, c) in row.iter_mut().enumerate() {
                *c = _mm512_fmadd_ps(ai, bv[v], *c);
            }
        }
    }
    let zero = _mm512_setzero_ps();
    let six = _mm512_set1_ps(6.0);
    for (i, row) in acc.iter().enumerate().take(t.rows) {
        let bias = _mm512_set1_ps(*t.bias.add(i));
        let dst = t.out.add(i * t.plane);
        let res = t.res.wrapping_add(i * t.plane);
        for &(mask, shift) in t.segs {
            for (v, &c) in row.iter().enumerate() {
                let mv = (mask >> (16 * v)) as __mmask16;
                if mv == 0 {
                    continue;
                }
                let at = shift + (16 * v) as isize;
                let whole = mv == 0xFFFF;
                let mut y = _mm512_add_ps(c, bias);
                if !t.res.is_null() {
                    let r = res.wrapping_offset(at);
                    y = _mm512_add_ps(
                        y,
                        if whole {
                            _mm512_loadu_ps(r)
                        } else {
                            _mm512_maskz_loadu_ps(mv, r)
                        },
                    );
                }
                y = match t.act {
                    Activation::None => y,
                    Activation::Relu => _mm512_max_ps(y, zero),
                    Activation::Relu6 => _mm512_min_ps(_mm512_max_ps(y, zero), six),
                };
                if whole {
                    _mm512_storeu_ps(dst.offset(at), y);
                } else {
                    _mm512_mask_storeu_ps(dst.wrapping_offset(at), mv, y);
                }
            }
        }
    }
}
