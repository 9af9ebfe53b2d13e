//! The perception node, as a component a vehicle program embeds: frames in from a
//! [`FrameSource`], pedestrian alerts out to [`Planner`]s, through a [`Perception`] task that runs
//! a detector with its cache exits. Nothing here knows about replays or the command line.
//!
//! - [`FrameSource`]: what the node pulls frames from, each with its capture time. Bring your
//!   own (a camera driver), push frames from another thread through [`channel`], or replay
//!   recorded drives with the replay harness's sources (`sim::source`).
//! - [`Perception`]: the per-frame task. Built from a detector ([`crate::detect::registry::load`]),
//!   its calibrated exits ([`CacheExits::load`]) and a [`PerceptionConfig`]; `process(frame)`
//!   publishes typed [`Alert`]s as soon as it knows them (an `EarlyAlert` from a cache exit before
//!   the rest of the network runs); `stop` ends it. Optionally a retrainer ([`retrain`]) keeps
//!   the exits fresh and swaps them in between frames.
//! - [`Node`]: source -> perception -> alert bus -> planners, on bounded channels. When
//!   perception is behind, the oldest pending frame is dropped and counted (`FrameDropped`); in
//!   lockstep the source waits instead. A frame that finishes after its deadline adds a
//!   `DeadlineMiss`. The run ends when the source ends, when its [`StopFlag`] is set (Ctrl-C), or
//!   when any stage fails (an error or a panic in the source, perception, the bus, a planner or
//!   the retrainer): within about a second in every case, with a [`NodeRun`] that says how.
//! - [`config`]: the node's RON configuration, checked at load, and the ranges of its values.
//!
//! A tiny node: frames pushed from a thread, a task that alerts on bright frames, a planner that
//! brakes on the first alert. ([`Perception`] takes the task's place in a real node, see
//! `examples/embed.rs`.)
//!
//! ```
//! use pedcache::node::{channel, Alert, Envelope, Frame, FrameCtx, Node, NodeSettings, Perceive, Planner};
//! use std::sync::{Arc, Mutex};
//! use std::time::Instant;
//!
//! /// "Pedestrian" when the frame's brightness is over 100.
//! struct Bright;
//! impl Perceive for Bright {
//!     type Payload = u8;
//!     type Outcome = bool;
//!     fn perceive(&mut self, f: &Frame<u8>, ctx: &mut FrameCtx<'_>) -> pedcache::Result<bool> {
//!         let ped = f.payload > 100;
//!         if ped {
//!             ctx.publish(Alert::EarlyAlert {
//!                 frame: f.index,
//!                 exit: "brightness".into(),
//!                 version: None,
//!                 class: 1,
//!                 pedestrian: true,
//!                 confidence: 1.0,
//!                 latency_ms: 0.0,
//!             });
//!         }
//!         Ok(ped)
//!     }
//! }
//!
//! /// Brakes on the first pedestrian alert.
//! struct Brake(Arc<Mutex<Option<usize>>>);
//! impl Planner for Brake {
//!     fn on_alert(&mut self, msg: &Envelope, _at: Instant) -> pedcache::Result<()> {
//!         let mut b = self.0.lock().unwrap();
//!         if msg.alert.is_pedestrian() && b.is_none() {
//!             *b = Some(msg.alert.frame());
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let braked = Arc::new(Mutex::new(None));
//! let (camera, source) = channel::<u8>(4);
//! let driver = std::thread::spawn(move || {
//!     for (i, level) in [10u8, 20, 200, 30].into_iter().enumerate() {
//!         // Lockstep below: nothing is dropped, so the outcome does not depend on timing.
//!         let item = pedcache::node::SourceItem::frame(format!("cam#{i}"), Some(Instant::now()), level);
//!         camera.send_blocking(item).unwrap();
//!     }
//! });
//! let settings = NodeSettings { lockstep: true, ..NodeSettings::default() };
//! let node = Node::new(settings)?.planner(Brake(braked.clone()));
//! let run = node.run(source, &mut Bright)?.into_result()?;
//! driver.join().unwrap();
//! assert_eq!(run.records.len(), 4);
//! assert_eq!(*braked.lock().unwrap(), Some(2));
//! # Ok::<(), pedcache::Error>(())
//! ```

#![warn(missing_docs)]

pub mod alert;
pub mod clock;
pub mod config;
pub mod detector;
#[cfg(feature = "foxglove")]
pub mod foxglove;
pub mod learn;
pub mod live;
pub mod perception;
pub mod pipeline;
pub mod planner;
pub mod queue;
pub mod record;
pub mod retrain;
pub mod source;
mod stages;
mod supervise;
pub mod task;
#[cfg(feature = "zenoh")]
pub mod zenoh;

pub use alert::{Alert, Envelope, HitPolicy};
pub use clock::{Clock, ManualClock, StopFlag, SystemClock};
pub use config::NodeConfig;
pub use perception::{
    CacheExits, FrameOutcome, Perception, PerceptionConfig, PerceptionStats, Processed,
};
pub use pipeline::{Ending, FrameRecord, Node, NodeRun, NodeSettings, BUS_CAPACITY};
pub use planner::{AlertRecorder, Planner};
pub use source::{
    channel, ChannelSource, Frame, FrameSender, FrameSource, InputDefect, IterSource, Rejected,
    SourceCtx, SourceItem,
};
pub use task::{FrameCtx, Perceive};
