//! The [`Node`]: source -> perception -> alert bus -> planners, on bounded channels, and the run's
//! record ([`NodeRun`]).
//!
//! Threads: the source thread pulls from the [`FrameSource`] into the frame queue; perception runs
//! on the caller's thread; the bus thread fans alerts out to one thread per [`Planner`]. Every
//! thread runs under a supervisor: an error or a panic in any of them is that stage's failure,
//! stops the run, and the run ends as [`Ending::Failed`]. Every wait checks the stop flag. After a
//! stop, perception finishes the frames it already has for at most [`NodeSettings::drain`], then
//! the frame in flight is cancelled between two detector stages and the rest is dropped (a
//! failure cancels at once); the node then waits at most [`NodeSettings::stop_grace`] for a
//! thread still busy (a source blocked in a read, a planner stuck in a call) before leaving it
//! behind: a run always ends.

use super::alert::Envelope;
use super::clock::{ms, Clock, StopFlag, SystemClock};
use super::planner::Planner;
use super::queue::FrameQueue;
use super::source::FrameSource;
use super::stages::{
    drain_timer, run_bus, run_source, spawn_stage, wait_done, PerceptionLoop, SourceStats, Work,
};
use super::supervise::Supervisor;
use super::task::Perceive;
use crossbeam_channel::bounded;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Capacity of the alert bus and of each planner's channel.
pub const BUS_CAPACITY: usize = 4096;

/// How the node runs.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSettings {
    /// Pending frames the source may queue ahead of perception (beyond it the oldest is
    /// dropped, or in lockstep the source waits).
    pub queue: usize,
    /// Capture -> perception done; a frame over it gets a `DeadlineMiss`.
    pub deadline: Duration,
    /// The source waits for room instead of dropping frames: every frame is processed and a run
    /// is deterministic (replays "as fast as possible"). Off for a live camera.
    pub lockstep: bool,
    /// After a stop, how long perception may go on with the frames it already has (the one
    /// in flight, those queued) before the rest is dropped and the frame in flight cancelled
    /// between two detector stages. A failing stage cancels at once.
    pub drain: Duration,
    /// Once perception has stopped, how long the node waits for a thread still busy (a source
    /// blocked in a read, a planner stuck in a call) before leaving it behind.
    pub stop_grace: Duration,
    /// How many of the latest [`FrameRecord`]s the run keeps; `None` keeps all of them (a replay,
    /// whose report covers every frame). A node that runs for days bounds it: each record is a
    /// few hundred bytes, so keeping all grows memory with every frame. [`NodeRun::processed`]
    /// counts every frame either way.
    pub keep_records: Option<usize>,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            queue: 2,
            deadline: Duration::from_millis(100),
            lockstep: false,
            drain: Duration::from_millis(500),
            stop_grace: Duration::from_millis(500),
            keep_records: None,
        }
    }
}

impl NodeSettings {
    /// Check the values (see [`crate::node::config`] for the ranges).
    pub fn validate(&self) -> crate::Result<()> {
        use super::config::{check_range, DEADLINE_MS, QUEUE};
        check_range("queue", self.queue, QUEUE).map_err(crate::Error::msg)?;
        check_range("deadline_ms", ms(self.deadline), DEADLINE_MS).map_err(crate::Error::msg)?;
        crate::ensure!(
            self.stop_grace <= Duration::from_secs(60) && self.drain <= Duration::from_secs(60),
            "drain and stop_grace must be at most 60 s"
        );
        Ok(())
    }
}

/// One frame that perception processed.
#[derive(Clone, Debug)]
pub struct FrameRecord<O> {
    /// The frame's index in its source.
    pub index: usize,
    /// Capture -> perception picked it up.
    pub queue_ms: f64,
    /// Perception's own time on the frame.
    pub perceive_ms: f64,
    /// Capture -> perception done (end to end, last alert published).
    pub latency_ms: f64,
    /// What the task returned for the frame.
    pub outcome: O,
}

/// How a run ended.
#[derive(Debug)]
pub enum Ending {
    /// The source ended and every frame was dealt with.
    Finished,
    /// The stop flag was set (by the embedding program or a signal).
    Stopped,
    /// A stage failed ([`crate::Error::Stage`] names it); the run stopped.
    Failed(crate::Error),
}

/// Everything a run produced.
#[derive(Debug)]
pub struct NodeRun<O> {
    /// Items the source produced (frames + bad frames).
    pub sourced: usize,
    /// Frames never perceived: dropped while perception was behind, or left when the run
    /// stopped (each also published as `FrameDropped`).
    pub dropped: Vec<usize>,
    /// How many of `dropped` were left when the run stopped.
    pub dropped_at_stop: usize,
    /// Frames reported as `BadFrame` and skipped (unreadable, or perception failed on them).
    pub bad: Vec<usize>,
    /// Frames processed (or dropped) whose defective input was reported as `BadFrame`
    /// (see [`crate::node::SourceItem::Frame`]), once per defect.
    pub defects: Vec<usize>,
    /// Frames perception finished (whether or not their record was kept).
    pub processed: usize,
    /// The processed frames, in processing order: every one, or the latest
    /// [`NodeSettings::keep_records`].
    pub records: Vec<FrameRecord<O>>,
    /// Frames finished after their deadline (each also a `DeadlineMiss` alert).
    pub deadline_misses: usize,
    /// Longest time the source spent handing one frame over (it must never wait on perception).
    pub source_max_push_ms: f64,
    /// The stop flag ended the run before the source did (not a failure).
    pub interrupted: bool,
    /// How the run ended.
    pub ending: Ending,
    /// Real time the run took.
    pub wall_s: f64,
}

impl<O> NodeRun<O> {
    /// The failure that ended the run, if one did.
    pub fn failure(&self) -> Option<&crate::Error> {
        match &self.ending {
            Ending::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// `Err` with the failure when a stage failed, else the run.
    pub fn into_result(self) -> crate::Result<Self> {
        match self.ending {
            Ending::Failed(e) => Err(e),
            ending => Ok(Self { ending, ..self }),
        }
    }
}

/// The node: wires a source, the perception task and planners (see the module doc).
pub struct Node {
    settings: NodeSettings,
    planners: Vec<Box<dyn Planner>>,
    stop: StopFlag,
    clock: Arc<dyn Clock>,
}

impl Node {
    /// A node with `settings`, no planner yet, its own stop flag and the system clock.
    pub fn new(settings: NodeSettings) -> crate::Result<Self> {
        settings.validate()?;
        Ok(Self {
            settings,
            planners: Vec::new(),
            stop: StopFlag::new(),
            clock: Arc::new(SystemClock),
        })
    }

    /// Subscribe a planner to the alert bus (each runs on its own thread).
    pub fn planner(mut self, p: impl Planner + 'static) -> Self {
        self.planners.push(Box::new(p));
        self
    }

    /// Subscribe a boxed planner.
    pub fn boxed_planner(mut self, p: Box<dyn Planner>) -> Self {
        self.planners.push(p);
        self
    }

    /// Use `stop` as the run's stop flag (e.g. one a signal handler sets).
    pub fn stop_flag(mut self, stop: StopFlag) -> Self {
        self.stop = stop;
        self
    }

    /// Read the time from `clock` (tests: [`crate::node::ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A handle that stops the run from another thread.
    pub fn stopper(&self) -> StopFlag {
        self.stop.clone()
    }

    /// Run until the source ends, the stop flag is set, or a stage fails. `Err` only when the
    /// node could not start; how the run ended is [`NodeRun::ending`].
    pub fn run<S, T>(self, source: S, task: &mut T) -> crate::Result<NodeRun<T::Outcome>>
    where
        S: FrameSource<Payload = T::Payload> + 'static,
        T: Perceive,
    {
        let wall = Instant::now();
        let Node {
            settings,
            planners,
            stop,
            clock,
        } = self;
        let sup = Supervisor::new(stop);
        let q = Arc::new(FrameQueue::<Work<T::Payload>>::new(settings.queue));
        let (bus_tx, bus_rx) = bounded::<Envelope>(BUS_CAPACITY);
        let bus_closing = StopFlag::new();

        let mut subscribers = Vec::new();
        let mut planner_done = Vec::new();
        for mut p in planners {
            let (tx, rx) = bounded::<Envelope>(BUS_CAPACITY);
            subscribers.push(tx);
            let clock = clock.clone();
            let stage = p.stage();
            let done = spawn_stage(stage, &sup, move || {
                for msg in rx {
                    p.on_alert(&msg, clock.now())?;
                }
                p.finish()
            })?;
            planner_done.push((done, stage));
        }
        let bus_done = {
            let (sup2, closing) = (sup.clone(), bus_closing.clone());
            spawn_stage("alert-bus", &sup, move || {
                run_bus(bus_rx, subscribers, &closing, &sup2);
                Ok(())
            })?
        };
        let stats = Arc::new(Mutex::new(SourceStats::default()));
        let source_done = {
            let (q, bus, sup2, stats, clock) = (
                q.clone(),
                bus_tx.clone(),
                sup.clone(),
                stats.clone(),
                clock.clone(),
            );
            let lockstep = settings.lockstep;
            spawn_stage("source", &sup, move || {
                let r = run_source(source, &q, &bus, &sup2, &stats, &*clock, lockstep);
                q.close();
                r
            })?
        };

        let perception_done = StopFlag::new();
        // No drain: a stop cancels the frame in flight at once.
        let cancel = if settings.drain.is_zero() {
            sup.stop_flag().clone()
        } else {
            StopFlag::new()
        };
        if !settings.drain.is_zero() {
            let (sup, cancel, done, drain) = (
                sup.clone(),
                cancel.clone(),
                perception_done.clone(),
                settings.drain,
            );
            std::thread::Builder::new()
                .name("drain-timer".into())
                .spawn(move || drain_timer(&sup, &cancel, &done, drain))
                .map_err(|e| crate::err!("starting the drain timer: {e}"))?;
        }
        let mut p = PerceptionLoop {
            records: std::collections::VecDeque::new(),
            keep_records: settings.keep_records,
            processed: 0,
            bad: Vec::new(),
            defects: Vec::new(),
            dropped: Vec::new(),
            misses: 0,
            deadline_ms: ms(settings.deadline),
        };
        p.run(task, &q, &bus_tx, &sup, &cancel, &*clock);
        perception_done.stop();

        // Winding down. Closed first, so that nothing lands after the drain: what is still
        // queued was not perceived, and a later push is counted by the source itself.
        q.close();
        for w in q.drain() {
            p.leftover(w, &bus_tx, &sup);
        }
        let mut since_stop = None;
        wait_done(
            &source_done,
            &sup,
            settings.stop_grace,
            &mut since_stop,
            "source",
        );
        drop(bus_tx);
        bus_closing.stop();
        if !wait_done(
            &bus_done,
            &sup,
            settings.stop_grace,
            &mut since_stop,
            "alert-bus",
        ) {
            sup.abandon();
        }
        for (done, stage) in &planner_done {
            if !wait_done(done, &sup, settings.stop_grace, &mut since_stop, stage) {
                sup.abandon();
                if !sup.failed() {
                    sup.fail(stage, "did not finish its alerts within the stop grace");
                }
            }
        }
        let st = stats.lock().unwrap_or_else(|e| e.into_inner());
        let failure = sup.take_failure();
        let stopped = sup.is_stopped();
        let dropped_at_stop = p.dropped.len() + st.dropped_at_stop.len();
        let mut dropped = st.dropped.clone();
        dropped.extend(&st.dropped_at_stop);
        dropped.extend(&p.dropped);
        Ok(NodeRun {
            sourced: st.sourced,
            dropped,
            dropped_at_stop,
            bad: p.bad,
            defects: p.defects,
            processed: p.processed,
            records: p.records.into(),
            deadline_misses: p.misses,
            source_max_push_ms: st.max_push_ms,
            interrupted: stopped && failure.is_none(),
            ending: match failure {
                Some(e) => Ending::Failed(e),
                None if stopped => Ending::Stopped,
                None => Ending::Finished,
            },
            wall_s: wall.elapsed().as_secs_f64(),
        })
    }
}
