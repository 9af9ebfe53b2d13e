//! Calibration (paper section 3.3 and DESIGN "Calibration", "Thresholds", "Subset selection"),
//! end to end and with no manual step: collect the medial dataset from unlabeled frames, search
//! and train a head per candidate layer, fit temperatures, assign thresholds from the tolerance,
//! select the subset of exits, and describe the result.
//!
//! - [`detector`]: what a detector provides to be calibrated ([`CacheableDetector`]).
//! - [`collect`](mod@collect): frames into the medial store.
//! - [`temperature`]: temperature scaling on validation logits.
//! - [`threshold`]: per-exit budgets and thresholds (eq. 3), hit-rate curves.
//! - [`run`]: the whole calibration from a filled store ([`calibrate_store`]).
//! - [`exits`]: its result: `exits.ron` entries, heads, `report.json` figures; [`check`]: a
//!   calibration against the detector it is used with.

pub mod check;
pub mod collect;
pub mod detector;
pub mod exits;
pub mod run;
pub mod temperature;
pub mod threshold;

pub use check::check_exits;
pub use collect::{argmax, collect, progress};
pub use detector::{stages_worth_caching, CacheableDetector, Region};
pub use exits::{CalibReport, Calibration, ExitEntry, ExitReport, ExitsFile, SearchRow};
pub use run::{calibrate_store, calibrate_with, CalibConfig, ModelFacts};
pub use temperature::{fit_temperature, nll, predict, softmax_t, TemperatureFit, T_BOUNDS};
pub use threshold::{budget, choose_threshold, curve, CurvePoint, ThresholdChoice};

#[cfg(test)]
mod tests;
