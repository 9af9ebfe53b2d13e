//! Alerts across processes over Zenoh, on loopback only: `pedcache listen` in one process,
//! `pedcache replay --publish zenoh=...` in another; every alert of the replay arrives, in order,
//! equal to the replay's own `--alerts` JSONL.
#![cfg(feature = "zenoh")]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pedcache-zenoh-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A loopback endpoint on a port free a moment ago.
fn endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("tcp/127.0.0.1:{}", l.local_addr().unwrap().port())
}

#[test]
#[ignore = "needs the converted model and the demo sequence (scripts/test.sh)"]
fn every_alert_of_a_replay_reaches_a_listener_in_another_process_in_order() {
    common::model_path();
    common::require(&common::repo().join("sim/vtest"), "demo sequence");
    let dir = tmpdir("e2e");
    let ep = endpoint();
    let received = dir.join("received.jsonl");
    // The listener first: it retries until the node is up.
    let mut listener = common::pedcache()
        .args([
            "listen",
            "--connect",
            &ep,
            "--node",
            "test-car",
            "--idle",
            "3",
        ])
        .arg("--jsonl")
        .arg(&received)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let alerts = dir.join("alerts.jsonl");
    let out = common::pedcache()
        .args([
            "replay",
            "--config",
            "sim/demo.ron",
            "--limit",
            "150",
            "--max-speed",
        ])
        .args(["--publish", &format!("zenoh={ep}"), "--node", "test-car"])
        .args(["--publish-wait-ms", "10000"])
        .arg("--report")
        .arg(dir.join("report.json"))
        .arg("--alerts")
        .arg(&alerts)
        .output()
        .unwrap();
    common::assert_success(&out, "replay");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = listener.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "listener never went idle"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(listener.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "listener: {err}");

    let sent = common::read_jsonl(&alerts);
    let got = common::read_jsonl(&received);
    assert!(
        sent.len() >= 150,
        "one alert per frame at least: {}",
        sent.len()
    );
    assert_eq!(got.len(), sent.len(), "listener: {err}");
    assert!(
        err.contains(&format!("{} alerts received", sent.len())),
        "{err}"
    );
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(g["schema"], "pedcache.alert/1");
        assert_eq!(g["node"], "test-car");
        assert_eq!(g["seq"], i as u64, "in order, none missing");
        assert_eq!(&g["alert"], s, "message {i} is the recorded alert");
        let t = g["transport_ms"].as_f64().unwrap();
        assert!((0.0..1000.0).contains(&t), "transport {t} ms");
        let e2e = g["end_to_end_ms"].as_f64().unwrap();
        assert!(e2e >= t, "capture precedes publishing: {e2e} < {t}");
    }
}

#[test]
fn a_listener_without_a_node_retries_and_exits_after_idle() {
    let started = Instant::now();
    let out = common::pedcache()
        .args(["listen", "--connect", &endpoint(), "--idle", "1"])
        .output()
        .unwrap();
    common::assert_success(&out, "listen");
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 alerts received"));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(20),
        "{took:?}"
    );
}

#[test]
fn publish_takes_only_zenoh_endpoints_and_node_names_that_fit_a_key() {
    for (args, says) in [
        (
            vec!["--publish", "dds=udp/1.2.3.4:5"],
            "expected zenoh=ENDPOINT",
        ),
        (
            vec!["--publish", "zenoh=tcp/127.0.0.1:1", "--node", "a/b"],
            "--node",
        ),
        (vec!["--publish", "zenoh=bogus"], "zenoh"),
    ] {
        let out = common::pedcache()
            .args([
                "replay",
                "--config",
                "sim/demo.ron",
                "--report",
                "/dev/null",
            ])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}
