//! `pedcache demo`: the default detector with its committed cache exits over the demo sequence,
//! frame by frame: early alerts when an exit is confident, full detection otherwise.

use crate::cache::calibrate::CacheableDetector;
use crate::cache::enabled::{CacheEnabled, Resolution};
use crate::detect::TeacherTarget;
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
    /// Cache exits (made by `pedcache calibrate`); `--no-cache` runs the full detector only.
    #[arg(long, default_value = "calib/ssdlite-ped-vtest")]
    pub calib: PathBuf,
    #[arg(long)]
    pub no_cache: bool,
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
    let (policy, exits) = if a.no_cache {
        (crate::cache::ExitOn::Pedestrian, Vec::new())
    } else {
        let (f, exits) = crate::cache::files::load(&a.calib).map_err(|e| {
            anyhow::anyhow!("{} (or run with --no-cache)", crate::error::one_line(&e))
        })?;
        anyhow::ensure!(
            f.model == "ssdlite-ped",
            "{}: calibrated for {}, the demo runs ssdlite-ped",
            a.calib.display(),
            f.model
        );
        (f.policy, exits)
    };
    let mut frames = crate::sim::source::list_frames(&a.source).map_err(|e| {
        anyhow::anyhow!(
            "{} (run sim/make_demo.sh to make the demo sequence)",
            crate::error::one_line(&e)
        )
    })?;
    anyhow::ensure!(
        !frames.is_empty(),
        "{}: no frames found",
        a.source.display()
    );
    if a.limit > 0 {
        frames.truncate(a.limit);
    }
    let layers: Vec<String> = exits.iter().map(|e| e.layer.clone()).collect();
    println!(
        "pedcache demo: SSDLite pedestrian detector on {} frames from {} ({} threads); cache exits: {}",
        frames.len(),
        a.source.display(),
        crate::runtime::threads(),
        if layers.is_empty() { "none".to_string() } else { layers.join(", ") }
    );
    let cached = CacheEnabled {
        detector: &model,
        exits,
        policy,
        positive: 1,
    };
    let (mut latencies, mut alert_ms, mut with_peds, mut bad) =
        (Vec::new(), Vec::new(), 0usize, 0usize);
    let mut hits = vec![0usize; layers.len()];
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
        let (input, regions) = model.frame_units(&frame)?;
        let mut first_alert: Option<(String, f32, f64)> = None;
        let out = cached.forward(&input, &vec![0; regions.len()], &mut |_, e, p| {
            if p.class == 1 && first_alert.is_none() {
                first_alert = Some((
                    layers[e].clone(),
                    p.confidence,
                    t0.elapsed().as_secs_f64() * 1e3,
                ));
            }
        })?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        latencies.push(ms);
        let mut peds = 0;
        let mut present = false;
        for r in &out.items {
            match r {
                Resolution::Hit { exit, prediction } => {
                    hits[*exit] += 1;
                    present |= prediction.class == 1;
                }
                Resolution::Group { .. } => present = true,
                Resolution::Full(d) => {
                    peds += d.scores.iter().filter(|&&s| s >= a.score_thresh).count();
                    present |= d.pedestrian(a.score_thresh);
                }
            }
        }
        with_peds += usize::from(present);
        match first_alert {
            Some((layer, conf, at)) => {
                alert_ms.push(at);
                println!("{name}  EARLY ALERT at {layer} (confidence {conf:.3}) after {at:5.1} ms; frame done in {ms:5.1} ms");
            }
            None => println!("{name}  full detection: {peds:>2} pedestrians  {ms:6.1} ms"),
        }
    }
    latencies.sort_by(f64::total_cmp);
    println!();
    println!("| frames | bad frames | frames with pedestrians | early alerts | median latency | p95 latency |");
    println!("|-------:|-----------:|------------------------:|-------------:|---------------:|------------:|");
    let share = format!(
        "{with_peds} ({:.1}%)",
        100.0 * with_peds as f64 / latencies.len().max(1) as f64
    );
    println!(
        "| {:>6} | {:>10} | {:>23} | {:>12} | {:>11.1} ms | {:>8.1} ms |",
        latencies.len() + bad,
        bad,
        share,
        alert_ms.len(),
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.95)
    );
    for (l, h) in layers.iter().zip(&hits) {
        println!("exit {l}: {h} hits");
    }
    Ok(0)
}
