//! Process-wide compute settings (thread count) shared by the CLI, tests and benches.

use std::sync::OnceLock;

static THREADS: OnceLock<usize> = OnceLock::new();

/// Fix the number of compute threads for this process. Must be called before the first forward
/// pass; later calls are ignored (the rayon pool can be built only once). `0` means "all cores".
pub fn init_threads(n: usize) -> usize {
    *THREADS.get_or_init(|| {
        let n = if n == 0 {
            std::thread::available_parallelism().map_or(1, |p| p.get())
        } else {
            n
        };
        // candle and gemm read RAYON_NUM_THREADS; keep all three in agreement.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        // A pool may already exist (e.g. in tests); then its size wins and we report it.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
        rayon::current_num_threads()
    })
}

/// Threads the compute kernels split work across.
pub fn threads() -> usize {
    *THREADS.get().unwrap_or(&rayon::current_num_threads())
}
