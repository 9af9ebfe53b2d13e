//! What the node publishes: typed alerts on the alert bus (serde; JSON `{"type": ..., ...}`), and
//! the exit policy that decides what a cache hit does to the rest of a frame.

use serde::{Deserialize, Serialize};
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

/// Messages on the alert bus (JSON: `{"type": "EarlyAlert", ...}`). `frame` is the frame's
/// index in its source, counting every item the source produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Alert {
    /// A cache exit answered for the frame (`pedestrian`: the class means "pedestrian present").
    EarlyAlert {
        /// The frame's index in its source.
        frame: usize,
        /// The layer the exit sits on.
        exit: String,
        /// The version of the exit set that answered (a learn dir's `vNNNN`); `null` for a
        /// calibration folder of its own.
        #[serde(default)]
        version: Option<u32>,
        /// The class the exit predicted.
        class: usize,
        /// Whether that class means "pedestrian present".
        pedestrian: bool,
        /// Calibrated confidence of the exit's answer.
        confidence: f32,
        /// Capture -> alert published.
        latency_ms: f64,
    },
    /// Full-detection result for the frame, boxes `[x1, y1, x2, y2]` in frame pixels.
    Detections {
        /// The frame's index in its source.
        frame: usize,
        /// Boxes at or above the node's score threshold.
        boxes: Vec<[f32; 4]>,
        /// Each box's score.
        scores: Vec<f32>,
        /// Each box's label (1 = pedestrian for SSDLite, COCO ids for Mask R-CNN).
        labels: Vec<u32>,
        /// Detections at or above the node's score threshold that are pedestrians.
        pedestrians: usize,
        /// Capture -> alert published.
        latency_ms: f64,
    },
    /// Perception was behind: the frame was dropped unseen (the oldest pending one), or the run
    /// stopped before perception reached it.
    FrameDropped {
        /// The frame's index in its source.
        frame: usize,
    },
    /// The frame could not be used (`path` names the file: the frame, or a defective input of a
    /// frame that still ran, such as its label map).
    BadFrame {
        /// The frame's index in its source.
        frame: usize,
        /// The file that could not be used.
        path: String,
        /// Why, as one line.
        cause: String,
    },
    /// Perception finished the frame after its deadline.
    DeadlineMiss {
        /// The frame's index in its source.
        frame: usize,
        /// Capture -> perception done.
        latency_ms: f64,
        /// The node's deadline.
        deadline_ms: f64,
    },
}

impl Alert {
    /// The frame the alert is about.
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
    /// The alert itself.
    pub alert: Alert,
    /// When the frame was captured (`None` for reports about unreadable inputs).
    pub capture: Option<Instant>,
}
