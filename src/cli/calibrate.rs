//! `pedcache calibrate`: from unlabeled frames to a calibrated cache-enabled detector, with no
//! manual step. `pedcache evaluate` lives in `evaluate.rs`.

use crate::cache::calibration::{calibrate_store, collect, CacheableDetector, CalibConfig};
use crate::cache::store::MedialStore;
use crate::cache::ExitOn;
use crate::detect::TeacherTarget;
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
    #[arg(long, default_value_t = 2000)]
    pub gt_min_pixels: usize,
}

/// Which Cityscapes sequences, and which frames of each, a command uses.
#[derive(Args, Debug, Clone, Default)]
pub struct SequenceFlags {
    /// Use only these frame numbers of each Cityscapes sequence, e.g. 0..18 (half-open).
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
        self.seq_frames
            .as_deref()
            .map(parse_range::<usize>)
            .transpose()
            .map_err(Into::into)
    }
}

impl SourceArgs {
    pub fn frames(&self) -> anyhow::Result<Vec<FrameRef>> {
        let sel = Selection {
            part: self.part.as_deref().map(parse_range::<f64>).transpose()?,
            seq_frames: self.sequences.frame_range()?,
            only_seq: self.sequences.seq.clone(),
            not_seq: self.sequences.not_seq.clone(),
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

/// Ground truth for a region of a frame, from its Cityscapes label map when there is one.
pub fn region_gt(
    frame: &FrameRef,
    region: (usize, usize, usize, usize),
    min_pixels: usize,
) -> Option<bool> {
    let FrameRef::File(p) = frame else {
        return None;
    };
    let labels = crate::sim::groundtruth::label_map_for(p)?;
    let img = image::open(&labels).ok()?.to_luma8();
    let (x0, y0, w, h) = region;
    let mut n = 0;
    for y in y0..(y0 + h).min(img.height() as usize) {
        for x in x0..(x0 + w).min(img.width() as usize) {
            n += usize::from(
                img.get_pixel(x as u32, y as u32)[0] == crate::sim::groundtruth::PERSON,
            );
        }
    }
    Some(n >= min_pixels)
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
    /// Accuracy-drop budget X (fraction of units that may disagree with the detector).
    #[arg(long, default_value_t = 0.02)]
    pub tolerance: f64,
    /// Which confident answers may exit: pedestrian (default) or any (the paper's behaviour).
    #[arg(long, value_enum, default_value = "pedestrian")]
    pub exit_on: ExitOnArg,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Medial store bound (units).
    #[arg(long, default_value_t = 4000)]
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
    anyhow::ensure!(
        a.tolerance.is_finite() && (0.0..1.0).contains(&a.tolerance),
        "--tolerance must be in [0, 1), got {}",
        a.tolerance
    );
    let cfg = CalibConfig {
        tolerance: a.tolerance,
        policy: a.exit_on.into(),
        seed: a.seed,
        store_capacity: a.store_capacity,
        ..CalibConfig::default()
    };
    let device = crate::runtime::device(&a.device)?;
    let frames = a.src.frames()?;
    match a.model.parse::<crate::cli::detect::ModelName>()? {
        crate::cli::detect::ModelName::SsdlitePed => {
            let m = crate::cli::detect::load_ssdlite(a.weights.as_deref(), &device)?;
            calibrate_with(&m, &frames, &a.src, &cfg, &a.out)
        }
        crate::cli::detect::ModelName::MaskRcnnR50Fpn => {
            let m = crate::cli::detect::load_maskrcnn(a.weights.as_deref(), 0.05, &device)?;
            calibrate_with(&m, &frames, &a.src, &cfg, &a.out)
        }
    }
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
