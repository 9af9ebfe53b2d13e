//! Process-wide compute settings (thread count, CPU kernel path) shared by the CLI, tests and
//! benches, and the compute device the commands run on.

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

/// Which family of CPU conv kernels runs the dense convolutions.
///
/// Picked once per process: the best one this CPU runs, or the one `PEDCACHE_KERNELS` names
/// (`avx512`, `avx2`, `fallback`), so every path can be exercised — and compared — on one machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernels {
    /// The implicit-GEMM and Winograd engines' AVX-512F micro-kernels.
    Avx512,
    /// The same engines with AVX2 + FMA micro-kernels (8-lane vectors, 16 registers).
    Avx2,
    /// Tiled im2col + the `gemm` crate, for CPUs without a kernel of ours.
    Fallback,
}

impl Kernels {
    /// Every path, fastest first.
    pub const ALL: [Kernels; 3] = [Kernels::Avx512, Kernels::Avx2, Kernels::Fallback];

    /// The spelling `PEDCACHE_KERNELS` takes and reports use.
    pub fn name(self) -> &'static str {
        match self {
            Kernels::Avx512 => "avx512",
            Kernels::Avx2 => "avx2",
            Kernels::Fallback => "fallback",
        }
    }

    /// `Err` with the reason when this CPU cannot run the path.
    pub fn check(self) -> Result<(), String> {
        match self {
            Kernels::Avx512 if !cpu_has_avx512f() => Err("this CPU has no AVX-512F".into()),
            Kernels::Avx2 if !cpu_has_avx2_fma() => Err("this CPU has no AVX2+FMA".into()),
            _ => Ok(()),
        }
    }

    /// The paths this CPU runs, fastest first (the tests iterate over them).
    pub fn available() -> Vec<Kernels> {
        Self::ALL
            .into_iter()
            .filter(|k| k.check().is_ok())
            .collect()
    }
}

impl std::str::FromStr for Kernels {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown kernels {s:?} (avx512 | avx2 | fallback)"))
    }
}

pub(crate) fn cpu_has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

pub(crate) fn cpu_has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The kernel path of this process: `PEDCACHE_KERNELS` if set, else the best available.
/// `Err` is one line, e.g. `PEDCACHE_KERNELS=avx512: this CPU has no AVX-512F`.
pub fn kernels() -> Result<Kernels, String> {
    static KERNELS: OnceLock<Result<Kernels, String>> = OnceLock::new();
    KERNELS
        .get_or_init(|| match std::env::var("PEDCACHE_KERNELS") {
            Ok(v) => {
                let k: Kernels = v
                    .parse()
                    .map_err(|e| format!("PEDCACHE_KERNELS={v}: {e}"))?;
                k.check()
                    .map_err(|e| format!("PEDCACHE_KERNELS={v}: {e}"))?;
                Ok(k)
            }
            Err(_) => Ok(Kernels::available()[0]),
        })
        .clone()
}

/// Where the detector and the cache heads run: `cpu`, or `cuda` / `cuda:N` (GPU N, 0 when not
/// given) in a binary built with `--features cuda`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

/// The accepted spellings, for messages and help texts.
pub const DEVICE_VALUES: &str = "cpu | cuda | cuda:N";

impl std::str::FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let n = match s {
            "cpu" => return Ok(Self::Cpu),
            "cuda" => Some(0),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok()),
        };
        n.map(Self::Cuda)
            .ok_or_else(|| format!("unknown device {s:?} ({DEVICE_VALUES})"))
    }
}

impl DeviceSpec {
    /// Parse `spec` and check that this binary can run on it: a CUDA device needs a build with
    /// `--features cuda`. Whether the GPU is there is only known when it is opened ([`device`]).
    pub fn parse_usable(spec: &str) -> Result<Self, String> {
        let d: Self = spec.parse()?;
        if matches!(d, Self::Cuda(_)) && !cfg!(feature = "cuda") {
            return Err(format!(
                "device {spec}: this binary was built without --features cuda; build with \
                 ../shared/tools/cuda/build-cuda.sh"
            ));
        }
        Ok(d)
    }
}

/// The candle device named by `spec` (`cpu`, `cuda`, `cuda:N`); errors are one line naming the
/// device and the cause (unknown name, a binary built without CUDA, no such GPU / no driver).
pub fn device(spec: &str) -> crate::Result<candle_core::Device> {
    match DeviceSpec::parse_usable(spec).map_err(crate::Error::msg)? {
        DeviceSpec::Cpu => Ok(candle_core::Device::Cpu),
        DeviceSpec::Cuda(n) => open_cuda(spec, n),
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(spec: &str, n: usize) -> crate::Result<candle_core::Device> {
    candle_core::Device::new_cuda(n).map_err(|e| {
        let cause = e.to_string();
        let cause = cause.lines().next().unwrap_or("").trim();
        crate::err!("device {spec}: cannot open CUDA device {n}: {cause}")
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(spec: &str, _n: usize) -> crate::Result<candle_core::Device> {
    // parse_usable already refused; kept so both builds share one code path.
    crate::bail!("device {spec}: this binary was built without --features cuda")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_unknown_ones_are_refused() {
        assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:1".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(1)));
        for bad in [
            "", "gpu", "CPU", "cuda:", "cuda:x", "cuda:-1", "cuda1", "metal", " cpu",
        ] {
            let e = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(e.starts_with("unknown device"), "{bad:?}: {e}");
            assert!(e.contains(DEVICE_VALUES), "{e}");
        }
        assert!(device("cpu").unwrap().is_cpu());
        assert!(device("tpu").is_err());
    }

    #[test]
    fn kernel_names_round_trip_and_fallback_is_always_there() {
        for k in Kernels::ALL {
            assert_eq!(k.name().parse::<Kernels>(), Ok(k));
        }
        assert!("sse".parse::<Kernels>().is_err());
        assert_eq!(Kernels::available().last(), Some(&Kernels::Fallback));
        assert_eq!(Kernels::Avx512.check().is_ok(), cpu_has_avx512f());
        assert_eq!(Kernels::Avx2.check().is_ok(), cpu_has_avx2_fma());
    }

    #[test]
    #[cfg(not(feature = "cuda"))]
    fn cuda_in_a_cpu_build_is_a_clear_one_line_error() {
        let e = device("cuda:0").unwrap_err().to_string();
        assert_eq!(
            e,
            "device cuda:0: this binary was built without --features cuda; build with \
             ../shared/tools/cuda/build-cuda.sh"
        );
        assert!(DeviceSpec::parse_usable("cpu").is_ok());
    }
}
