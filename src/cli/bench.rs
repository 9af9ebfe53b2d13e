//! `pedcache bench backbone`: time the ResNet50 body (stem + layer1..4) of the Mask R-CNN
//! backbone on one input size, with our conv engine or candle's stock ops.

use crate::detect::registry::{self, AnyDetector, Weights};
use anyhow::Context;
use candle_core::{Device, Tensor};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// The ResNet50 body of the Mask R-CNN backbone.
    Backbone(BackboneArgs),
    /// Write the deterministic Mask R-CNN stand-in weights (hash variant, what `bench backbone`
    /// and `replay --standin-weights` use) as a `.safetensors` state dict, so commands that take
    /// `--weights FILE` (`detect`) can run the full-size model without torchvision's file.
    #[command(hide = true)]
    StandinWeights {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// pedcache's conv kernels (BN folded, fused epilogues).
    Ours,
    /// candle 0.11.1's stock conv2d with separate bias, activation and residual ops.
    Candle,
}

#[derive(Args, Debug)]
pub struct BackboneArgs {
    /// Input size HxW (batch 1, 3 channels).
    #[arg(long, default_value = "512x1024")]
    pub size: String,
    /// torchvision Mask R-CNN weights (default: deterministic stand-in weights).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "ours")]
    pub engine: Engine,
    /// Timed runs (after one warm-up), 1..=10000.
    #[arg(long, default_value_t = 7, value_parser = crate::cli::bounds::iters)]
    pub iters: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Serialize)]
struct BackboneReport {
    size: String,
    engine: Engine,
    /// The conv kernel path (`PEDCACHE_KERNELS` or the best this CPU runs); with
    /// `--engine candle` no layer of the body uses it.
    kernels: crate::runtime::Kernels,
    threads: usize,
    iters: usize,
    median_ms: f64,
    min_ms: f64,
    /// Median process CPU time per run (all threads): on a shared machine, `cpu_ms / threads`
    /// close to `median_ms` says the run had its cores to itself.
    cpu_ms: f64,
    gflop: f64,
    gflops_per_s: f64,
}

fn parse_size(s: &str) -> anyhow::Result<(usize, usize)> {
    let (h, w) = s
        .split_once('x')
        .ok_or_else(|| anyhow::anyhow!("--size must be HxW, got {s:?}"))?;
    let num = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| anyhow::anyhow!("--size must be HxW in pixels, got {s:?}"))
    };
    let (h, w) = (num(h)?, num(w)?);
    // Above 4096 a side the activations alone outgrow a vehicle computer's memory.
    anyhow::ensure!(
        (32..=4096).contains(&h) && (32..=4096).contains(&w),
        "--size must be between 32x32 and 4096x4096, got {s}"
    );
    Ok((h, w))
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<i32> {
    let a = match cmd {
        BenchCommand::Backbone(a) => a,
        BenchCommand::StandinWeights { out } => {
            let sd = registry::standin_state_dict(&Device::Cpu)?;
            candle_core::safetensors::save(&sd, &out)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {} tensors to {}", sd.len(), out.display());
            return Ok(0);
        }
    };
    let (h, w) = parse_size(&a.size)?;
    let dev = Device::Cpu;
    let weights = a.weights.clone().map_or(Weights::Standin, Weights::File);
    let AnyDetector::Rcnn(model) = registry::load("maskrcnn-r50-fpn", &weights, &dev)? else {
        anyhow::bail!("the registry gave another detector than Mask R-CNN");
    };
    crate::detect::ops::conv::set_stock_candle(a.engine == Engine::Candle);
    // A smooth deterministic image in the normalised range.
    let v: Vec<f32> = (0..3 * h * w)
        .map(|i| ((i % 997) as f32 / 997.0 - 0.5) * 4.0)
        .collect();
    let x = Tensor::from_vec(v, (1, 3, h, w), &dev)?;
    let body = model.body();
    let run = || -> candle_core::Result<Tensor> {
        let mut y = body.stem(&x)?;
        for i in 0..4 {
            y = body.layer(i, &y)?;
        }
        Ok(y)
    };
    run()?;
    let mut times = Vec::with_capacity(a.iters);
    let mut cpu = Vec::with_capacity(a.iters);
    for _ in 0..a.iters.max(1) {
        let (t0, c0) = (Instant::now(), process_cpu_ms());
        run()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        cpu.push(process_cpu_ms() - c0);
    }
    times.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    let median_ms = crate::sim::metrics::quantile(&times, 0.5);
    let gflop = body.flops(h, w, 4)?.0 as f64 / 1e9;
    let r = BackboneReport {
        size: format!("{h}x{w}"),
        engine: a.engine,
        kernels: crate::runtime::kernels().map_err(anyhow::Error::msg)?,
        threads: crate::runtime::threads(),
        iters: times.len(),
        median_ms,
        min_ms: times[0],
        cpu_ms: crate::sim::metrics::quantile(&cpu, 0.5),
        gflop,
        gflops_per_s: gflop / (median_ms / 1e3),
    };
    println!(
        "ResNet50 body {}x{} ({:?} engine, {} kernels, {} threads): median {:.1} ms (cpu {:.1} ms), {:.1} GFLOP, {:.1} GFLOP/s",
        h, w, r.engine, r.kernels.name(), r.threads, r.median_ms, r.cpu_ms, r.gflop, r.gflops_per_s
    );
    if let Some(p) = &a.json {
        crate::sim::report::write_json_atomic(p, &r)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(0)
}

/// CPU time used by this process so far (all threads), in milliseconds.
fn process_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the struct we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}
