//! Weights packed once at load for the micro-kernel.

/// Output channels per micro-tile (divides every ResNet/MobileNet width we run).
pub(crate) const MR: usize = 8;
/// Padded pixels per tile: three 16-lane vectors, so an 8x48 tile keeps 24 accumulators in
/// the 32 vector registers.
pub(crate) const NR: usize = 48;

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
    pub(super) m: usize,
    pub(super) k: usize,
    pub(super) data: Vec<f32>,
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
