//! `pedcache detect`: run a detector on images, write JSON (and optional overlays).

use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct DetectArgs {
    #[arg(long, default_value = "ssdlite-ped")]
    pub model: String,
    #[arg(long)]
    pub weights: Option<PathBuf>,
    #[arg(long, default_value_t = 0.3)]
    pub score_thresh: f32,
    #[arg(long, default_value = "auto")]
    pub tiles: String,
    #[arg(long)]
    pub json: PathBuf,
    #[arg(long)]
    pub overlay: Option<PathBuf>,
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

pub fn run(a: DetectArgs) -> anyhow::Result<i32> {
    anyhow::bail!("detect {}: not implemented yet", a.model)
}
