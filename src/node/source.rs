//! Where frames come from: the [`FrameSource`] trait the node pulls from, the items a source
//! yields, and two sources any program can use: [`channel`] (frames pushed from another thread,
//! as a camera driver does) and [`IterSource`] (any iterator of items).

use super::clock::{Clock, StopFlag, POLL};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use std::time::Instant;

/// What a source yields: a frame, or an input that could not be read.
#[derive(Clone, Debug)]
pub enum SourceItem<T> {
    /// A frame to perceive.
    Frame {
        /// A name for reports (file path, `camera#000123`, ...).
        path: String,
        /// When it was captured; `None`: when the node pulled it from the source.
        capture: Option<Instant>,
        /// The frame (decoded pixels for perception).
        payload: T,
        /// Inputs that belong to the frame but could not be used (e.g. its ground-truth label
        /// map is missing); each is reported once as `BadFrame` and counted, and the frame is
        /// still processed.
        defects: Vec<InputDefect>,
    },
    /// A frame that could not be read: reported as `BadFrame`, counted and skipped.
    Bad {
        /// The frame's name or path.
        path: String,
        /// Why it could not be read, as one line.
        cause: String,
    },
}

impl<T> SourceItem<T> {
    /// A good frame captured `capture` (`None`: now), without defects.
    pub fn frame(path: impl Into<String>, capture: Option<Instant>, payload: T) -> Self {
        SourceItem::Frame {
            path: path.into(),
            capture,
            payload,
            defects: Vec::new(),
        }
    }
}

/// An input that belongs to a good frame but could not be used: its path and the cause.
#[derive(Clone, Debug, PartialEq)]
pub struct InputDefect {
    /// The defective input's path.
    pub path: String,
    /// Why it could not be used.
    pub cause: String,
}

/// A frame inside the node: its index in the source, its capture time and its payload.
#[derive(Clone, Debug)]
pub struct Frame<T> {
    /// Position in the source, counting every item it produced (bad ones too).
    pub index: usize,
    /// When it was captured, on the node's clock.
    pub capture: Instant,
    /// A name for reports.
    pub path: String,
    /// The frame itself.
    pub payload: T,
}

/// What a source sees of the node while it produces an item.
pub struct SourceCtx<'a> {
    pub(crate) stop: &'a StopFlag,
    pub(crate) clock: &'a dyn Clock,
}

impl SourceCtx<'_> {
    /// The node is stopping: return `Ok(None)` soon.
    pub fn is_stopped(&self) -> bool {
        self.stop.is_stopped()
    }

    /// The node's clock.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Wait until `t` on the node's clock, or until the node stops (then `false`).
    pub fn sleep_until(&self, t: Instant) -> bool {
        self.clock.sleep_until(t, self.stop)
    }

    /// The run's stop flag, for sources that wait on something of their own.
    pub fn stop_flag(&self) -> &StopFlag {
        self.stop
    }
}

/// A source of frames, pulled by the node's source thread one item at a time.
///
/// A source that waits (for a camera, a pipe, a pacing clock) should wake at least every few
/// tens of milliseconds to check [`SourceCtx::is_stopped`]: the node stops waiting for a source
/// that does not return within its stop grace and leaves its thread behind.
pub trait FrameSource: Send {
    /// What a frame carries (decoded pixels for [`crate::node::Perception`]).
    type Payload: Send + 'static;

    /// The next item, `Ok(None)` once the source has ended or the node is stopping. An `Err`
    /// ends the run as a failure of the source stage (for an input that merely cannot be read,
    /// yield [`SourceItem::Bad`] instead).
    fn next_item(
        &mut self,
        ctx: &SourceCtx<'_>,
    ) -> crate::Result<Option<SourceItem<Self::Payload>>>;
}

impl<S: FrameSource + ?Sized> FrameSource for Box<S> {
    type Payload = S::Payload;

    fn next_item(
        &mut self,
        ctx: &SourceCtx<'_>,
    ) -> crate::Result<Option<SourceItem<Self::Payload>>> {
        (**self).next_item(ctx)
    }
}

/// Any iterator of items as a source (items with `capture: None` are stamped when pulled).
pub struct IterSource<I>(pub I);

impl<I, T> FrameSource for IterSource<I>
where
    I: Iterator<Item = SourceItem<T>> + Send,
    T: Send + 'static,
{
    type Payload = T;

    fn next_item(&mut self, ctx: &SourceCtx<'_>) -> crate::Result<Option<SourceItem<T>>> {
        if ctx.is_stopped() {
            return Ok(None);
        }
        Ok(self.0.next())
    }
}

/// Why [`FrameSender`] did not take a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// The node has not pulled the frames before it (only when it is not running or in
    /// lockstep); a camera driver drops the frame.
    Full,
    /// The node has ended.
    Closed,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rejected::Full => "the node's input is full",
            Rejected::Closed => "the node has ended",
        })
    }
}

impl std::error::Error for Rejected {}

/// The pushing end of [`channel`]: give it to the thread that produces frames. Dropping every
/// sender ends the source (the node finishes what it holds and ends the run).
#[derive(Clone)]
pub struct FrameSender<T> {
    tx: Sender<SourceItem<T>>,
}

impl<T> FrameSender<T> {
    /// Hand a frame captured at `capture` to the node without waiting.
    pub fn send(
        &self,
        path: impl Into<String>,
        payload: T,
        capture: Instant,
    ) -> Result<(), Rejected> {
        self.send_item(SourceItem::frame(path, Some(capture), payload))
    }

    /// Hand any item to the node without waiting (e.g. [`SourceItem::Bad`] for a frame the
    /// driver could not read).
    pub fn send_item(&self, item: SourceItem<T>) -> Result<(), Rejected> {
        self.tx.try_send(item).map_err(|e| match e {
            TrySendError::Full(_) => Rejected::Full,
            TrySendError::Disconnected(_) => Rejected::Closed,
        })
    }

    /// Hand an item to the node, waiting while its input is full (for producers that prefer
    /// back-pressure to drops, such as a replay in lockstep).
    pub fn send_blocking(&self, item: SourceItem<T>) -> Result<(), Rejected> {
        self.tx.send(item).map_err(|_| Rejected::Closed)
    }
}

/// The pulling end of [`channel`]: give it to [`crate::node::Node::run`].
pub struct ChannelSource<T> {
    rx: Receiver<SourceItem<T>>,
}

/// A source fed from other threads: `capacity` items may wait between a sender and the node.
/// The node's own queue (see [`crate::node::NodeSettings::queue`]) decides what is dropped when
/// perception is behind, so a small capacity is enough.
pub fn channel<T: Send + 'static>(capacity: usize) -> (FrameSender<T>, ChannelSource<T>) {
    let (tx, rx) = bounded(capacity.max(1));
    (FrameSender { tx }, ChannelSource { rx })
}

impl<T: Send + 'static> FrameSource for ChannelSource<T> {
    type Payload = T;

    fn next_item(&mut self, ctx: &SourceCtx<'_>) -> crate::Result<Option<SourceItem<T>>> {
        loop {
            if ctx.is_stopped() {
                return Ok(None);
            }
            match self.rx.recv_timeout(POLL) {
                Ok(item) => return Ok(Some(item)),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }
}
