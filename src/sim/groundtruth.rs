//! Ground truth from Cityscapes label maps: is a pedestrian visible in this frame?

use std::path::{Path, PathBuf};

/// Cityscapes label ids.
pub const PERSON: u8 = 24;
pub const RIDER: u8 = 25;

/// The `*_gtFine_labelIds.png` for a `*_leftImg8bit.*` frame: beside it, or in a `gtFine*`
/// folder that mirrors the frame's `leftImg8bit*` folder (`.../leftImg8bit_sequence/train/aachen/x`
/// -> `.../gtFine*/train/aachen/x`).
pub fn label_map_for(frame: &Path) -> Option<PathBuf> {
    let name = frame.file_name()?.to_str()?;
    let stem = name.split("_leftImg8bit").next()?;
    if stem.len() == name.len() {
        return None;
    }
    let file = format!("{stem}_gtFine_labelIds.png");
    let beside = frame.with_file_name(&file);
    if beside.exists() {
        return Some(beside);
    }
    // Walk up to the leftImg8bit* folder and look in its gtFine* siblings.
    let comps: Vec<&std::ffi::OsStr> = frame.parent()?.iter().collect();
    let k = comps
        .iter()
        .rposition(|c| c.to_str().is_some_and(|s| s.starts_with("leftImg8bit")))?;
    let base: PathBuf = comps[..k].iter().collect();
    let rest: PathBuf = comps[k + 1..].iter().collect();
    let mut siblings: Vec<PathBuf> = std::fs::read_dir(&base)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("gtFine"))
        })
        .collect();
    siblings.sort();
    siblings
        .into_iter()
        .map(|g| g.join(&rest).join(&file))
        .find(|p| p.exists())
}

/// Pixels of `label` in a label-id map.
pub fn count_label(path: &Path, label: u8) -> anyhow::Result<usize> {
    let img = image::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let gray = img.to_luma8();
    Ok(gray.as_raw().iter().filter(|&&v| v == label).count())
}
