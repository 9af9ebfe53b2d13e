//! The cache-enabled and the full detector side by side on every frame of a sequence: FLOPs,
//! latency, presence against the detector and against ground truth, per-exit hits
//! (`pedcache evaluate`).

use crate::cache::calibration::{argmax, CacheableDetector};
use crate::cache::enabled::{CacheEnabled, Resolution};
use crate::detect::TeacherTarget;
use crate::node::CacheExits;
use crate::sim::groundtruth::region_gt;
use crate::sim::metrics::{quantile, Confusion};
use crate::sim::source::{read_frames, FrameRef};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

#[derive(Serialize, Default)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
}

fn latency(mut v: Vec<f64>) -> Latency {
    v.sort_by(f64::total_cmp);
    Latency {
        mean: v.iter().sum::<f64>() / v.len().max(1) as f64,
        p50: quantile(&v, 0.5),
        p95: quantile(&v, 0.95),
    }
}

#[derive(Serialize)]
pub struct FullCached<T> {
    pub full: T,
    pub cached: T,
}

#[derive(Serialize)]
pub struct Presence {
    /// Cached answers against the full detector's.
    pub vs_detector: Confusion,
    /// Cached (and, for reference, full) answers against ground truth, when labels exist.
    pub vs_ground_truth: Option<Confusion>,
    pub full_vs_ground_truth: Option<Confusion>,
}

#[derive(Serialize)]
pub struct ExitStats {
    pub layer: String,
    pub hits: usize,
    pub hit_rate: f64,
    /// Share of hits whose class equals the full detector's (teacher) class on that unit.
    pub cache_accuracy: f64,
}

#[derive(Serialize)]
pub struct EvalReport {
    pub model: String,
    pub calib: String,
    pub policy: crate::cache::ExitOn,
    pub frames: usize,
    pub units: usize,
    pub bad_frames: usize,
    pub flops_per_frame: FullCached<f64>,
    pub flops_cut: f64,
    pub latency_ms: FullCached<Latency>,
    pub latency_cut: f64,
    pub presence: Presence,
    /// Frames where the cached answer says "pedestrian" but the detector does not.
    pub false_alarms: usize,
    /// Frames where the detector says "pedestrian" but the cached answer does not.
    pub missed: usize,
    /// Frames the detector calls empty, and how many of them the cached model agrees on.
    pub detector_empty_frames: usize,
    pub agreement_on_empty: usize,
    pub exits: Vec<ExitStats>,
}

/// Run the cache-enabled and the full detector on every frame of `frames`; `calib` names the
/// calibration `exits` came from.
pub fn evaluate<D>(
    det: &D,
    calib: &Path,
    exits: CacheExits,
    frames: &[FrameRef],
    score_thresh: f32,
    gt_min_pixels: usize,
) -> crate::Result<EvalReport>
where
    D: CacheableDetector,
    D::Output: TeacherTarget,
{
    crate::cache::files::check_dir(calib, det)?;
    let layers: Vec<String> = exits.exits.iter().map(|e| e.layer.clone()).collect();
    let (policy, positive) = (exits.policy, exits.positive);
    let cached = CacheEnabled {
        detector: det,
        exits: exits.exits,
        policy,
        positive,
    };
    let (mut lat_full, mut lat_cached, mut fl_full, mut fl_cached) =
        (Vec::new(), Vec::new(), 0f64, 0f64);
    let (mut vs_det, mut vs_gt, mut full_gt) = (
        Confusion::default(),
        Confusion::default(),
        Confusion::default(),
    );
    let mut have_gt = true;
    let (mut units, mut bad) = (0usize, 0usize);
    let mut hits = vec![0usize; layers.len()];
    let mut agree = vec![0usize; layers.len()];
    let (mut false_alarms, mut missed, mut empty, mut agree_empty) = (0, 0, 0, 0);
    let n = frames.len();
    for (i, (fref, frame)) in read_frames(frames).enumerate() {
        crate::cache::calibration::progress("evaluate", i + 1, n);
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                bad += 1;
                eprintln!("\nbad frame: {}", e.one_line());
                continue;
            }
        };
        let (input, regions) = det.frame_units(&frame)?;
        let groups = vec![0usize; regions.len()];
        let profile = det.flops_profile(&input)?;
        // Alternate which runs first, so cache warmth and clock drift favour neither.
        let run_full = |lat: &mut Vec<f64>| -> candle_core::Result<Vec<D::Output>> {
            let t0 = Instant::now();
            let r = det.forward_staged(&input)?;
            lat.push(t0.elapsed().as_secs_f64() * 1e3);
            Ok(r)
        };
        let run_cached = |lat: &mut Vec<f64>| {
            let t0 = Instant::now();
            let r = cached.forward(&input, &groups, &mut |_, _, _| {});
            lat.push(t0.elapsed().as_secs_f64() * 1e3);
            r
        };
        let (full, out) = if i % 2 == 0 {
            let f = run_full(&mut lat_full)?;
            (f, run_cached(&mut lat_cached)?)
        } else {
            let c = run_cached(&mut lat_cached)?;
            (run_full(&mut lat_full)?, c)
        };
        units += regions.len();
        fl_full += (profile.full * regions.len() as u64) as f64;
        fl_cached += out.flops.iter().sum::<u64>() as f64;
        let det_units: Vec<bool> = full.iter().map(|o| o.pedestrian(score_thresh)).collect();
        let det_frame = det_units.iter().any(|&p| p);
        let mut cached_frame = false;
        for (u, r) in out.items.iter().enumerate() {
            match r {
                Resolution::Hit { exit, prediction } => {
                    hits[*exit] += 1;
                    let teacher = argmax(&full[u].target());
                    agree[*exit] += usize::from(teacher == prediction.class);
                    cached_frame |= prediction.class == positive;
                }
                Resolution::Group { .. } => cached_frame = true,
                Resolution::Full(o) => cached_frame |= o.pedestrian(score_thresh),
            }
        }
        vs_det.add(cached_frame, det_frame);
        false_alarms += usize::from(cached_frame && !det_frame);
        missed += usize::from(!cached_frame && det_frame);
        if !det_frame {
            empty += 1;
            agree_empty += usize::from(!cached_frame);
        }
        match region_gt(&fref, (0, 0, frame.width, frame.height), gt_min_pixels) {
            Some(gt) => {
                vs_gt.add(cached_frame, gt);
                full_gt.add(det_frame, gt);
            }
            None => have_gt = false,
        }
    }
    let frames_ok = (n - bad).max(1) as f64;
    let (lf, lc) = (latency(lat_full), latency(lat_cached));
    let latency_cut = 1.0 - lc.mean / lf.mean.max(1e-9);
    Ok(EvalReport {
        model: det.model_name().into(),
        calib: calib.display().to_string(),
        policy,
        frames: n,
        units,
        bad_frames: bad,
        flops_per_frame: FullCached {
            full: fl_full / frames_ok,
            cached: fl_cached / frames_ok,
        },
        flops_cut: 1.0 - fl_cached / fl_full.max(1.0),
        latency_ms: FullCached {
            full: lf,
            cached: lc,
        },
        latency_cut,
        presence: Presence {
            vs_detector: vs_det,
            vs_ground_truth: have_gt.then_some(vs_gt),
            full_vs_ground_truth: have_gt.then_some(full_gt),
        },
        false_alarms,
        missed,
        detector_empty_frames: empty,
        agreement_on_empty: agree_empty,
        exits: layers
            .iter()
            .enumerate()
            .map(|(e, l)| ExitStats {
                layer: l.clone(),
                hits: hits[e],
                hit_rate: hits[e] as f64 / units.max(1) as f64,
                cache_accuracy: agree[e] as f64 / hits[e].max(1) as f64,
            })
            .collect(),
    })
}
