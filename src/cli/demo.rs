//! `pedcache demo`: the default detector over the demo sequence.

use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Folder of demo frames (Cityscapes-style `*_leftImg8bit.png`).
    #[arg(long, default_value = "sim/vtest")]
    pub source: PathBuf,
    /// Score at which a detection counts as a pedestrian.
    #[arg(long, default_value_t = 0.5)]
    pub score_thresh: f32,
}

pub fn run(a: DemoArgs) -> anyhow::Result<i32> {
    anyhow::bail!("demo over {}: not implemented yet", a.source.display())
}
