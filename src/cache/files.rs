//! A calibration on disk: `exits.ron` (per exit: layer, head architecture, temperature,
//! threshold, selected or not, FLOPs C1/C2), `heads.safetensors`, `report.json`, and plots.

use super::calibration::{CalibReport, Calibration, ExitsFile};
use super::enabled::Exit;
use super::head::CacheHead;
use crate::error::Context;
use candle_core::Device;
use std::collections::HashMap;
use std::path::Path;

pub const EXITS: &str = "exits.ron";
pub const HEADS: &str = "heads.safetensors";
pub const REPORT: &str = "report.json";

/// Write every file of a calibration into `dir` (created if needed).
pub fn save(dir: &Path, cal: &Calibration) -> crate::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ron = ron::ser::to_string_pretty(&cal.exits_file, ron::ser::PrettyConfig::default())?;
    write(&dir.join(EXITS), ron.as_bytes())?;
    let mut tensors = HashMap::new();
    for (layer, head) in &cal.heads {
        tensors.extend(head.to_tensors(layer));
    }
    let tmp = dir.join(format!("{HEADS}.partial"));
    candle_core::safetensors::save(&tensors, &tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(HEADS))
        .with_context(|| format!("writing {}", dir.join(HEADS).display()))?;
    write(
        &dir.join(REPORT),
        serde_json::to_string_pretty(&cal.report)?.as_bytes(),
    )?;
    for e in &cal.report.exits {
        if !e.curve_val.is_empty() {
            let svg = super::plot::exit_curve_svg(e);
            write(&dir.join(format!("exit_{}.svg", e.layer)), svg.as_bytes())?;
        }
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> crate::Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Read `exits.ron`; malformed RON or unknown keys fail with the file, line and reason.
pub fn read_exits(dir: &Path) -> crate::Result<ExitsFile> {
    let path = dir.join(EXITS);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("loading {}", path.display()))?;
    let f: ExitsFile = ron::de::from_str(&text)
        .map_err(|e| crate::err!("{}:{}: {}", path.display(), e.position, e.code))?;
    for e in &f.exits {
        crate::ensure!(
            e.temperature.is_finite() && e.temperature > 0.0,
            "{}: exit {}: temperature must be a positive number, got {}",
            path.display(),
            e.layer,
            e.temperature
        );
        crate::ensure!(
            !e.threshold.is_nan(),
            "{}: exit {}: threshold is NaN",
            path.display(),
            e.layer
        );
        crate::ensure!(
            !e.selected || e.head.is_some(),
            "{}: exit {} is selected but has no head",
            path.display(),
            e.layer
        );
    }
    Ok(f)
}

/// Load a calibration directory: the exits file and the selected exits with their heads, on
/// `device` (the detector's, so heads read its activations where they are).
pub fn load(dir: &Path, device: &Device) -> crate::Result<(ExitsFile, Vec<Exit>)> {
    let f = read_exits(dir)?;
    let heads_path = dir.join(HEADS);
    let bytes =
        std::fs::read(&heads_path).with_context(|| format!("loading {}", heads_path.display()))?;
    let map = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| {
        crate::err!(
            "loading {}: not a valid safetensors file ({e})",
            heads_path.display()
        )
    })?;
    let mut exits = Vec::new();
    for e in f.exits.iter().filter(|e| e.selected) {
        let arch = e
            .head
            .clone()
            .ok_or_else(|| crate::err!("{}: exit {} has no head", dir.display(), e.layer))?;
        let head = CacheHead::from_tensors(arch, e.channels, &map, &e.layer).map_err(|err| {
            crate::err!("loading {}: exit {}: {err}", heads_path.display(), e.layer)
        })?;
        exits.push(e.to_exit(head));
    }
    Ok((f, exits))
}

/// The paper's Tables 2/3: per exit, FLOPs and how it fared.
pub fn print_table(r: &CalibReport) {
    println!();
    println!("| exit | head | C1 (MFLOP) | C2 (MFLOP) | val acc | T | threshold | budget | HR test | CA test | selected |");
    println!("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|:-:|");
    for e in &r.exits {
        let th = e.threshold.as_ref().map_or("-".into(), |t| {
            if t.theta.is_finite() {
                format!("{:.3}", t.theta)
            } else {
                "never".into()
            }
        });
        let hr = e.test_hits.map_or("-".into(), |h| {
            format!("{:.3}", h as f64 / r.test_samples.max(1) as f64)
        });
        let ca = e
            .test_cache_accuracy
            .map_or("-".into(), |c| format!("{c:.3}"));
        println!(
            "| {} | {} | {:.2} | {:.1} | {} | {} | {} | {:.4} | {} | {} | {} |",
            e.layer,
            e.head
                .clone()
                .unwrap_or_else(|| format!("dropped: {}", e.dropped.clone().unwrap_or_default())),
            e.c1 as f64 / 1e6,
            e.c2 as f64 / 1e6,
            e.val_accuracy.map_or("-".into(), |a| format!("{a:.3}")),
            e.temperature
                .as_ref()
                .map_or("-".into(), |t| format!("{:.2}", t.t)),
            th,
            e.budget,
            hr,
            ca,
            if e.selected { "yes" } else { "" }
        );
    }
    println!(
        "validation samples {}, split {:?}; selected {:?}; test: FLOPs cut {:.1}%, {} of {} units disagree with the detector",
        r.validation_samples,
        r.split_sizes,
        r.selected,
        100.0 * r.test_flops_cut,
        r.test_disagreements,
        r.test_samples
    );
}
