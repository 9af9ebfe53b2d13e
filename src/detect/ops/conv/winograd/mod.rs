//! Winograd F(4x4, 3x3) for the 3x3 stride-1 dense convs (ResNet body, FPN, RPN, mask head).
//!
//! Each 4x4 output tile costs 36 multiplies per (input, output) channel pair instead of 144:
//! the input's 6x6 patches are transformed once (`V = Bᵀ d B`), the filters once at load
//! (`U = G g Gᵀ`), and the 36 transformed points become 36 independent GEMMs over channels,
//! `M[ξ] = U[ξ] V[ξ]`, followed by the output transform `Aᵀ M A` with bias, residual and
//! activation fused. Error against the direct conv: ~1e-6 of the output scale in f32 (tested).
//!
//! Work is split by blocks of [`TB`] tiles, numbered across the batch (so 100 RoIs of 14x14
//! share blocks as one image would) and, when there are few blocks (layer3/4's small maps), by
//! groups of output channels too, so both cores stay busy. A task transforms its block's input
//! into its own scratch, then for each of its channel groups runs the 36 GEMMs and the output
//! transform while the GEMM results are still in L2. Tasks write disjoint output pixels.

mod gemm;
mod simd;
mod transform;

use self::transform::{Scratch, TB};
use super::isa::Isa;
use super::spec::{Activation, ConvSpec, Geometry, OutPtr, Padding};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Floats per input channel of a block's transformed input: its `[36][TB]` points and tiles,
/// plus 16 so that consecutive channels, which the GEMM reads one after the other, do not all
/// map to the same few L1 sets (36 x 48 floats is 108 cache lines, a multiple of 4).
const CP: usize = 36 * TB + 16;

/// Output channels per group: the GEMM results of one group for one block (36 x 64 x 48
/// floats, 442 KB) stay in L2 for the output transform.
const KG: usize = 64;

/// Whether a layer runs here: 3x3, stride 1, no dilation, dense, with enough channels that the
/// transforms pay for themselves (the 3-channel-ish odd layers stay on the implicit GEMM).
pub(crate) fn applies(spec: &ConvSpec) -> bool {
    spec.kernel == (3, 3)
        && spec.stride == 1
        && spec.dilation == 1
        && spec.groups == 1
        && spec.in_channels >= 16
        && spec.out_channels >= 16
        && !matches!(spec.padding, Padding::TfSame)
}

/// Transformed filters `[36][ceil(K / mr)][C][mr]`, with the proof that the CPU runs the
/// kernels that read them.
#[derive(Debug)]
pub(crate) struct WinogradWeights {
    isa: Isa,
    k: usize,
    c: usize,
    data: Vec<f32>,
}

impl WinogradWeights {
    /// `w` is OIHW `[k, c, 3, 3]`, row-major.
    pub(crate) fn new(isa: Isa, w: &[f32], k: usize, c: usize) -> Self {
        assert_eq!(w.len(), k * c * 9, "winograd: {k}x{c}x3x3 weights");
        let mr = isa.mr();
        let kb = k.div_ceil(mr);
        let mut data = vec![0f32; 36 * kb * c * mr];
        for (o, filters) in w.chunks_exact(c * 9).enumerate() {
            for (ci, g) in filters.chunks_exact(9).enumerate() {
                for (xi, &u) in transform::filter(g).iter().enumerate() {
                    data[((xi * kb + o / mr) * c + ci) * mr + o % mr] = u;
                }
            }
        }
        Self { isa, k, c, data }
    }
}

/// The whole batch: `x` is `[n, C, H, W]`; writes every value of `out`, `[n, K, OH, OW]`.
/// Checks the sizes and the geometry; holding `wt` proves the CPU features.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv(
    spec: &ConvSpec,
    g: &Geometry,
    n: usize,
    wt: &WinogradWeights,
    bias: &[f32],
    x: &[f32],
    residual: Option<&[f32]>,
    out: &mut [std::mem::MaybeUninit<f32>],
) {
    assert!(
        applies(spec) && Geometry::of(spec, g.h, g.w).ok().as_ref() == Some(g),
        "winograd: {spec:?} with geometry {g:?}"
    );
    let (c, k) = (wt.c, wt.k);
    assert!(
        c == spec.in_channels && k == spec.out_channels,
        "winograd: weights for {spec:?}"
    );
    let plane = g.oh * g.ow;
    assert_eq!(x.len(), n * c * g.h * g.w, "winograd: input size");
    assert_eq!(out.len(), n * k * plane, "winograd: output size");
    assert_eq!(bias.len(), k, "winograd: bias size");
    if let Some(r) = residual {
        assert_eq!(r.len(), n * k * plane, "winograd: residual size");
    }
    let (th, tw) = (g.oh.div_ceil(4), g.ow.div_ceil(4));
    let tiles = n * th * tw;
    let blocks = tiles.div_ceil(TB);
    let groups = k.div_ceil(KG);
    let threads = crate::runtime::threads().max(1);
    // Few blocks: split the channel groups over tasks too (each such task transforms its
    // block's input again, a few percent of its GEMM work).
    let splits = if blocks >= 4 * threads {
        1
    } else {
        (4 * threads).div_ceil(blocks).min(groups)
    };
    let groups_per_split = groups.div_ceil(splits);
    let splits = groups.div_ceil(groups_per_split);
    let job = Job {
        g,
        th,
        tw,
        tiles,
        wt,
        bias,
        x,
        residual,
        out: OutPtr(out.as_mut_ptr().cast()),
        act: spec.activation,
    };
    let per_block = c * CP;
    // A vector of slack: the output transform reads whole vectors.
    let m_len = 36 * KG * TB + 16;
    if splits == 1 {
        // Enough blocks: each task transforms its block's input into its own scratch and runs
        // all output channels on it.
        (0..blocks).into_par_iter().for_each_init(
            || (Scratch::new(), vec![0f32; per_block], vec![0f32; m_len]),
            |(s, v, m), b| {
                job.transform_block(b, s, v, 0..c);
                job.gemm_block(b, 0..groups, s, v, m);
            },
        );
    } else {
        // Few blocks: transform every block's input once, in parallel over (block, input
        // channel), then split the output-channel groups over tasks.
        let mut v = vec![0f32; blocks * per_block];
        v.par_chunks_mut(CP)
            .enumerate()
            .for_each_init(Scratch::new, |s, (i, vc)| {
                job.transform_block(i / c, s, vc, i % c..i % c + 1)
            });
        (0..blocks * splits).into_par_iter().for_each_init(
            || (Scratch::new(), vec![0f32; m_len]),
            |(s, m), task| {
                let (b, sp) = (task / splits, task % splits);
                let gr = sp * groups_per_split..((sp + 1) * groups_per_split).min(groups);
                job.gemm_block(b, gr, s, &v[b * per_block..(b + 1) * per_block], m);
            },
        );
    }
}

struct Job<'a> {
    g: &'a Geometry,
    th: usize,
    tw: usize,
    tiles: usize,
    wt: &'a WinogradWeights,
    bias: &'a [f32],
    x: &'a [f32],
    residual: Option<&'a [f32]>,
    out: OutPtr,
    act: Activation,
}

impl Job<'_> {
    /// The runs of block `b`'s tiles that lie in one tile row: (image, tile row, first tile
    /// column, tiles, offset in the block).
    fn segments(&self, b: usize) -> Vec<(usize, usize, usize, usize, usize)> {
        let (t0, t1) = (b * TB, ((b + 1) * TB).min(self.tiles));
        let mut segs = Vec::new();
        let mut t = t0;
        while t < t1 {
            let (row, tx) = (t / self.tw, t % self.tw);
            let l = (self.tw - tx).min(t1 - t);
            segs.push((row / self.th, row % self.th, tx, l, t - t0));
            t += l;
        }
        segs
    }

    /// The transformed input of block `b` for input channels `chans`, into `v`: channel
    /// `chans.start + i` at `v[i * CP..]`, as `[36][TB]` (point, tile).
    fn transform_block(
        &self,
        b: usize,
        s: &mut Scratch,
        v: &mut [f32],
        chans: std::ops::Range<usize>,
    ) {
        let g = self.g;
        let c = self.wt.c;
        let (top, left) = (g.top as isize, g.left as isize);
        let hw = g.h * g.w;
        for &(img, ty, tx, l, lo) in &self.segments(b) {
            for (ci, vc) in chans.clone().zip(v.chunks_mut(CP)) {
                let src = &self.x[(img * c + ci) * hw..(img * c + ci + 1) * hw];
                let (y0, x0) = (4 * ty as isize - top, 4 * tx as isize - left);
                self.isa_input(s, src, y0, x0, l, vc, lo);
            }
        }
    }

    /// For block `b` with its transformed input `v` (`[C][CP]`): the 36 GEMMs and the
    /// output transform of every output channel of `groups`.
    fn gemm_block(
        &self,
        b: usize,
        groups: std::ops::Range<usize>,
        s: &mut Scratch,
        v: &[f32],
        m: &mut [f32],
    ) {
        let g = self.g;
        let (c, k) = (self.wt.c, self.wt.k);
        let segs = self.segments(b);
        let valid = (self.tiles - b * TB).min(TB);
        let plane = g.oh * g.ow;
        let mr = self.wt.isa.mr();
        let kb_all = k.div_ceil(mr);
        for gi in groups {
            let k0 = gi * KG;
            let kn = KG.min(k - k0);
            for xi in 0..36 {
                let vx = &v[xi * TB..];
                for kb in k0 / mr..(k0 + kn).div_ceil(mr) {
                    let a =
                        &self.wt.data[(xi * kb_all + kb) * c * mr..(xi * kb_all + kb + 1) * c * mr];
                    let mo = &mut m[(xi * KG + kb * mr - k0) * TB..];
                    match self.wt.isa {
                        Isa::Avx512(cpu) => gemm::block512(cpu, c, a, vx, CP, mo, valid),
                        Isa::Avx2(cpu) => gemm::block256(cpu, c, a, vx, CP, mo, valid),
                    }
                }
            }
            for kk in 0..kn {
                let ko = k0 + kk;
                let bias = self.bias[ko];
                for &(img, ty, tx, l, lo) in &segs {
                    let rows = self.isa_output(s, &m[kk * TB..], lo, l);
                    let x0 = 4 * tx;
                    let x1 = (4 * (tx + l)).min(g.ow);
                    for i in 0..4 {
                        let y = 4 * ty + i;
                        if y >= g.oh {
                            break;
                        }
                        let at = (img * k + ko) * plane + y * g.ow;
                        // SAFETY: `out` holds `n * k * plane` values (checked in `conv`) and
                        // outlives the tasks; pixels `x0..x1` of row `y` of channel `ko` of
                        // image `img` belong to tile row `ty`'s tiles `tx..tx + l`, which only
                        // this block holds, for channels of this task's groups only. The slice
                        // is of `MaybeUninit`, so it may cover values not yet written.
                        let dst = unsafe {
                            std::slice::from_raw_parts_mut(
                                self.out.get().add(at + x0).cast::<MaybeUninit<f32>>(),
                                x1 - x0,
                            )
                        };
                        let src = &rows[i * transform::ROW..i * transform::ROW + (x1 - x0)];
                        let res = self.residual.map(|r| &r[at + x0..at + x1]);
                        epilogue(dst, src, bias, res, self.act);
                    }
                }
            }
        }
    }

    /// The input transform compiled for the layer's instruction set.
    #[allow(clippy::too_many_arguments)]
    fn isa_input(
        &self,
        s: &mut Scratch,
        src: &[f32],
        y0: isize,
        x0: isize,
        l: usize,
        v: &mut [f32],
        lo: usize,
    ) {
        let (h, w, stride) = (self.g.h, self.g.w, TB);
        match self.wt.isa {
            // SAFETY: the `Isa` value proves the CPU features the wrapper enables; the
            // transform itself is safe code.
            Isa::Avx512(_) => unsafe { input512(s, src, h, w, y0, x0, l, v, stride, lo) },
            // SAFETY: as above.
            Isa::Avx2(_) => unsafe { input256(s, src, h, w, y0, x0, l, v, stride, lo) },
        }
    }

    /// The output transform compiled for the layer's instruction set.
    fn isa_output<'s>(&self, s: &'s mut Scratch, m: &[f32], lo: usize, l: usize) -> &'s [f32] {
        match self.wt.isa {
            // SAFETY: the `Isa` value proves the CPU features the wrapper enables.
            Isa::Avx512(_) => unsafe { output512(s, m, KG * TB, lo, l) },
            // SAFETY: as above.
            Isa::Avx2(_) => unsafe { output256(s, m, KG * TB, lo, l) },
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
unsafe fn input512(
    s: &mut Scratch,
    src: &[f32],
    h: usize,
    w: usize,
    y0: isize,
    x0: isize,
    l: usize,
    v: &mut [f32],
    stride: usize,
    lo: usize,
) {
    transform::input::<simd::W16>(s, src, h, w, y0, x0, l, v, stride, lo)
}

#[allow(clippy::too_many_arguments)]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
unsafe fn input256(
    s: &mut Scratch,
    src: &[f32],
    h: usize,
    w: usize,
    y0: isize,
    x0: isize,
    l: usize,
    v: &mut [f32],
    stride: usize,
    lo: usize,
) {
    transform::input::<simd::W8>(s, src, h, w, y0, x0, l, v, stride, lo)
}

#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
unsafe fn output512<'s>(
    s: &'s mut Scratch,
    m: &[f32],
    stride: usize,
    lo: usize,
    l: usize,
) -> &'s [f32] {
    transform::output::<simd::W16>(s, m, stride, lo, l)
}

#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
unsafe fn output256<'s>(
    s: &'s mut Scratch,
    m: &[f32],
    stride: usize,
    lo: usize,
    l: usize,
) -> &'s [f32] {
    transform::output::<simd::W8>(s, m, stride, lo, l)
}

/// `dst = act(src + bias (+ res))`, initialising `dst`.
#[inline]
fn epilogue(
    dst: &mut [MaybeUninit<f32>],
    src: &[f32],
    bias: f32,
    res: Option<&[f32]>,
    act: Activation,
) {
    let act = |v: f32| match act {
        Activation::None => v,
        Activation::Relu => v.max(0.0),
        Activation::Relu6 => v.clamp(0.0, 6.0),
    };
    match res {
        Some(r) => {
            for ((d, &s), &r) in dst.iter_mut().zip(src).zip(r) {
                d.write(act(s + bias + r));
            }
        }
        None => {
            for (d, &s) in dst.iter_mut().zip(src) {
                d.write(act(s + bias));
            }
        }
    }
}
