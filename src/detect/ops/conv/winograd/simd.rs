//! The few vector operations the Winograd transforms need, for AVX-512 (16 lanes) and AVX2
//! (8 lanes), so one generic transform serves both. Every method is `#[inline(always)]` and
//! is only ever inlined into the `#[target_feature]` wrappers of `mod.rs`, which the `Isa` proof
//! guards.
//!
//! The transforms work on one vector lane per tile. Input patches sit 4 pixels apart in a row,
//! so loading "column q of the next LANES tiles" is a stride-4 deinterleave, done here with
//! in-register shuffles (a 4x4 transpose of 4-float blocks) instead of gathers; the output
//! transform interleaves back the same way.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

pub(super) trait Simd: Copy {
    const LANES: usize;
    type V: Copy;

    /// # Safety (all methods)
    /// The CPU has the instruction set; pointers are valid for the lanes touched.
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Store the first `n` lanes only (`n <= LANES`; the others are not touched).
    unsafe fn store_first(p: *mut f32, v: Self::V, n: usize);
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// From the `4 LANES + 2` floats at `p`: `e[q]` lane `t` = `p[4 t + q]`, `q < 6`.
    unsafe fn deinterleave6(p: *const f32) -> [Self::V; 6];
    /// `p[4 t + j] = y[j]` lane `t`: `4 LANES` floats.
    unsafe fn interleave4(y: [Self::V; 4], p: *mut f32);
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct W16;

#[cfg(target_arch = "x86_64")]
impl Simd for W16 {
    const LANES: usize = 16;
    type V = __m512;

    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        _mm512_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: __m512, n: usize) {
        // Masked-off lanes are neither written nor faulted on.
        _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as __mmask16, v)
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        _mm512_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn deinterleave6(p: *const f32) -> [__m512; 6] {
        // v_k = tiles 4k..4k+3, one tile's 4 columns per 128-bit block.
        let (v0, v1) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
        let (v2, v3) = (_mm512_loadu_ps(p.add(32)), _mm512_loadu_ps(p.add(48)));
        // Blocks regrouped so block k of s_j is tile 4k + j.
        let r0 = _mm512_shuffle_f32x4::<0x88>(v0, v1);
        let r1 = _mm512_shuffle_f32x4::<0xDD>(v0, v1);
        let r2 = _mm512_shuffle_f32x4::<0x88>(v2, v3);
        let r3 = _mm512_shuffle_f32x4::<0xDD>(v2, v3);
        let s0 = _mm512_shuffle_f32x4::<0x88>(r0, r2);
        let s1 = _mm512_shuffle_f32x4::<0x88>(r1, r3);
        let s2 = _mm512_shuffle_f32x4::<0xDD>(r0, r2);
        let s3 = _mm512_shuffle_f32x4::<0xDD>(r1, r3);
        // 4x4 transpose inside each block: lane t of e_q = column q of tile t.
        let t0 = _mm512_unpacklo_ps(s0, s1);
        let t1 = _mm512_unpackhi_ps(s0, s1);
        let t2 = _mm512_unpacklo_ps(s2, s3);
        let t3 = _mm512_unpackhi_ps(s2, s3);
        let e0 = _mm512_shuffle_ps::<0x44>(t0, t2);
        let e1 = _mm512_shuffle_ps::<0xEE>(t0, t2);
        let e2 = _mm512_shuffle_ps::<0x44>(t1, t3);
        let e3 = _mm512_shuffle_ps::<0xEE>(t1, t3);
        // Columns 4 and 5 are columns 0 and 1 of the next tile.
        let next = |e: __m512, x: f32| {
            _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(
                _mm512_castps_si512(_mm512_set1_ps(x)),
                _mm512_castps_si512(e),
            ))
        };
        [e0, e1, e2, e3, next(e0, *p.add(64)), next(e1, *p.add(65))]
    }
    #[inline(always)]
    unsafe fn interleave4(y: [__m512; 4], p: *mut f32) {
        let t0 = _mm512_unpacklo_ps(y[0], y[1]);
        let t1 = _mm512_unpackhi_ps(y[0], y[1]);
        let t2 = _mm512_unpacklo_ps(y[2], y[3]);
        let t3 = _mm512_unpackhi_ps(y[2], y[3]);
        // Block k of q_j = tile 4k + j's four pixels.
        let q0 = _mm512_shuffle_ps::<0x44>(t0, t2);
        let q1 = _mm512_shuffle_ps::<0xEE>(t0, t2);
        let q2 = _mm512_shuffle_ps::<0x44>(t1, t3);
        let q3 = _mm512_shuffle_ps::<0xEE>(t1, t3);
        let r0 = _mm512_shuffle_f32x4::<0x44>(q0, q1);
        let r1 = _mm512_shuffle_f32x4::<0x44>(q2, q3);
        let r2 = _mm512_shuffle_f32x4::<0xEE>(q0, q1);
        let r3 = _mm512_shuffle_f32x4::<0xEE>(q2, q3);
        _mm512_storeu_ps(p, _mm512_shuffle_f32x4::<0x88>(r0, r1));
        _mm512_storeu_ps(p.add(16), _mm512_shuffle_f32x4::<0xDD>(r0, r1));
        _mm512_storeu_ps(p.add(32), _mm512_shuffle_f32x4::<0x88>(r2, r3));
        _mm512_storeu_ps(p.add(48), _mm512_shuffle_f32x4::<0xDD>(r2, r3));
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(super) struct W8;

#[cfg(target_arch = "x86_64")]
impl Simd for W8 {
    const LANES: usize = 8;
    type V = __m256;

    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        _mm256_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: __m256, n: usize) {
        let m = _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        // Masked-off lanes are neither written nor faulted on.
        _mm256_maskstore_ps(p, m, v)
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        _mm256_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn deinterleave6(p: *const f32) -> [__m256; 6] {
        let (v0, v1) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
        let (v2, v3) = (_mm256_loadu_ps(p.add(16)), _mm256_loadu_ps(p.add(24)));
        // Block k of s_j = tile 4k + j.
        let s0 = _mm256_permute2f128_ps::<0x20>(v0, v2);
        let s1 = _mm256_permute2f128_ps::<0x31>(v0, v2);
        let s2 = _mm256_permute2f128_ps::<0x20>(v1, v3);
        let s3 = _mm256_permute2f128_ps::<0x31>(v1, v3);
        let t0 = _mm256_unpacklo_ps(s0, s1);
        let t1 = _mm256_unpackhi_ps(s0, s1);
        let t2 = _mm256_unpacklo_ps(s2, s3);
        let t3 = _mm256_unpackhi_ps(s2, s3);
        let e0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let e1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let e2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let e3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let up = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7);
        let next = |e: __m256, x: f32| {
            _mm256_blend_ps::<0x80>(_mm256_permutevar8x32_ps(e, up), _mm256_set1_ps(x))
        };
        [e0, e1, e2, e3, next(e0, *p.add(32)), next(e1, *p.add(33))]
    }
    #[inline(always)]
    unsafe fn interleave4(y: [__m256; 4], p: *mut f32) {
        let t0 = _mm256_unpacklo_ps(y[0], y[1]);
        let t1 = _mm256_unpackhi_ps(y[0], y[1]);
        let t2 = _mm256_unpacklo_ps(y[2], y[3]);
        let t3 = _mm256_unpackhi_ps(y[2], y[3]);
        let q0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let q1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let q2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let q3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        _mm256_storeu_ps(p, _mm256_permute2f128_ps::<0x20>(q0, q1));
        _mm256_storeu_ps(p.add(8), _mm256_permute2f128_ps::<0x20>(q2, q3));
        _mm256_storeu_ps(p.add(16), _mm256_permute2f128_ps::<0x31>(q0, q1));
        _mm256_storeu_ps(p.add(24), _mm256_permute2f128_ps::<0x31>(q2, q3));
    }
}
