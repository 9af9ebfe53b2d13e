//! The real-time node and the replay harness: determinism, bad input, configuration errors,
//! overload (drop-oldest, source never blocks, memory flat) and shutdown on SIGTERM.

mod common;

use pedcache::node::pipeline::Frame;
use pedcache::node::{run_node, Alert, Envelope, NodeSettings, Planner, SourceItem};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pedcache"));
    c.current_dir(common::repo()).args(["--threads", "2"]);
    c
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
fn replay_twice_at_max_speed_gives_identical_alert_streams() {
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

#[test]
fn bad_frames_are_reported_once_and_the_replay_goes_on() {
    if common::model_path().is_none() {
        return;
    }
    let dir = tmpdir("bad");
    let seq = dir.join("seq");
    std::fs::create_dir_all(&seq).unwrap();
    let name = |i: usize, ext: &str| seq.join(format!("t_000000_{i:06}_leftImg8bit.{ext}"));
    let good = image::RgbImage::from_fn(512, 256, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    good.save(name(0, "png")).unwrap();
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(good.clone())
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    std::fs::write(name(1, "jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    image::RgbImage::new(64, 32).save(name(2, "png")).unwrap();
    std::fs::write(name(3, "png"), b"this is not an image\n").unwrap();
    good.save(name(4, "png")).unwrap();
    let (report, alerts) = (dir.join("report.json"), dir.join("alerts.jsonl"));
    let out = bin()
        .args(["replay", "--no-cache", "--max-speed", "--source"])
        .arg(&seq)
        .arg("--report")
        .arg(&report)
        .arg("--alerts")
        .arg(&alerts)
        .output()
        .unwrap();
    ok(&out);
    let stream = read_alerts(&alerts);
    let bad: Vec<&serde_json::Value> = stream.iter().filter(|a| a["type"] == "BadFrame").collect();
    assert_eq!(bad.len(), 3, "{bad:?}");
    for (i, ext, cause) in [
        (1, "jpg", "truncated"),
        (2, "png", "64x32"),
        (3, "png", "not a PNG or JPEG"),
    ] {
        let path = name(i, ext).display().to_string();
        let hits: Vec<_> = bad.iter().filter(|a| a["path"] == path.as_str()).collect();
        assert_eq!(hits.len(), 1, "{path} reported {} times", hits.len());
        assert_eq!(hits[0]["frame"], i);
        let c = hits[0]["cause"].as_str().unwrap();
        assert!(c.contains(cause), "{path}: cause {c:?} lacks {cause:?}");
    }
    let r = read_report(&report);
    assert_eq!(r["frames"], 5);
    assert_eq!(r["bad_frames"], 3);
    assert_eq!(r["processed"], 2);
    let dets: Vec<u64> = stream
        .iter()
        .filter(|a| a["type"] == "Detections")
        .map(|a| a["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(dets, vec![0, 4]);
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

/// Counts the drops it hears about on the bus.
#[derive(Default)]
struct CountingPlanner {
    dropped: usize,
    answered: usize,
}

impl Planner for CountingPlanner {
    fn on_alert(&mut self, msg: &Envelope, _received: Instant) {
        match msg.alert {
            Alert::FrameDropped { .. } => self.dropped += 1,
            Alert::EarlyAlert { .. } => self.answered += 1,
            _ => {}
        }
    }
}

fn rss_bytes() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn overload_drops_oldest_never_blocks_the_source_and_memory_stays_flat() {
    const N: usize = 10_000;
    const FRAME: usize = 1 << 20; // 1 MiB a frame: 10 GB if frames were kept
    let source = (0..N).map(|i| SourceItem::Frame {
        path: format!("synthetic#{i}"),
        payload: vec![(i % 251) as u8; FRAME],
    });
    let settings = NodeSettings {
        fps: Some(20_000.0),
        queue: 2,
        deadline: Duration::from_millis(50),
    };
    let before = rss_bytes();
    let mut peak = before;
    let mut last = None;
    let stop = AtomicBool::new(false);
    let run = run_node(
        source,
        |f: &Frame<Vec<u8>>, publish: &mut dyn FnMut(Alert)| -> anyhow::Result<u64> {
            // A real but slow perception: read every byte, take ~2 ms.
            let t = Instant::now();
            let sum: u64 = f.payload.iter().map(|&b| b as u64).sum();
            std::thread::sleep(Duration::from_millis(2).saturating_sub(t.elapsed()));
            assert!(last.is_none_or(|l| f.index > l), "frames out of order");
            last = Some(f.index);
            peak = peak.max(rss_bytes());
            publish(Alert::EarlyAlert {
                frame: f.index,
                exit: "synthetic".into(),
                class: 1,
                pedestrian: true,
                confidence: 1.0,
                latency_ms: f.capture.elapsed().as_secs_f64() * 1e3,
            });
            Ok(sum)
        },
        CountingPlanner::default(),
        None,
        &settings,
        &stop,
    )
    .unwrap();
    let after = rss_bytes();
    let processed = run.records.len();
    eprintln!(
        "overload: {N} frames in {:.2} s, processed {processed}, dropped {}, max push {:.3} ms, rss {} -> peak {} -> {} MiB",
        run.wall_s,
        run.dropped.len(),
        run.source_max_push_ms,
        before >> 20,
        peak >> 20,
        after >> 20
    );
    assert_eq!(run.sourced, N);
    assert_eq!(
        processed + run.dropped.len(),
        N,
        "every frame processed or dropped"
    );
    assert!(
        run.dropped.len() > N / 2,
        "perception is slower than the source"
    );
    assert_eq!(
        run.planner.dropped,
        run.dropped.len(),
        "each drop on the bus"
    );
    assert_eq!(run.planner.answered, processed);
    // The source never waited on perception: a handover is a lock and a push.
    assert!(run.source_max_push_ms < 20.0, "{}", run.source_max_push_ms);
    // Only fresh frames: a processed frame waited at most for the queue ahead of it.
    let worst_wait = run.records.iter().map(|r| r.queue_ms).fold(0f64, f64::max);
    assert!(worst_wait < 100.0, "a frame waited {worst_wait} ms");
    // Memory flat: a handful of frames in flight, not thousands.
    let grew = peak.saturating_sub(before) >> 20;
    assert!(grew < 64, "RSS grew by {grew} MiB");
}

#[test]
fn sigterm_drains_writes_the_report_and_exits_zero() {
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
    // The demo has far more frames than 2 s at 17 fps.
    assert!(frames < 200, "{frames}");
    assert_eq!(
        frames,
        r["processed"].as_u64().unwrap()
            + r["dropped"].as_u64().unwrap()
            + r["bad_frames"].as_u64().unwrap(),
        "in-flight frames drained"
    );
}
