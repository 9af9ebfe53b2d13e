//! The Winograd F(4x4, 3x3) transforms (Lavin & Gray's points 0, ±1, ±2, ∞), one vector lane
//! per tile, generic over the vector width ([`Simd`]); the callers are the `#[target_feature]`
//! wrappers in `mod.rs`.
//!
//! With `d` a 6x6 input patch, `g` a 3x3 filter: `V = Bᵀ d B`, `U = G g Gᵀ`, and the 4x4 output
//! is `Aᵀ (U ⊙ V) A` (a correlation, as CNN convs are).

use super::simd::Simd;

/// Tiles per block: the GEMM's register tile spans 48 of them.
pub(super) const TB: usize = 48;
/// Widest row a block's segment covers: 48 tiles of 4 pixels plus the 2-pixel halo.
pub(super) const ROW: usize = 4 * TB + 2;

/// `Bᵀ d` for one 6-vector of tiles (common subexpressions shared: 13 operations).
#[inline(always)]
unsafe fn bt<S: Simd>(d: [S::V; 6]) -> [S::V; 6] {
    let (two, four, five) = (S::splat(2.0), S::splat(4.0), S::splat(5.0));
    let a = S::sub(d[4], S::mul(four, d[2]));
    let b = S::sub(d[3], S::mul(four, d[1]));
    let c = S::sub(d[4], d[2]);
    let e = S::mul(two, S::sub(d[3], d[1]));
    [
        S::add(S::sub(S::mul(four, d[0]), S::mul(five, d[2])), d[4]),
        S::add(a, b),
        S::sub(a, b),
        S::add(c, e),
        S::sub(c, e),
        S::add(S::sub(S::mul(four, d[1]), S::mul(five, d[3])), d[5]),
    ]
}

/// `Aᵀ m` for one 6-vector of tiles.
#[inline(always)]
unsafe fn at<S: Simd>(m: [S::V; 6]) -> [S::V; 4] {
    let (s1, d1) = (S::add(m[1], m[2]), S::sub(m[1], m[2]));
    let (s2, d2) = (S::add(m[3], m[4]), S::sub(m[3], m[4]));
    [
        S::add(S::add(m[0], s1), s2),
        S::add(d1, S::mul(S::splat(2.0), d2)),
        S::add(s1, S::mul(S::splat(4.0), s2)),
        S::add(S::add(d1, S::mul(S::splat(8.0), d2)), m[5]),
    ]
}

/// `U = G g Gᵀ` for one 3x3 filter (row-major), in f64 then rounded: 36 values, `U[i * 6 + j]`.
pub(super) fn filter(g: &[f32]) -> [f32; 36] {
    const G: [[f64; 3]; 6] = [
        [0.25, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];
    let mut gg = [[0f64; 3]; 6];
    for (i, row) in gg.iter_mut().enumerate() {
        for (b, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|a| G[i][a] * g[a * 3 + b] as f64).sum();
        }
    }
    let mut u = [0f32; 36];
    for i in 0..6 {
        for j in 0..6 {
            u[i * 6 + j] = (0..3).map(|b| gg[i][b] * G[j][b]).sum::<f64>() as f32;
        }
    }
    u
}

/// Scratch one task reuses for every segment.
pub(super) struct Scratch {
    /// Six zero-padded input rows, `ROW` apart (plus a vector of slack: the last vector's
    /// deinterleave reads `4 LANES + 2` floats from its first tile).
    rows: Vec<f32>,
    /// `[6 rows][6 columns][TB]`: the horizontal pass.
    h: Vec<f32>,
    /// `[4][ROW]` output rows.
    o: Vec<f32>,
}

impl Scratch {
    pub(super) fn new() -> Self {
        Self {
            rows: vec![0.0; 6 * ROW + 64],
            h: vec![0.0; 36 * TB],
            o: vec![0.0; 4 * ROW],
        }
    }
}

/// One input channel's part of a block: `l <= TB` tiles of one tile row whose first patch
/// starts at input pixel `(y0, x0)` (possibly negative: zero padding), from the `h x w` plane
/// `src`, into `v[xi * stride + lo + t]` for the 36 points `xi` and tiles `t < l` (nothing else
/// of `v` is written).
///
/// # Safety
/// The CPU runs `S`'s instructions.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn input<S: Simd>(
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
    assert!(l <= TB && src.len() == h * w && v.len() >= 35 * stride + lo + l);
    let wd = 4 * l + 2;
    for (r, row) in s.rows.chunks_exact_mut(ROW).take(6).enumerate() {
        let row = &mut row[..wd];
        let y = y0 + r as isize;
        if y < 0 || y >= h as isize {
            row.fill(0.0);
            continue;
        }
        let line = &src[y as usize * w..(y as usize + 1) * w];
        // Columns `x0 + i` inside `0..w`.
        let a = (-x0).clamp(0, wd as isize) as usize;
        let b = (w as isize - x0).clamp(a as isize, wd as isize) as usize;
        row[..a].fill(0.0);
        row[b..].fill(0.0);
        if b > a {
            let from = (x0 + a as isize) as usize;
            row[a..b].copy_from_slice(&line[from..from + (b - a)]);
        }
    }
    let n = S::LANES;
    // Horizontal: `h[r][j][t] = (Bᵀ d_r)_j` over tile t's six columns of row r.
    for r in 0..6 {
        for t0 in (0..l).step_by(n) {
            // SAFETY: reads `4 n + 2` floats from `4 t0` of row r: `4 (t0 + n) + 2 <= 4 TB + 2
            // = ROW`, and the last row has 64 floats of slack; writes `n` floats from `t0` of
            // the `h` rows, `t0 + n <= TB` (TB is a multiple of n).
            let o = bt::<S>(S::deinterleave6(s.rows.as_ptr().add(r * ROW + 4 * t0)));
            for (j, &x) in o.iter().enumerate() {
                S::store(s.h.as_mut_ptr().add((r * 6 + j) * TB + t0), x);
            }
        }
    }
    // Vertical, along the tiles: `V[i * 6 + j] = Bᵀ (h[.][j])`.
    for j in 0..6 {
        for t0 in (0..l).step_by(n) {
            let mut d = [S::splat(0.0); 6];
            for (r, x) in d.iter_mut().enumerate() {
                // SAFETY: inside `h` as above.
                *x = S::load(s.h.as_ptr().add((r * 6 + j) * TB + t0));
            }
            let z = bt::<S>(d);
            let valid = (l - t0).min(n);
            for (i, &x) in z.iter().enumerate() {
                // SAFETY: `valid` floats from `(i * 6 + j) * stride + lo + t0`, whose end is at
                // most `35 * stride + lo + l <= v.len()` (asserted above).
                S::store_first(v.as_mut_ptr().add((i * 6 + j) * stride + lo + t0), x, valid);
            }
        }
    }
}

/// One output channel's part of a block: the 36 rows `m[xi * stride + lo + t]`, `t < l`, to
/// the 4x4 pixels of each tile, as four output rows of `4 l` pixels in the returned scratch
/// (`ROW` apart), bias not yet added.
///
/// # Safety
/// The CPU runs `S`'s instructions.
#[inline(always)]
pub(super) unsafe fn output<'s, S: Simd>(
    s: &'s mut Scratch,
    m: &[f32],
    stride: usize,
    lo: usize,
    l: usize,
) -> &'s [f32] {
    let n = S::LANES;
    // Whole vectors are read: up to `n - 1` floats past the last tile (callers give `m` slack).
    assert!(l <= TB && m.len() >= 35 * stride + lo + l.div_ceil(n) * n);
    for t0 in (0..l).step_by(n) {
        // `z[i][q] = (Aᵀ m[.][q])_i`: the transform along the rows, column q at a time.
        let mut z = [[S::splat(0.0); 6]; 4];
        #[allow(clippy::needless_range_loop)]
        for q in 0..6 {
            let mut c = [S::splat(0.0); 6];
            for (r, x) in c.iter_mut().enumerate() {
                // SAFETY: `n` floats from `(r * 6 + q) * stride + lo + t0`, inside `m` by the
                // assert (`t0 + n <= ceil(l / n) n`).
                *x = S::load(m.as_ptr().add((r * 6 + q) * stride + lo + t0));
            }
            for (i, &y) in at::<S>(c).iter().enumerate() {
                z[i][q] = y;
            }
        }
        for (i, zi) in z.iter().enumerate() {
            // SAFETY: `4 n` floats from `i * ROW + 4 t0`: `4 (t0 + n) <= 4 TB < ROW`.
            S::interleave4(at::<S>(*zi), s.o.as_mut_ptr().add(i * ROW + 4 * t0));
        }
    }
    &s.o
}
