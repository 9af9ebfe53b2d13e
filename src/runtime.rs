//! Process-wide compute settings (thread count) shared by the CLI, tests and benches.

use std::sync::OnceLock;

static THREADS: OnceLock<usize> = OnceLock::new();

/// Fix the number of compute threads for this process. Must be called before the first forward
/// pass; later calls are ignored (the rayon pool can be built only once). `0` means "all cores".
pub fn init_threads(n: usize) -> usize {
    *THREADS.get_or_init(|| {
        keep_freed_memory();
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

/// Keep freed heap memory in the process instead of handing it back to the kernel.
///
/// Every layer allocates its output afresh (candle owns the buffers), and glibc serves blocks
/// above its mmap threshold (up to 32 MB: a ResNet layer1 output) with a fresh `mmap`, so each
/// forward pass page-faults its activations in again — measured here at a third of the time of
/// a 64->256 1x1 conv on a 512x1024 input. Served from a heap that is never trimmed, the same
/// pages are reused frame after frame; resident memory stays at the peak working set, which is
/// what a perception node sized for its worst frame holds anyway.
///
/// `PEDCACHE_MALLOC=default` leaves glibc's defaults in place (to compare against, e.g. candle's
/// stock ops as a plain candle program runs them).
fn keep_freed_memory() {
    if std::env::var("PEDCACHE_MALLOC").is_ok_and(|v| v == "default") {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_MAX: i32 = -4;
        // SAFETY: mallopt only adjusts glibc allocator parameters; called before the pool starts.
        unsafe {
            mallopt(M_MMAP_MAX, 0);
            mallopt(M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}
