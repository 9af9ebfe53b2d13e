//! The AVX2 + FMA micro-kernel: the AVX-512 kernel's structure on 8-lane vectors and 16
//! registers, an `MR x 24` tile (12 accumulators, 3 loaded vectors, 1 broadcast).

use super::super::isa::Avx2;
use super::super::spec::Activation;
use super::kernel::Tile;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output channels per register tile (`Isa::mr` for AVX2).
const MR: usize = 4;

/// Run the kernel variant for `nv` vectors (1..=3), masked loads when `tail`.
///
/// # Safety
/// As [`kernel`].
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn run(
    cpu: Avx2,
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

/// The 8 bits of `mask` for vector `v` as an AVX2 lane mask (all ones where set): AVX2 masked
/// loads and stores take their mask as a vector, and skip (never fault on) cleared lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn lane_vec(mask: u64, v: usize) -> __m256i {
    let bits = _mm256_set1_epi32(((mask >> (8 * v)) & 0xFF) as i32);
    let pick = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    _mm256_cmpeq_epi32(_mm256_and_si256(bits, pick), pick)
}

/// `MR x 8 NV` outputs accumulated over all `k` taps in registers, then the epilogue.
///
/// # Safety
/// `a` holds `k * MR` packed weights and `offs` `k` offsets; for every tap `kk`, the floats at
/// `b + offs[kk] + l` are readable for every lane `l` set in `load` (all `8 * NV` lanes when
/// `!TAIL`); `t.bias` holds `t.rows` values, and every lane `t.segs` selects is a writable
/// `t.out` (readable `t.res`, when not null) index, `t.plane` apart for each of the `t.rows`
/// rows. The CPU features are proven by the `Avx2` argument.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const NV: usize, const TAIL: bool>(
    _cpu: Avx2,
    k: usize,
    a: *const f32,
    b: *const f32,
    offs: *const usize,
    load: u64,
    t: &Tile,
) {
    let mut acc = [[_mm256_setzero_ps(); NV]; MR];
    let mut lmask = [_mm256_setzero_si256(); NV];
    for (v, l) in lmask.iter_mut().enumerate() {
        *l = lane_vec(load, v);
    }
    for kk in 0..k {
        let bp = b.wrapping_add(*offs.add(kk));
        let mut bv = [_mm256_setzero_ps(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = if TAIL {
                _mm256_maskload_ps(bp.wrapping_add(8 * v), lmask[v])
            } else {
                _mm256_loadu_ps(bp.add(8 * v))
            };
        }
        let ap = a.add(kk * MR);
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm256_broadcast_ss(&*ap.add(i));
            for (v, c) in row.iter_mut().enumerate() {
                *c = _mm256_fmadd_ps(ai, bv[v], *c);
            }
        }
    }
    let zero = _mm256_setzero_ps();
    let six = _mm256_set1_ps(6.0);
    for (i, row) in acc.iter().enumerate().take(t.rows) {
        let bias = _mm256_set1_ps(*t.bias.add(i));
        let dst = t.out.add(i * t.plane);
        let res = t.res.wrapping_add(i * t.plane);
        for &(mask, shift) in t.segs {
            for (v, &c) in row.iter().enumerate() {
                let bits = (mask >> (8 * v)) & 0xFF;
                if bits == 0 {
                    continue;
                }
                let at = shift + (8 * v) as isize;
                let whole = bits == 0xFF;
                let mv = lane_vec(mask, v);
                let mut y = _mm256_add_ps(c, bias);
                if !t.res.is_null() {
                    let r = res.wrapping_offset(at);
                    y = _mm256_add_ps(
                        y,
                        if whole {
                            _mm256_loadu_ps(r)
                        } else {
                            _mm256_maskload_ps(r, mv)
                        },
                    );
                }
                y = match t.act {
                    Activation::None => y,
                    Activation::Relu => _mm256_max_ps(y, zero),
                    Activation::Relu6 => _mm256_min_ps(_mm256_max_ps(y, zero), six),
                };
                if whole {
                    _mm256_storeu_ps(dst.offset(at), y);
                } else {
                    _mm256_maskstore_ps(dst.wrapping_offset(at), mv, y);
                }
            }
        }
    }
}
