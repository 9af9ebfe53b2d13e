//! Weights packed once at load for the micro-kernel.

use super::super::isa::Avx512;

/// Output channels per micro-tile (divides every ResNet/MobileNet width we run).
pub(crate) const MR: usize = 8;
/// Padded pixels per tile: three 16-lane vectors, so an 8x48 tile keeps 24 accumulators in
/// the 32 vector registers.
pub(crate) const NR: usize = 48;

/// `[M, K]` weights regrouped as `[ceil(M/MR)][K][MR]` (missing rows zero), so the kernel reads
/// one contiguous run of `MR` values per tap. Holds the proof that the CPU runs the kernels
/// that read it, so whoever has packed weights may run them.
#[derive(Debug)]
pub(crate) struct PackedWeights {
    pub(super) isa: Avx512,
    pub(super) m: usize,
    pub(super) k: usize,
    pub(super) data: Vec<f32>,
}

impl PackedWeights {
    /// `w` is row-major `[m, k]`.
    pub(crate) fn new(isa: Avx512, w: &[f32], m: usize, k: usize) -> Self {
        assert_eq!(
            w.len(),
            m * k,
            "packing {m}x{k} weights from {} values",
            w.len()
        );
        let blocks = m.div_ceil(MR);
        let mut data = vec![0f32; blocks * k * MR];
        for (row, src) in w.chunks_exact(k).enumerate().take(m) {
            let (blk, i) = (row / MR, row % MR);
            let panel = &mut data[blk * k * MR..(blk + 1) * k * MR];
            for (kk, &v) in src.iter().enumerate() {
                panel[kk * MR + i] = v;
            }
        }
        Self { isa, m, k, data }
    }
}
