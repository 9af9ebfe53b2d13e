//! `pedcache calibrate`: from unlabeled frames to a calibrated cache-enabled detector, with no
//! manual step. `pedcache evaluate` lives in `evaluate.rs`.

use crate::cache::calibration::{calibrate_store, collect, CacheableDetector, CalibConfig};
use crate::cache::store::MedialStore;
use crate::cache::ExitOn;
use crate::detect::registry;
use crate::detect::TeacherTarget;
use crate::sim::groundtruth::region_gt;
use crate::sim::source::{parse_range, read_frames, select_frames, FrameRef, Selection};
use clap::Args;
use std::path::{Path, PathBuf};

/// Frame sources and which of their frames to use.
#[derive(Args, Debug, Clone)]
pub struct SourceArgs {
    /// Cityscapes-style folders, image folders, image files or video files.
    #[arg(long, required = true, num_args = 1..)]
    pub source: Vec<PathBuf>,
    /// Use only this fraction range of the frames, e.g. 0..0.6.
    #[arg(long)]
    pub part: Option<String>,
    #[command(flatten)]
    pub sequences: SequenceFlags,
    /// Ground truth: a unit shows a pedestrian when its label map has at least this many
    /// pixels of label 24 (person).
    #[arg(long, default_value_t = 2000, value_parser = crate::cli::bounds::gt_min_pixels)]
    pub gt_min_pixels: usize,
}

/// Which Cityscapes sequences, and which frames of each, a command uses.
#[derive(Args, Debug, Clone, Default)]
pub struct SequenceFlags {
    /// Use only these frame numbers of each Cityscapes sequence, e.g. 0..18 (half-open, A < B).
    #[arg(long)]
    pub seq_frames: Option<String>,
    /// Only these Cityscapes sequences (e.g. aachen_000002); repeatable.
    #[arg(long)]
    pub seq: Vec<String>,
    /// Leave out these Cityscapes sequences; repeatable.
    #[arg(long)]
    pub not_seq: Vec<String>,
}

impl SequenceFlags {
    /// The `--seq-frames` range, parsed.
    pub fn frame_range(&self) -> anyhow::Result<Option<(usize, usize)>> {
        let r = self
            .seq_frames
            .as_deref()
            .map(parse_range::<usize>)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--seq-frames: {e}"))?;
        if let Some((a, b)) = r {
            anyhow::ensure!(
                a < b,
                "--seq-frames {a}..{b} is empty: give A..B with A < B"
            );
        }
        Ok(r)
    }
}

impl SourceArgs {
    pub fn frames(&self) -> anyhow::Result<Vec<FrameRef>> {
        let part = self.part.as_deref().map(parse_range::<f64>).transpose()?;
        if let Some((a, b)) = part {
            anyhow::ensure!(
                (0.0..=1.0).contains(&a) && (0.0..=1.0).contains(&b) && a < b,
                "--part {a}..{b}: give fractions 0 <= A < B <= 1"
            );
        }
        let sel = Selection {
            part,
            seq_frames: self.sequences.frame_range()?,
            only_seq: self.sequences.seq.clone(),
            not_seq: self.sequences.not_seq.clone(),
            topic: None,
        };
        let frames = select_frames(&self.source, &sel)?;
        anyhow::ensure!(
            !frames.is_empty(),
            "no frames selected from {:?}",
            self.source
        );
        Ok(frames)
    }
}

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    #[arg(long, default_value = "ssdlite-ped")]
    pub model: String,
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Where the detector runs while collecting activations: cpu, cuda or cuda:N (CUDA needs a
    /// `--features cuda` build). The cache heads train on the CPU either way.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[command(flatten)]
    pub src: SourceArgs,
    /// Accuracy-drop budget X (fraction of units that may disagree with the detector, 0..=0.99).
    #[arg(long, default_value_t = 0.02, value_parser = crate::cli::bounds::tolerance)]
    pub tolerance: f64,
    /// Which confident answers may exit: pedestrian (default) or any (the paper's behaviour).
    #[arg(long, value_enum, default_value = "pedestrian")]
    pub exit_on: ExitOnArg,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Medial store bound (units, 1..=100000).
    #[arg(long, default_value_t = 4000, value_parser = crate::cli::bounds::store_capacity)]
    pub store_capacity: usize,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ExitOnArg {
    Pedestrian,
    Any,
}

impl From<ExitOnArg> for ExitOn {
    fn from(a: ExitOnArg) -> Self {
        match a {
            ExitOnArg::Pedestrian => ExitOn::Pedestrian,
            ExitOnArg::Any => ExitOn::Any,
        }
    }
}

pub fn run(a: CalibrateArgs) -> anyhow::Result<i32> {
    let cfg = CalibConfig {
        tolerance: a.tolerance,
        policy: a.exit_on.into(),
        seed: a.seed,
        store_capacity: a.store_capacity,
        ..CalibConfig::default()
    };
    let device = crate::runtime::device(&a.device)?;
    let frames = a.src.frames()?;
    let weights = crate::cli::detect::weights_flag(a.weights.as_deref());
    let det = registry::load(&a.model, &weights, &device)?;
    calibrate_with(&det, &frames, &a.src, &cfg, &a.out)
}

fn calibrate_with<D>(
    det: &D,
    frames: &[FrameRef],
    src: &SourceArgs,
    cfg: &CalibConfig,
    out: &Path,
) -> anyhow::Result<i32>
where
    D: CacheableDetector,
    D::Output: TeacherTarget,
{
    // The flops profile is per unit; take it from the first readable frame.
    let first = read_frames(frames)
        .find_map(|(_, f)| f.ok())
        .ok_or_else(|| anyhow::anyhow!("no readable frame"))?;
    let (input, _) = det.frame_units(&first)?;
    let profile = det.flops_profile(&input)?;
    let stages = det.candidate_stages(&profile);
    let layers: Vec<(String, usize)> = stages
        .iter()
        .map(|&s| (det.stage_names()[s].to_string(), det.stage_channels(s)))
        .collect();
    println!(
        "calibrating {} on {} frames: candidate layers {:?}, tolerance {}, exit on {:?}",
        det.model_name(),
        frames.len(),
        layers.iter().map(|l| l.0.as_str()).collect::<Vec<_>>(),
        cfg.tolerance,
        cfg.policy
    );
    let mut store = MedialStore::new(cfg.store_capacity, layers, cfg.seed);
    let refs: Vec<FrameRef> = frames.to_vec();
    let mut it = read_frames(&refs).map(|(_, f)| f);
    let gt = |fi: usize, region| region_gt(&refs[fi], region, src.gt_min_pixels);
    collect(det, &mut it, refs.len(), &stages, &mut store, &gt)?;
    let mut cal = calibrate_store(det, &store, &stages, &profile, cfg)?;
    cal.report.frames = frames.len();
    crate::cache::files::save(out, &cal)?;
    crate::cache::files::print_table(&cal.report);
    println!(
        "wrote {}/{{exits.ron, heads.safetensors, report.json, exit_*.svg}}",
        out.display()
    );
    Ok(0)
}
