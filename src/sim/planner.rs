//! The harness planner: on each frame, would it brake, and how long after capture did the first
//! pedestrian alert reach it.

use crate::node::{Alert, Envelope, Planner};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The harness planner's view of one frame.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Decision {
    pub brake: bool,
    /// Capture -> first pedestrian alert at the planner, ms.
    pub reaction_ms: Option<f64>,
}

/// Decisions per frame, shared between the planner's thread and the harness.
pub type Decisions = Arc<Mutex<BTreeMap<usize, Decision>>>;

/// Records a brake/no-brake decision and the reaction time per frame.
#[derive(Default)]
pub struct HarnessPlanner {
    decisions: Decisions,
}

impl HarnessPlanner {
    /// A planner and the handle the harness reads its decisions through after the run.
    pub fn new() -> (Self, Decisions) {
        let p = Self::default();
        let d = p.decisions.clone();
        (p, d)
    }
}

impl Planner for HarnessPlanner {
    fn on_alert(&mut self, msg: &Envelope, received: Instant) -> crate::Result<()> {
        if let Alert::EarlyAlert { frame, .. } | Alert::Detections { frame, .. } = &msg.alert {
            let mut all = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
            let d = all.entry(*frame).or_default();
            if msg.alert.is_pedestrian() && !d.brake {
                d.brake = true;
                d.reaction_ms = msg
                    .capture
                    .map(|c| received.saturating_duration_since(c).as_secs_f64() * 1e3);
            }
        }
        Ok(())
    }
}
