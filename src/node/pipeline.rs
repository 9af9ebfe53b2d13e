//! The node's threads: source, perception (on the calling thread), alert bus, planner, recorder.

use super::queue::FrameQueue;
use super::{Alert, Envelope, Planner};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Capacity of the alert bus and of each subscriber's channel.
pub const BUS_CAPACITY: usize = 4096;

/// What the source yields: a decoded frame, or a frame that could not be read.
pub enum SourceItem<T> {
    /// A frame to perceive. `defects`: inputs that belong to it but could not be used (e.g. its
    /// ground-truth label map is missing); each is reported once as `BadFrame` and counted, and
    /// the frame is still processed.
    Frame {
        path: String,
        payload: T,
        defects: Vec<InputDefect>,
    },
    Bad {
        path: String,
        cause: String,
    },
}

/// An input that belongs to a good frame but could not be used: its path and the cause.
#[derive(Clone, Debug, PartialEq)]
pub struct InputDefect {
    pub path: String,
    pub cause: String,
}

/// A frame in the node: its index in the source, its capture time and its pixels (or payload).
pub struct Frame<T> {
    pub index: usize,
    pub capture: Instant,
    pub path: String,
    pub payload: T,
}

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

#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// Camera rate; `None` = as fast as possible, in lockstep with perception (no drops).
    pub fps: Option<f64>,
    /// Pending frames the source may queue ahead of perception.
    pub queue: usize,
    pub deadline: Duration,
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

/// Everything a run produced.
pub struct NodeRun<O, P> {
    /// Items the source produced (frames + bad frames).
    pub sourced: usize,
    pub dropped: Vec<usize>,
    /// Frames reported as `BadFrame` and skipped (unreadable, or perception failed on them).
    pub bad: Vec<usize>,
    /// Frames processed (or dropped) whose defective input was reported as `BadFrame`
    /// (see [`SourceItem::Frame`]), once per defect.
    pub defects: Vec<usize>,
    pub records: Vec<FrameRecord<O>>,
    pub deadline_misses: usize,
    pub planner: P,
    /// Longest time the source spent handing one frame over (it must never wait on perception).
    pub source_max_push_ms: f64,
    /// The stop flag ended the source before the sequence did.
    pub interrupted: bool,
    pub wall_s: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct SourceStats {
    sourced: usize,
    dropped: Vec<usize>,
    max_push_ms: f64,
    interrupted: bool,
}

fn run_source<T, S>(
    mut source: S,
    q: &FrameQueue<Work<T>>,
    bus: &Sender<Envelope>,
    settings: &NodeSettings,
    stop: &AtomicBool,
) -> SourceStats
where
    S: Iterator<Item = SourceItem<T>>,
{
    let t0 = Instant::now();
    let mut st = SourceStats {
        sourced: 0,
        dropped: Vec::new(),
        max_push_ms: 0.0,
        interrupted: false,
    };
    let mut i = 0usize;
    loop {
        if stop.load(Ordering::SeqCst) {
            st.interrupted = true;
            break;
        }
        if let Some(fps) = settings.fps {
            let due = t0 + Duration::from_secs_f64(i as f64 / fps);
            loop {
                let now = Instant::now();
                if now >= due || stop.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep((due - now).min(Duration::from_millis(20)));
            }
            if stop.load(Ordering::SeqCst) {
                st.interrupted = true;
                break;
            }
        }
        let capture = Instant::now();
        let Some(item) = source.next() else { break };
        let (work, defects) = match item {
            SourceItem::Frame {
                path,
                payload,
                defects,
            } => (
                Work::Frame(Frame {
                    index: i,
                    capture,
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
        // Defect reports go ahead of their frame and are never evicted: each is reported once,
        // in order, even when the frame itself is dropped.
        for d in defects {
            let report = Work::Bad {
                index: i,
                path: d.path,
                cause: d.cause,
                skipped: false,
            };
            if settings.fps.is_some() {
                // Never waits and evicts nothing (a report is a few bytes beyond the bound).
                q.push_evict(report, |_| false);
            } else {
                q.push_wait(report);
            }
        }
        st.sourced += 1;
        i += 1;
        if settings.fps.is_some() {
            let t = Instant::now();
            let evicted = q.push_evict(work, |w| matches!(w, Work::Frame(_)));
            st.max_push_ms = st.max_push_ms.max(ms(t.elapsed()));
            if let Some(Work::Frame(f)) = evicted {
                st.dropped.push(f.index);
                // The bus is drained by a thread that never waits on perception.
                let _ = bus.send(Envelope {
                    alert: Alert::FrameDropped { frame: f.index },
                    capture: Some(f.capture),
                });
            }
        } else {
            q.push_wait(work);
        }
    }
    q.close();
    st
}

fn run_bus(rx: Receiver<Envelope>, subscribers: Vec<Sender<Envelope>>) {
    for msg in rx {
        for s in &subscribers {
            let _ = s.send(msg.clone());
        }
    }
}

fn run_recorder(rx: Receiver<Envelope>, mut out: Box<dyn Write + Send>) -> crate::Result<()> {
    for msg in rx {
        serde_json::to_writer(&mut out, &msg.alert)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Run the node until the source ends or `stop` is set; frames already queued are drained.
/// `perceive(frame, publish)` runs on the calling thread and publishes its alerts as it goes.
pub fn run_node<T, O, P, S, F>(
    source: S,
    mut perceive: F,
    planner: P,
    recorder: Option<Box<dyn Write + Send>>,
    settings: &NodeSettings,
    stop: &AtomicBool,
) -> crate::Result<NodeRun<O, P>>
where
    T: Send,
    P: Planner,
    S: Iterator<Item = SourceItem<T>> + Send,
    F: FnMut(&Frame<T>, &mut dyn FnMut(Alert)) -> crate::Result<O>,
{
    crate::ensure!(settings.queue >= 1, "queue must be at least 1");
    let start = Instant::now();
    let q = FrameQueue::<Work<T>>::new(settings.queue);
    let (bus_tx, bus_rx) = bounded::<Envelope>(BUS_CAPACITY);
    let (plan_tx, plan_rx) = bounded::<Envelope>(BUS_CAPACITY);
    let mut subscribers = vec![plan_tx];
    let rec_rx = recorder.as_ref().map(|_| {
        let (tx, rx) = bounded::<Envelope>(BUS_CAPACITY);
        subscribers.push(tx);
        rx
    });
    let deadline_ms = ms(settings.deadline);
    std::thread::scope(|s| -> crate::Result<NodeRun<O, P>> {
        let src_bus = bus_tx.clone();
        let qr = &q;
        let source_h = std::thread::Builder::new()
            .name("source".into())
            .spawn_scoped(s, move || run_source(source, qr, &src_bus, settings, stop))?;
        let bus_h = std::thread::Builder::new()
            .name("alert-bus".into())
            .spawn_scoped(s, move || run_bus(bus_rx, subscribers))?;
        let planner_h = std::thread::Builder::new()
            .name("planner".into())
            .spawn_scoped(s, move || {
                let mut planner = planner;
                for msg in plan_rx {
                    planner.on_alert(&msg, Instant::now());
                }
                planner
            })?;
        let recorder_h = match (recorder, rec_rx) {
            (Some(out), Some(rx)) => Some(
                std::thread::Builder::new()
                    .name("recorder".into())
                    .spawn_scoped(s, move || run_recorder(rx, out))?,
            ),
            _ => None,
        };

        // Perception, on this thread.
        let (mut records, mut bad, mut defects, mut misses) =
            (Vec::new(), Vec::new(), Vec::new(), 0usize);
        let mut failure: Option<crate::Error> = None;
        while let Some(work) = q.pop() {
            match work {
                Work::Bad {
                    index,
                    path,
                    cause,
                    skipped,
                } => {
                    if skipped {
                        bad.push(index);
                    } else {
                        defects.push(index);
                    }
                    let _ = bus_tx.send(Envelope {
                        alert: Alert::BadFrame {
                            frame: index,
                            path,
                            cause,
                        },
                        capture: None,
                    });
                }
                Work::Frame(frame) => {
                    let picked = Instant::now();
                    let capture = frame.capture;
                    let mut publish = |a: Alert| {
                        let _ = bus_tx.send(Envelope {
                            alert: a,
                            capture: Some(capture),
                        });
                    };
                    match perceive(&frame, &mut publish) {
                        Ok(outcome) => {
                            let done = Instant::now();
                            let latency_ms = ms(done - capture);
                            if latency_ms > deadline_ms {
                                misses += 1;
                                publish(Alert::DeadlineMiss {
                                    frame: frame.index,
                                    latency_ms,
                                    deadline_ms,
                                });
                            }
                            records.push(FrameRecord {
                                index: frame.index,
                                queue_ms: ms(picked - capture),
                                perceive_ms: ms(done - picked),
                                latency_ms,
                                outcome,
                            });
                        }
                        Err(e) => {
                            bad.push(frame.index);
                            publish(Alert::BadFrame {
                                frame: frame.index,
                                path: frame.path.clone(),
                                cause: e.one_line(),
                            });
                            if failure.is_none() && records.is_empty() && bad.len() > 50 {
                                // Nothing works: stop rather than report thousands of failures.
                                failure = Some(e.context("perception fails on every frame"));
                                stop.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                }
            }
        }
        drop(bus_tx);
        let src = source_h
            .join()
            .map_err(|_| crate::err!("source thread panicked"))?;
        bus_h
            .join()
            .map_err(|_| crate::err!("alert bus thread panicked"))?;
        let planner = planner_h
            .join()
            .map_err(|_| crate::err!("planner thread panicked"))?;
        if let Some(h) = recorder_h {
            h.join()
                .map_err(|_| crate::err!("recorder thread panicked"))??;
        }
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(NodeRun {
            sourced: src.sourced,
            dropped: src.dropped,
            bad,
            defects,
            records,
            deadline_misses: misses,
            planner,
            source_max_push_ms: src.max_push_ms,
            interrupted: src.interrupted,
            wall_s: start.elapsed().as_secs_f64(),
        })
    })
}
