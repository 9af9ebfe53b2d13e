//! The [`Node`]: source -> perception -> alert bus -> planners, on bounded channels, and the run's
//! record ([`NodeRun`]).
//!
//! Threads: the source thread pulls from the [`FrameSource`] into the frame queue; perception runs
//! on the caller's thread; the bus thread fans alerts out to one thread per [`Planner`]. Every
//! thread runs under a [`Supervisor`]: an error or a panic in any of them is that stage's failure,
//! stops the run, and the run ends as [`Ending::Failed`]. Every wait checks the stop flag. After a
//! stop, perception finishes the frames it already has for at most [`NodeSettings::drain`], then
//! the frame in flight is cancelled between two detector stages and the rest is dropped (a
//! failure cancels at once); the node then waits at most [`NodeSettings::stop_grace`] for a
//! thread still busy (a source blocked in a read, a planner stuck in a call) before leaving it
//! behind: a run always ends.

use super::alert::{Alert, Envelope};
use super::clock::{ms, Clock, StopFlag, SystemClock, POLL};
use super::planner::Planner;
use super::queue::{FrameQueue, Pop};
use super::source::{Frame, FrameSource, SourceCtx, SourceItem};
use super::supervise::{panic_message, Supervisor};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use std::panic::{catch_unwind, AssertUnwindSafe};
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
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            queue: 2,
            deadline: Duration::from_millis(100),
            lockstep: false,
            drain: Duration::from_millis(500),
            stop_grace: Duration::from_millis(500),
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

/// The work the node runs on each frame, on the thread that called [`Node::run`].
/// [`crate::node::Perception`] is the real one; tests and other programs may bring their own.
pub trait Perceive {
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
        }
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

/// One frame that perception processed.
#[derive(Clone, Debug)]
pub struct FrameRecord<O> {
    pub index: usize,
    /// Capture -> perception picked it up.
    pub queue_ms: f64,
    /// Perception's own time on the frame.
    pub perceive_ms: f64,
    /// Capture -> perception done (end to end, last alert published).
    pub latency_ms: f64,
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
    /// (see [`SourceItem::Frame`]), once per defect.
    pub defects: Vec<usize>,
    pub records: Vec<FrameRecord<O>>,
    pub deadline_misses: usize,
    /// Longest time the source spent handing one frame over (it must never wait on perception).
    pub source_max_push_ms: f64,
    /// The stop flag ended the run before the source did (not a failure).
    pub interrupted: bool,
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
            records: Vec::new(),
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
            records: p.records,
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

/// What travels from the source to perception.
enum Work<T> {
    Frame(Frame<T>),
    /// An unreadable frame, or (`skipped: false`) a defective input of a frame that still runs.
    Bad {
        index: usize,
        path: String,
        cause: String,
        skipped: bool,
    },
}

#[derive(Default)]
struct SourceStats {
    sourced: usize,
    dropped: Vec<usize>,
    dropped_at_stop: Vec<usize>,
    max_push_ms: f64,
}

/// Spawn a supervised thread; the returned channel disconnects when it ends.
fn spawn_stage(
    stage: &'static str,
    sup: &Supervisor,
    body: impl FnOnce() -> crate::Result<()> + Send + 'static,
) -> crate::Result<Receiver<()>> {
    let (done_tx, done_rx) = bounded::<()>(0);
    let sup = sup.clone();
    std::thread::Builder::new()
        .name(stage.into())
        .spawn(move || {
            let _done = done_tx;
            sup.run(stage, body);
        })
        .map_err(|e| crate::err!("starting the {stage} thread: {e}"))?;
    Ok(done_rx)
}

/// Sets `cancel` once the run is stopping and perception has had `drain` for the frames it
/// holds, or at once when a stage failed; ends with perception.
fn drain_timer(sup: &Supervisor, cancel: &StopFlag, perception_done: &StopFlag, drain: Duration) {
    while !sup.is_stopped() {
        if perception_done.is_stopped() {
            return;
        }
        sup.stop_flag().sleep(POLL);
    }
    let until = Instant::now() + drain;
    while Instant::now() < until && !sup.failed() && !perception_done.is_stopped() {
        perception_done.sleep(POLL.min(until.saturating_duration_since(Instant::now())));
    }
    cancel.stop();
}

/// Wait for a thread to end; once the run is stopping, at most `grace` after the stop was first
/// seen. Returns whether it ended.
fn wait_done(
    done: &Receiver<()>,
    sup: &Supervisor,
    grace: Duration,
    since_stop: &mut Option<Instant>,
    stage: &str,
) -> bool {
    loop {
        match done.recv_timeout(POLL) {
            Err(RecvTimeoutError::Disconnected) | Ok(()) => return true,
            Err(RecvTimeoutError::Timeout) => {
                if sup.is_stopped() {
                    let t = *since_stop.get_or_insert_with(Instant::now);
                    if t.elapsed() >= grace {
                        log::warn!("the {stage} thread did not stop within {grace:?}: left behind");
                        return false;
                    }
                }
            }
        }
    }
}

/// Send, waiting while the channel is full until `give_up()`; `false` when not delivered.
fn send_until(tx: &Sender<Envelope>, mut msg: Envelope, give_up: &dyn Fn() -> bool) -> bool {
    loop {
        match tx.send_timeout(msg, POLL) {
            Ok(()) => return true,
            Err(SendTimeoutError::Disconnected(_)) => return false,
            Err(SendTimeoutError::Timeout(m)) => {
                if give_up() {
                    return false;
                }
                msg = m;
            }
        }
    }
}

fn run_source<S: FrameSource>(
    mut source: S,
    q: &FrameQueue<Work<S::Payload>>,
    bus: &Sender<Envelope>,
    sup: &Supervisor,
    stats: &Mutex<SourceStats>,
    clock: &dyn Clock,
    lockstep: bool,
) -> crate::Result<()> {
    let ctx = SourceCtx {
        stop: sup.stop_flag(),
        clock,
    };
    let stopping = || sup.is_stopped();
    let stats = || stats.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0usize.. {
        if sup.is_stopped() {
            break;
        }
        let pulled = clock.now();
        let Some(item) = source.next_item(&ctx)? else {
            break;
        };
        let (work, defects) = match item {
            SourceItem::Frame {
                path,
                capture,
                payload,
                defects,
            } => (
                Work::Frame(Frame {
                    index: i,
                    capture: capture.unwrap_or(pulled),
                    path,
                    payload,
                }),
                defects,
            ),
            SourceItem::Bad { path, cause } => (
                Work::Bad {
                    index: i,
                    path,
                    cause,
                    skipped: true,
                },
                Vec::new(),
            ),
        };
        stats().sourced += 1;
        // Defect reports go ahead of their frame and are never evicted: each is reported once,
        // in order, even when the frame itself is dropped.
        for d in defects {
            let report = Work::Bad {
                index: i,
                path: d.path,
                cause: d.cause,
                skipped: false,
            };
            let pushed = if lockstep {
                q.push_wait(report, &stopping).is_ok()
            } else {
                // Never waits and evicts nothing (a report is a few bytes beyond the bound).
                q.push_evict(report, |_| false).is_ok()
            };
            if !pushed {
                stats().dropped_at_stop.push(i);
                return Ok(());
            }
        }
        // Measured on the real clock: it is a property of this machine, not of the run.
        let t = Instant::now();
        let pushed = if lockstep {
            q.push_wait(work, &stopping).map(|()| None)
        } else {
            q.push_evict(work, |w| matches!(w, Work::Frame(_)))
        };
        let push_ms = ms(t.elapsed());
        let mut st = stats();
        match pushed {
            // Stopping (or stopped): perception will not see it.
            Err(_) => {
                st.dropped_at_stop.push(i);
                return Ok(());
            }
            Ok(evicted) => {
                if !lockstep {
                    st.max_push_ms = st.max_push_ms.max(push_ms);
                }
                if let Some(Work::Frame(f)) = evicted {
                    st.dropped.push(f.index);
                    drop(st);
                    // The bus is drained by a thread that never waits on perception.
                    send_until(
                        bus,
                        Envelope {
                            alert: Alert::FrameDropped { frame: f.index },
                            capture: Some(f.capture),
                        },
                        &|| sup.abandoned(),
                    );
                }
            }
        }
    }
    Ok(())
}

fn run_bus(
    rx: Receiver<Envelope>,
    subscribers: Vec<Sender<Envelope>>,
    closing: &StopFlag,
    sup: &Supervisor,
) {
    let fan_out = |msg: Envelope| {
        for s in &subscribers {
            send_until(s, msg.clone(), &|| sup.abandoned());
        }
    };
    loop {
        match rx.recv_timeout(POLL) {
            Ok(msg) => fan_out(msg),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                // A source left behind still holds a sender: closing ends the bus anyway, once
                // what was published is delivered.
                if closing.is_stopped() {
                    while let Ok(msg) = rx.try_recv() {
                        fan_out(msg);
                    }
                    break;
                }
            }
        }
    }
}

/// Perception's side of a run: its tallies.
struct PerceptionLoop<O> {
    records: Vec<FrameRecord<O>>,
    bad: Vec<usize>,
    defects: Vec<usize>,
    /// Left when the run stopped.
    dropped: Vec<usize>,
    misses: usize,
    deadline_ms: f64,
}

impl<O> PerceptionLoop<O> {
    fn run<T: Perceive<Outcome = O>>(
        &mut self,
        task: &mut T,
        q: &FrameQueue<Work<T::Payload>>,
        bus: &Sender<Envelope>,
        sup: &Supervisor,
        cancel: &StopFlag,
        clock: &dyn Clock,
    ) {
        let give_up = || sup.abandoned();
        loop {
            match catch_unwind(AssertUnwindSafe(|| task.check())) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => fail_with(sup, "perception", e),
                Err(p) => sup.fail("perception", format!("panicked: {}", panic_message(&*p))),
            }
            // Stopped: drain what is queued until the drain time is over; failed: stop now.
            let stopping = sup.is_stopped();
            if sup.failed() || cancel.is_stopped() {
                return;
            }
            let frame = match q.pop_timeout(POLL) {
                Pop::Closed => return,
                Pop::Empty if stopping => return,
                Pop::Empty => continue,
                Pop::Item(Work::Frame(f)) => f,
                Pop::Item(bad @ Work::Bad { .. }) => {
                    self.bad_item(bad, bus, &give_up);
                    continue;
                }
            };
            log::debug!("perception: frame {} started", frame.index);
            let picked = clock.now();
            let capture = frame.capture;
            let mut publish = |a: Alert| {
                send_until(
                    bus,
                    Envelope {
                        alert: a,
                        capture: Some(capture),
                    },
                    &give_up,
                );
            };
            let mut ctx = FrameCtx::new(&mut publish, cancel, clock);
            let result = catch_unwind(AssertUnwindSafe(|| task.perceive(&frame, &mut ctx)));
            let failed = |cause: String| format!("frame {} ({}): {cause}", frame.index, frame.path);
            match result {
                Ok(Ok(outcome)) => {
                    let done = clock.now();
                    let latency_ms = ms(done.saturating_duration_since(capture));
                    if latency_ms > self.deadline_ms {
                        self.misses += 1;
                        publish(Alert::DeadlineMiss {
                            frame: frame.index,
                            latency_ms,
                            deadline_ms: self.deadline_ms,
                        });
                    }
                    self.records.push(FrameRecord {
                        index: frame.index,
                        queue_ms: ms(picked.saturating_duration_since(capture)),
                        perceive_ms: ms(done.saturating_duration_since(picked)),
                        latency_ms,
                        outcome,
                    });
                }
                Ok(Err(crate::Error::Cancelled)) => {
                    self.dropped.push(frame.index);
                    publish(Alert::FrameDropped { frame: frame.index });
                }
                Ok(Err(e)) => {
                    self.failed_frame(&frame, e.one_line(), &mut publish);
                    sup.fail("perception", failed(e.one_line()));
                }
                Err(p) => {
                    let cause = format!("panicked: {}", panic_message(&*p));
                    self.failed_frame(&frame, cause.clone(), &mut publish);
                    sup.fail("perception", failed(cause));
                }
            }
        }
    }

    fn failed_frame<T>(&mut self, frame: &Frame<T>, cause: String, publish: &mut dyn FnMut(Alert)) {
        self.bad.push(frame.index);
        publish(Alert::BadFrame {
            frame: frame.index,
            path: frame.path.clone(),
            cause,
        });
    }

    fn bad_item<T>(&mut self, w: Work<T>, bus: &Sender<Envelope>, give_up: &dyn Fn() -> bool) {
        if let Work::Bad {
            index,
            path,
            cause,
            skipped,
        } = w
        {
            if skipped {
                self.bad.push(index);
            } else {
                self.defects.push(index);
            }
            send_until(
                bus,
                Envelope {
                    alert: Alert::BadFrame {
                        frame: index,
                        path,
                        cause,
                    },
                    capture: None,
                },
                give_up,
            );
        }
    }

    /// An item still queued when perception stopped: a frame is dropped, a report still goes out.
    fn leftover<T>(&mut self, w: Work<T>, bus: &Sender<Envelope>, sup: &Supervisor) {
        let give_up = || sup.abandoned();
        match w {
            Work::Frame(f) => {
                self.dropped.push(f.index);
                send_until(
                    bus,
                    Envelope {
                        alert: Alert::FrameDropped { frame: f.index },
                        capture: Some(f.capture),
                    },
                    &give_up,
                );
            }
            bad => self.bad_item(bad, bus, &give_up),
        }
    }
}

/// Record `e` as a failure; a [`crate::Error::Stage`] keeps its own stage (e.g. the retrainer
/// behind perception), anything else is `stage`'s.
fn fail_with(sup: &Supervisor, stage: &'static str, e: crate::Error) {
    match e {
        crate::Error::Stage { stage, cause } => sup.fail(stage, cause),
        e => sup.fail(stage, e.one_line()),
    }
}
