//! The learner's settings (RON `learn: (...)`), checked when loaded.

use serde::{Deserialize, Serialize};

/// How the node learns (RON `learn: (...)`; every key optional).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearnSettings {
    /// Share of the frames a hit resolved that are audited (full detection off the critical
    /// path).
    pub audit_fraction: f64,
    /// Also audit every hit while perception would otherwise idle before the next frame.
    pub audit_when_idle: bool,
    /// Threads of the learner's own pool.
    pub threads: usize,
    /// Share of one core each learner thread may take while perception is mid-frame (it runs
    /// freely while perception idles).
    pub cpu_share: f64,
    /// Scheduling priority of the learner's threads (Linux nice value, 0..=19): above 0, the
    /// kernel runs perception first when both want a core.
    pub nice: i32,
    /// Versions kept in the learn dir (the oldest go).
    pub keep_versions: usize,
    /// Units in the store before the first calibration.
    pub min_units: usize,
    /// Share of the store new since the last calibration that triggers the next (paper: 20%).
    pub fresh_fraction: f64,
    /// Medial store bound (units).
    pub store_capacity: usize,
    /// Accuracy-drop budget X of the calibrations.
    pub tolerance: f64,
    /// Audited hits of the live version judged together (the latest this many).
    pub audit_window: usize,
    /// Audited hits of a version before its live accuracy is judged.
    pub min_audits: usize,
    /// Recalibrate every this many frames as well (0: never; for tests of the swap under load).
    pub force_every: usize,
    /// Seed of the store's split and the heads' initialisation.
    pub seed: u64,
}

impl Default for LearnSettings {
    fn default() -> Self {
        Self {
            audit_fraction: 0.05,
            audit_when_idle: true,
            threads: 1,
            cpu_share: 0.5,
            nice: 19,
            keep_versions: 5,
            min_units: 100,
            fresh_fraction: 0.2,
            store_capacity: 1000,
            tolerance: 0.02,
            audit_window: 100,
            min_audits: 25,
            force_every: 0,
            seed: 0,
        }
    }
}

impl LearnSettings {
    /// Check values; on failure, the offending key and the reason.
    pub fn validate(&self) -> Result<(), String> {
        use crate::node::config::check_range;
        check_range("learn.audit_fraction", self.audit_fraction, 0.0..=1.0)?;
        check_range("learn.threads", self.threads, 1..=64)?;
        check_range("learn.cpu_share", self.cpu_share, 0.0..=1.0)?;
        check_range("learn.nice", self.nice, 0..=19)?;
        check_range("learn.keep_versions", self.keep_versions, 1..=10_000)?;
        check_range("learn.min_units", self.min_units, 10..=100_000)?;
        check_range("learn.fresh_fraction", self.fresh_fraction, 0.01..=1.0)?;
        check_range("learn.store_capacity", self.store_capacity, 10..=100_000)?;
        check_range("learn.tolerance", self.tolerance, 0.0..=0.99)?;
        check_range("learn.audit_window", self.audit_window, 1..=100_000)?;
        check_range("learn.min_audits", self.min_audits, 1..=100_000)?;
        check_range("learn.force_every", self.force_every, 0..=100_000_000)?;
        if self.min_units > self.store_capacity {
            return Err(format!(
                "learn.min_units ({}) is above learn.store_capacity ({})",
                self.min_units, self.store_capacity
            ));
        }
        Ok(())
    }
}
