//! The bodies of the node's threads: the source thread, the alert bus, perception's loop, and
//! the helpers every wait goes through (each gives up when the run is stopping).

use super::alert::{Alert, Envelope};
use super::clock::{ms, Clock, StopFlag, POLL};
use super::pipeline::FrameRecord;
use super::queue::{FrameQueue, Pop};
use super::source::{Frame, FrameSource, SourceCtx, SourceItem};
use super::supervise::{panic_message, Supervisor};
use super::task::{FrameCtx, Perceive};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What travels from the source to perception.
pub(super) enum Work<T> {
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
pub(super) struct SourceStats {
    pub(super) sourced: usize,
    pub(super) dropped: Vec<usize>,
    pub(super) dropped_at_stop: Vec<usize>,
    pub(super) max_push_ms: f64,
}

/// Spawn a supervised thread; the returned channel disconnects when it ends.
pub(super) fn spawn_stage(
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
pub(super) fn drain_timer(
    sup: &Supervisor,
    cancel: &StopFlag,
    perception_done: &StopFlag,
    drain: Duration,
) {
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
pub(super) fn wait_done(
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
pub(super) fn send_until(
    tx: &Sender<Envelope>,
    mut msg: Envelope,
    give_up: &dyn Fn() -> bool,
) -> bool {
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

pub(super) fn run_source<S: FrameSource>(
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

pub(super) fn run_bus(
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
pub(super) struct PerceptionLoop<O> {
    pub(super) records: std::collections::VecDeque<FrameRecord<O>>,
    /// At most this many records are kept (the oldest go first); `None`: all.
    pub(super) keep_records: Option<usize>,
    pub(super) processed: usize,
    pub(super) bad: Vec<usize>,
    pub(super) defects: Vec<usize>,
    /// Left when the run stopped.
    pub(super) dropped: Vec<usize>,
    pub(super) misses: usize,
    pub(super) deadline_ms: f64,
}

impl<O> PerceptionLoop<O> {
    pub(super) fn run<T: Perceive<Outcome = O>>(
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
            let waiting = || q.len();
            let mut ctx = FrameCtx::new(&mut publish, cancel, clock).with_waiting(&waiting);
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
                    self.processed += 1;
                    self.records.push_back(FrameRecord {
                        index: frame.index,
                        queue_ms: ms(picked.saturating_duration_since(capture)),
                        perceive_ms: ms(done.saturating_duration_since(picked)),
                        latency_ms,
                        outcome,
                    });
                    if let Some(k) = self.keep_records {
                        let excess = self.records.len().saturating_sub(k);
                        self.records.drain(..excess);
                    }
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
    pub(super) fn leftover<T>(&mut self, w: Work<T>, bus: &Sender<Envelope>, sup: &Supervisor) {
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
pub(super) fn fail_with(sup: &Supervisor, stage: &'static str, e: crate::Error) {
    match e {
        crate::Error::Stage { stage, cause } => sup.fail(stage, cause),
        e => sup.fail(stage, e.one_line()),
    }
}
