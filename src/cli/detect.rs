//! `pedcache detect`: run a detector on images, write JSON (and optional overlays).
//!
//! A bad image is reported on stderr (one line, naming the file and the cause) and skipped;
//! every other image is still processed and written. The exit status is 1 if any image failed.

use crate::detect::maskrcnn::{MaskCrop, MaskRcnn};
use crate::detect::ssdlite::{SsdLite, TileMode};
use crate::detect::Detection;
use crate::frame::RgbFrame;
use anyhow::Context;
use candle_core::Device;
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Default location of the converted SSDLite weights (made by `models/fetch.sh`).
pub const DEFAULT_SSDLITE_WEIGHTS: &str = "models/ssdlite_ped.safetensors";

#[derive(Args, Debug)]
pub struct DetectArgs {
    /// Detector: `ssdlite-ped` (default, bundled) or `maskrcnn-r50-fpn`.
    #[arg(long, default_value = "ssdlite-ped")]
    pub model: String,
    /// Weights file (default: models/ssdlite_ped.safetensors for ssdlite-ped).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Keep detections scoring at least this.
    #[arg(long, default_value_t = 0.3)]
    pub score_thresh: f32,
    /// Square tiles for wide frames: auto (when wider than 1.5:1), or a fixed count.
    #[arg(long, default_value = "auto")]
    pub tiles: TileMode,
    /// Where the detector runs: cpu, cuda or cuda:N (CUDA needs a `--features cuda` build).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Where to write the detections JSON.
    #[arg(long)]
    pub json: PathBuf,
    /// Folder for PNG overlays with boxes and scores drawn.
    #[arg(long)]
    pub overlay: Option<PathBuf>,
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// The detectors this binary knows by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelName {
    SsdlitePed,
    MaskRcnnR50Fpn,
}

impl std::str::FromStr for ModelName {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "ssdlite-ped" => Ok(Self::SsdlitePed),
            "maskrcnn-r50-fpn" => Ok(Self::MaskRcnnR50Fpn),
            other => {
                anyhow::bail!("unknown model {other:?} (known: ssdlite-ped, maskrcnn-r50-fpn)")
            }
        }
    }
}

#[derive(Serialize)]
struct ImageResult {
    path: String,
    height: usize,
    width: usize,
    detections: Vec<Detection>,
}

#[derive(Serialize)]
struct ImageError {
    path: String,
    error: String,
}

#[derive(Serialize)]
struct Report {
    images: Vec<ImageResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<ImageError>,
}

/// Load the SSDLite detector from `weights` or the default path onto `device`.
pub fn load_ssdlite(weights: Option<&Path>, device: &Device) -> anyhow::Result<SsdLite> {
    let path = weights.unwrap_or(Path::new(DEFAULT_SSDLITE_WEIGHTS));
    if !path.exists() {
        anyhow::bail!(
            "loading {}: file not found{}",
            path.display(),
            if weights.is_none() {
                " (run models/fetch.sh to download and convert it)"
            } else {
                ""
            }
        );
    }
    Ok(SsdLite::load(path, device)?)
}

/// Write `value` as JSON through a temporary file, so a reader never sees half a file.
pub fn write_json_atomic(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.partial");
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Load torchvision Mask R-CNN weights onto `device`; scores below `score_thresh` down to 0 are
/// kept by the box post-processing too (its own floor is torchvision's 0.05).
pub fn load_maskrcnn(
    weights: Option<&Path>,
    score_thresh: f32,
    device: &Device,
) -> anyhow::Result<MaskRcnn> {
    let path = weights.ok_or_else(|| {
        anyhow::anyhow!(
            "model maskrcnn-r50-fpn needs --weights FILE (torchvision's COCO .pth; see README, Models and data)"
        )
    })?;
    let mut m = MaskRcnn::load(path, device)?;
    m.roi_heads.config.score_thresh = m.roi_heads.config.score_thresh.min(score_thresh.max(0.0));
    Ok(m)
}

/// Mask R-CNN ResNet50-FPN at full width with deterministic stand-in weights
/// (`detect::maskrcnn::standin`, hash variant): real shapes and real compute, meaningless
/// detections. For latency runs where torchvision's COCO weights are not available.
pub fn standin_maskrcnn(device: &Device) -> anyhow::Result<MaskRcnn> {
    use crate::detect::maskrcnn::standin::{resnet50_fpn_arch, state_dict, Variant};
    let arch = resnet50_fpn_arch();
    let sd = state_dict(&arch, Variant::Hash, device)
        .map_err(|e| anyhow::anyhow!("building stand-in Mask R-CNN weights: {e}"))?;
    Ok(MaskRcnn::from_state_dict(&sd, arch, device)?)
}

/// Either detector behind the `detect` command.
pub enum Detector {
    Ssd(Box<SsdLite>, TileMode),
    Rcnn(Box<MaskRcnn>),
}

impl Detector {
    pub fn load(
        name: &str,
        weights: Option<&Path>,
        tiles: TileMode,
        score_thresh: f32,
        device: &Device,
    ) -> anyhow::Result<Self> {
        Ok(match name.parse::<ModelName>()? {
            ModelName::SsdlitePed => Detector::Ssd(Box::new(load_ssdlite(weights, device)?), tiles),
            ModelName::MaskRcnnR50Fpn => {
                Detector::Rcnn(Box::new(load_maskrcnn(weights, score_thresh, device)?))
            }
        })
    }

    /// Detections scoring at least `score_thresh`, best first, and their masks (Mask R-CNN).
    pub fn detect(
        &self,
        frame: &RgbFrame,
        score_thresh: f32,
    ) -> candle_core::Result<(Vec<Detection>, Vec<MaskCrop>)> {
        match self {
            Detector::Ssd(m, tiles) => Ok((m.detect(frame, *tiles, score_thresh)?, Vec::new())),
            Detector::Rcnn(m) => {
                let out = m.detect(&[frame])?.remove(0);
                Ok(out
                    .detections
                    .into_iter()
                    .zip(out.masks)
                    .filter(|(d, _)| d.score >= score_thresh)
                    .unzip())
            }
        }
    }
}

pub fn run(a: DetectArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        a.score_thresh.is_finite(),
        "--score-thresh must be a number"
    );
    let device = crate::runtime::device(&a.device)?;
    let model = Detector::load(
        &a.model,
        a.weights.as_deref(),
        a.tiles,
        a.score_thresh,
        &device,
    )?;
    if let Some(dir) = &a.overlay {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut report = Report {
        images: Vec::new(),
        errors: Vec::new(),
    };
    for path in &a.images {
        let result = (|| -> anyhow::Result<_> {
            let frame = crate::frame::load_rgb(path)?;
            let (dets, masks) = model
                .detect(&frame, a.score_thresh)
                .map_err(|e| anyhow::anyhow!("{}: detector failed: {e}", path.display()))?;
            if let Some(dir) = &a.overlay {
                let stem = path
                    .file_stem()
                    .map_or("image".into(), |s| s.to_string_lossy());
                crate::cli::overlay::write_overlay(
                    &frame,
                    &dets,
                    &masks,
                    &dir.join(format!("{stem}.png")),
                )?;
            }
            Ok((frame.height, frame.width, dets))
        })();
        match result {
            Ok((height, width, detections)) => report.images.push(ImageResult {
                path: path.display().to_string(),
                height,
                width,
                detections,
            }),
            Err(e) => {
                let msg = crate::error::one_line(&e);
                eprintln!("error: {msg}");
                report.errors.push(ImageError {
                    path: path.display().to_string(),
                    error: msg,
                });
            }
        }
    }
    write_json_atomic(&a.json, &report)?;
    Ok(if report.errors.is_empty() { 0 } else { 1 })
}
