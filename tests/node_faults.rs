//! The node under faults, through the public API only: a panic or an error in any stage ends the
//! run as that stage's failure, and a stop ends it in every state (source blocked, perception
//! mid-frame). Each run is bounded by a generous hang guard; the tests assert how it ended, not
//! how long it took (the time is printed, for the record).

mod toy;

use pedcache::frame::RgbFrame;
use pedcache::node::{
    Alert, AlertRecorder, Ending, Envelope, FrameSource, IterSource, Node, NodeRun, NodeSettings,
    Perception, PerceptionConfig, Planner, SourceCtx, SourceItem, StopFlag,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use toy::{Toy, POISON};

fn frame(level: u8) -> RgbFrame {
    toy::frame(level)
}

/// Frames of the given levels.
fn frames(levels: Vec<u8>) -> impl FrameSource<Payload = RgbFrame> {
    IterSource(
        levels
            .into_iter()
            .enumerate()
            .map(|(i, l)| SourceItem::frame(format!("toy#{i}"), None, frame(l))),
    )
}

fn perception(toy: Toy) -> Perception<Toy> {
    Perception::new(toy, None, PerceptionConfig::default()).unwrap()
}

/// Run `node` in a thread; the run's record, or a panic after a generous hang guard. Prints
/// how long it took from `from` (a fault or a stop) to the end.
fn run_guarded<S>(
    node: Node,
    source: S,
    mut task: Perception<Toy>,
    from: Arc<Mutex<Option<Instant>>>,
) -> NodeRun<pedcache::node::FrameOutcome>
where
    S: FrameSource<Payload = RgbFrame> + 'static,
{
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let run = node.run(source, &mut task);
        let _ = tx.send((run, Instant::now()));
    });
    let (run, ended) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the run ended (hang guard: 60 s)");
    if let Some(t) = *from.lock().unwrap() {
        let test = std::thread::current().name().unwrap_or("?").to_string();
        eprintln!("{test}: ended {:?} after the fault or stop", ended - t);
    }
    run.expect("the node started")
}

fn failure(run: &NodeRun<pedcache::node::FrameOutcome>) -> (&'static str, String) {
    match &run.ending {
        Ending::Failed(e @ pedcache::Error::Stage { stage, .. }) => (stage, e.one_line()),
        other => panic!("expected a stage failure, got {other:?}"),
    }
}

/// A source that panics on its fourth item (after three good frames).
struct PanickingSource {
    n: usize,
    at: Arc<Mutex<Option<Instant>>>,
}

impl FrameSource for PanickingSource {
    type Payload = RgbFrame;
    fn next_item(&mut self, _: &SourceCtx<'_>) -> pedcache::Result<Option<SourceItem<RgbFrame>>> {
        self.n += 1;
        if self.n == 4 {
            *self.at.lock().unwrap() = Some(Instant::now());
            panic!("camera driver crashed");
        }
        Ok(Some(SourceItem::frame(
            format!("cam#{}", self.n),
            None,
            frame(200),
        )))
    }
}

#[test]
fn a_panic_in_the_source_ends_the_run_as_the_source_stages_failure() {
    let at = Arc::new(Mutex::new(None));
    let source = PanickingSource {
        n: 0,
        at: at.clone(),
    };
    let node = Node::new(NodeSettings::default()).unwrap();
    let run = run_guarded(node, source, perception(Toy::default()), at);
    let (stage, line) = failure(&run);
    assert_eq!(stage, "source");
    assert_eq!(line, "source stage failed: panicked: camera driver crashed");
    assert_eq!(run.sourced, 3);
    assert!(!run.interrupted, "a failure is not an interruption");
}

/// A bounded record keeps the latest frames in order and still counts every frame; unbounded
/// keeps them all.
#[test]
fn keep_records_bounds_the_records_not_the_counts() {
    for (keep, want) in [
        (Some(3), vec![7, 8, 9]),
        (Some(0), vec![]),
        (None, (0..10).collect::<Vec<usize>>()),
    ] {
        let settings = NodeSettings {
            lockstep: true,
            keep_records: keep,
            ..NodeSettings::default()
        };
        let node = Node::new(settings).unwrap();
        let at = Arc::new(Mutex::new(None));
        let run = run_guarded(node, frames(vec![200; 10]), perception(Toy::default()), at);
        assert!(run.failure().is_none(), "keep {keep:?}: {:?}", run.ending);
        assert_eq!(run.processed, 10, "keep {keep:?}");
        let kept: Vec<usize> = run.records.iter().map(|r| r.index).collect();
        assert_eq!(kept, want, "keep {keep:?}");
    }
}

#[test]
fn a_panic_in_perception_ends_the_run_and_names_the_frame() {
    let at = Arc::new(Mutex::new(Some(Instant::now())));
    let settings = NodeSettings {
        lockstep: true,
        ..NodeSettings::default()
    };
    let node = Node::new(settings).unwrap();
    let run = run_guarded(
        node,
        frames(vec![200, 10, POISON, 200, 200, 200]),
        perception(Toy::default()),
        at,
    );
    let (stage, line) = failure(&run);
    assert_eq!(stage, "perception");
    assert_eq!(
        line,
        "perception stage failed: frame 2 (toy#2): panicked: toy detector: poisoned frame"
    );
    assert_eq!(run.records.len(), 2, "the frames before it were processed");
    assert_eq!(run.bad, vec![2], "the frame it failed on is reported");
    // Frames after it were not perceived: left when the run stopped (or never sourced).
    assert_eq!(
        run.records.len() + run.bad.len() + run.dropped.len(),
        run.sourced
    );
}

/// A planner that fails on its `n`-th alert, by panicking or with an error.
struct FailingPlanner {
    n: usize,
    panic: bool,
}

impl Planner for FailingPlanner {
    fn on_alert(&mut self, _: &Envelope, _: Instant) -> pedcache::Result<()> {
        self.n -= 1;
        match (self.n, self.panic) {
            (0, true) => panic!("planner bug"),
            (0, false) => Err(pedcache::err!("actuator offline")),
            _ => Ok(()),
        }
    }
}

#[test]
fn a_failing_planner_or_recorder_ends_the_run_naming_it() {
    for panic in [true, false] {
        let at = Arc::new(Mutex::new(None));
        let node = Node::new(NodeSettings::default())
            .unwrap()
            .planner(FailingPlanner { n: 2, panic });
        // An endless camera: only the failure can end this run.
        let endless =
            IterSource((0..).map(|i| SourceItem::frame(format!("cam#{i}"), None, frame(200))));
        let run = run_guarded(node, endless, perception(Toy::default()), at);
        let (stage, line) = failure(&run);
        assert_eq!(stage, "planner");
        let want = if panic {
            "panicked: planner bug"
        } else {
            "actuator offline"
        };
        assert_eq!(line, format!("planner stage failed: {want}"));
    }
    /// A disk that is full.
    struct Full;
    impl std::io::Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("No space left on device"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let node = Node::new(NodeSettings::default())
        .unwrap()
        .planner(AlertRecorder::new(Box::new(Full)));
    let endless =
        IterSource((0..).map(|i| SourceItem::frame(format!("cam#{i}"), None, frame(200))));
    let run = run_guarded(
        node,
        endless,
        perception(Toy::default()),
        Default::default(),
    );
    let (stage, line) = failure(&run);
    assert_eq!(stage, "recorder");
    assert!(line.contains("No space left on device"), "{line}");
}

/// A camera driver stuck in a read that never returns and never looks at the stop flag.
struct StuckSource {
    given: usize,
    stuck: Arc<AtomicUsize>,
}

impl FrameSource for StuckSource {
    type Payload = RgbFrame;
    fn next_item(&mut self, _: &SourceCtx<'_>) -> pedcache::Result<Option<SourceItem<RgbFrame>>> {
        if self.given < 2 {
            self.given += 1;
            return Ok(Some(SourceItem::frame("cam", None, frame(200))));
        }
        self.stuck.fetch_add(1, Ordering::SeqCst);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

#[test]
fn a_stop_ends_the_run_while_the_source_is_blocked() {
    let stop = StopFlag::new();
    let stuck = Arc::new(AtomicUsize::new(0));
    let settings = NodeSettings {
        stop_grace: Duration::from_millis(200),
        ..NodeSettings::default()
    };
    let node = Node::new(settings).unwrap().stop_flag(stop.clone());
    let source = StuckSource {
        given: 0,
        stuck: stuck.clone(),
    };
    let at = Arc::new(Mutex::new(None));
    let (stuck2, at2, stop2) = (stuck.clone(), at.clone(), stop.clone());
    std::thread::spawn(move || {
        while stuck2.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        *at2.lock().unwrap() = Some(Instant::now());
        stop2.stop();
    });
    let run = run_guarded(node, source, perception(Toy::default()), at);
    assert!(matches!(run.ending, Ending::Stopped), "{:?}", run.ending);
    assert!(run.interrupted);
    assert_eq!(run.sourced, 2);
    assert_eq!(
        run.records.len() + run.dropped.len(),
        2,
        "both frames accounted for"
    );
}

/// Counts the frames announced as dropped.
struct Dropped(Arc<Mutex<Vec<usize>>>);

impl Planner for Dropped {
    fn on_alert(&mut self, msg: &Envelope, _: Instant) -> pedcache::Result<()> {
        if let Alert::FrameDropped { frame } = msg.alert {
            self.0.lock().unwrap().push(frame);
        }
        Ok(())
    }
}

/// Three frames; the first holds the toy in its first stage until the stop. `drain`: the
/// node's drain time.
fn stop_in_flight(drain: Duration) -> (NodeRun<pedcache::node::FrameOutcome>, Vec<usize>) {
    let stop = StopFlag::new();
    let (entered_tx, entered) = mpsc::channel();
    let toy = Toy {
        hold: Some((stop.clone(), entered_tx)),
        ..Toy::default()
    };
    // Lockstep: frame 0 is the one in flight (nothing is evicted before perception takes it).
    let settings = NodeSettings {
        lockstep: true,
        drain,
        ..NodeSettings::default()
    };
    let dropped = Arc::new(Mutex::new(Vec::new()));
    let node = Node::new(settings)
        .unwrap()
        .stop_flag(stop.clone())
        .planner(Dropped(dropped.clone()));
    let at = Arc::new(Mutex::new(None));
    let (at2, stop2) = (at.clone(), stop.clone());
    std::thread::spawn(move || {
        // Perception is inside the detector's first stage of frame 0; later frames go through.
        if entered.recv_timeout(Duration::from_secs(60)).is_ok() {
            *at2.lock().unwrap() = Some(Instant::now());
            stop2.stop();
        }
    });
    let run = run_guarded(node, frames(vec![200; 3]), perception(toy), at);
    let dropped = dropped.lock().unwrap().clone();
    (run, dropped)
}

#[test]
fn a_stop_without_drain_cancels_the_frame_in_flight_between_two_stages() {
    let (run, dropped) = stop_in_flight(Duration::ZERO);
    assert!(matches!(run.ending, Ending::Stopped), "{:?}", run.ending);
    assert!(run.records.is_empty(), "frame 0 never finished");
    assert!(run.dropped.contains(&0), "{:?}", run.dropped);
    assert_eq!(run.dropped_at_stop, run.dropped.len());
    assert!(dropped.contains(&0), "announced on the bus");
}

#[test]
fn a_stop_with_drain_time_finishes_the_frames_already_taken() {
    // A drain far longer than the frames need: the one in flight finishes, and so do those
    // already queued (lockstep: the queue of two was full behind it).
    let (run, dropped) = stop_in_flight(Duration::from_secs(60));
    assert!(matches!(run.ending, Ending::Stopped), "{:?}", run.ending);
    assert_eq!(run.records.first().map(|r| r.index), Some(0));
    assert_eq!(run.records.len() + run.dropped.len(), run.sourced);
    assert!(
        run.records.len() >= 2,
        "frame 0 and the queue behind it: {:?}",
        run.dropped
    );
    assert_eq!(dropped, run.dropped);
}
