//! The replay driver: a scenario's sequences through the node, as a camera would deliver them
//! (paced at its rate, or in lockstep at max speed), with the harness planner and optionally an
//! alert recorder; then the run's report.

use crate::detect::registry;
use crate::frame::RgbFrame;
use crate::node::{
    AlertRecorder, CacheExits, Ending, Frame, FrameCtx, FrameOutcome, FrameSource, Node,
    NodeSettings, Perceive, Perception, PerceptionConfig, StopFlag,
};
use crate::sim::groundtruth::index_ground_truth;
use crate::sim::planner::HarnessPlanner;
use crate::sim::report::{ReplayReport, ReportInputs};
use crate::sim::scenario::Scenario;
use crate::sim::source::{select_frames, FrameRef, Paced, Selection, SequenceSource};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Frames of the scenario's sources, after the sequence selection and the limit.
pub fn scenario_frames(sc: &Scenario) -> crate::Result<Vec<FrameRef>> {
    let sel = Selection {
        part: None,
        seq_frames: sc.seq_frames,
        only_seq: sc.seq.clone(),
        not_seq: sc.not_seq.clone(),
        topic: sc.topic.clone(),
    };
    let mut frames = select_frames(&sc.sources, &sel)?;
    crate::ensure!(!frames.is_empty(), "no frames in {:?}", sc.sources);
    if sc.limit > 0 {
        frames.truncate(sc.limit);
    }
    Ok(frames)
}

/// A finished replay: its report, and the failure that ended it (also in the report).
pub struct Replayed {
    pub report: ReplayReport,
    pub failure: Option<crate::Error>,
}

/// Replay `sc` until its sources end, `stop` is set or a stage fails. `alerts`: where every
/// alert goes as a JSON line. `Err` when the replay could not start (model, calibration,
/// sources); a failure during the run comes back in [`Replayed`], with the report.
pub fn replay(
    sc: &Scenario,
    alerts: Option<Box<dyn Write + Send>>,
    stop: &StopFlag,
) -> crate::Result<Replayed> {
    replay_with(sc, alerts, Vec::new(), stop)
}

/// [`replay`] with more planners on the alert bus (e.g. a Zenoh publisher).
pub fn replay_with(
    sc: &Scenario,
    alerts: Option<Box<dyn Write + Send>>,
    planners: Vec<Box<dyn crate::node::planner::Planner>>,
    stop: &StopFlag,
) -> crate::Result<Replayed> {
    let node_cfg = sc.node();
    let device = crate::runtime::device(&sc.device)?;
    // Learning starts from the learn dir's latest version when it has one.
    let calib_dir = match &sc.calib {
        _ if node_cfg.learns() => {
            let dir = node_cfg.learn_dir_or_default();
            crate::node::learn::versions::latest(&dir)?.map(|_| dir)
        }
        other => other.clone(),
    };
    let exits = match &calib_dir {
        Some(dir) => Some(CacheExits::load(dir, &device)?),
        None => None,
    };
    let weights = node_cfg.weights_source();
    let model: registry::ModelName = sc.model.parse()?;
    let detector = registry::load(&sc.model, &weights, &device)?;
    if let Some(dir) = &calib_dir {
        // Refused here with the file's name; perception checks the loaded exits again.
        let (dir, _) = crate::node::learn::versions::resolve_calib(dir)?;
        crate::cache::files::check_dir(&dir, &detector)?;
    }
    let mut perception = Perception::new(
        detector,
        exits,
        PerceptionConfig::from_node_config(&node_cfg),
    )?;
    let frames = scenario_frames(sc)?;
    // Ground truth first, off the timed path; defective label maps travel with their frames.
    let truth = index_ground_truth(&frames, sc.gt_min_pixels);
    let total = frames.len();
    // Warm the detector on the first frame, off the clock; a frame that does not read is left
    // to the source, which reports it as a bad frame.
    if let Some((_, Ok(first))) = crate::sim::source::read_frames(&frames[..1]).next() {
        perception.warm_up(&first)?;
    }
    let sequence = SequenceSource::new(frames, truth.clone());
    let decode_times = sequence.decode_times();
    let source: Box<dyn FrameSource<Payload = RgbFrame>> = match sc.rate() {
        Some(fps) => Box::new(Paced::new(sequence, fps)?),
        None => Box::new(sequence),
    };
    let settings = NodeSettings {
        queue: sc.queue,
        deadline: Duration::from_secs_f64(sc.deadline_ms / 1e3),
        lockstep: sc.rate().is_none(),
        keep_records: (sc.keep_records > 0).then_some(sc.keep_records),
        ..NodeSettings::default()
    };
    let (planner, decisions) = HarnessPlanner::new();
    let mut node = Node::new(settings)?
        .stop_flag(stop.clone())
        .planner(planner);
    if let Some(out) = alerts {
        node = node.planner(AlertRecorder::new(out));
    }
    for p in planners {
        node = node.boxed_planner(p);
    }
    log::debug!("replay: node running over {total} frames");
    let run = node.run(
        source,
        &mut Progress {
            inner: &mut perception,
            total,
            live: std::io::stderr().is_terminal(),
            learning: String::new(),
        },
    )?;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let layers = perception.exit_layers().to_vec();
    // After a stop or a failure the flag is set and the retrainer is cancelled, not awaited.
    let (retrain, learn, late) = match perception.stop(stop) {
        Ok(s) => (s.retrain, s.learn, None),
        Err(e) => (None, None, Some(e)),
    };
    let decisions = decisions.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let decode_ms = decode_times
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let report = ReplayReport::new(
        &run,
        ReportInputs {
            scenario: sc,
            model: model.as_str(),
            weights: weights.describe(model),
            layers: &layers,
            truth: &truth,
            decisions: &decisions,
            retrain,
            learn,
            late_failure: late.as_ref(),
            decode_ms: &decode_ms,
        },
    );
    let failure = match run.ending {
        Ending::Failed(e) => Some(e),
        _ => late,
    };
    Ok(Replayed { report, failure })
}

/// Perception with a progress line on a terminal (with what learning has done, when on).
struct Progress<'a> {
    inner: &'a mut Perception<registry::AnyDetector>,
    total: usize,
    live: bool,
    learning: String,
}

impl Perceive for Progress<'_> {
    type Payload = RgbFrame;
    type Outcome = FrameOutcome;

    fn perceive(
        &mut self,
        frame: &Frame<RgbFrame>,
        ctx: &mut FrameCtx<'_>,
    ) -> crate::Result<FrameOutcome> {
        if self.live {
            if frame.index.is_multiple_of(25) {
                self.learning = self.inner.learn_stats().map_or_else(String::new, |l| {
                    let v = l
                        .versions
                        .last()
                        .map_or("none".into(), |v| format!("v{}", v.version));
                    format!(
                        " | latest version {v}, {} calibrations, {} hits audited, {} disagree",
                        l.calibrations, l.audit.hits_audited, l.audit.disagreements
                    )
                });
            }
            eprint!(
                "\rreplay: frame {}/{}{}",
                frame.index + 1,
                self.total,
                self.learning
            );
        }
        self.inner.perceive(frame, ctx)
    }

    fn check(&mut self) -> crate::Result<()> {
        self.inner.check()
    }
}
