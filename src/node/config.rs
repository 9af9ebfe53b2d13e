//! The node's configuration (RON), validated at load, and the ranges every configurable value is
//! held to. Errors name the file, the line where known, and the reason. Relative paths are taken
//! from the current directory.
//!
//! A replay scenario (`sim/*.ron`, `sim::scenario::Scenario`) holds these keys too, plus
//! what replaying adds (sources, camera rate, ground truth).

use super::alert::HitPolicy;
use super::learn::LearnSettings;
use serde::{Deserialize, Serialize};
use std::fmt::{Debug, Display};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

/// Per-frame deadline, ms: a tenth of a millisecond to an hour.
pub const DEADLINE_MS: RangeInclusive<f64> = 0.1..=3_600_000.0;
/// Pending frames between source and perception (a frame is up to tens of MB).
pub const QUEUE: RangeInclusive<usize> = 1..=64;
/// Detector score thresholds.
pub const SCORE_THRESH: RangeInclusive<f32> = 0.0..=1.0;

/// `value` if it lies in `range` (NaN never does), else the reason naming `key` (the value in
/// `Debug` form, which writes 1e-300 as `1e-300`, not as 300 digits).
pub fn check_range<T: PartialOrd + Display + Debug + Copy>(
    key: &str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<T, String> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{key} must be in {}..={}, got {value:?}",
            range.start(),
            range.end()
        ))
    }
}

pub(crate) fn default_model() -> String {
    "ssdlite-ped".into()
}
pub(crate) fn default_device() -> String {
    "cpu".into()
}
pub(crate) fn default_deadline() -> f64 {
    100.0
}
pub(crate) fn default_queue() -> usize {
    2
}
/// The score a detection counts as a pedestrian at, when the config gives none: for the bundled
/// SSDLite, the operating point chosen on driving frames with recall first (0.25: recall 0.95,
/// precision 0.62 on the shared Cityscapes snippets; see models/ssdlite_ped.md); 0.5 otherwise.
pub fn default_score_for(model: &str) -> f32 {
    match model {
        "ssdlite-ped" => 0.25,
        _ => 0.5,
    }
}

/// What a node runs: the detector, its cache exits and how perception uses them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// `ssdlite-ped` or `maskrcnn-r50-fpn` (see [`crate::detect::registry`]).
    #[serde(default = "default_model")]
    pub model: String,
    /// Detector weights (SSDLite defaults to models/ssdlite_ped.safetensors).
    #[serde(default)]
    pub weights: Option<PathBuf>,
    /// Where the detector and the cache heads run: `cpu`, `cuda` or `cuda:N` (a CUDA device
    /// needs a binary built with `--features cuda`).
    #[serde(default = "default_device")]
    pub device: String,
    /// Calibrated cache exits; `None` runs the full detector on every frame.
    #[serde(default)]
    pub calib: Option<PathBuf>,
    /// Mask R-CNN only: deterministic stand-in weights instead of a weights file, for latency
    /// measurements where torchvision's COCO weights are not available (its detections mean
    /// nothing).
    #[serde(default)]
    pub standin_weights: bool,
    /// Per-frame deadline, capture -> last alert, ms.
    #[serde(default = "default_deadline")]
    pub deadline_ms: f64,
    #[serde(default)]
    /// What a cache hit does to the rest of the frame.
    pub policy: HitPolicy,
    /// Pending frames between source and perception (the oldest is dropped beyond it).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Detector score at which a detection counts as a pedestrian.
    /// (Default: the model's operating point, [`default_score_for`].)
    #[serde(default)]
    pub score_thresh: Option<f32>,
    /// Retrain the cache exits in the background on the frames the full detector labels, and
    /// swap them in between frames (needs `calib`). Alert streams are then timing-dependent.
    #[serde(default)]
    pub retrain: bool,
    /// Where `calib: auto` writes its versions (default `target/learned/<model>`); when it
    /// already holds versions, learning starts from the latest.
    #[serde(default)]
    pub learn_dir: Option<PathBuf>,
    /// How the node learns under `calib: auto` ([`LearnSettings`]).
    #[serde(default)]
    pub learn: LearnSettings,
}

/// `calib` value that makes the node learn its exits on the drive.
pub const CALIB_AUTO: &str = "auto";

/// Whether a `calib` value means "learn on the drive".
pub fn is_auto(calib: Option<&Path>) -> bool {
    calib.is_some_and(|c| c.as_os_str() == CALIB_AUTO)
}

/// The checks of the learning keys shared by the node config and the replay scenario.
pub(crate) fn validate_learning(
    calib: Option<&Path>,
    learn_dir: Option<&Path>,
    learn: &LearnSettings,
    retrain: bool,
) -> Result<(), (&'static str, String)> {
    let auto = is_auto(calib);
    if auto && retrain {
        return Err((
            "retrain",
            "calib: auto learns and recalibrates on its own; retrain is for a fixed calibration"
                .into(),
        ));
    }
    if learn_dir.is_some() && !auto {
        return Err((
            "learn_dir",
            "learn_dir is where calib: auto writes its versions (give calib: auto; to run a \
             learn dir's latest version without learning, give it as calib)"
                .into(),
        ));
    }
    if let Some(d) = learn_dir {
        if d.exists() && !d.is_dir() {
            return Err(("learn_dir", format!("{}: not a folder", d.display())));
        }
    }
    learn.validate().map_err(|e| ("learn", e))
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            model: default_model(),
            weights: None,
            device: default_device(),
            calib: None,
            standin_weights: false,
            deadline_ms: default_deadline(),
            policy: HitPolicy::default(),
            queue: default_queue(),
            score_thresh: None,
            retrain: false,
            learn_dir: None,
            learn: LearnSettings::default(),
        }
    }
}

impl NodeConfig {
    /// Parse and validate a RON file.
    pub fn load(path: &Path) -> crate::Result<Self> {
        let text = read(path)?;
        parse_ron(&text, &path.display().to_string(), Self::validate)
    }

    /// Parse and validate RON text; `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> crate::Result<Self> {
        parse_ron(text, name, Self::validate)
    }

    /// Check values; on failure, the offending key and the reason.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Err(e) = self.model.parse::<crate::detect::registry::ModelName>() {
            return Err(("model", e.to_string()));
        }
        if let Err(reason) = crate::runtime::DeviceSpec::parse_usable(&self.device) {
            return Err(("device", reason));
        }
        let key = |k: &'static str| move |reason: String| (k, reason);
        check_range("deadline_ms", self.deadline_ms, DEADLINE_MS).map_err(key("deadline_ms"))?;
        check_range("queue", self.queue, QUEUE).map_err(key("queue"))?;
        check_range("score_thresh", self.score_thresh(), SCORE_THRESH)
            .map_err(key("score_thresh"))?;
        if self.standin_weights {
            if self.model != "maskrcnn-r50-fpn" {
                return Err((
                    "standin_weights",
                    format!(
                        "standin_weights is for maskrcnn-r50-fpn, not {}",
                        self.model
                    ),
                ));
            }
            if self.weights.is_some() {
                return Err((
                    "standin_weights",
                    "give weights or standin_weights, not both".into(),
                ));
            }
            if self.calib.is_some() {
                return Err((
                    "standin_weights",
                    "stand-in weights run without cache exits (no calib)".into(),
                ));
            }
        }
        validate_learning(
            self.calib.as_deref(),
            self.learn_dir.as_deref(),
            &self.learn,
            self.retrain,
        )?;
        if self.retrain && self.calib.is_none() {
            return Err((
                "retrain",
                "retrain needs cache exits to retrain (calib)".into(),
            ));
        }
        if let Some(w) = &self.weights {
            if !w.is_file() {
                return Err(("weights", format!("{}: no such file", w.display())));
            }
        }
        if let Some(c) = self.calib.as_ref().filter(|c| !is_auto(Some(c))) {
            if !c.is_dir() {
                return Err(("calib", format!("{}: no such folder", c.display())));
            }
        }
        Ok(())
    }

    /// The score at which a detection counts as a pedestrian: the config's, or the model's
    /// operating point.
    pub fn score_thresh(&self) -> f32 {
        self.score_thresh
            .unwrap_or_else(|| default_score_for(&self.model))
    }

    /// Whether the node learns its exits on the drive (`calib: auto`).
    pub fn learns(&self) -> bool {
        is_auto(self.calib.as_deref())
    }

    /// The learn dir: `learn_dir`, or `target/learned/<model>`.
    pub fn learn_dir_or_default(&self) -> PathBuf {
        self.learn_dir
            .clone()
            .unwrap_or_else(|| Path::new("target/learned").join(&self.model))
    }

    /// The weights to load, as the registry takes them.
    pub fn weights_source(&self) -> crate::detect::registry::Weights {
        use crate::detect::registry::Weights;
        match (&self.weights, self.standin_weights) {
            (_, true) => Weights::Standin,
            (Some(p), false) => Weights::File(p.clone()),
            (None, false) => Weights::Default,
        }
    }
}

/// A file's text, with the file in the error.
pub(crate) fn read(path: &Path) -> crate::Result<String> {
    std::fs::read_to_string(path).map_err(|e| crate::err!("{}: {e}", path.display()))
}

/// Parse RON (optional values written plainly: `fps: 17.0`, not `fps: Some(17.0)`), then
/// validate; errors carry `name:line`.
pub(crate) fn parse_ron<T: serde::de::DeserializeOwned>(
    text: &str,
    name: &str,
    validate: impl Fn(&T) -> Result<(), (&'static str, String)>,
) -> crate::Result<T> {
    let text = &quote_bare_auto(text);
    let v: T = ron::Options::default()
        .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
        .from_str(text)
        .map_err(|e| crate::err!("{name}:{}:{}: {}", e.position.line, e.position.col, e.code))?;
    validate(&v).map_err(|(key, reason)| match line_of(text, key) {
        Some(l) => crate::err!("{name}:{l}: {reason}"),
        None => crate::err!("{name}: {reason}"),
    })?;
    Ok(v)
}

/// `calib: auto` as `calib: "auto"`: RON reads a bare identifier as a unit value whose name is
/// lost, so the one bare word the `calib` key takes is quoted before parsing (lines are kept, so
/// errors still name the right line).
fn quote_bare_auto(text: &str) -> String {
    let b = text.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let skip_ws = |mut i: usize| {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1;
        }
        i
    };
    let mut out = String::with_capacity(text.len() + 2);
    let (mut i, mut in_string, mut copied) = (0, false, 0);
    while i < b.len() {
        let c = b[i];
        if in_string {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_string = false;
            }
        } else if c == b'"' {
            in_string = true;
        } else if b[i..].starts_with(b"calib") && (i == 0 || !ident(b[i - 1])) {
            let colon = skip_ws(i + 5);
            if colon < b.len() && b[colon] == b':' {
                let v = skip_ws(colon + 1);
                let end = v + CALIB_AUTO.len();
                if b[v..].starts_with(CALIB_AUTO.as_bytes()) && (end == b.len() || !ident(b[end])) {
                    out.push_str(&text[copied..v]);
                    out.push('"');
                    out.push_str(CALIB_AUTO);
                    out.push('"');
                    (copied, i) = (end, end);
                    continue;
                }
            }
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

/// 1-based line of the first `key:` in the text.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            t.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_name_the_key_and_reject_nan_and_extremes() {
        assert_eq!(check_range("queue", 2, QUEUE), Ok(2));
        assert_eq!(
            check_range("queue", 0, QUEUE).unwrap_err(),
            "queue must be in 1..=64, got 0"
        );
        for bad in [f64::NAN, 1e300, 0.0, -5.0, f64::INFINITY] {
            let e = check_range("deadline_ms", bad, DEADLINE_MS).unwrap_err();
            assert!(
                e.starts_with("deadline_ms must be in 0.1..=3600000, got "),
                "{e}"
            );
        }
    }

    #[test]
    fn node_keys_are_checked_with_file_and_line() {
        let ok = NodeConfig::parse("(policy: alert_then_continue, queue: 4)", "n.ron").unwrap();
        assert_eq!(ok.policy, HitPolicy::AlertThenContinue);
        assert_eq!(ok.queue, 4);
        assert_eq!(ok.deadline_ms, 100.0, "default");
        let e = NodeConfig::parse("(\n  queue: 2,\n  deadline_ms: 1e300,\n)", "n.ron")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "n.ron:3: deadline_ms must be in 0.1..=3600000, got 1e300"
        );
        let e = NodeConfig::parse("(\n  score_thresh: 1.5,\n)", "n.ron")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "n.ron:2: score_thresh must be in 0..=1, got 1.5");
        let e = NodeConfig::parse("(\n  sources: [],\n)", "n.ron")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("n.ron:2:") && e.contains("sources"), "{e}");
        let e = NodeConfig::parse("(\n  standin_weights: true,\n)", "s.ron")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "s.ron:2: standin_weights is for maskrcnn-r50-fpn, not ssdlite-ped"
        );
    }

    #[test]
    fn calib_auto_is_read_bare_or_quoted_and_learning_keys_are_checked() {
        for text in ["(calib: auto)", "(calib: \"auto\")", "(\n  calib: auto,\n)"] {
            let c = NodeConfig::parse(text, "a.ron").unwrap();
            assert!(c.learns(), "{text}");
            assert_eq!(
                c.learn_dir_or_default(),
                Path::new("target/learned/ssdlite-ped")
            );
        }
        // A folder whose name starts with "auto" is a folder.
        let e = NodeConfig::parse("(calib: \"autoexits\")", "a.ron").unwrap_err();
        assert!(e.to_string().contains("autoexits: no such folder"), "{e}");
        let e = NodeConfig::parse("(\n  learn_dir: \"x\",\n)", "a.ron").unwrap_err();
        assert!(
            e.to_string().starts_with("a.ron:2: learn_dir is where"),
            "{e}"
        );
        let e = NodeConfig::parse("(\n  calib: auto,\n  learn: (cpu_share: 2.0),\n)", "a.ron")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "a.ron:3: learn.cpu_share must be in 0..=1, got 2.0"
        );
        let e = NodeConfig::parse("(calib: auto, learn: (audit: 1))", "a.ron").unwrap_err();
        assert!(e.to_string().contains("audit"), "{e}");
        // Inside a string nothing is touched; multi-byte text around it is fine.
        let e = NodeConfig::parse("(calib: \"é calib: auto\")", "a.ron").unwrap_err();
        assert!(
            e.to_string().contains("é calib: auto: no such folder"),
            "{e}"
        );
        assert!(NodeConfig::parse("(é calib: autoé)", "a.ron").is_err());
        assert!(NodeConfig::parse("(calib:auto)", "a.ron").unwrap().learns());
        let e = NodeConfig::parse("(calib: auto, retrain: true)", "a.ron").unwrap_err();
        assert!(e.to_string().contains("recalibrates on its own"), "{e}");
    }

    #[test]
    fn device_is_checked_at_load_with_file_and_line() {
        let ron = |device: &str| format!("(\n  queue: 2,\n  device: {device:?},\n)");
        assert_eq!(
            NodeConfig::parse(&ron("cpu"), "d.ron").unwrap().device,
            "cpu"
        );
        for bad in ["gpu", "cuda:x", "CUDA", ""] {
            let e = NodeConfig::parse(&ron(bad), "d.ron")
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!("d.ron:3: unknown device {bad:?} (cpu | cuda | cuda:N)")
            );
        }
        for cuda in ["cuda", "cuda:1"] {
            let r = NodeConfig::parse(&ron(cuda), "d.ron");
            if cfg!(feature = "cuda") {
                assert_eq!(r.unwrap().device, cuda);
            } else {
                assert_eq!(
                    r.unwrap_err().to_string(),
                    format!(
                        "d.ron:3: device {cuda}: this binary was built without --features cuda; \
                         build with ../shared/tools/cuda/build-cuda.sh"
                    )
                );
            }
        }
    }
}
