//! `pedcache replay`: replay sequences through the real-time node against a per-frame deadline
//! (`sim::replay`), write the run's report (and optionally every alert as JSON lines), print a
//! summary. Ctrl-C / SIGTERM stops the run; the report is written and the exit status is 0. A
//! failing stage ends the run with the report (`"status": "failed"`) and a non-zero exit.

use crate::cli::bounds;
use crate::cli::calibrate::SequenceFlags;
use crate::node::HitPolicy;
use crate::sim::replay::Replayed;
use crate::sim::report::write_json_atomic;
use crate::sim::scenario::Scenario;
use clap::Args;
use std::path::{Path, PathBuf};

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
    /// Cache exits: a calibration folder, a learn dir (its latest version), or `auto`: learn
    /// them on the drive from nothing (versions go to --learn-dir).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// With `--calib auto`: where the learned versions go (default `target/learned/<model>`);
    /// when it holds versions, learning goes on from the latest.
    #[arg(long)]
    pub learn_dir: Option<PathBuf>,
    /// Run without cache exits (full detector on every frame).
    #[arg(long, conflicts_with = "calib")]
    pub no_cache: bool,
    /// exit | alert_then_continue.
    #[arg(long)]
    pub policy: Option<HitPolicy>,
    /// Camera rate, frames/s (0.01..=10000).
    #[arg(long, conflicts_with = "max_speed", value_parser = bounds::fps)]
    pub fps: Option<f64>,
    /// As fast as perception goes, in lockstep (no drops).
    #[arg(long)]
    pub max_speed: bool,
    /// Per-frame deadline, ms (0.1..=3600000).
    #[arg(long, value_parser = bounds::deadline_ms)]
    pub deadline_ms: Option<f64>,
    /// Score at which a detection counts as a pedestrian (0..=1).
    #[arg(long, value_parser = bounds::score_thresh)]
    pub score_thresh: Option<f32>,
    /// Stop after this many frames.
    #[arg(long, value_parser = bounds::limit)]
    pub limit: Option<usize>,
    /// Keep per-frame records of only the latest N frames (0 = all): the report's per-frame
    /// figures then cover those, its counts every frame (for long runs).
    #[arg(long, value_parser = bounds::keep_records)]
    pub keep_records: Option<usize>,
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
    /// Sources (folders, images, videos, ROS 2 MCAP recordings); repeatable.
    #[arg(long, num_args = 1..)]
    pub source: Vec<PathBuf>,
    /// The image topic of MCAP sources (default: their only image topic).
    #[arg(long)]
    pub topic: Option<String>,
    #[command(flatten)]
    pub node: NodeFlags,
    /// Pending frames between source and perception (1..=64).
    #[arg(long, value_parser = bounds::queue)]
    pub queue: Option<usize>,
    #[arg(long, value_parser = bounds::gt_min_pixels)]
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
    /// Publish every alert to other processes: `zenoh=ENDPOINT` (e.g. `zenoh=tcp/127.0.0.1:7447`;
    /// the node listens there, peer mode, no multicast scouting) on key `pedcache/<node>/alerts`.
    #[arg(long, value_name = "zenoh=ENDPOINT")]
    pub publish: Option<String>,
    /// The node's name in the published key.
    #[arg(long = "node", default_value = "pedcache")]
    pub node_name: String,
    /// Record every alert (and its latency) into an MCAP file: topics `/pedcache/alerts` and
    /// `/pedcache/latency`, JSON.
    #[arg(long, value_name = "OUT.mcap")]
    pub record: Option<PathBuf>,
    /// Serve the run live to the Foxglove app over its WebSocket protocol (alerts, latency,
    /// image annotations), on HOST:PORT (default 127.0.0.1:8765).
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, default_missing_value = "127.0.0.1:8765")]
    pub foxglove: Option<String>,
    /// With --publish: wait up to this many ms for a subscriber before the camera starts.
    #[arg(long, default_value_t = 0)]
    pub publish_wait_ms: u64,
}

/// The planners `--record` and `--publish` ask for (opened before the model loads, so a listener has time to
/// connect before the first alert).
pub fn publishers(a: &ReplayArgs) -> anyhow::Result<Vec<Box<dyn crate::node::planner::Planner>>> {
    let mut planners: Vec<Box<dyn crate::node::planner::Planner>> = Vec::new();
    if let Some(p) = &a.record {
        planners.push(Box::new(crate::node::record::McapRecorder::create(p)?));
    }
    if let Some(addr) = &a.foxglove {
        #[cfg(feature = "foxglove")]
        {
            let live = crate::node::foxglove::FoxgloveLive::start(addr)?;
            eprintln!("foxglove: serving on ws://{addr} (port {})", live.port());
            planners.push(Box::new(live));
        }
        #[cfg(not(feature = "foxglove"))]
        anyhow::bail!("--foxglove {addr}: this pedcache was built without the foxglove feature");
    }
    let Some(spec) = &a.publish else {
        return Ok(planners);
    };
    let Some(endpoint) = spec.strip_prefix("zenoh=") else {
        anyhow::bail!("--publish {spec:?}: expected zenoh=ENDPOINT, e.g. zenoh=tcp/127.0.0.1:7447");
    };
    #[cfg(feature = "zenoh")]
    {
        let wait = std::time::Duration::from_millis(a.publish_wait_ms);
        let p = crate::node::zenoh::ZenohPublisher::open(endpoint, &a.node_name, wait)?;
        planners.push(Box::new(p));
        Ok(planners)
    }
    #[cfg(not(feature = "zenoh"))]
    {
        let _ = (endpoint, planners);
        anyhow::bail!("--publish zenoh=...: this pedcache was built without the zenoh feature")
    }
}

/// The file's scenario (or defaults), with the flags applied, validated.
pub fn scenario(a: &ReplayArgs) -> anyhow::Result<Scenario> {
    let mut c = match &a.config {
        Some(p) => Scenario::load(p)?,
        None => {
            anyhow::ensure!(!a.source.is_empty(), "give --config FILE or --source PATH");
            let mut c = Scenario::with_sources(a.source.clone());
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
    let n = &a.node;
    if n.weights.is_some() {
        c.weights = n.weights.clone();
        c.standin_weights = false;
    }
    if let Some(d) = &n.device {
        c.device = d.clone();
    }
    if a.standin_weights {
        c.standin_weights = true;
        c.weights = None;
        c.calib = None;
    }
    if n.calib.is_some() {
        c.calib = n.calib.clone();
    }
    if n.no_cache {
        c.calib = None;
    }
    if n.learn_dir.is_some() {
        c.learn_dir = n.learn_dir.clone();
    }
    c.policy = n.policy.unwrap_or(c.policy);
    if let Some(f) = n.fps {
        c.fps = Some(f);
        c.max_speed = false;
    }
    c.max_speed |= n.max_speed;
    c.deadline_ms = n.deadline_ms.unwrap_or(c.deadline_ms);
    c.queue = a.queue.unwrap_or(c.queue);
    c.score_thresh = n.score_thresh.or(c.score_thresh);
    c.gt_min_pixels = a.gt_min_pixels.unwrap_or(c.gt_min_pixels);
    c.limit = n.limit.unwrap_or(c.limit);
    c.keep_records = n.keep_records.unwrap_or(c.keep_records);
    if let Some(r) = a.sequences.frame_range()? {
        c.seq_frames = Some(r);
    }
    if !a.sequences.seq.is_empty() {
        c.seq = a.sequences.seq.clone();
    }
    if !a.sequences.not_seq.is_empty() {
        c.not_seq = a.sequences.not_seq.clone();
    }
    c.retrain |= a.retrain;
    if a.topic.is_some() {
        c.topic = a.topic.clone();
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
    let sc = scenario(&a)?;
    let planners = publishers(&a)?;
    let r = replay_to_files(&sc, &a.report, a.alerts.as_deref(), planners)?;
    finish(r, &a.report, a.alerts.as_deref())
}

/// Print the summary and where the files are; a failed run is an error after that.
pub fn finish(r: Replayed, report: &Path, alerts: Option<&Path>) -> anyhow::Result<i32> {
    print!("{}", r.report.summary());
    println!("report: {}", report.display());
    println!("timeline: {}", timeline_path(report).display());
    if let Some(p) = alerts {
        println!("alerts: {}", p.display());
    }
    match r.failure {
        Some(e) => Err(e.into()),
        None => Ok(0),
    }
}

/// The timeline picture beside a report: `R.json` -> `R.timeline.svg`.
pub fn timeline_path(report: &Path) -> PathBuf {
    report.with_extension("timeline.svg")
}

/// Replay `sc` through the node (the path `replay` and `demo` share) until the sources end,
/// Ctrl-C / SIGTERM or a failure, and write the report (and the alerts).
pub fn replay_to_files(
    sc: &Scenario,
    report_path: &Path,
    alerts_path: Option<&Path>,
    planners: Vec<Box<dyn crate::node::planner::Planner>>,
) -> anyhow::Result<Replayed> {
    let stop = crate::cli::stop_on_signals();
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
    let r = crate::sim::replay::replay_with(sc, alerts, planners, &stop)?;
    write_json_atomic(report_path, &r.report)?;
    let svg = timeline_path(report_path);
    let title = format!(
        "{} over {} frames ({})",
        r.report.model,
        r.report.processed,
        r.report.calib.as_deref().unwrap_or("no cache exits")
    );
    crate::fsio::write_atomic(
        &svg,
        crate::sim::timeline::timeline_svg(&r.report.timeline, &title).as_bytes(),
    )?;
    Ok(r)
}
