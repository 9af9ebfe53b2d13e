//! Proofs of CPU features: values only a successful run-time check creates, so code holding one
//! may call the `#[target_feature]` kernels of that instruction set without re-checking.

/// This CPU runs AVX-512F. Only [`Avx512::detect`] makes one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512(());

impl Avx512 {
    pub(crate) fn detect() -> Option<Self> {
        crate::runtime::cpu_has_avx512f().then_some(Self(()))
    }
}
