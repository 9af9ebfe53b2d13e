//! The real-time perception node: threads joined by bounded channels,
//! source -> perception -> alert bus -> planner (+ recorder writing alerts as JSON lines).
//!
//! - The source paces frames at the camera rate, stamps each with its capture time and never
//!   waits on perception: when perception is behind, the oldest pending frame is dropped and
//!   counted (`FrameDropped`). At max speed it runs in lockstep instead (no drops, deterministic).
//! - Perception (a [`Perception`]) publishes typed [`Alert`]s as soon as it knows them; the node
//!   adds `DeadlineMiss` when a frame finishes after its deadline.
//! - The bus fans alerts out to the [`Planner`] and the recorder.
//! - Optionally a retrainer ([`retrain`]) learns from the frames the full detector labelled and
//!   swaps retrained exits in between frames.

pub mod config;
pub mod pipeline;
pub mod queue;
pub mod retrain;

pub use pipeline::{run_node, FrameRecord, InputDefect, NodeRun, NodeSettings, SourceItem};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// What a cache hit does to the rest of the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HitPolicy {
    /// Skip the rest of the network (the paper).
    #[default]
    Exit,
    /// Alert now, then still run full detection when the deadline allows.
    AlertThenContinue,
}

impl std::str::FromStr for HitPolicy {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "exit" => Ok(Self::Exit),
            "alert_then_continue" | "alert-then-continue" => Ok(Self::AlertThenContinue),
            _ => crate::bail!("unknown policy {s:?} (exit | alert_then_continue)"),
        }
    }
}

/// Messages on the alert bus (JSON: `{"type": "EarlyAlert", ...}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Alert {
    /// A cache exit answered for the frame (`pedestrian`: the class means "pedestrian present").
    EarlyAlert {
        frame: usize,
        exit: String,
        class: usize,
        pedestrian: bool,
        confidence: f32,
        latency_ms: f64,
    },
    /// Full-detection result for the frame, boxes `[x1, y1, x2, y2]` in frame pixels.
    Detections {
        frame: usize,
        boxes: Vec<[f32; 4]>,
        scores: Vec<f32>,
        labels: Vec<u32>,
        /// Detections at or above the node's score threshold that are pedestrians.
        pedestrians: usize,
        latency_ms: f64,
    },
    FrameDropped {
        frame: usize,
    },
    BadFrame {
        frame: usize,
        path: String,
        cause: String,
    },
    DeadlineMiss {
        frame: usize,
        latency_ms: f64,
        deadline_ms: f64,
    },
}

impl Alert {
    pub fn frame(&self) -> usize {
        match self {
            Alert::EarlyAlert { frame, .. }
            | Alert::Detections { frame, .. }
            | Alert::FrameDropped { frame }
            | Alert::BadFrame { frame, .. }
            | Alert::DeadlineMiss { frame, .. } => *frame,
        }
    }

    /// Whether this alert says "pedestrian ahead".
    pub fn is_pedestrian(&self) -> bool {
        match self {
            Alert::EarlyAlert { pedestrian, .. } => *pedestrian,
            Alert::Detections { pedestrians, .. } => *pedestrians > 0,
            _ => false,
        }
    }
}

/// An alert with the capture time of its frame (not serialized: the bus is in-process).
#[derive(Clone, Debug)]
pub struct Envelope {
    pub alert: Alert,
    pub capture: Option<Instant>,
}

/// Consumer of the alert bus.
pub trait Planner: Send {
    /// Called for every alert, in bus order, `received` when it reached the planner.
    fn on_alert(&mut self, msg: &Envelope, received: Instant);
}

/// The harness planner's view of one frame.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Decision {
    pub brake: bool,
    /// Capture -> first pedestrian alert at the planner, ms.
    pub reaction_ms: Option<f64>,
}

/// Records a brake/no-brake decision and the reaction time per frame.
#[derive(Default)]
pub struct HarnessPlanner {
    pub decisions: BTreeMap<usize, Decision>,
}

impl Planner for HarnessPlanner {
    fn on_alert(&mut self, msg: &Envelope, received: Instant) {
        match &msg.alert {
            Alert::EarlyAlert { frame, .. } | Alert::Detections { frame, .. } => {
                let d = self.decisions.entry(*frame).or_default();
                if msg.alert.is_pedestrian() && !d.brake {
                    d.brake = true;
                    d.reaction_ms = msg
                        .capture
                        .map(|c| received.saturating_duration_since(c).as_secs_f64() * 1e3);
                }
            }
            _ => {}
        }
    }
}
