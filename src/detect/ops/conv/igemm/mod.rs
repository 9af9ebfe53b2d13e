//! Implicit-GEMM convolution on AVX-512 or AVX2: weights packed once at load, no im2col buffer.
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
//!
//! The register tile depends on the instruction set ([`Isa::mr`] x [`Isa::nr`]: 8x48 with
//! AVX-512, 4x24 with AVX2); the driver is the same for both.

mod kernel;
mod kernel_avx2;
mod layout;
mod pack;

pub(crate) use self::kernel::{lane_mask, Tile};
use self::layout::Layout;
use super::isa::Isa;
use super::spec::{Activation, ConvSpec, Geometry, OutPtr};
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

pub(crate) use self::pack::PackedWeights;

/// The widest register tile of any instruction set (AVX-512's 48 pixels).
const MAX_NR: usize = 48;

/// One image: `x` is `[Cin, H, W]`; writes every value of `out`, `[Cout, OH, OW]`.
///
/// Safe to call with anything: the sizes the kernels' pointer arithmetic relies on are checked
/// here (panicking on a mismatch, like a slice index), and holding `wt` proves the CPU runs
/// AVX-512F ([`PackedWeights`] is only made with that proof).
pub(crate) fn conv(
    spec: &ConvSpec,
    g: &Geometry,
    wt: &PackedWeights,
    bias: &[f32],
    x: &[f32],
    residual: Option<&[f32]>,
    out: &mut [std::mem::MaybeUninit<f32>],
) {
    let (kh, kw) = spec.kernel;
    assert!(
        spec.groups == 1 && Geometry::of(spec, g.h, g.w).ok().as_ref() == Some(g),
        "igemm: geometry {g:?} is not that of {spec:?}"
    );
    let m = wt.m;
    assert!(
        m == spec.out_channels && wt.k == spec.in_channels * kh * kw,
        "igemm: {m}x{} packed weights for {spec:?}",
        wt.k
    );
    let plane_out = g.oh * g.ow;
    assert_eq!(x.len(), spec.in_channels * g.h * g.w, "igemm: input size");
    assert_eq!(out.len(), m * plane_out, "igemm: output size");
    assert_eq!(bias.len(), m, "igemm: bias size");
    if let Some(r) = residual {
        assert_eq!(r.len(), m * plane_out, "igemm: residual size");
    }
    let lay = Layout::new(spec, g);
    let offs = lay.offsets(spec, g);
    let owned;
    let input: &[f32] = if lay.identity {
        x
    } else {
        owned = lay.build(x, spec.in_channels, g);
        &owned
    };
    // Padded pixels `p = oy * wq + ox` run up to the last output pixel only, not over the last
    // row's pad columns: there, taps that reach right of the last column (`ox + off > ...`)
    // would read past the end of the last plane (by `wq - ow` floats for a 3x3 at stride 1).
    let padded = (g.oh - 1) * lay.wq + g.ow;
    // What every kernel read relies on: a tile's lanes `p0..p0 + lanes` lie in `0..padded`, and
    // each reads `input[p + offs[k]]`, so the largest offset must keep `padded - 1` inside.
    let reach = offs.iter().max().map_or(0, |&o| o + padded);
    assert!(
        reach <= input.len(),
        "igemm: taps reach {reach} of a {}-value input",
        input.len()
    );
    let (mr, nr) = (wt.isa.mr(), wt.isa.nr());
    let tiles = padded.div_ceil(nr);
    let blocks = m.div_ceil(mr);
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
    let panel_offs: Vec<usize> = (0..wt.k).map(|k| k * nr).collect();
    let job = Job {
        isa: wt.isa,
        mr,
        nr,
        k: wt.k,
        m,
        wq: lay.wq,
        ow: g.ow,
        plane_out,
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
    let run_len = ((256 << 10) / (wt.k * nr * 4)).clamp(1, 16);
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
                    segs.push(job.segments(t * nr));
                }
                if pack {
                    panels.resize(run.len() * job.k * nr, 0.0);
                    for (t, panel) in run.clone().zip(panels.chunks_exact_mut(job.k * nr)) {
                        job.pack(t * nr, panel);
                    }
                }
                for b in b_range.clone() {
                    for (i, t) in run.clone().enumerate() {
                        let src = if pack {
                            Source::Panel(&panels[i * job.k * nr..(i + 1) * job.k * nr])
                        } else {
                            Source::Input
                        };
                        let (seg, n) = &segs[i];
                        // SAFETY: `out` holds `m * plane_out` values (checked above) and lives
                        // until this loop returns; (tile t, block b) is this task's cell alone
                        // (tasks split tiles and blocks into disjoint ranges), `t < tiles` and
                        // `b < blocks`, and `seg` is `job.segments(t * nr)`.
                        unsafe { job.tile(t * nr, b * mr, &src, &seg[..*n], out_ptr.get()) };
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
    /// A contiguous `[K][nr]` copy made for this tile.
    Panel(&'a [f32]),
}

/// Everything a micro-tile needs, shared read-only by all tasks of one call.
struct Job<'a> {
    isa: Isa,
    mr: usize,
    nr: usize,
    k: usize,
    m: usize,
    wq: usize,
    ow: usize,
    plane_out: usize,
    padded: usize,
    act: Activation,
    offs: &'a [usize],
    /// `k * nr`: the offsets of a packed panel.
    panel_offs: &'a [usize],
    input: &'a [f32],
    weights: &'a [f32],
    bias: &'a [f32],
    residual: Option<&'a [f32]>,
}

impl Job<'_> {
    /// Destination runs of the tile starting at padded pixel `p0`: (lane mask, destination
    /// index of lane 0), one per output row the tile touches.
    fn segments(&self, p0: usize) -> ([(u64, isize); MAX_NR + 1], usize) {
        let mut out = [(0u64, 0isize); MAX_NR + 1];
        let mut n = 0;
        let end = (p0 + self.nr).min(self.padded);
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

    /// Copy the `K x nr` values of the tile at `p0` into `panel`, zero past the image.
    fn pack(&self, p0: usize, panel: &mut [f32]) {
        let nr = self.nr;
        let n = (self.padded - p0).min(nr);
        // Two tiles ahead: each channel row is its own stream, too many for the hardware
        // prefetcher to follow.
        let ahead = 2 * nr;
        for (row, &off) in panel.chunks_exact_mut(nr).zip(self.offs) {
            #[cfg(target_arch = "x86_64")]
            if p0 + off + ahead + nr <= self.input.len() {
                let at = self.input[p0 + off + ahead..].as_ptr();
                for line in 0..nr.div_ceil(16) {
                    // SAFETY: prefetch of an in-bounds address; it never faults.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(at.add(16 * line).cast()) };
                }
            }
            row[..n].copy_from_slice(&self.input[p0 + off..p0 + off + n]);
            row[n..].fill(0.0);
        }
    }

    /// # Safety
    /// `out` holds `m * plane_out` values; `p0 < padded` and `m0 < m` are multiples of `nr` and
    /// `mr`; `segs` are `self.segments(p0)`; `src` is `Source::Input`, or the panel
    /// `self.pack(p0, ..)` filled; no other task writes rows `m0..m0 + mr` of this tile
    /// meanwhile. The checks in [`conv`] hold (they bound every input read by `input.len()`).
    unsafe fn tile(
        &self,
        p0: usize,
        m0: usize,
        src: &Source,
        segs: &[(u64, isize)],
        out: *mut f32,
    ) {
        let (mr, nr) = (self.mr, self.nr);
        let rows = (self.m - m0).min(mr);
        // In bounds: the packed weights hold ceil(m / mr) panels of k * mr values.
        let a = self.weights.as_ptr().add((m0 / mr) * self.k * mr);
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
        // with as few vectors as cover it instead of a full-width tile.
        let lanes = (self.padded - p0).min(nr);
        let width = self.isa.lanes();
        let (b, offs, tail) = match src {
            Source::Panel(p) => (p.as_ptr(), self.panel_offs.as_ptr(), false),
            Source::Input => (
                self.input.as_ptr().wrapping_add(p0),
                self.offs.as_ptr(),
                !lanes.is_multiple_of(width),
            ),
        };
        let load = lane_mask(0, lanes);
        let nv = lanes.div_ceil(width);
        // SAFETY (every call): the `Isa` value proves the CPU feature. `a` holds `k * mr`
        // weights. Input reads: lane `l < lanes` of tap `kk` reads `b + offs[kk] + l`, i.e.
        // `input[p0 + l + offs[kk]]` with `p0 + l < padded`, inside `input` by the reach check
        // in `conv` (unmasked arms only run when `lanes` is a whole number of vectors, so they
        // read no lane past `lanes`); panel reads stay in the `k * nr` panel. Stores and
        // residual loads go through `segs`: lanes of valid output pixels `(oy, ox)`, `oy < oh`,
        // `ox < ow`, of rows `m0..m0 + rows`, all inside `out` / `residual`.
        match self.isa {
            Isa::Avx512(cpu) => kernel::run(cpu, nv, tail, self.k, a, b, offs, load, &t),
            Isa::Avx2(cpu) => kernel_avx2::run(cpu, nv, tail, self.k, a, b, offs, load, &t),
        }
    }
}
