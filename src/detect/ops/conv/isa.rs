//! Proofs of CPU features: values only a successful run-time check creates, so code holding one
//! may call the `#[target_feature]` kernels of that instruction set without re-checking.

use crate::runtime::Kernels;

/// This CPU runs AVX-512F. Only [`Avx512::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512(());

impl Avx512 {
    pub(crate) fn detect() -> Option<Self> {
        crate::runtime::cpu_has_avx512f().then_some(Self(()))
    }
}

/// This CPU runs AVX2 and FMA. Only [`Avx2::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2(());

impl Avx2 {
    pub(crate) fn detect() -> Option<Self> {
        crate::runtime::cpu_has_avx2_fma().then_some(Self(()))
    }
}

/// The instruction set a packed layer's micro-kernels use, with its proof and register tile.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Isa {
    Avx512(Avx512),
    Avx2(Avx2),
}

impl Isa {
    /// The kernels of path `k`, if it is one of ours and this CPU runs it.
    pub(crate) fn for_kernels(k: Kernels) -> Option<Self> {
        match k {
            Kernels::Avx512 => Avx512::detect().map(Isa::Avx512),
            Kernels::Avx2 => Avx2::detect().map(Isa::Avx2),
            Kernels::Fallback => None,
        }
    }

    /// Floats per vector register.
    pub(crate) fn lanes(self) -> usize {
        match self {
            Isa::Avx512(_) => 16,
            Isa::Avx2(_) => 8,
        }
    }

    /// Output channels per register tile: 8 rows x 3 vectors = 24 of the 32 zmm registers as
    /// accumulators; with AVX2's 16 ymm registers, 4 rows x 3 vectors (12 accumulators, 3 loaded
    /// vectors and a broadcast).
    pub(crate) fn mr(self) -> usize {
        match self {
            Isa::Avx512(_) => 8,
            Isa::Avx2(_) => 4,
        }
    }

    /// Pixels (or Winograd tiles) per register tile: three vectors.
    pub(crate) fn nr(self) -> usize {
        3 * self.lanes()
    }
}
