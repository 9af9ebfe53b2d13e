//! How perception is set up: its configuration, and the calibrated exits it starts with.

use super::super::config::NodeConfig;
use super::super::learn::LearnSettings;
use super::super::retrain::RetrainConfig;
use super::HitPolicy;
use crate::cache::enabled::Exit;
use crate::cache::ExitOn;
use candle_core::Device;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How perception uses the detector and its exits.
#[derive(Clone, Debug)]
pub struct PerceptionConfig {
    /// What a cache hit does to the rest of the frame.
    pub policy: HitPolicy,
    /// Detector score at which a detection counts as a pedestrian.
    pub score_thresh: f32,
    /// Capture -> last alert; `alert_then_continue` runs full detection only within it.
    pub deadline: Duration,
    /// Retrain the exits in the background (`None`: off). Its `tolerance` is replaced by the
    /// calibration's.
    pub retrain: Option<RetrainConfig>,
    /// Learn exits on the drive ([`crate::node::learn`]); `None`: off.
    pub learn: Option<LearnPlan>,
    /// At stop, how long to wait for the retrainer once it was told to cancel.
    pub stop_grace: Duration,
}

/// Where and how perception learns its exits.
#[derive(Clone, Debug)]
pub struct LearnPlan {
    /// Versions go to `DIR/v0001/`, ...
    pub learn_dir: PathBuf,
    /// How it learns.
    pub settings: LearnSettings,
}

impl Default for PerceptionConfig {
    fn default() -> Self {
        Self {
            policy: HitPolicy::Exit,
            score_thresh: 0.5,
            deadline: Duration::from_millis(100),
            retrain: None,
            learn: None,
            stop_grace: Duration::from_millis(500),
        }
    }
}

impl PerceptionConfig {
    /// The perception part of a node config (already validated).
    pub fn from_node_config(cfg: &NodeConfig) -> Self {
        Self {
            policy: cfg.policy,
            score_thresh: cfg.score_thresh(),
            deadline: Duration::from_secs_f64(cfg.deadline_ms / 1e3),
            retrain: cfg.retrain.then(RetrainConfig::default),
            learn: cfg.learns().then(|| LearnPlan {
                learn_dir: cfg.learn_dir_or_default(),
                settings: cfg.learn.clone(),
            }),
            ..Self::default()
        }
    }
}

/// Calibrated cache exits, as perception uses them.
#[derive(Clone, Debug)]
pub struct CacheExits {
    /// The model they were calibrated for.
    pub model: String,
    /// The selected exits, in network order.
    pub exits: Vec<Exit>,
    /// Which answers may exit early.
    pub policy: ExitOn,
    /// Class meaning "pedestrian present".
    pub positive: usize,
    /// The calibration's accuracy-drop budget (the retrainer judges candidates with it).
    pub tolerance: f64,
    /// Its version, when it is one of a learn dir's.
    pub version: Option<u32>,
}

impl CacheExits {
    /// Load a calibration folder (`exits.ron` + `heads.safetensors`), or a learn dir's latest
    /// version, heads on `device` (the detector's).
    pub fn load(dir: &Path, device: &Device) -> crate::Result<Self> {
        let (dir, version) = crate::node::learn::versions::resolve_calib(dir)?;
        let (f, exits) = crate::cache::files::load(&dir, device)?;
        Ok(Self {
            model: f.model,
            exits,
            policy: f.policy,
            positive: f.positive,
            tolerance: f.tolerance,
            version,
        })
    }
}
