//! The real-time node and the replay harness: determinism, bad input, configuration errors,
//! overload (drop-oldest, source never blocks, memory flat) and shutdown on SIGTERM.

mod common;

use pedcache::node::{
    Alert, Clock, Envelope, Frame, FrameCtx, InputDefect, IterSource, ManualClock, Node,
    NodeSettings, Perceive, Planner, SourceItem,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pedcache"));
    c.current_dir(common::repo()).args(["--threads", "2"]);
    c
}

/// Tests that run the detector, and the overload test that times a queue, take turns: on a
/// 2-core machine a replay beside the overload test would starve it and fail it on timing.
static CPU: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cpu_turn() -> std::sync::MutexGuard<'static, ()> {
    CPU.lock().unwrap_or_else(|p| p.into_inner())
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pedcache-node-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn demo_inputs() -> Option<(PathBuf, PathBuf)> {
    common::model_path()?;
    let demo = common::require(&common::repo().join("sim/vtest"), "demo sequence")?;
    let calib = common::require(
        &common::repo().join("calib/ssdlite-ped-vtest/exits.ron"),
        "demo calibration",
    )?;
    Some((demo, calib.parent().unwrap().to_path_buf()))
}

fn read_alerts(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn read_report(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs models/ssdlite_ped.safetensors and the demo sequence sim/vtest (scripts/test.sh makes them)"]
fn replay_twice_at_max_speed_gives_identical_alert_streams() {
    let _turn = cpu_turn();
    let Some((demo, calib)) = demo_inputs() else {
        return;
    };
    let dir = tmpdir("determinism");
    let mut streams = Vec::new();
    for run in 0..2 {
        let alerts = dir.join(format!("alerts{run}.jsonl"));
        let out = bin()
            .args(["replay", "--source"])
            .arg(&demo)
            .arg("--calib")
            .arg(&calib)
            .args(["--max-speed", "--limit", "20", "--deadline-ms", "100000"])
            .arg("--report")
            .arg(dir.join(format!("report{run}.json")))
            .arg("--alerts")
            .arg(&alerts)
            .output()
            .unwrap();
        ok(&out);
        let mut stream = read_alerts(&alerts);
        for a in &mut stream {
            a.as_object_mut().unwrap().remove("latency_ms");
        }
        streams.push(stream);
    }
    assert!(!streams[0].is_empty());
    // Every one of the 20 frames gets an answer: an early alert or detections.
    let mut answered: Vec<u64> = streams[0]
        .iter()
        .filter(|a| a["type"] == "EarlyAlert" || a["type"] == "Detections")
        .map(|a| a["frame"].as_u64().unwrap())
        .collect();
    answered.dedup();
    assert_eq!(answered, (0..20).collect::<Vec<u64>>());
    assert_eq!(streams[0], streams[1]);
    let r = read_report(&dir.join("report0.json"));
    assert_eq!(r["frames"], 20);
    assert_eq!(r["dropped"], 0);
}

/// Person pixels (label 24) in a Cityscapes label-id map, counted here independently of the
/// crate's ground-truth code.
fn person_pixels(label_map: &Path) -> usize {
    image::open(label_map)
        .unwrap()
        .to_luma8()
        .as_raw()
        .iter()
        .filter(|&&v| v == 24)
        .count()
}

#[test]
#[ignore = "needs ../shared/data and models/ssdlite_ped.safetensors (scripts/test.sh)"]
fn bad_frames_are_reported_once_and_the_replay_goes_on() {
    let _turn = cpu_turn();
    if common::model_path().is_none() {
        return;
    }
    let city = common::data_root().join("cityscapes-seq");
    let Some(real_frames) = common::require(
        &city.join("leftImg8bit_sequence/train/aachen"),
        "Cityscapes sequence frames",
    ) else {
        return;
    };
    let real_labels = city.join("gtFine_pseudo/train/aachen");
    let real_frame = |i: usize| real_frames.join(format!("aachen_000000_{i:06}_leftImg8bit.jpg"));
    let real_label =
        |i: usize| real_labels.join(format!("aachen_000000_{i:06}_gtFine_labelIds.png"));

    // A Cityscapes layout in a temp dir: frames and their (pseudo) label maps, copied from the
    // shared data, then broken one way each.
    let dir = tmpdir("bad");
    let root = dir.join("cityscapes");
    let frames = root.join("leftImg8bit_sequence/train/aachen");
    let labels = root.join("gtFine_pseudo/train/aachen");
    std::fs::create_dir_all(&frames).unwrap();
    std::fs::create_dir_all(&labels).unwrap();
    let name = |i: usize, ext: &str| frames.join(format!("aachen_000000_{i:06}_leftImg8bit.{ext}"));
    let label = |i: usize| labels.join(format!("aachen_000000_{i:06}_gtFine_labelIds.png"));
    for i in [0, 4, 5] {
        std::fs::copy(real_frame(i), name(i, "jpg")).unwrap();
    }
    // 1: truncated JPEG.
    let jpeg = std::fs::read(real_frame(1)).unwrap();
    std::fs::write(name(1, "jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    // 2: a PNG of the wrong size (a 1024x512 crop of a real frame).
    let full = image::open(real_frame(2)).unwrap().to_rgb8();
    image::imageops::crop_imm(&full, 0, 0, 1024, 512)
        .to_image()
        .save(name(2, "png"))
        .unwrap();
    // 3: not an image.
    std::fs::write(name(3, "png"), b"this is not an image\n").unwrap();
    // Every frame has its label map but 4: the sequence is densely labelled, so 4's is missing.
    for i in [0, 1, 2, 3, 5] {
        std::fs::copy(real_label(i), label(i)).unwrap();
    }

    let (report, alerts) = (dir.join("report.json"), dir.join("alerts.jsonl"));
    let out = bin()
        .args(["replay", "--no-cache", "--max-speed", "--source"])
        .arg(&root)
        .arg("--report")
        .arg(&report)
        .arg("--alerts")
        .arg(&alerts)
        .output()
        .unwrap();
    ok(&out);
    let stream = read_alerts(&alerts);
    let bad: Vec<&serde_json::Value> = stream.iter().filter(|a| a["type"] == "BadFrame").collect();
    assert_eq!(bad.len(), 4, "{bad:?}");
    for (i, path, cause) in [
        (1, name(1, "jpg"), "truncated"),
        (2, name(2, "png"), "1024x512"),
        (3, name(3, "png"), "not a PNG or JPEG"),
        (4, label(4), "label map missing"),
    ] {
        let path = path.display().to_string();
        let hits: Vec<_> = bad.iter().filter(|a| a["path"] == path.as_str()).collect();
        assert_eq!(hits.len(), 1, "{path} reported {} times", hits.len());
        assert_eq!(hits[0]["frame"], i);
        let c = hits[0]["cause"].as_str().unwrap();
        assert!(c.contains(cause), "{path}: cause {c:?} lacks {cause:?}");
    }
    let r = read_report(&report);
    assert_eq!(r["frames"], 6);
    assert_eq!(r["bad_frames"], 3);
    assert_eq!(r["bad_label_maps"], 1);
    assert_eq!(r["processed"], 3);
    // The frame without its label map still ran through the detector.
    let dets: Vec<u64> = stream
        .iter()
        .filter(|a| a["type"] == "Detections")
        .map(|a| a["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(dets, vec![0, 4, 5]);
    // Ground truth: frames 0 and 5 (4 has none), against our own count of their person pixels.
    let presence = &r["presence"]["vs_ground_truth"];
    assert_eq!(r["presence"]["frames_with_ground_truth"], 2);
    let positives = [0, 5]
        .iter()
        .filter(|&&i| person_pixels(&real_label(i)) >= 2000)
        .count() as u64;
    assert_eq!(
        presence["tp"].as_u64().unwrap() + presence["fn"].as_u64().unwrap(),
        positives,
        "{presence}"
    );
}

#[test]
#[ignore = "needs models/ssdlite_ped.safetensors and the demo sequence sim/vtest (scripts/test.sh makes them)"]
fn demo_is_the_demo_scenario_through_the_replay_path() {
    let _turn = cpu_turn();
    let Some((demo, calib)) = demo_inputs() else {
        return;
    };
    let dir = tmpdir("demo");
    let (demo_report, demo_alerts) = (dir.join("demo.json"), dir.join("demo.jsonl"));
    let out = bin()
        .args(["demo", "--max-speed", "--limit", "12"])
        // Deadline misses depend on the machine's load, not on the path: out of the comparison.
        .args(["--deadline-ms", "100000", "--report"])
        .arg(&demo_report)
        .arg("--alerts")
        .arg(&demo_alerts)
        .output()
        .unwrap();
    ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("frames 12  processed 12"), "{stdout}");
    assert!(
        stdout.contains(&format!("report: {}", demo_report.display())),
        "{stdout}"
    );
    let (replay_report, replay_alerts) = (dir.join("replay.json"), dir.join("replay.jsonl"));
    let out = bin()
        .args([
            "replay",
            "--config",
            "sim/demo.ron",
            "--max-speed",
            "--limit",
            "12",
            "--deadline-ms",
            "100000",
        ])
        .arg("--report")
        .arg(&replay_report)
        .arg("--alerts")
        .arg(&replay_alerts)
        .output()
        .unwrap();
    ok(&out);
    let strip = |p: &Path| {
        let mut v = read_alerts(p);
        for a in &mut v {
            a.as_object_mut().unwrap().remove("latency_ms");
        }
        v
    };
    let demo_stream = strip(&demo_alerts);
    assert!(!demo_stream.is_empty());
    assert_eq!(demo_stream, strip(&replay_alerts));
    let r = read_report(&demo_report);
    assert_eq!(
        r["sources"][0],
        demo.strip_prefix(common::repo())
            .unwrap()
            .display()
            .to_string()
    );
    assert_eq!(
        r["calib"],
        calib
            .strip_prefix(common::repo())
            .unwrap()
            .display()
            .to_string()
    );
    assert_eq!(r["fps"], serde_json::Value::Null, "max speed");
    assert_eq!(r["exits"][0]["layer"], "expanded_conv_2");
}

fn replay_config(text: &str, name: &str) -> (Output, PathBuf) {
    let dir = tmpdir(name);
    let cfg = dir.join("scenario.ron");
    std::fs::write(&cfg, text).unwrap();
    let out = bin()
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg("--report")
        .arg(dir.join("report.json"))
        .output()
        .unwrap();
    (out, cfg)
}

fn assert_one_line_error(out: &Output, want: &[&str]) {
    assert!(!out.status.success(), "accepted: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for w in want {
        assert!(err.contains(w), "{err:?} lacks {w:?}");
    }
}

#[test]
fn malformed_ron_exits_nonzero_with_file_line_and_reason() {
    // Line 3 lacks its comma: the parser stops at line 4.
    let (out, cfg) = replay_config(
        "(\n    sources: [\"src\"],\n    fps: 17.0\n    deadline_ms: 50.0,\n)\n",
        "malformed",
    );
    assert_one_line_error(&out, &[&format!("{}:4:", cfg.display()), "Expected"]);
}

#[test]
fn unknown_keys_and_bad_values_are_rejected() {
    let (out, cfg) = replay_config(
        "(\n    sources: [\"src\"],\n    fps: 17.0,\n    turbo: true,\n)\n",
        "unknown",
    );
    assert_one_line_error(&out, &[&format!("{}:4:", cfg.display()), "turbo"]);
    let (out, cfg) = replay_config(
        "(\n    sources: [\"src\"],\n    fps: 17.0,\n    queue: 0,\n)\n",
        "badvalue",
    );
    assert_one_line_error(&out, &[&format!("{}:4:", cfg.display()), "queue"]);
}

#[test]
fn out_of_range_values_are_refused_at_load_naming_the_flag_or_the_line() {
    // The reproducers: each used to panic in a node thread and hang.
    for (flag, value, want) in [
        ("--fps", "1e-300", "fps must be in 0.01..=10000, got 1e-300"),
        (
            "--deadline-ms",
            "1e300",
            "deadline must be in 0.1..=3600000, got 1e300",
        ),
        ("--queue", "0", "queue must be in 1..=64, got 0"),
        (
            "--limit",
            "200000000",
            "limit must be in 0..=100000000, got 200000000",
        ),
        (
            "--score-thresh",
            "NaN",
            "score threshold must be in 0..=1, got NaN",
        ),
        (
            "--gt-min-pixels",
            "0",
            "gt-min-pixels must be in 1..=100000000, got 0",
        ),
    ] {
        let out = bin()
            .args(["replay", "--model", "ssdlite-ped", "--source", "sim/vtest"])
            .args([flag, value])
            .arg("--report")
            .arg(tmpdir("bounds").join("r.json"))
            .output()
            .unwrap();
        assert_one_line_error(&out, &[&format!("'{flag} <"), want]);
    }
    // The same values in a scenario name its file and line.
    for (key, want) in [
        ("fps: 1e-300", "fps must be in 0.01..=10000, got 1e-300"),
        (
            "deadline_ms: 1e300",
            "deadline_ms must be in 0.1..=3600000, got 1e300",
        ),
        ("queue: 1000", "queue must be in 1..=64, got 1000"),
        (
            "gt_min_pixels: 0",
            "gt_min_pixels must be in 1..=100000000, got 0",
        ),
        (
            "score_thresh: 2.0",
            "score_thresh must be in 0..=1, got 2.0",
        ),
    ] {
        let rate = if key.starts_with("fps") {
            "limit: 0"
        } else {
            "fps: 17.0"
        };
        let (out, cfg) = replay_config(
            &format!("(\n    sources: [\"src\"],\n    {key},\n    {rate},\n)\n"),
            "ronbounds",
        );
        assert_one_line_error(&out, &[&format!("{}:3: {want}", cfg.display())]);
    }
}

/// The cause a CPU-only binary gives for a CUDA device.
const NO_CUDA: &str =
    "this binary was built without --features cuda; build with ../shared/tools/cuda/build-cuda.sh";

#[test]
fn device_key_is_validated_at_load_with_file_and_line() {
    let ron = |device: &str| {
        format!("(\n    sources: [\"src\"],\n    fps: 17.0,\n    device: {device:?},\n)\n")
    };
    for bad in ["gpu", "cuda:one", "cuda:", "Cpu"] {
        let (out, cfg) = replay_config(&ron(bad), "baddevice");
        assert_one_line_error(
            &out,
            &[
                &format!("{}:4: unknown device {bad:?}", cfg.display()),
                "cpu | cuda | cuda:N",
            ],
        );
    }
    if cfg!(feature = "cuda") {
        eprintln!("SKIPPED: the CPU-only-build half (this is a --features cuda build)");
        return;
    }
    for cuda in ["cuda", "cuda:1"] {
        let (out, cfg) = replay_config(&ron(cuda), "cudadevice");
        assert_one_line_error(
            &out,
            &[&format!("{}:4: device {cuda}: {NO_CUDA}", cfg.display())],
        );
    }
    // The flags name the device too, with the same cause.
    let out = bin()
        .args(["replay", "--source", "src", "--device", "cuda", "--report"])
        .arg(tmpdir("cudaflag").join("r.json"))
        .output()
        .unwrap();
    assert_one_line_error(&out, &[&format!("device cuda: {NO_CUDA}")]);
    let out = bin()
        .args(["detect", "--device", "cuda:0", "--json"])
        .arg(tmpdir("cudadetect").join("d.json"))
        .arg("tests/fixtures/does-not-matter.png")
        .output()
        .unwrap();
    assert_one_line_error(&out, &[&format!("device cuda:0: {NO_CUDA}")]);
    let out = bin()
        .args(["detect", "--device", "tpu", "--json", "x.json", "y.png"])
        .output()
        .unwrap();
    assert_one_line_error(&out, &["unknown device \"tpu\" (cpu | cuda | cuda:N)"]);
}

#[test]
#[ignore = "needs models/ssdlite_ped.safetensors and the demo sequence sim/vtest (scripts/test.sh makes them)"]
fn device_cpu_in_ron_and_flags_runs_the_node_and_the_detector() {
    let _turn = cpu_turn();
    let Some((demo, calib)) = demo_inputs() else {
        return;
    };
    let demo = demo
        .strip_prefix(common::repo())
        .unwrap()
        .display()
        .to_string();
    let calib = calib
        .strip_prefix(common::repo())
        .unwrap()
        .display()
        .to_string();
    let text = format!(
        "(\n    sources: [{demo:?}],\n    calib: {calib:?},\n    max_speed: true,\n    limit: 3,\n    device: \"cpu\",\n)\n"
    );
    let (out, cfg) = replay_config(&text, "cpudevice");
    ok(&out);
    let r = read_report(&cfg.with_file_name("report.json"));
    assert_eq!(r["device"], "cpu");
    assert_eq!(r["processed"], 3);
    assert!(String::from_utf8_lossy(&out.stdout).contains("(device cpu)"));
    // --device on the command line overrides the file's (default) device.
    let dir = tmpdir("cpuflag");
    let out = bin()
        .args(["replay", "--config"])
        .arg(&cfg)
        .args(["--device", "cpu", "--report"])
        .arg(dir.join("r.json"))
        .output()
        .unwrap();
    ok(&out);
    let frame =
        format!("{demo}/leftImg8bit_sequence/demo/vtest/vtest_000000_000000_leftImg8bit.png");
    let (a, b) = (dir.join("default.json"), dir.join("cpu.json"));
    ok(&bin()
        .args(["detect", "--json"])
        .arg(&a)
        .arg(&frame)
        .output()
        .unwrap());
    ok(&bin()
        .args(["detect", "--device", "cpu", "--json"])
        .arg(&b)
        .arg(&frame)
        .output()
        .unwrap());
    let (a, b) = (read_report(&a), read_report(&b));
    assert!(!a["images"][0]["detections"].as_array().unwrap().is_empty());
    assert_eq!(a, b);
}

/// Counts the drops it hears about on the bus (shared: the planner runs on its own thread).
#[derive(Clone, Default)]
struct CountingPlanner(Arc<Mutex<(usize, usize)>>);

impl Planner for CountingPlanner {
    fn on_alert(&mut self, msg: &Envelope, _received: Instant) -> pedcache::Result<()> {
        let mut c = self.0.lock().unwrap();
        match msg.alert {
            Alert::FrameDropped { .. } => c.0 += 1,
            Alert::EarlyAlert { .. } => c.1 += 1,
            _ => {}
        }
        Ok(())
    }
}

fn rss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A source of `items` that raises `done` once it is exhausted: every item before has been
/// handed to the node by then (the source thread pushes an item before it pulls the next).
fn gated<T: Send + 'static>(
    items: impl Iterator<Item = SourceItem<T>> + Send,
    done: Arc<AtomicBool>,
) -> IterSource<impl Iterator<Item = SourceItem<T>> + Send> {
    IterSource(items.chain(std::iter::from_fn(move || {
        done.store(true, Ordering::SeqCst);
        None
    })))
}

/// Perception that holds its first frame until the source has handed over everything (so the
/// source runs against a perception that is behind, with no timing involved), then answers
/// each frame with an early alert.
struct HoldFirst<T> {
    source_done: Arc<AtomicBool>,
    held: bool,
    seen: Vec<usize>,
    on_frame: Box<dyn FnMut(&T)>,
}

impl<T: Send + 'static> Perceive for HoldFirst<T> {
    type Payload = T;
    type Outcome = ();
    fn perceive(&mut self, f: &Frame<T>, ctx: &mut FrameCtx<'_>) -> pedcache::Result<()> {
        if !self.held {
            self.held = true;
            let guard = Instant::now();
            while !self.source_done.load(Ordering::SeqCst) {
                // Hang guard only: the source must finish without perception's help.
                assert!(
                    guard.elapsed() < Duration::from_secs(120),
                    "the source waited on perception"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        (self.on_frame)(&f.payload);
        self.seen.push(f.index);
        ctx.publish(Alert::EarlyAlert {
            frame: f.index,
            exit: "synthetic".into(),
            version: None,
            class: 1,
            pedestrian: true,
            confidence: 1.0,
            latency_ms: 0.0,
        });
        Ok(())
    }
}

#[test]
fn overload_drops_oldest_never_blocks_the_source_and_memory_stays_flat() {
    let _turn = cpu_turn();
    const N: usize = 2_000;
    const FRAME: usize = 1 << 20; // 1 MiB a frame: 2 GB if frames were kept
    let done = Arc::new(AtomicBool::new(false));
    let source = gated(
        (0..N).map(|i| {
            SourceItem::frame(format!("synthetic#{i}"), None, vec![(i % 251) as u8; FRAME])
        }),
        done.clone(),
    );
    let before = rss_bytes();
    let peak = Arc::new(Mutex::new(before));
    let p2 = peak.clone();
    let mut task = HoldFirst {
        source_done: done,
        held: false,
        seen: Vec::new(),
        on_frame: Box::new(move |payload: &Vec<u8>| {
            // A real perception reads every byte.
            let sum: u64 = payload.iter().map(|&b| b as u64).sum();
            assert_eq!(sum, payload[0] as u64 * FRAME as u64);
            let mut p = p2.lock().unwrap();
            *p = (*p).max(rss_bytes());
        }),
    };
    let planner = CountingPlanner::default();
    let settings = NodeSettings {
        queue: 2,
        ..NodeSettings::default()
    };
    let run = Node::new(settings)
        .unwrap()
        .planner(planner.clone())
        .run(source, &mut task)
        .unwrap()
        .into_result()
        .unwrap();
    let peak = *peak.lock().unwrap();
    let processed = run.records.len();
    assert_eq!(run.sourced, N);
    // Perception held one frame while the source ran through all N: the queue kept the two
    // newest, every other frame was dropped (oldest first) and announced on the bus.
    assert_eq!(processed, 3);
    assert_eq!(
        &task.seen[1..],
        &[N - 2, N - 1],
        "the freshest frames are the ones kept"
    );
    assert_eq!(run.dropped.len(), N - 3);
    assert_eq!(run.dropped_at_stop, 0);
    let mut all: Vec<usize> = run.dropped.iter().chain(&task.seen).copied().collect();
    all.sort();
    assert_eq!(
        all,
        (0..N).collect::<Vec<_>>(),
        "every frame processed or dropped, once"
    );
    let (heard_dropped, answered) = *planner.0.lock().unwrap();
    assert_eq!(heard_dropped, N - 3, "each drop on the bus");
    assert_eq!(answered, processed);
    // Memory flat: a handful of frames in flight, not thousands.
    let grew = peak.saturating_sub(before) >> 20;
    assert!(grew < 64, "RSS grew by {grew} MiB");
}

/// Collects the `BadFrame` reports it hears about.
#[derive(Clone, Default)]
struct DefectPlanner(Arc<Mutex<Vec<(usize, String)>>>);

impl Planner for DefectPlanner {
    fn on_alert(&mut self, msg: &Envelope, _received: Instant) -> pedcache::Result<()> {
        if let Alert::BadFrame { frame, path, .. } = &msg.alert {
            self.0.lock().unwrap().push((*frame, path.clone()));
        }
        Ok(())
    }
}

#[test]
fn input_defects_are_reported_once_even_when_their_frame_is_dropped() {
    const N: usize = 600;
    // Every 7th frame has a defective input (say, its label map).
    let defective: Vec<usize> = (0..N).filter(|i| i % 7 == 3).collect();
    let done = Arc::new(AtomicBool::new(false));
    let source = gated(
        (0..N).map(|i| SourceItem::Frame {
            path: format!("synthetic#{i}"),
            capture: None,
            payload: i,
            defects: if i % 7 == 3 {
                vec![InputDefect {
                    path: format!("labels#{i}"),
                    cause: "label map missing".into(),
                }]
            } else {
                Vec::new()
            },
        }),
        done.clone(),
    );
    let mut task = HoldFirst {
        source_done: done,
        held: false,
        seen: Vec::new(),
        on_frame: Box::new(|_: &usize| {}),
    };
    let planner = DefectPlanner::default();
    let run = Node::new(NodeSettings::default())
        .unwrap()
        .planner(planner.clone())
        .run(source, &mut task)
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(run.records.len() + run.dropped.len(), N);
    assert!(run.bad.is_empty(), "defective frames are not skipped");
    let mut reported = planner.0.lock().unwrap().clone();
    reported.sort();
    let expected: Vec<(usize, String)> = defective
        .iter()
        .map(|&i| (i, format!("labels#{i}")))
        .collect();
    assert_eq!(reported, expected, "each defect once, dropped frames' too");
    let mut counted = run.defects.clone();
    counted.sort();
    assert_eq!(counted, defective);
    // Most defective frames were dropped, and their defects were still reported.
    assert!(defective.iter().filter(|i| run.dropped.contains(i)).count() > defective.len() - 3);
}

/// Perception whose frames take a known time on an injected clock: frame `i` ends at its
/// capture + `cost[i]` ms.
struct Costly {
    clock: Arc<ManualClock>,
    cost_ms: Vec<u64>,
}

impl Perceive for Costly {
    type Payload = ();
    type Outcome = ();
    fn perceive(&mut self, f: &Frame<()>, ctx: &mut FrameCtx<'_>) -> pedcache::Result<()> {
        let end = f.capture + Duration::from_millis(self.cost_ms[f.index]);
        self.clock.sleep_until(end, ctx.cancel_flag());
        Ok(())
    }
}

#[test]
fn deadline_misses_follow_the_nodes_clock() {
    let clock = Arc::new(ManualClock::new());
    let t0 = clock.now();
    let cost_ms = vec![10, 150, 50, 200, 100, 101];
    // Captures a second apart: each frame's latency is exactly its cost.
    let items: Vec<SourceItem<()>> = (0..cost_ms.len())
        .map(|i| {
            SourceItem::frame(
                format!("f{i}"),
                Some(t0 + Duration::from_secs(i as u64)),
                (),
            )
        })
        .collect();
    let settings = NodeSettings {
        deadline: Duration::from_millis(100),
        lockstep: true,
        ..NodeSettings::default()
    };
    let misses = Arc::new(Mutex::new(Vec::new()));
    struct Misses(Arc<Mutex<Vec<(usize, f64)>>>);
    impl Planner for Misses {
        fn on_alert(&mut self, msg: &Envelope, _: Instant) -> pedcache::Result<()> {
            if let Alert::DeadlineMiss {
                frame,
                latency_ms,
                deadline_ms,
            } = msg.alert
            {
                assert_eq!(deadline_ms, 100.0);
                self.0.lock().unwrap().push((frame, latency_ms));
            }
            Ok(())
        }
    }
    let run = Node::new(settings)
        .unwrap()
        .clock(clock.clone())
        .planner(Misses(misses.clone()))
        .run(
            IterSource(items.into_iter()),
            &mut Costly {
                clock,
                cost_ms: cost_ms.clone(),
            },
        )
        .unwrap()
        .into_result()
        .unwrap();
    let latencies: Vec<f64> = run.records.iter().map(|r| r.latency_ms).collect();
    assert_eq!(
        latencies,
        cost_ms.iter().map(|&c| c as f64).collect::<Vec<_>>()
    );
    // Over the deadline, not at it: 150, 200 and 101 ms.
    assert_eq!(
        *misses.lock().unwrap(),
        vec![(1, 150.0), (3, 200.0), (5, 101.0)]
    );
    assert_eq!(run.deadline_misses, 3);
}

#[test]
#[ignore = "needs models/ssdlite_ped.safetensors and the demo sequence sim/vtest (scripts/test.sh makes them)"]
fn retrainer_learns_from_full_detections_and_reports_its_rounds() {
    let _turn = cpu_turn();
    let Some((demo, calib)) = demo_inputs() else {
        return;
    };
    let dir = tmpdir("retrain");
    let report = dir.join("report.json");
    // alert_then_continue with an unreachable deadline: the full detector labels every frame
    // (one unit each: 768x576 is one tile), so every frame is offered to the retrainer.
    let out = bin()
        .args(["replay", "--source"])
        .arg(&demo)
        .arg("--calib")
        .arg(&calib)
        .args([
            "--max-speed",
            "--limit",
            "100",
            "--policy",
            "alert_then_continue",
            "--deadline-ms",
            "100000",
            "--retrain",
            "--report",
        ])
        .arg(&report)
        .output()
        .unwrap();
    ok(&out);
    let r = read_report(&report);
    let t = &r["retrain"];
    assert_eq!(r["full_detections"], 100);
    assert_eq!(
        t["samples"].as_u64().unwrap() + t["unconfident"].as_u64().unwrap(),
        100,
        "{t}"
    );
    assert_eq!(t["dropped"], 0, "its queue (256) holds all 100 offers");
    assert!(t["samples"].as_u64().unwrap() >= 60, "{t}");
    assert!(r["retrains"].as_u64().unwrap() >= 1, "{t}");
    assert_eq!(r["retrains"], t["rounds"]);
    assert!(t["error"].is_null(), "{t}");
    let last = &t["last_round"];
    assert!(last["held_out"].as_u64().unwrap() > 0, "{t}");
}

#[test]
#[ignore = "needs models/ssdlite_ped.safetensors and the demo sequence sim/vtest (scripts/test.sh makes them)"]
fn sigterm_drains_writes_the_report_and_exits_zero() {
    let _turn = cpu_turn();
    let Some((demo, calib)) = demo_inputs() else {
        return;
    };
    let dir = tmpdir("sigterm");
    let report = dir.join("report.json");
    let mut child = bin()
        .args(["replay", "--fps", "17", "--source"])
        .arg(&demo)
        .arg("--calib")
        .arg(&calib)
        .arg("--report")
        .arg(&report)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("replay did not stop within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "{status:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = read_report(&report);
    let frames = r["frames"].as_u64().unwrap();
    assert!(frames > 0);
    assert!(r["interrupted"].as_bool().unwrap());
    assert_eq!(r["status"], "interrupted");
    assert_eq!(
        frames,
        r["processed"].as_u64().unwrap()
            + r["dropped"].as_u64().unwrap()
            + r["bad_frames"].as_u64().unwrap(),
        "in-flight frames drained"
    );
}
