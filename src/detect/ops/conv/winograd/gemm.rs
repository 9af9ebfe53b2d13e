//! The 36 per-point GEMMs of a Winograd block, `M[xi] = U[xi] V[xi]`: for one point `xi` and one
//! block of output channels, a register tile accumulates over every input channel and is stored
//! once (no epilogue: the output transform follows).

use super::super::isa::{Avx2, Avx512};
use super::transform::TB;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// `out[i * TB + t] = sum_c a[c * 8 + i] * b[c * ldb + t]` for 8 rows and `t < 16 NV`.
///
/// # Safety
/// `a` holds `c * 8` values, `b` `(c - 1) * ldb + TB`, `out` `8 * TB` writable ones. The CPU
/// feature is proven by the `Avx512` argument.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile512<const NV: usize>(
    _cpu: Avx512,
    c: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    out: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; 8];
    for cc in 0..c {
        let bp = b.add(cc * ldb);
        let mut bv = [_mm512_setzero_ps(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(bp.add(16 * v));
        }
        let ap = a.add(cc * 8);
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm512_set1_ps(*ap.add(i));
            for (v, s) in row.iter_mut().enumerate() {
                *s = _mm512_fmadd_ps(ai, bv[v], *s);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (v, &s) in row.iter().enumerate() {
            _mm512_storeu_ps(out.add(i * TB + 16 * v), s);
        }
    }
}

/// The AVX2 tile: 4 rows x 8 NV columns starting at column `col`.
///
/// # Safety
/// `a` holds `c * 4` values, `b` `(c - 1) * ldb + TB`, `out` `4 * TB` writable ones;
/// `col + 8 NV <= TB`. The CPU features are proven by the `Avx2` argument.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile256<const NV: usize>(
    _cpu: Avx2,
    c: usize,
    a: *const f32,
    (b, ldb): (*const f32, usize),
    out: *mut f32,
    col: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); NV]; 4];
    for cc in 0..c {
        let bp = b.add(cc * ldb + col);
        let mut bv = [_mm256_setzero_ps(); NV];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = _mm256_loadu_ps(bp.add(8 * v));
        }
        let ap = a.add(cc * 4);
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm256_broadcast_ss(&*ap.add(i));
            for (v, s) in row.iter_mut().enumerate() {
                *s = _mm256_fmadd_ps(ai, bv[v], *s);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (v, &s) in row.iter().enumerate() {
            _mm256_storeu_ps(out.add(i * TB + col + 8 * v), s);
        }
    }
}

/// AVX-512: one 8-row block over the first `valid` of the `TB` tile columns (rounded up to
/// whole vectors; the rest of `out` is left as it was). Row `cc` of `b` starts at `cc * ldb`.
#[allow(clippy::too_many_arguments)]
pub(super) fn block512(
    cpu: Avx512,
    c: usize,
    a: &[f32],
    b: &[f32],
    ldb: usize,
    out: &mut [f32],
    valid: usize,
) {
    assert!(c > 0 && ldb >= TB && valid <= TB);
    assert!(a.len() >= c * 8 && b.len() >= (c - 1) * ldb + TB && out.len() >= 8 * TB);
    #[cfg(target_arch = "x86_64")]
    {
        let (a, b, o) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
        // SAFETY: `cpu` proves AVX-512F; the sizes were checked above and every variant reads
        // at most `TB` columns of `b` rows and writes at most `TB` columns of `out` rows.
        unsafe {
            match valid.div_ceil(16) {
                3 => tile512::<3>(cpu, c, a, b, ldb, o),
                2 => tile512::<2>(cpu, c, a, b, ldb, o),
                _ => tile512::<1>(cpu, c, a, b, ldb, o),
            }
        }
    }
}

/// AVX2: one 4-row block over the first `valid` tile columns, as two 24-column halves.
#[allow(clippy::too_many_arguments)]
pub(super) fn block256(
    cpu: Avx2,
    c: usize,
    a: &[f32],
    b: &[f32],
    ldb: usize,
    out: &mut [f32],
    valid: usize,
) {
    assert!(c > 0 && ldb >= TB && valid <= TB);
    assert!(a.len() >= c * 4 && b.len() >= (c - 1) * ldb + TB && out.len() >= 4 * TB);
    #[cfg(target_arch = "x86_64")]
    {
        let (a, b, o) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
        for col in [0, 24] {
            if valid <= col {
                break;
            }
            // SAFETY: `cpu` proves AVX2+FMA; sizes checked above; `col + 8 NV <= 48 = TB`.
            unsafe {
                match (valid - col).div_ceil(8) {
                    1 => tile256::<1>(cpu, c, a, (b, ldb), o, col),
                    2 => tile256::<2>(cpu, c, a, (b, ldb), o, col),
                    _ => tile256::<3>(cpu, c, a, (b, ldb), o, col),
                }
            }
        }
    }
}
