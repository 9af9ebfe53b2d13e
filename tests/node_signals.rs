//! `pedcache replay` under SIGTERM in each state a run can be in — the source blocked in a read,
//! perception in the middle of a frame, the retrainer in the middle of a round — and under a
//! failing stage. Each waits for the binary to say (in its debug log) that it is in that state,
//! signals it, and asserts how it ended: exit 0 with the report written (or, for the failure,
//! non-zero with one line naming the stage). The time from signal to exit is printed, not
//! asserted; the hang guards are generous. Those that need the model or the demo sequence are
//! `#[ignore = "needs ..."]` (`scripts/test.sh` runs them).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Tests that run a detector take turns (2-core machine).
static CPU: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cpu_turn() -> std::sync::MutexGuard<'static, ()> {
    CPU.lock().unwrap_or_else(|p| p.into_inner())
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pedcache-sig-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running replay whose stderr lines arrive on a channel.
struct Replay {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
}

fn spawn(args: &[&std::ffi::OsStr]) -> Replay {
    let mut child = Command::new(common::bin())
        .current_dir(common::repo())
        .args(["--threads", "2", "replay"])
        .args(args)
        .env("RUST_LOG", "pedcache::node=debug,pedcache::sim=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Replay {
        child,
        lines,
        stderr: Vec::new(),
    }
}

impl Replay {
    /// Wait for a stderr line containing `what` (hang guard: 300 s, for a loaded machine).
    fn wait_for(&mut self, what: &str) {
        let guard = Instant::now() + Duration::from_secs(300);
        loop {
            let left = guard.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(what);
                    self.stderr.push(l);
                    if hit {
                        return;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("no {what:?} from the replay; stderr: {:#?}", self.stderr);
                }
            }
        }
    }

    fn sigterm(&self) -> Instant {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
        Instant::now()
    }

    /// Wait for the exit (hang guard: 60 s); the status and the whole stderr.
    fn end(mut self, since: Instant, what: &str) -> (ExitStatus, Vec<String>) {
        let guard = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > guard {
                let _ = self.child.kill();
                panic!("{what}: the replay did not end within 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        eprintln!("{what}: exited {:?} after the signal", since.elapsed());
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stderr.push(l);
        }
        (status, self.stderr)
    }
}

fn report(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).expect("report written")).unwrap()
}

fn assert_interrupted(status: ExitStatus, stderr: &[String], r: &serde_json::Value) {
    assert!(status.success(), "{status:?}: {stderr:#?}");
    assert_eq!(r["status"], "interrupted", "{r}");
    assert_eq!(r["interrupted"], true);
    let frames = r["frames"].as_u64().unwrap();
    let accounted = r["processed"].as_u64().unwrap()
        + r["dropped"].as_u64().unwrap()
        + r["bad_frames"].as_u64().unwrap();
    assert_eq!(frames, accounted, "every sourced frame accounted for: {r}");
}

fn png(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, 90]))
        .save(path)
        .unwrap();
}

#[test]
#[ignore = "needs models/ssdlite_ped.safetensors (scripts/test.sh makes it)"]
fn sigterm_while_the_source_is_blocked_in_a_read() {
    let _turn = cpu_turn();
    if common::model_path().is_none() {
        return;
    }
    // Two frames, then a frame that is a FIFO: reading it blocks until someone writes.
    let dir = tmpdir("blocked");
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    png(&frames.join("f_0.png"), 64, 48);
    png(&frames.join("f_1.png"), 64, 48);
    let fifo = frames.join("f_2.png");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let out = dir.join("report.json");
    let mut replay = spawn(&[
        "--source".as_ref(),
        frames.as_os_str(),
        "--no-cache".as_ref(),
        "--max-speed".as_ref(),
        "--report".as_ref(),
        out.as_os_str(),
    ]);
    replay.wait_for("node running");
    // Opening the write end returns once the source has opened the FIFO to read it; we then
    // hold it open and write nothing, so the source stays blocked in read(2).
    let (tx, rx) = mpsc::channel();
    let f2 = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::OpenOptions::new().write(true).open(f2));
    });
    let writer = rx
        .recv_timeout(Duration::from_secs(300))
        .expect("the source opened the FIFO")
        .unwrap();
    let t = replay.sigterm();
    let (status, stderr) = replay.end(t, "source blocked");
    drop(writer);
    let r = report(&out);
    assert_interrupted(status, &stderr, &r);
    assert_eq!(
        r["frames"], 2,
        "the blocked read never produced a frame: {r}"
    );
}

#[test]
fn sigterm_while_perception_is_in_the_middle_of_a_frame() {
    let _turn = cpu_turn();
    // Mask R-CNN (stand-in weights: no file needed) takes ~0.9 s a frame on two cores here (it
    // runs at 1067x800 whatever the frame size): a signal 100 ms after a frame starts lands in
    // the middle of it, well before its last stage. (500 ms once let the frame finish first.)
    let dir = tmpdir("midframe");
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for i in 0..3 {
        png(&frames.join(format!("f_{i}.png")), 768, 576);
    }
    let out = dir.join("report.json");
    let mut replay = spawn(&[
        "--model".as_ref(),
        "maskrcnn-r50-fpn".as_ref(),
        "--standin-weights".as_ref(),
        "--source".as_ref(),
        frames.as_os_str(),
        "--max-speed".as_ref(),
        "--deadline-ms".as_ref(),
        "100000".as_ref(),
        "--report".as_ref(),
        out.as_os_str(),
    ]);
    replay.wait_for("perception: frame 0 started");
    std::thread::sleep(Duration::from_millis(100));
    let t = replay.sigterm();
    let (status, stderr) = replay.end(t, "perception mid-frame");
    let r = report(&out);
    assert_interrupted(status, &stderr, &r);
    assert_eq!(
        r["processed"], 0,
        "frame 0 was cancelled, not finished: {r}"
    );
    assert!(r["dropped_at_stop"].as_u64().unwrap() >= 1, "{r}");
}

#[test]
#[ignore = "needs models/ssdlite_ped.safetensors and the demo sequence sim/vtest (scripts/test.sh makes them)"]
fn sigterm_while_the_retrainer_is_in_the_middle_of_a_round() {
    let _turn = cpu_turn();
    let Some(demo) = common::require(&common::repo().join("sim/vtest"), "demo sequence") else {
        return;
    };
    if common::model_path().is_none() {
        return;
    }
    let dir = tmpdir("retrain");
    let out = dir.join("report.json");
    // alert_then_continue with an unreachable deadline: every frame is labelled by the full
    // detector and offered to the retrainer; its first round starts after 60 units.
    let mut replay = spawn(&[
        "--source".as_ref(),
        demo.as_os_str(),
        "--calib".as_ref(),
        "calib/ssdlite-ped-vtest".as_ref(),
        "--max-speed".as_ref(),
        "--policy".as_ref(),
        "alert_then_continue".as_ref(),
        "--deadline-ms".as_ref(),
        "100000".as_ref(),
        "--retrain".as_ref(),
        "--report".as_ref(),
        out.as_os_str(),
    ]);
    replay.wait_for("retrainer: round 1 started");
    let t = replay.sigterm();
    let (status, stderr) = replay.end(t, "retrainer mid-round");
    let r = report(&out);
    assert_interrupted(status, &stderr, &r);
    let stats = &r["retrain"];
    assert!(stats["samples"].as_u64().unwrap() >= 60, "{stats}");
    assert!(
        stats["error"].is_null(),
        "a cancelled round is no error: {stats}"
    );
}

#[test]
#[ignore = "needs models/ssdlite_ped.safetensors and the demo sequence sim/vtest (scripts/test.sh makes them)"]
fn a_failing_recorder_ends_the_run_with_one_line_naming_it() {
    let _turn = cpu_turn();
    let Some(demo) = common::require(&common::repo().join("sim/vtest"), "demo sequence") else {
        return;
    };
    if common::model_path().is_none() {
        return;
    }
    let dir = tmpdir("full");
    let out = dir.join("report.json");
    // Every write to /dev/full fails with ENOSPC.
    let replay = spawn(&[
        "--source".as_ref(),
        demo.as_os_str(),
        "--max-speed".as_ref(),
        "--limit".as_ref(),
        "200".as_ref(),
        "--alerts".as_ref(),
        "/dev/full".as_ref(),
        "--report".as_ref(),
        out.as_os_str(),
    ]);
    let (status, stderr) = replay.end(Instant::now(), "recorder failure (from the start)");
    assert!(!status.success(), "{stderr:#?}");
    let errors: Vec<&String> = stderr.iter().filter(|l| !l.contains(" DEBUG ")).collect();
    assert_eq!(errors.len(), 1, "{stderr:#?}");
    assert!(
        errors[0].starts_with("error: recorder stage failed: ")
            && errors[0].contains("No space left on device"),
        "{errors:?}"
    );
    let r = report(&out);
    assert_eq!(r["status"], "failed");
    assert!(r["error"]
        .as_str()
        .unwrap()
        .contains("recorder stage failed"));
}
