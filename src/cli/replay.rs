//! `pedcache replay`: replay sequences through the real-time node against a per-frame deadline,
//! write the run's report (and optionally every alert as JSON lines), print a summary.
//! Ctrl-C / SIGTERM stops the source; frames in flight are drained and the report is written.

use crate::cli::calibrate::SequenceFlags;
use crate::node::config::NodeConfig;
use crate::node::HitPolicy;
use crate::sim::replay::ReplayReport;
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The node settings both `replay` and `demo` take on the command line; each overrides the
/// scenario's RON value when given.
#[derive(Args, Debug, Clone, Default)]
pub struct NodeFlags {
    /// Weights (default: the model's, e.g. models/ssdlite_ped.safetensors).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Where the detector and the cache heads run: cpu, cuda or cuda:N (CUDA needs a
    /// `--features cuda` build).
    #[arg(long)]
    pub device: Option<String>,
    /// Cache exits (calibration folder).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// Run without cache exits (full detector on every frame).
    #[arg(long, conflicts_with = "calib")]
    pub no_cache: bool,
    /// exit | alert_then_continue.
    #[arg(long)]
    pub policy: Option<HitPolicy>,
    /// Camera rate, frames/s.
    #[arg(long, conflicts_with = "max_speed")]
    pub fps: Option<f64>,
    /// As fast as perception goes, in lockstep (no drops).
    #[arg(long)]
    pub max_speed: bool,
    #[arg(long)]
    pub deadline_ms: Option<f64>,
    /// Score at which a detection counts as a pedestrian.
    #[arg(long)]
    pub score_thresh: Option<f32>,
    /// Stop after this many frames.
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Scenario / node configuration (RON); the flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// ssdlite-ped | maskrcnn-r50-fpn.
    #[arg(long)]
    pub model: Option<String>,
    /// Mask R-CNN without a weights file: deterministic stand-in weights, for latency only
    /// (detections mean nothing; no cache exits).
    #[arg(long, conflicts_with_all = ["weights", "calib"])]
    pub standin_weights: bool,
    /// Sources (folders, images, videos); repeatable.
    #[arg(long, num_args = 1..)]
    pub source: Vec<PathBuf>,
    #[command(flatten)]
    pub node: NodeFlags,
    #[arg(long)]
    pub queue: Option<usize>,
    #[arg(long)]
    pub gt_min_pixels: Option<usize>,
    #[command(flatten)]
    pub sequences: SequenceFlags,
    /// Retrain the cache exits in the background and hot-swap them between frames.
    #[arg(long)]
    pub retrain: bool,
    #[arg(long)]
    pub report: PathBuf,
    /// Every alert, one JSON object a line.
    #[arg(long)]
    pub alerts: Option<PathBuf>,
}

/// The file's config (or defaults), with the flags applied, validated.
pub fn config(a: &ReplayArgs) -> anyhow::Result<NodeConfig> {
    let mut c = match &a.config {
        Some(p) => NodeConfig::load(p)?,
        None => {
            anyhow::ensure!(!a.source.is_empty(), "give --config FILE or --source PATH");
            let mut c = NodeConfig::with_sources(a.source.clone());
            c.fps = Some(17.0);
            c
        }
    };
    if !a.source.is_empty() {
        c.sources = a.source.clone();
    }
    if let Some(m) = &a.model {
        c.model = m.clone();
    }
    if a.node.weights.is_some() {
        c.weights = a.node.weights.clone();
        c.standin_weights = false;
    }
    if let Some(d) = &a.node.device {
        c.device = d.clone();
    }
    if a.standin_weights {
        c.standin_weights = true;
        c.weights = None;
        c.calib = None;
    }
    if a.node.calib.is_some() {
        c.calib = a.node.calib.clone();
    }
    if a.node.no_cache {
        c.calib = None;
    }
    if let Some(p) = a.node.policy {
        c.policy = p;
    }
    if let Some(f) = a.node.fps {
        c.fps = Some(f);
        c.max_speed = false;
    }
    if a.node.max_speed {
        c.max_speed = true;
    }
    if let Some(d) = a.node.deadline_ms {
        c.deadline_ms = d;
    }
    if let Some(q) = a.queue {
        c.queue = q;
    }
    if let Some(s) = a.node.score_thresh {
        c.score_thresh = s;
    }
    if let Some(g) = a.gt_min_pixels {
        c.gt_min_pixels = g;
    }
    if let Some(l) = a.node.limit {
        c.limit = l;
    }
    if let Some(r) = a.sequences.frame_range()? {
        c.seq_frames = Some(r);
    }
    if !a.sequences.seq.is_empty() {
        c.seq = a.sequences.seq.clone();
    }
    if !a.sequences.not_seq.is_empty() {
        c.not_seq = a.sequences.not_seq.clone();
    }
    if a.retrain {
        c.retrain = true;
    }
    let name = a
        .config
        .as_ref()
        .map_or_else(|| "command line".to_string(), |p| p.display().to_string());
    c.validate()
        .map_err(|(_, reason)| anyhow::anyhow!("{name}: {reason}"))?;
    Ok(c)
}

pub fn run(a: ReplayArgs) -> anyhow::Result<i32> {
    let cfg = config(&a)?;
    let report = replay_to_files(&cfg, &a.report, a.alerts.as_deref())?;
    print!("{}", report.summary());
    println!("report: {}", a.report.display());
    if let Some(p) = &a.alerts {
        println!("alerts: {}", p.display());
    }
    Ok(0)
}

/// Replay `cfg` through the node (the path `replay` and `demo` share): load the detector and the
/// calibration, run until the sources end or Ctrl-C / SIGTERM, write the report (and the alerts).
pub fn replay_to_files(
    cfg: &NodeConfig,
    report_path: &Path,
    alerts_path: Option<&Path>,
) -> anyhow::Result<ReplayReport> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // Only the first handler per process installs; a second replay in-process keeps it.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let device = crate::runtime::device(&cfg.device)?;
    let (file, exits) = match &cfg.calib {
        Some(dir) => {
            let (f, e) = crate::cache::files::load(dir, &device)?;
            (Some(f), e)
        }
        None => (None, Vec::new()),
    };
    let alerts: Option<Box<dyn std::io::Write + Send>> = match alerts_path {
        Some(p) => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
            }
            Some(Box::new(std::io::BufWriter::new(
                std::fs::File::create(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
            )))
        }
        None => None,
    };
    let report = match cfg.model.parse::<crate::cli::detect::ModelName>()? {
        crate::cli::detect::ModelName::SsdlitePed => {
            let m = crate::cli::detect::load_ssdlite(cfg.weights.as_deref(), &device)?;
            crate::sim::replay::replay(&m, cfg, exits, file.as_ref(), alerts, &stop)?
        }
        crate::cli::detect::ModelName::MaskRcnnR50Fpn => {
            let m = if cfg.standin_weights {
                crate::cli::detect::standin_maskrcnn(&device)?
            } else {
                crate::cli::detect::load_maskrcnn(cfg.weights.as_deref(), 0.05, &device)?
            };
            crate::sim::replay::replay(&m, cfg, exits, file.as_ref(), alerts, &stop)?
        }
    };
    crate::cli::detect::write_json_atomic(report_path, &report)?;
    Ok(report)
}
