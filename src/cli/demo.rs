//! `pedcache demo`: the demo scenario (`sim/demo.ron`) through the real-time node, exactly as
//! `pedcache replay --config sim/demo.ron` runs it: the default detector with its committed cache
//! exits (`calib/ssdlite-ped-vtest`) over the demo sequence (`sim/vtest`, made by
//! `sim/make_demo.sh`) at its camera rate against the per-frame deadline; prints the replay
//! summary and writes the report and the alert stream under `target/`.

use crate::cli::replay::{config, replay_to_files, ReplayArgs};
use crate::node::HitPolicy;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The demo scenario (RON); the flags below override it.
    #[arg(long, default_value = "sim/demo.ron")]
    pub config: PathBuf,
    /// Frames to replay instead of the scenario's (default: the demo sequence, sim/vtest).
    #[arg(long)]
    pub source: Option<PathBuf>,
    /// Weights (default: models/ssdlite_ped.safetensors).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Cache exits (default: the scenario's, calib/ssdlite-ped-vtest).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// Full detection on every frame, no cache exits.
    #[arg(long, conflicts_with = "calib")]
    pub no_cache: bool,
    /// exit | alert_then_continue.
    #[arg(long)]
    pub policy: Option<HitPolicy>,
    /// Camera rate, frames/s (default: the scenario's, 17).
    #[arg(long, conflicts_with = "max_speed")]
    pub fps: Option<f64>,
    /// As fast as perception goes, in lockstep (no drops).
    #[arg(long)]
    pub max_speed: bool,
    #[arg(long)]
    pub deadline_ms: Option<f64>,
    /// Where the detector runs: cpu, cuda or cuda:N (default: the scenario's, cpu).
    #[arg(long)]
    pub device: Option<String>,
    /// Score at which a detection counts as a pedestrian.
    #[arg(long)]
    pub score_thresh: Option<f32>,
    /// Stop after this many frames (the whole sequence, 795 frames, takes ~47 s at 17 fps).
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value = "target/demo-report.json")]
    pub report: PathBuf,
    /// Every alert, one JSON object a line.
    #[arg(long, default_value = "target/demo-alerts.jsonl")]
    pub alerts: PathBuf,
}

/// The q-quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn run(a: DemoArgs) -> anyhow::Result<i32> {
    let replay_args = ReplayArgs {
        config: Some(a.config.clone()),
        model: None,
        weights: a.weights.clone(),
        standin_weights: false,
        device: a.device.clone(),
        source: a.source.iter().cloned().collect(),
        calib: a.calib.clone(),
        no_cache: a.no_cache,
        policy: a.policy,
        fps: a.fps,
        max_speed: a.max_speed,
        deadline_ms: a.deadline_ms,
        queue: None,
        score_thresh: a.score_thresh,
        gt_min_pixels: None,
        limit: a.limit,
        seq_frames: None,
        seq: Vec::new(),
        not_seq: Vec::new(),
        retrain: false,
        report: a.report.clone(),
        alerts: Some(a.alerts.clone()),
    };
    let hint = "scripts/demo.sh fetches the model and makes the demo sequence";
    let cfg = config(&replay_args)
        .map_err(|e| anyhow::anyhow!("{} ({hint})", crate::error::one_line(&e)))?;
    let rate = if cfg.max_speed {
        "as fast as possible".to_string()
    } else {
        format!("{} fps", cfg.fps.unwrap_or(f64::NAN))
    };
    println!(
        "pedcache demo: {} over {} at {rate}, deadline {} ms, cache exits: {} ({}, {} threads)",
        cfg.model,
        cfg.sources
            .iter()
            .map(|s| s.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        cfg.deadline_ms,
        cfg.calib
            .as_ref()
            .map_or_else(|| "none".to_string(), |c| c.display().to_string()),
        cfg.device,
        crate::runtime::threads(),
    );
    let report = replay_to_files(&cfg, &a.report, Some(&a.alerts)).map_err(|e| {
        let e = crate::error::one_line(&e);
        match cfg.calib {
            Some(_) => anyhow::anyhow!("{e} (or run with --no-cache)"),
            None => anyhow::anyhow!("{e}"),
        }
    })?;
    print!("{}", report.summary());
    println!("report: {}", a.report.display());
    println!("alerts: {}", a.alerts.display());
    Ok(0)
}
