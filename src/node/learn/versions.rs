//! A learn dir: every exit set the node adopted, as numbered calibration folders (`v0001/`,
//! `v0002/`, ...: what `pedcache calibrate` writes, plus `provenance.json`). A version is written
//! under a temporary name and renamed into place, so a folder named `vNNNN` is always whole;
//! numbers only grow; the oldest beyond the kept count are removed.

use crate::cache::calibration::Calibration;
use crate::error::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file beside a version's calibration files saying where it came from.
pub const PROVENANCE: &str = "provenance.json";

/// Why a calibration ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The store first held enough units (no set yet).
    First,
    /// At least the configured share (the paper's 20%) of the store is new since the last one.
    Fresh,
    /// Audited live accuracy fell below 1 - tolerance: the set was withdrawn.
    Accuracy,
    /// Every N frames, as configured (tests of the swap under load).
    Forced,
}

/// Where an adopted version came from, and how it fared on held-out units.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Its number.
    pub version: u32,
    /// The model it was calibrated for.
    pub model: String,
    /// The latest frame the learner had seen when it adopted the set.
    pub frame: usize,
    /// Why its calibration ran.
    pub trigger: Trigger,
    /// Frames the learner had units from, and units in the store.
    pub frames_seen: usize,
    /// Units in the medial store.
    pub store_units: usize,
    /// Held-out (test split) units the candidate was judged on, and its answers there that
    /// differ from the teacher's.
    pub val_units: usize,
    /// Its errors on them.
    pub val_errors: usize,
    /// Units of those it answered (hits), and what the set it replaced scored.
    pub val_hits: usize,
    /// The replaced set's errors and hits on the same units.
    pub replaced_errors: usize,
    /// Hits of the replaced set.
    pub replaced_hits: usize,
    /// The version it replaced, if any.
    pub replaced: Option<u32>,
    /// Selected exit layers.
    pub exits: Vec<String>,
}

/// `v0007` -> 7.
fn parse_version(name: &str) -> Option<u32> {
    let digits = name.strip_prefix('v')?;
    (digits.len() >= 4 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The folder of version `v` in `dir`.
pub fn version_dir(dir: &Path, v: u32) -> PathBuf {
    dir.join(format!("v{v:04}"))
}

/// Versions present in `dir`, ascending (an absent folder has none).
pub fn versions(dir: &Path) -> crate::Result<Vec<u32>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => crate::bail!("reading learn dir {}: {e}", dir.display()),
    };
    let mut v: Vec<u32> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| parse_version(&e.file_name().to_string_lossy()))
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// The newest version in `dir`, if it is a learn dir with one.
pub fn latest(dir: &Path) -> crate::Result<Option<u32>> {
    Ok(versions(dir)?.last().copied())
}

/// Write `cal` as version `v` of `dir` (created if needed) with its provenance, atomically: the
/// files go to a temporary folder that is renamed to `vNNNN` once complete. Refuses a `v` not
/// above every version present. Then removes the oldest versions beyond `keep` (at least 1).
pub fn write_version(
    dir: &Path,
    v: u32,
    cal: &Calibration,
    prov: &Provenance,
    keep: usize,
) -> crate::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some(last) = latest(dir)? {
        crate::ensure!(
            v > last,
            "{}: version {v} is not above the latest there ({last})",
            dir.display()
        );
    }
    let tmp = dir.join(format!(".v{v:04}.partial-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    crate::cache::files::save(&tmp, cal)?;
    crate::fsio::write_atomic(
        &tmp.join(PROVENANCE),
        serde_json::to_string_pretty(prov)?.as_bytes(),
    )?;
    let dest = version_dir(dir, v);
    std::fs::rename(&tmp, &dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    let all = versions(dir)?;
    for old in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        let p = version_dir(dir, *old);
        if let Err(e) = std::fs::remove_dir_all(&p) {
            log::warn!("removing old version {}: {e}", p.display());
        }
    }
    Ok(dest)
}

/// Read a version's provenance.
pub fn read_provenance(version_dir: &Path) -> crate::Result<Provenance> {
    let p = version_dir.join(PROVENANCE);
    let text = crate::fsio::read_text_limited(&p, 1 << 20, "provenance file")
        .map_err(|e| crate::err!("loading {}", e.one_line()))?;
    serde_json::from_str(&text).map_err(|e| crate::err!("{}: {e}", p.display()))
}

/// What `--calib DIR` names: a calibration folder itself (`exits.ron` in it), or a learn dir,
/// whose latest version is used. Returns the folder to load and its version.
pub fn resolve_calib(dir: &Path) -> crate::Result<(PathBuf, Option<u32>)> {
    if dir.join(crate::cache::files::EXITS).is_file() {
        return Ok((dir.to_path_buf(), None));
    }
    match latest(dir)? {
        Some(v) => Ok((version_dir(dir, v), Some(v))),
        None => crate::bail!(
            "{}: neither a calibration (no {}) nor a learn dir with a version (v0001/ ...)",
            dir.display(),
            crate::cache::files::EXITS
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_parse_strictly() {
        assert_eq!(parse_version("v0001"), Some(1));
        assert_eq!(parse_version("v12345"), Some(12345));
        for bad in ["v001", "w0001", "v00a1", ".v0001.partial-3", "v"] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn absent_dir_has_no_versions_and_resolving_it_says_why() {
        let d = std::env::temp_dir().join(format!("pedcache-noversions-{}", std::process::id()));
        assert_eq!(versions(&d).unwrap(), Vec::<u32>::new());
        let e = resolve_calib(&d).unwrap_err().to_string();
        assert!(e.contains("neither a calibration"), "{e}");
    }
}
