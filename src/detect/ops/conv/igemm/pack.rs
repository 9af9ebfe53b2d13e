//! Weights packed once at load for the micro-kernel.

use super::super::isa::Isa;

/// `[M, K]` weights regrouped as `[ceil(M/mr)][K][mr]` (missing rows zero), so the kernel reads
/// one contiguous run of `mr` values per tap (`mr` = the instruction set's register-tile rows).
/// Holds the proof that the CPU runs the kernels that read it, so whoever has packed weights
/// may run them.
#[derive(Debug)]
pub(crate) struct PackedWeights {
    pub(super) isa: Isa,
    pub(super) m: usize,
    pub(super) k: usize,
    pub(super) data: Vec<f32>,
}

impl PackedWeights {
    /// `w` is row-major `[m, k]`.
    pub(crate) fn new(isa: Isa, w: &[f32], m: usize, k: usize) -> Self {
        assert_eq!(
            w.len(),
            m * k,
            "packing {m}x{k} weights from {} values",
            w.len()
        );
        let mr = isa.mr();
        let blocks = m.div_ceil(mr);
        let mut data = vec![0f32; blocks * k * mr];
        for (row, src) in w.chunks_exact(k).enumerate().take(m) {
            let (blk, i) = (row / mr, row % mr);
            let panel = &mut data[blk * k * mr..(blk + 1) * k * mr];
            for (kk, &v) in src.iter().enumerate() {
                panel[kk * mr + i] = v;
            }
        }
        Self { isa, m, k, data }
    }
}
