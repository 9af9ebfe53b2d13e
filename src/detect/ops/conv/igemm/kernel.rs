//! The AVX-512 micro-kernel: an `MR x 48` register tile over the whole `K`.

use super::super::isa::Avx512;
use super::super::spec::Activation;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output channels per register tile (`Isa::mr` for AVX-512).
const MR: usize = 8;

/// Bits `lo..hi` set.
pub(crate) fn lane_mask(lo: usize, hi: usize) -> u64 {
    let upto = |n: usize| if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
    upto(hi) & !upto(lo)
}

/// Where a micro-tile's results go.
pub(crate) struct Tile<'a> {
    pub(crate) rows: usize,
    pub(crate) bias: *const f32,
    pub(crate) out: *mut f32,
    pub(crate) res: *const f32,
    pub(crate) plane: usize,
    pub(crate) act: Activation,
    pub(crate) segs: &'a [(u64, isize)],
}

/// Run the kernel variant for `nv` vectors (1..=3), masked loads when `tail`.
///
/// # Safety
/// As [`kernel`].
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn run(
    cpu: Avx512,
    nv: usize,
    tail: bool,
    k: usize,
    a: *const f32,
    b: *const f32,
    offs: *const usize,
    load: u64,
    t: &Tile,
) {
    #[cfg(target_arch = "x86_64")]
    match (nv, tail) {
        (3, false) => kernel::<3, false>(cpu, k, a, b, offs, load, t),
        (3, true) => kernel::<3, true>(cpu, k, a, b, offs, load, t),
        (2, false) => kernel::<2, false>(cpu, k, a, b, offs, load, t),
        (2, true) => kernel::<2, true>(cpu, k, a, b, offs, load, t),
        (_, false) => kernel::<1, false>(cpu, k, a, b, offs, load, t),
        (_, true) => kernel::<1, true>(cpu, k, a, b, offs, load, t),
    }
}

/// `MR x 16 NV` outputs accumulated over all `k` taps in registers, then the epilogue.
///
/// # Safety
/// `a` holds `k * MR` packed weights and `offs` `k` offsets; for every tap `kk`, the floats at
/// `b + offs[kk] + l` are readable for every lane `l` set in `load` (all `16 * NV` lanes when
/// `!TAIL`); `t.bias` holds `t.rows` values, and every lane `t.segs` selects is a writable
/// `t.out` (readable `t.res`, when not null) index, `t.plane` apart for each of the `t.rows`
/// rows. The CPU feature is proven by the `Avx512` argument.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const NV: usize, const TAIL: bool>(
    _cpu: Avx512,
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
