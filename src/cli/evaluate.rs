//! `pedcache evaluate`: the cache-enabled and the full detector on every frame, in one run
//! (`sim::evaluate`); prints the figures and writes them as JSON.

use crate::cli::calibrate::SourceArgs;
use crate::detect::registry;
use crate::node::CacheExits;
use crate::sim::report::write_json_atomic;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    /// Calibration directory (exits.ron + heads.safetensors).
    #[arg(long)]
    pub calib: PathBuf,
    /// Detector weights (Mask R-CNN; SSDLite defaults to models/ssdlite_ped.safetensors).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    #[command(flatten)]
    pub src: SourceArgs,
    /// Detector score at which a unit counts as showing a pedestrian (0..=1).
    #[arg(long, default_value_t = 0.5, value_parser = crate::cli::bounds::score_thresh)]
    pub score_thresh: f32,
    /// Where the detector and the cache heads run: cpu, cuda or cuda:N (CUDA needs a
    /// `--features cuda` build).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long)]
    pub json: PathBuf,
}

pub fn run(a: EvaluateArgs) -> anyhow::Result<i32> {
    let device = crate::runtime::device(&a.device)?;
    let exits = CacheExits::load(&a.calib, &device)?;
    let weights = crate::cli::detect::weights_flag(a.weights.as_deref());
    let det = registry::load(&exits.model, &weights, &device)?;
    let frames = a.src.frames()?;
    let report = crate::sim::evaluate::evaluate(
        &det,
        &a.calib,
        exits,
        &frames,
        a.score_thresh,
        a.src.gt_min_pixels,
    )?;
    println!(
        "{} frames ({} units), {:?}: FLOPs/frame {:.0} -> {:.0} MFLOP (cut {:.1}%), latency mean {:.1} -> {:.1} ms (cut {:.1}%)",
        report.frames,
        report.units,
        report.policy,
        report.flops_per_frame.full / 1e6,
        report.flops_per_frame.cached / 1e6,
        100.0 * report.flops_cut,
        report.latency_ms.full.mean,
        report.latency_ms.cached.mean,
        100.0 * report.latency_cut
    );
    println!("presence vs detector: {}", report.presence.vs_detector);
    if let (Some(c), Some(f)) = (
        &report.presence.vs_ground_truth,
        &report.presence.full_vs_ground_truth,
    ) {
        println!("presence vs ground truth: cached {c}; full {f}");
    }
    println!(
        "false alarms {}, missed pedestrian frames {}, detector-empty frames {} (cached agrees on {})",
        report.false_alarms, report.missed, report.detector_empty_frames, report.agreement_on_empty
    );
    for e in &report.exits {
        println!(
            "exit {}: {} hits (rate {:.3}), cache accuracy {:.3}",
            e.layer, e.hits, e.hit_rate, e.cache_accuracy
        );
    }
    write_json_atomic(&a.json, &report)?;
    Ok(0)
}
