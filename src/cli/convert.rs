//! `pedcache convert-tf`: TensorFlow frozen graph -> safetensors.

use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The frozen_inference_graph.pb to read.
    pub pb: PathBuf,
    /// Where to write the safetensors file.
    #[arg(long, default_value = "models/ssdlite_ped.safetensors")]
    pub out: PathBuf,
}

pub fn run(a: ConvertArgs) -> anyhow::Result<i32> {
    let summary = crate::convert::convert_ssdlite_graph(&a.pb, &a.out)?;
    println!("{summary}");
    Ok(0)
}
