//! A replay scenario (`sim/*.ron`): the node's keys ([`NodeConfig`]) plus what replaying adds —
//! the sequences, the camera rate, ground truth and which frames. Validated at load; errors name
//! the file, the line and the reason.

use crate::node::config::{
    check_range, default_deadline, default_device, default_model, default_queue, parse_ron, read,
    NodeConfig,
};
use crate::node::learn::LearnSettings;
use crate::node::HitPolicy;
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

/// Camera rate, frames/s (a frame every 100 s up to 10 kHz); `max_speed` replays faster.
pub const FPS: RangeInclusive<f64> = 0.01..=10_000.0;
/// Frames to replay (0 = all).
pub const LIMIT: RangeInclusive<usize> = 0..=100_000_000;
/// Person pixels that make a frame "pedestrian present" (a frame has at most ~100 M pixels).
pub const GT_MIN_PIXELS: RangeInclusive<usize> = 1..=100_000_000;

fn default_gt_min_pixels() -> usize {
    2000
}

// The node's keys are spelled out again (not flattened) because serde cannot combine
// `flatten` with `deny_unknown_fields`, and unknown keys must be refused with their line.
/// A replay scenario; see the module doc. Keys shared with [`NodeConfig`] mean the same there.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default = "default_model")]
    pub model: String,
    #[serde(default)]
    pub weights: Option<PathBuf>,
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default)]
    pub calib: Option<PathBuf>,
    #[serde(default)]
    pub standin_weights: bool,
    #[serde(default = "default_deadline")]
    pub deadline_ms: f64,
    #[serde(default)]
    pub policy: HitPolicy,
    #[serde(default = "default_queue")]
    pub queue: usize,
    #[serde(default)]
    pub score_thresh: Option<f32>,
    #[serde(default)]
    pub retrain: bool,
    #[serde(default)]
    pub learn_dir: Option<PathBuf>,
    #[serde(default)]
    pub learn: LearnSettings,
    /// Cityscapes-style folders, image folders, image files or videos, replayed in order.
    pub sources: Vec<PathBuf>,
    /// Camera rate (frames/s); ignored when `max_speed`.
    #[serde(default)]
    pub fps: Option<f64>,
    /// Replay as fast as perception goes, in lockstep (no drops; deterministic).
    #[serde(default)]
    pub max_speed: bool,
    /// Ground truth: a frame shows a pedestrian with at least this many person pixels.
    #[serde(default = "default_gt_min_pixels")]
    pub gt_min_pixels: usize,
    /// Stop after this many frames (0 = all).
    #[serde(default)]
    pub limit: usize,
    /// Keep the per-frame records of only the latest this many frames (0 = all): the report's
    /// per-frame figures (latency percentiles, hits, FLOPs, presence) then cover those frames,
    /// its counts every frame. For long runs, where keeping every record grows memory.
    #[serde(default)]
    pub keep_records: usize,
    /// Only these frame numbers of each Cityscapes sequence, half-open, e.g. `(18, 30)`.
    #[serde(default)]
    pub seq_frames: Option<(usize, usize)>,
    /// Only these Cityscapes sequences (`city_SSSSSS`), when not empty.
    #[serde(default)]
    pub seq: Vec<String>,
    /// Leave out these Cityscapes sequences.
    #[serde(default)]
    pub not_seq: Vec<String>,
    /// The image topic of MCAP sources (default: their only image topic).
    #[serde(default)]
    pub topic: Option<String>,
}

impl Scenario {
    /// A scenario with defaults for everything but the sources (no rate yet: give `fps` or
    /// `max_speed`).
    pub fn with_sources(sources: Vec<PathBuf>) -> Self {
        let n = NodeConfig::default();
        Self {
            model: n.model,
            weights: n.weights,
            device: n.device,
            calib: n.calib,
            standin_weights: n.standin_weights,
            deadline_ms: n.deadline_ms,
            policy: n.policy,
            queue: n.queue,
            score_thresh: n.score_thresh,
            retrain: n.retrain,
            learn_dir: n.learn_dir,
            learn: n.learn,
            sources,
            fps: None,
            max_speed: false,
            gt_min_pixels: default_gt_min_pixels(),
            limit: 0,
            keep_records: 0,
            seq_frames: None,
            seq: Vec::new(),
            not_seq: Vec::new(),
            topic: None,
        }
    }

    /// The node's part.
    pub fn node(&self) -> NodeConfig {
        NodeConfig {
            model: self.model.clone(),
            weights: self.weights.clone(),
            device: self.device.clone(),
            calib: self.calib.clone(),
            standin_weights: self.standin_weights,
            deadline_ms: self.deadline_ms,
            policy: self.policy,
            queue: self.queue,
            score_thresh: self.score_thresh,
            retrain: self.retrain,
            learn_dir: self.learn_dir.clone(),
            learn: self.learn.clone(),
        }
    }

    /// Parse and validate a RON file.
    pub fn load(path: &Path) -> crate::Result<Self> {
        let text = read(path)?;
        parse_ron(&text, &path.display().to_string(), Self::validate)
    }

    /// Parse and validate RON text; `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> crate::Result<Self> {
        parse_ron(text, name, Self::validate)
    }

    /// The camera rate the replay runs at: `None` at max speed.
    pub fn rate(&self) -> Option<f64> {
        if self.max_speed {
            None
        } else {
            self.fps
        }
    }

    /// Check values; on failure, the offending key and the reason.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        // Cheap range checks first: a bad number is reported before any file is looked at.
        if let Some(f) = self.fps {
            check_range("fps", f, FPS).map_err(|r| ("fps", r))?;
        }
        if self.fps.is_none() && !self.max_speed {
            return Err(("fps", "give fps or max_speed: true".into()));
        }
        check_range("limit", self.limit, LIMIT).map_err(|r| ("limit", r))?;
        check_range("keep_records", self.keep_records, LIMIT).map_err(|r| ("keep_records", r))?;
        check_range("gt_min_pixels", self.gt_min_pixels, GT_MIN_PIXELS)
            .map_err(|r| ("gt_min_pixels", r))?;
        if let Some((lo, hi)) = self.seq_frames {
            if lo >= hi {
                return Err((
                    "seq_frames",
                    format!("seq_frames ({lo}, {hi}) is empty: give (first, last + 1)"),
                ));
            }
        }
        self.node().validate()?;
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_file_line_and_reason() {
        let e = Scenario::parse(
            "(\n  sources: [\"src\"],\n  fps: 17.0,\n  bogus: 1,\n)",
            "x.ron",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("x.ron:4:"), "{e}");
        assert!(e.contains("bogus"), "{e}");
        for (fps, shown) in [("-1.0", "-1.0"), ("1e-300", "1e-300"), ("1e300", "1e300")] {
            let e = Scenario::parse(
                &format!("(\n  sources: [\"src\"],\n  fps: {fps},\n)"),
                "y.ron",
            )
            .unwrap_err()
            .to_string();
            assert_eq!(
                e,
                format!("y.ron:3: fps must be in 0.01..=10000, got {shown}")
            );
        }
        let ok = Scenario::parse(
            "(sources: [\"src\"], max_speed: true, policy: alert_then_continue)",
            "z",
        )
        .unwrap();
        assert_eq!(ok.policy, HitPolicy::AlertThenContinue);
        assert_eq!(ok.rate(), None);
        let ok = Scenario::parse(
            "(sources: [\"src\"], max_speed: true, seq_frames: (18, 30), not_seq: [\"a_000001\"])",
            "w",
        )
        .unwrap();
        assert_eq!(ok.seq_frames, Some((18, 30)));
        assert_eq!(ok.not_seq, ["a_000001"]);
        let e = Scenario::parse(
            "(\n  sources: [\"src\"],\n  fps: 17.0,\n  seq_frames: (30, 18),\n)",
            "v.ron",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("v.ron:4: seq_frames (30, 18) is empty"),
            "{e}"
        );
        let e = Scenario::parse(
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
    fn every_number_is_bounded_with_its_line() {
        let cases = [
            ("deadline_ms: 1e300", "deadline_ms must be in 0.1..=3600000"),
            ("queue: 100000", "queue must be in 1..=64, got 100000"),
            ("limit: 1000000000000", "limit must be in 0..=100000000"),
            (
                "keep_records: 1000000000000",
                "keep_records must be in 0..=100000000",
            ),
            (
                "gt_min_pixels: 0",
                "gt_min_pixels must be in 1..=100000000, got 0",
            ),
            (
                "score_thresh: -0.5",
                "score_thresh must be in 0..=1, got -0.5",
            ),
        ];
        for (line, want) in cases {
            let text = format!("(\n  sources: [\"src\"],\n  fps: 17.0,\n  {line},\n)");
            let e = Scenario::parse(&text, "b.ron").unwrap_err().to_string();
            assert!(e.starts_with(&format!("b.ron:4: {want}")), "{line}: {e}");
        }
    }
}
