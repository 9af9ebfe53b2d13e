//! The node's configuration (RON), validated at load, and the ranges every configurable value is
//! held to. Errors name the file, the line where known, and the reason. Relative paths are taken
//! from the current directory.
//!
//! A replay scenario (`sim/*.ron`, `sim::scenario::Scenario`) holds these keys too, plus
//! what replaying adds (sources, camera rate, ground truth).

use super::alert::HitPolicy;
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
pub(crate) fn default_score() -> f32 {
    0.5
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
    #[serde(default = "default_score")]
    pub score_thresh: f32,
    /// Retrain the cache exits in the background on the frames the full detector labels, and
    /// swap them in between frames (needs `calib`). Alert streams are then timing-dependent.
    #[serde(default)]
    pub retrain: bool,
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
            score_thresh: default_score(),
            retrain: false,
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
        check_range("score_thresh", self.score_thresh, SCORE_THRESH)
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
        if let Some(c) = &self.calib {
            if !c.is_dir() {
                return Err(("calib", format!("{}: no such folder", c.display())));
            }
        }
        Ok(())
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
