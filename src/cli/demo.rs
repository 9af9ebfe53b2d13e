//! `pedcache demo`: the default detector over the demo sequence, frame by frame, with a summary.

use crate::detect::ssdlite::TileMode;
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Folder of demo frames (Cityscapes-style `*_leftImg8bit.png`), made by sim/make_demo.sh.
    #[arg(long, default_value = "sim/vtest")]
    pub source: PathBuf,
    /// Weights (default: models/ssdlite_ped.safetensors).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Score at which a detection counts as a pedestrian.
    #[arg(long, default_value_t = 0.5)]
    pub score_thresh: f32,
    /// Stop after this many frames (0 = all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
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
    let model = crate::cli::detect::load_ssdlite(a.weights.as_deref())?;
    let mut frames = crate::sim::source::list_frames(&a.source)
        .map_err(|e| anyhow::anyhow!("{e:#} (run sim/make_demo.sh to make the demo sequence)"))?;
    anyhow::ensure!(
        !frames.is_empty(),
        "{}: no frames found",
        a.source.display()
    );
    if a.limit > 0 {
        frames.truncate(a.limit);
    }
    println!(
        "pedcache demo: SSDLite pedestrian detector on {} frames from {} ({} threads)",
        frames.len(),
        a.source.display(),
        crate::runtime::threads()
    );
    let (mut latencies, mut with_peds, mut bad) = (Vec::new(), 0usize, 0usize);
    for path in &frames {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let frame = match crate::frame::load_rgb(path) {
            Ok(f) => f,
            Err(e) => {
                bad += 1;
                eprintln!("bad frame: {}", crate::error::one_line(&e));
                continue;
            }
        };
        let t0 = Instant::now();
        let dets = model.detect(&frame, TileMode::Auto, a.score_thresh)?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        latencies.push(ms);
        if !dets.is_empty() {
            with_peds += 1;
        }
        let top = dets.first().map_or(0.0, |d| d.score);
        println!(
            "{name}  pedestrians {:>2}  top {top:.2}  {ms:6.1} ms",
            dets.len()
        );
    }
    latencies.sort_by(f64::total_cmp);
    println!();
    println!("| frames | bad frames | frames with pedestrians | median latency | p95 latency |");
    println!("|-------:|-----------:|------------------------:|---------------:|------------:|");
    let share = format!(
        "{with_peds} ({:.1}%)",
        100.0 * with_peds as f64 / latencies.len().max(1) as f64
    );
    println!(
        "| {:>6} | {:>10} | {:>23} | {:>11.1} ms | {:>8.1} ms |",
        latencies.len() + bad,
        bad,
        share,
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.95)
    );
    Ok(0)
}
