//! Consumers of the alert bus: the [`Planner`] trait, and [`AlertRecorder`], a planner that writes
//! every alert as a JSON line.

use super::alert::Envelope;
use std::io::Write;
use std::time::Instant;

/// A consumer of the alert bus. Each planner runs on its own thread and sees every alert, in bus
/// order. An `Err` (or a panic) ends the run as a failure of this planner's stage.
pub trait Planner: Send {
    /// Called for every alert, `received` when it reached the planner (on the node's clock).
    fn on_alert(&mut self, msg: &Envelope, received: Instant) -> crate::Result<()>;

    /// Called once after the last alert (flush, close, summarize).
    fn finish(&mut self) -> crate::Result<()> {
        Ok(())
    }

    /// The stage name this planner's failures carry.
    fn stage(&self) -> &'static str {
        "planner"
    }
}

/// Writes every alert as one JSON object a line (`{"type": "EarlyAlert", ...}`).
pub struct AlertRecorder {
    out: Box<dyn Write + Send>,
}

impl AlertRecorder {
    /// Record into `out` (buffer it: every alert is one write).
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self { out }
    }
}

impl Planner for AlertRecorder {
    fn on_alert(&mut self, msg: &Envelope, _received: Instant) -> crate::Result<()> {
        serde_json::to_writer(&mut self.out, &msg.alert)?;
        self.out
            .write_all(b"\n")
            .map_err(|e| crate::err!("writing alerts: {e}"))
    }

    fn finish(&mut self) -> crate::Result<()> {
        self.out
            .flush()
            .map_err(|e| crate::err!("writing alerts: {e}"))
    }

    fn stage(&self) -> &'static str {
        "recorder"
    }
}
