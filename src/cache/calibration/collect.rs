//! Filling the medial store from frames (paper eq. 1): the detector runs in full on each frame
//! and each candidate layer's pooled activation is kept with the teacher target.

use super::detector::{CacheableDetector, Region};
use crate::cache::enabled::pooled_rows;
use crate::cache::store::{MedialStore, Sample};
use crate::detect::TeacherTarget;
use crate::frame::RgbFrame;

/// A progress bar on a terminal; on a pipe, only the final line.
pub fn progress(what: &str, i: usize, n: usize) {
    use std::io::{IsTerminal, Write};
    if !std::io::stderr().is_terminal() {
        if i == n {
            eprintln!("[{what:>9}] {i}/{n}");
        }
        return;
    }
    let width = 30;
    let done = (i * width).checked_div(n).unwrap_or(width);
    eprint!(
        "\r[{what:>9}] [{}{}] {i}/{n}",
        "#".repeat(done),
        " ".repeat(width - done)
    );
    if i == n {
        eprintln!();
    }
    let _ = std::io::stderr().flush();
}

/// Run the detector over frames and fill a medial store: per unit, each candidate layer's pooled
/// activation and the teacher target. `gt(frame_index, unit_region)` gives ground truth if known.
pub fn collect<D>(
    det: &D,
    frames: &mut dyn Iterator<Item = crate::Result<RgbFrame>>,
    n_frames: usize,
    candidates: &[usize],
    store: &mut MedialStore,
    gt: &dyn Fn(usize, Region) -> Option<bool>,
) -> crate::Result<usize>
where
    D: CacheableDetector,
    D::Output: TeacherTarget,
{
    let mut units = 0;
    for (fi, frame) in frames.enumerate() {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                eprintln!("\nskipping bad frame: {}", e.one_line());
                continue;
            }
        };
        let (input, regions) = det.frame_units(&frame)?;
        let mut st = det.start(&input)?;
        let mut feats: Vec<Vec<Vec<f32>>> = vec![Vec::new(); regions.len()];
        for stage in 0..det.stage_names().len() {
            st = det.run_stage(stage, st)?;
            if let Some(l) = candidates.iter().position(|&c| c == stage) {
                let act = det.activation(&st);
                let (_, _, h, w) = act.dims4()?;
                if store.layer_sizes.len() <= l {
                    store.layer_sizes.resize(l + 1, (0, 0));
                }
                store.layer_sizes[l] = (h, w);
                let rows: Vec<Vec<f32>> = pooled_rows(act)?.flatten_from(1)?.to_vec2()?;
                for (u, r) in rows.into_iter().enumerate() {
                    feats[u].push(r);
                }
            }
        }
        let outs = det.finish(st)?;
        for (u, (out, f)) in outs.iter().zip(feats).enumerate() {
            store.push(Sample {
                id: (fi * 8 + u) as u64,
                feats: f,
                target: out.target(),
                gt: gt(fi, regions[u]),
            });
            units += 1;
        }
        progress("collect", fi + 1, n_frames);
    }
    Ok(units)
}

/// Index of the largest value (the first on ties).
pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
        .0
}
