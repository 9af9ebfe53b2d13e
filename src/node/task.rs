//! The per-frame task the node runs ([`Perceive`]; [`crate::node::Perception`] is the real
//! one) and what it sees of the node while it runs a frame ([`FrameCtx`]).

use super::alert::Alert;
use super::clock::{Clock, StopFlag};
use super::source::Frame;
use std::time::Instant;

/// The work the node runs on each frame, on the thread that called [`crate::node::Node::run`].
/// [`crate::node::Perception`] is the real one; tests and other programs may bring their own.
pub trait Perceive {
    /// What a frame carries.
    type Payload: Send + 'static;
    /// What the node records for each processed frame.
    type Outcome;

    /// Process one frame, publishing alerts through `ctx` as soon as they are known. Return
    /// [`crate::Error::Cancelled`] when `ctx` says to give the frame up and it was left
    /// unfinished; any other `Err` ends the run as a failure of the perception stage.
    fn perceive(
        &mut self,
        frame: &Frame<Self::Payload>,
        ctx: &mut FrameCtx<'_>,
    ) -> crate::Result<Self::Outcome>;

    /// Called between frames and while waiting for one: a background part of the task (such as
    /// the retrainer) reports its failure here.
    fn check(&mut self) -> crate::Result<()> {
        Ok(())
    }
}

/// What perception sees of the node while it processes a frame.
pub struct FrameCtx<'a> {
    publish: &'a mut dyn FnMut(Alert),
    cancel: &'a StopFlag,
    clock: &'a dyn Clock,
    waiting: Option<&'a dyn Fn() -> usize>,
}

impl<'a> FrameCtx<'a> {
    /// A context outside a node: alerts go to `publish`; `cancel` set means give the frame up.
    pub fn new(
        publish: &'a mut dyn FnMut(Alert),
        cancel: &'a StopFlag,
        clock: &'a dyn Clock,
    ) -> Self {
        Self {
            publish,
            cancel,
            clock,
            waiting: None,
        }
    }

    /// Tell the task how many frames wait behind this one (`frames_waiting`).
    pub fn with_waiting(mut self, waiting: &'a dyn Fn() -> usize) -> Self {
        self.waiting = Some(waiting);
        self
    }

    /// Frames waiting for perception now (0 outside a node): with none, perception would idle
    /// after this frame.
    pub fn frames_waiting(&self) -> usize {
        self.waiting.map_or(0, |w| w())
    }

    /// Put an alert on the bus now.
    pub fn publish(&mut self, alert: Alert) {
        (self.publish)(alert)
    }

    /// The node needs the frame given up (it is stopping and its drain time is over, or a stage
    /// failed): return [`crate::Error::Cancelled`] as soon as possible.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_stopped()
    }

    /// The flag behind [`Self::is_cancelled`], for work that checks it on its own.
    pub fn cancel_flag(&self) -> &StopFlag {
        self.cancel
    }

    /// The node's clock.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }
}
