//! What a calibration produces: the contents of `exits.ron`, the trained heads, and the figures
//! of `report.json`.

use super::temperature::TemperatureFit;
use super::threshold::{CurvePoint, ThresholdChoice};
use crate::cache::enabled::Exit;
use crate::cache::head::{CacheHead, HeadArch};
use crate::cache::ExitOn;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One candidate layer's outcome, as written to `exits.ron`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitEntry {
    pub layer: String,
    pub stage: usize,
    pub channels: usize,
    /// None when the layer was dropped (its best head was near chance).
    pub head: Option<HeadArch>,
    pub dropped: Option<String>,
    pub temperature: f32,
    pub threshold: f32,
    /// X / 2^n for this exit's 1-based position n among kept exits.
    pub budget: f64,
    pub selected: bool,
    /// Head FLOPs (pooling included) and the detector FLOPs after this layer, per unit.
    pub c1: u64,
    pub c2: u64,
}

impl ExitEntry {
    /// The deployable exit this entry describes, with its trained `head`.
    pub fn to_exit(&self, head: CacheHead) -> Exit {
        Exit {
            stage: self.stage,
            layer: self.layer.clone(),
            head,
            temperature: self.temperature,
            theta: self.threshold,
            c1: self.c1,
        }
    }
}

/// `exits.ron`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitsFile {
    pub model: String,
    pub policy: ExitOn,
    pub tolerance: f64,
    pub classes: usize,
    pub positive: usize,
    /// FLOPs of the full detector per unit.
    pub full_flops: u64,
    pub exits: Vec<ExitEntry>,
    /// sha256 of the `heads.safetensors` written with this file (absent in older files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads_sha256: Option<String>,
    /// The file it was read from (not in the file), so later checks can name it.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// Per-exit figures for `report.json`.
#[derive(Clone, Debug, Serialize)]
pub struct ExitReport {
    pub layer: String,
    pub kept: bool,
    pub dropped: Option<String>,
    pub head: Option<String>,
    pub search: Vec<SearchRow>,
    pub val_accuracy: Option<f64>,
    pub temperature: Option<TemperatureFit>,
    pub threshold: Option<ThresholdChoice>,
    pub budget: f64,
    pub selected: bool,
    pub c1: u64,
    pub c2: u64,
    /// Hit rate / cache accuracy on the test split, as deployed in the selected subset.
    pub test_hits: Option<usize>,
    pub test_cache_accuracy: Option<f64>,
    pub curve_val: Vec<CurvePoint>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SearchRow {
    pub head: String,
    pub val_accuracy: f64,
    pub balanced_accuracy: f64,
    pub val_loss: f64,
    pub prior_loss: f64,
    pub flops: u64,
    pub score: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CalibReport {
    pub model: String,
    pub frames: usize,
    pub units: usize,
    pub split_sizes: [usize; 3],
    pub validation_samples: usize,
    pub tolerance: f64,
    pub policy: ExitOn,
    pub exits: Vec<ExitReport>,
    pub selected: Vec<String>,
    pub k_score_val: f64,
    /// Test split, selected subset: mean FLOPs per unit cached vs full, and disagreements with
    /// the detector.
    pub test_samples: usize,
    pub test_flops_cut: f64,
    pub test_disagreements: usize,
}

/// The calibrated result: file contents, trained heads, report.
pub struct Calibration {
    pub exits_file: ExitsFile,
    pub heads: Vec<(String, CacheHead)>,
    pub report: CalibReport,
}

impl Calibration {
    /// The selected exits, ready for [`crate::cache::enabled::CacheEnabled`].
    pub fn selected_exits(&self) -> Vec<Exit> {
        self.exits_file
            .exits
            .iter()
            .filter(|e| e.selected)
            .filter_map(|e| {
                let head = self.heads.iter().find(|(l, _)| *l == e.layer)?.1.clone();
                Some(e.to_exit(head))
            })
            .collect()
    }
}
