//! The node's configuration (RON scenarios under `sim/`), validated at load. Errors name the
//! file, the line and column where known, and the reason. Relative paths are taken from the
//! current directory (the repository root for the bundled scenarios).

use super::HitPolicy;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

fn default_model() -> String {
    "ssdlite-ped".into()
}
fn default_device() -> String {
    "cpu".into()
}
fn default_deadline() -> f64 {
    100.0
}
fn default_queue() -> usize {
    2
}
fn default_score() -> f32 {
    0.5
}
fn default_gt_min_pixels() -> usize {
    2000
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// `ssdlite-ped` or `maskrcnn-r50-fpn`.
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
    /// Cityscapes-style folders, image folders, image files or videos, replayed in order.
    pub sources: Vec<PathBuf>,
    /// Camera rate (frames/s); ignored when `max_speed`.
    #[serde(default)]
    pub fps: Option<f64>,
    /// Replay as fast as perception goes, in lockstep (no drops; deterministic).
    #[serde(default)]
    pub max_speed: bool,
    /// Per-frame deadline, capture -> last alert, ms.
    #[serde(default = "default_deadline")]
    pub deadline_ms: f64,
    #[serde(default)]
    pub policy: HitPolicy,
    /// Pending frames between source and perception (the oldest is dropped beyond it).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Detector score at which a detection counts as a pedestrian.
    #[serde(default = "default_score")]
    pub score_thresh: f32,
    /// Ground truth: a frame shows a pedestrian with at least this many person pixels.
    #[serde(default = "default_gt_min_pixels")]
    pub gt_min_pixels: usize,
    /// Stop after this many frames (0 = all).
    #[serde(default)]
    pub limit: usize,
    /// Only these frame numbers of each Cityscapes sequence, half-open, e.g. `(18, 30)`.
    #[serde(default)]
    pub seq_frames: Option<(usize, usize)>,
    /// Only these Cityscapes sequences (`city_SSSSSS`), when not empty.
    #[serde(default)]
    pub seq: Vec<String>,
    /// Leave out these Cityscapes sequences.
    #[serde(default)]
    pub not_seq: Vec<String>,
    /// Mask R-CNN only: deterministic stand-in weights instead of a weights file, for latency
    /// measurements where torchvision's COCO weights are not available (its detections mean
    /// nothing).
    #[serde(default)]
    pub standin_weights: bool,
    /// Retrain the cache exits in the background on the frames the full detector labels, and
    /// swap them in between frames (needs `calib`). Alert streams are then timing-dependent.
    #[serde(default)]
    pub retrain: bool,
}

impl NodeConfig {
    /// A config with defaults for everything but the sources.
    pub fn with_sources(sources: Vec<PathBuf>) -> Self {
        Self {
            model: default_model(),
            weights: None,
            device: default_device(),
            calib: None,
            sources,
            fps: None,
            max_speed: false,
            deadline_ms: default_deadline(),
            policy: HitPolicy::default(),
            queue: default_queue(),
            score_thresh: default_score(),
            gt_min_pixels: default_gt_min_pixels(),
            limit: 0,
            seq_frames: None,
            seq: Vec::new(),
            not_seq: Vec::new(),
            standin_weights: false,
            retrain: false,
        }
    }

    /// Parse and validate a RON file.
    pub fn load(path: &Path) -> crate::Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| crate::err!("{}: {e}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse and validate RON text; `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> crate::Result<Self> {
        // Optional values are written plainly (`fps: 17.0`, not `fps: Some(17.0)`).
        let cfg: NodeConfig = ron::Options::default()
            .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
            .from_str(text)
            .map_err(|e| {
                crate::err!("{name}:{}:{}: {}", e.position.line, e.position.col, e.code)
            })?;
        cfg.validate()
            .map_err(|(key, reason)| match line_of(text, key) {
                Some(l) => crate::err!("{name}:{l}: {reason}"),
                None => crate::err!("{name}: {reason}"),
            })?;
        Ok(cfg)
    }

    /// Check values; on failure, the offending key and the reason.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !matches!(self.model.as_str(), "ssdlite-ped" | "maskrcnn-r50-fpn") {
            return Err((
                "model",
                format!(
                    "unknown model {:?} (ssdlite-ped | maskrcnn-r50-fpn)",
                    self.model
                ),
            ));
        }
        if let Err(reason) = crate::runtime::DeviceSpec::parse_usable(&self.device) {
            return Err(("device", reason));
        }
        if let Some(f) = self.fps {
            if !(f.is_finite() && f > 0.0) {
                return Err(("fps", format!("fps must be > 0, got {f}")));
            }
        }
        if self.fps.is_none() && !self.max_speed {
            return Err(("fps", "give fps or max_speed: true".into()));
        }
        if !(self.deadline_ms.is_finite() && self.deadline_ms > 0.0) {
            return Err((
                "deadline_ms",
                format!("deadline_ms must be > 0, got {}", self.deadline_ms),
            ));
        }
        if self.queue < 1 {
            return Err(("queue", "queue must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&self.score_thresh) {
            return Err((
                "score_thresh",
                format!("score_thresh must be in 0..=1, got {}", self.score_thresh),
            ));
        }
        if self.sources.is_empty() {
            return Err(("sources", "no sources".into()));
        }
        for s in &self.sources {
            if !s.exists() {
                return Err((
                    "sources",
                    format!("{}: no such file or folder", s.display()),
                ));
            }
        }
        if let Some((lo, hi)) = self.seq_frames {
            if lo >= hi {
                return Err((
                    "seq_frames",
                    format!("seq_frames ({lo}, {hi}) is empty: give (first, last + 1)"),
                ));
            }
        }
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
    fn errors_name_file_line_and_reason() {
        let e = NodeConfig::parse(
            "(\n  sources: [\"src\"],\n  fps: 17.0,\n  bogus: 1,\n)",
            "x.ron",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("x.ron:4:"), "{e}");
        assert!(e.contains("bogus"), "{e}");
        let e = NodeConfig::parse("(\n  sources: [\"src\"],\n  fps: -1.0,\n)", "y.ron")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "y.ron:3: fps must be > 0, got -1");
        let ok = NodeConfig::parse(
            "(sources: [\"src\"], max_speed: true, policy: alert_then_continue)",
            "z",
        )
        .unwrap();
        assert_eq!(ok.policy, HitPolicy::AlertThenContinue);
        let ok = NodeConfig::parse(
            "(sources: [\"src\"], max_speed: true, seq_frames: (18, 30), not_seq: [\"a_000001\"])",
            "w",
        )
        .unwrap();
        assert_eq!(ok.seq_frames, Some((18, 30)));
        assert_eq!(ok.not_seq, ["a_000001"]);
        let e = NodeConfig::parse(
            "(\n  sources: [\"src\"],\n  fps: 17.0,\n  seq_frames: (30, 18),\n)",
            "v.ron",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("v.ron:4: seq_frames (30, 18) is empty"),
            "{e}"
        );
        let e = NodeConfig::parse(
            "(\n  sources: [\"src\"],\n  fps: 17.0,\n  standin_weights: true,\n)",
            "s.ron",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "s.ron:4: standin_weights is for maskrcnn-r50-fpn, not ssdlite-ped"
        );
    }

    #[test]
    fn device_is_checked_at_load_with_file_and_line() {
        let ron = |device: &str| {
            format!("(\n  sources: [\"src\"],\n  fps: 17.0,\n  device: {device:?},\n)")
        };
        assert_eq!(
            NodeConfig::parse(&ron("cpu"), "d.ron").unwrap().device,
            "cpu"
        );
        let cfg = NodeConfig::parse("(sources: [\"src\"], fps: 17.0)", "d.ron").unwrap();
        assert_eq!(cfg.device, "cpu", "default");
        for bad in ["gpu", "cuda:x", "CUDA", ""] {
            let e = NodeConfig::parse(&ron(bad), "d.ron")
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!("d.ron:4: unknown device {bad:?} (cpu | cuda | cuda:N)")
            );
        }
        let e = NodeConfig::parse(
            "(\n  sources: [\"src\"],\n  fps: 17.0,\n  device: 0,\n)",
            "d.ron",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("d.ron:4:"), "{e}");
        for cuda in ["cuda", "cuda:1"] {
            let r = NodeConfig::parse(&ron(cuda), "d.ron");
            if cfg!(feature = "cuda") {
                assert_eq!(r.unwrap().device, cuda);
            } else {
                assert_eq!(
                    r.unwrap_err().to_string(),
                    format!(
                        "d.ron:4: device {cuda}: this binary was built without --features cuda; \
                         build with ../shared/tools/cuda/build-cuda.sh"
                    )
                );
            }
        }
    }
}
