//! `pedcache detect`: run a detector on images, write JSON (and optional overlays).
//!
//! A bad image is reported on stderr (one line, naming the file and the cause) and skipped;
//! every other image is still processed and written. The exit status is 1 if any image failed.

use crate::detect::registry::{self, Weights};
use crate::detect::ssdlite::TileMode;
use crate::detect::Detection;
use crate::sim::report::write_json_atomic;
use anyhow::Context;
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct DetectArgs {
    /// Detector: `ssdlite-ped` (default, bundled) or `maskrcnn-r50-fpn`.
    #[arg(long, default_value = "ssdlite-ped")]
    pub model: String,
    /// Weights file (default: models/ssdlite_ped.safetensors for ssdlite-ped).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Keep detections scoring at least this (0..=1).
    #[arg(long, default_value_t = 0.3, value_parser = crate::cli::bounds::score_thresh)]
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

/// `--weights FILE` as the registry takes it (no flag: the model's default).
pub fn weights_flag(weights: Option<&Path>) -> Weights {
    weights.map_or(Weights::Default, |p| Weights::File(p.to_path_buf()))
}

pub fn run(a: DetectArgs) -> anyhow::Result<i32> {
    let device = crate::runtime::device(&a.device)?;
    let mut model = registry::load(&a.model, &weights_flag(a.weights.as_deref()), &device)?;
    model.lower_score_floor(a.score_thresh);
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
                .detect(&frame, a.tiles, a.score_thresh)
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
