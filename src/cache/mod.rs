//! The caching method (paper sections 3.1-3.7): cache heads on intermediate layers of a frozen
//! detector, trained online from the detector's own outputs, calibrated, thresholded against a
//! tolerance, selected as a subset, and run with batch shrinking.
//!
//! - [`store`]: the medial dataset (eq. 1), pooled activations + teacher targets, bounded.
//! - [`head`]: cache-head architectures (search space) and their forward pass.
//! - [`train`]: KL distillation with AdamW and early stopping; [`search`]: architecture search.
//! - [`calibration`]: temperature, thresholds from the tolerance (eq. 3), the whole calibration.
//! - [`select`]: subset selection by K(S) (eq. 4) from recorded predictions.
//! - [`enabled`]: the cache-enabled forward (Algorithm 1).

pub mod calibration;
pub mod enabled;
pub mod files;
pub mod head;
pub mod plot;
pub mod search;
pub mod select;
pub mod store;
pub mod train;

use serde::{Deserialize, Serialize};

/// Which confident answers may exit early.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExitOn {
    /// Only "pedestrian present" exits; "empty" is always the full detector's call (the node's
    /// default: cache errors can cause false alarms but never a missed pedestrian).
    #[default]
    Pedestrian,
    /// Any confident class exits (the paper's behaviour).
    Any,
}

/// One exit's prediction for one sample: the predicted class and its (calibrated) confidence.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub class: usize,
    pub confidence: f32,
}

impl Prediction {
    /// Whether this prediction is a cache hit at threshold `theta` under `policy`, where
    /// `positive` is the class index that means "pedestrian present".
    pub fn hits(&self, theta: f32, policy: ExitOn, positive: usize) -> bool {
        self.confidence >= theta && (policy == ExitOn::Any || self.class == positive)
    }
}
