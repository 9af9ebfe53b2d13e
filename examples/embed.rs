//! Embedding the pedcache node in a vehicle program: the program's camera driver pushes frames
//! from its own thread, the node raises pedestrian alerts, and the program's planner brakes on
//! the first one. Only `pedcache::node` and the detector registry are used; no replay harness.
//!
//! ```sh
//! cargo run --release --example embed                  # the demo: 100 frames of sim/vtest
//! cargo run --release --example embed -- DIR CALIB N   # N frames of DIR (PNG/JPEG, by name)
//! ```
//!
//! The demo needs `models/ssdlite_ped.safetensors` (`models/fetch.sh`) and the demo sequence
//! (`sim/make_demo.sh`; `scripts/demo.sh` does both). Ctrl-C stops it early.

use pedcache::detect::registry::{self, Weights};
use pedcache::node::{
    channel, Alert, CacheExits, Envelope, FrameSender, Node, NodeSettings, Perception,
    PerceptionConfig, Planner, Rejected, StopFlag,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEMO_FRAMES: &str = "sim/vtest/leftImg8bit_sequence/demo/vtest";
const DEMO_CALIB: &str = "calib/ssdlite-ped-vtest";
/// The demo camera's rate (the sequence's), frames/s.
const CAMERA_FPS: f64 = 17.0;

/// The program's planner: prints every alert, and brakes on the first pedestrian alert.
struct BrakePlanner {
    /// Frame of the first pedestrian alert, and how long after its capture the alert came.
    braked: Arc<Mutex<Option<(usize, f64)>>>,
}

impl Planner for BrakePlanner {
    fn on_alert(&mut self, msg: &Envelope, received: Instant) -> pedcache::Result<()> {
        let since_capture = msg
            .capture
            .map(|c| received.saturating_duration_since(c).as_secs_f64() * 1e3);
        let what = match &msg.alert {
            Alert::EarlyAlert {
                exit, confidence, ..
            } => format!("early alert from exit {exit} (confidence {confidence:.3})"),
            Alert::Detections { pedestrians, .. } => {
                format!("full detection: {pedestrians} pedestrian(s)")
            }
            Alert::FrameDropped { .. } => "dropped (perception was behind)".into(),
            Alert::BadFrame { path, cause, .. } => format!("bad input {path}: {cause}"),
            Alert::DeadlineMiss { latency_ms, .. } => {
                format!("deadline missed ({latency_ms:.1} ms)")
            }
        };
        let mut braked = self.braked.lock().unwrap_or_else(|e| e.into_inner());
        let brake = msg.alert.is_pedestrian() && braked.is_none();
        if brake {
            *braked = Some((msg.alert.frame(), since_capture.unwrap_or(f64::NAN)));
        }
        println!(
            "frame {:4}: {what}{}{}",
            msg.alert.frame(),
            since_capture.map_or_else(String::new, |ms| format!(", {ms:.1} ms after capture")),
            if brake { "  -> BRAKE" } else { "" }
        );
        Ok(())
    }
}

/// The program's camera driver: frame files at the camera rate, each stamped at capture.
fn camera(files: Vec<PathBuf>, out: FrameSender<pedcache::frame::RgbFrame>, stop: StopFlag) {
    let t0 = Instant::now();
    for (i, path) in files.iter().enumerate() {
        let due = t0 + Duration::from_secs_f64(i as f64 / CAMERA_FPS);
        if !stop.sleep(due.saturating_duration_since(Instant::now())) {
            return;
        }
        let capture = Instant::now();
        let name = path.display().to_string();
        let sent = match pedcache::frame::load_rgb(path) {
            Ok(frame) => out.send(name, frame, capture),
            Err(e) => out.send_item(pedcache::node::SourceItem::Bad {
                path: name,
                cause: e.one_line(),
            }),
        };
        match sent {
            Ok(()) => {}
            // A camera never waits: a frame the node cannot take now is gone.
            Err(Rejected::Full) => eprintln!("camera: frame {i} dropped at the driver"),
            Err(Rejected::Closed) => return,
        }
    }
    // Dropping the sender ends the node's source: the node finishes and the run ends.
}

/// The first `n` PNG/JPEG files of `dir`, by name.
fn frame_files(dir: &Path, n: usize) -> pedcache::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        pedcache::err!(
            "{}: {e} (make the demo sequence with sim/make_demo.sh)",
            dir.display()
        )
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    files.sort();
    files.truncate(n);
    pedcache::ensure!(
        !files.is_empty(),
        "{}: no PNG or JPEG frames",
        dir.display()
    );
    Ok(files)
}

fn run() -> pedcache::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(args.first().map_or(DEMO_FRAMES, String::as_str));
    let calib = PathBuf::from(args.get(1).map_or(DEMO_CALIB, String::as_str));
    let n: usize = match args.get(2) {
        Some(s) => s
            .parse()
            .map_err(|_| pedcache::err!("frame count {s:?} is not a number"))?,
        None => 100,
    };

    // The detector and its calibrated cache exits, on the CPU.
    let device = candle_core::Device::Cpu;
    let detector = registry::load("ssdlite-ped", &Weights::Default, &device)?;
    let exits = CacheExits::load(&calib, &device)?;
    let mut perception = Perception::new(detector, Some(exits), PerceptionConfig::default())?;

    // The node: the camera's frames in, alerts out to the planner.
    let stop = StopFlag::new();
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.stop()).map_err(|e| pedcache::err!("Ctrl-C: {e}"))?;
    }
    let braked = Arc::new(Mutex::new(None));
    // A node on a vehicle runs for days: keep only the latest records (the counts cover all).
    let settings = NodeSettings {
        keep_records: Some(1000),
        ..NodeSettings::default()
    };
    let node = Node::new(settings)?
        .stop_flag(stop.clone())
        .planner(BrakePlanner {
            braked: braked.clone(),
        });
    let (sender, source) = channel(4);
    let files = frame_files(&dir, n)?;
    let driver = {
        let stop = stop.clone();
        std::thread::spawn(move || camera(files, sender, stop))
    };
    let run = node.run(source, &mut perception)?;
    stop.stop(); // the camera too, if the node ended first
    let _ = driver.join();
    perception.stop(&stop)?;
    let run = run.into_result()?;

    println!(
        "{} frames: {} processed, {} dropped, {} deadline misses",
        run.sourced,
        run.processed,
        run.dropped.len(),
        run.deadline_misses
    );
    match *braked.lock().unwrap_or_else(|e| e.into_inner()) {
        Some((frame, ms)) => println!("braked on frame {frame}, {ms:.1} ms after its capture"),
        None => println!("no pedestrian: never braked"),
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("embed: {}", e.one_line());
        std::process::exit(1);
    }
}
