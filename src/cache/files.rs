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
///
/// Each file is replaced atomically; across files, `exits.ron` is written last and records the
/// sha256 of the `heads.safetensors` it goes with, so a run killed between the two leaves a pair
/// that [`load`] refuses by name instead of running old thresholds on new heads.
pub fn save(dir: &Path, cal: &Calibration) -> crate::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tensors = HashMap::new();
    for (layer, head) in &cal.heads {
        tensors.extend(head.to_tensors(layer));
    }
    let heads = safetensors::serialize(tensors.iter(), None)
        .with_context(|| format!("writing {}", dir.join(HEADS).display()))?;
    write(&dir.join(HEADS), &heads)?;
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
    let mut exits = cal.exits_file.clone();
    exits.heads_sha256 = Some(sha256_hex(&heads));
    let ron = ron::ser::to_string_pretty(&exits, ron::ser::PrettyConfig::default())?;
    write(&dir.join(EXITS), ron.as_bytes())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every file of a calibration is replaced whole or not at all ([`crate::fsio::write_atomic`]).
fn write(path: &Path, bytes: &[u8]) -> crate::Result<()> {
    crate::fsio::write_atomic(path, bytes)
}

/// Largest `exits.ron` read: a calibration is a few KB per exit.
pub const MAX_EXITS_FILE_BYTES: u64 = 1 << 20;
/// Largest `heads.safetensors` read: heads are kilobytes to a few MB each.
pub const MAX_HEADS_FILE_BYTES: u64 = 256 << 20;

/// Read `exits.ron`; malformed RON or unknown keys fail with the file, line and reason. What it
/// says is checked on its own here; against the detector by [`ExitsFile::check_detector`].
pub fn read_exits(dir: &Path) -> crate::Result<ExitsFile> {
    let path = dir.join(EXITS);
    let text = crate::fsio::read_text_limited(&path, MAX_EXITS_FILE_BYTES, "exits file")
        .map_err(|e| crate::err!("loading {}", e.one_line()))?;
    parse_exits(&text, &path)
}

/// Check the calibration in `dir` against `det` ([`ExitsFile::check_detector`]): the one-line
/// error names `dir/exits.ron`.
pub fn check_dir<D>(dir: &Path, det: &D) -> crate::Result<()>
where
    D: crate::cache::calibration::CacheableDetector,
    D::Output: crate::detect::TeacherTarget,
{
    read_exits(dir)?.check_detector(det)
}

/// The contents of an `exits.ron` read from `path` (which only names it in errors).
pub fn parse_exits(text: &str, path: &Path) -> crate::Result<ExitsFile> {
    let mut f: ExitsFile = ron::de::from_str(text)
        .map_err(|e| crate::err!("{}:{}: {}", path.display(), e.position, e.code))?;
    f.source = Some(path.to_path_buf());
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
        if let Some(h) = &e.head {
            h.validate()
                .map_err(|err| crate::err!("{}: exit {}: {err}", path.display(), e.layer))?;
        }
    }
    Ok(f)
}

/// Load a calibration directory: the exits file and the selected exits with their heads, on
/// `device` (the detector's, so heads read its activations where they are). Before use, check
/// the file against the detector ([`ExitsFile::check_detector`]).
pub fn load(dir: &Path, device: &Device) -> crate::Result<(ExitsFile, Vec<Exit>)> {
    let f = read_exits(dir)?;
    let heads_path = dir.join(HEADS);
    let bytes = crate::fsio::read_limited(&heads_path, MAX_HEADS_FILE_BYTES, "heads file")
        .map_err(|e| crate::err!("loading {}", e.one_line()))?;
    let exits = load_heads(&f, &bytes, &heads_path, device)?;
    Ok((f, exits))
}

/// The selected exits of `f` with their heads from `heads.safetensors` bytes (`path` names
/// them in errors): every head tensor is checked against the shape its architecture and the
/// exit's channel count give.
pub fn load_heads(
    f: &ExitsFile,
    bytes: &[u8],
    path: &Path,
    device: &Device,
) -> crate::Result<Vec<Exit>> {
    if let Some(want) = &f.heads_sha256 {
        crate::ensure!(
            *want == sha256_hex(bytes),
            "loading {}: not the heads its exits.ron was written with (sha256 differs; a \
             calibration was interrupted or the files were mixed: rerun calibrate)",
            path.display()
        );
    }
    let map = crate::detect::weights::parse_safetensors(bytes, device)
        .map_err(|e| crate::err!("loading {}: {}", path.display(), e.one_line()))?;
    let mut exits = Vec::new();
    for e in f.exits.iter().filter(|e| e.selected) {
        let arch = e
            .head
            .clone()
            .ok_or_else(|| crate::err!("{}: exit {} has no head", path.display(), e.layer))?;
        let head = CacheHead::from_tensors(arch, e.channels, &map, &e.layer)
            .map_err(|err| crate::err!("loading {}: exit {}: {err}", path.display(), e.layer))?;
        exits.push(e.to_exit(head));
    }
    Ok(exits)
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
