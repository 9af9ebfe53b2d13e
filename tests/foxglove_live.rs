//! `replay --foxglove`: a WebSocket client speaking the Foxglove protocol (subprotocol
//! `foxglove.sdk.v1`: advertise, subscribe, binary message data) connects during a replay and
//! receives its alerts, in order, and image annotations.
#![cfg(feature = "foxglove")]

mod common;

use foxglove::Decode;
use std::collections::HashMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::Message;

type Ws = tungstenite::WebSocket<MaybeTlsStream<TcpStream>>;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Connect as the Foxglove app does, retrying until the server is up.
fn connect(port: u16, within: Duration) -> Ws {
    let started = Instant::now();
    loop {
        let mut req = format!("ws://127.0.0.1:{port}")
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "foxglove.sdk.v1".parse().unwrap());
        match tungstenite::connect(req) {
            Ok((ws, _)) => return ws,
            Err(e) => {
                assert!(started.elapsed() < within, "no server on {port}: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
#[ignore = "needs the converted model and the demo sequence (scripts/test.sh)"]
fn a_foxglove_client_receives_alerts_and_annotations_during_a_replay() {
    common::model_path();
    common::require(&common::repo().join("sim/vtest"), "demo sequence");
    let dir = std::env::temp_dir().join(format!("pedcache-foxglove-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let alerts = dir.join("alerts.jsonl");
    // At the camera rate (17 fps), so the client connects while the replay runs.
    let mut replay = common::pedcache()
        .args(["replay", "--config", "sim/demo.ron", "--limit", "150"])
        // Full detection on every frame, so the annotations carry boxes.
        .arg("--no-cache")
        .args(["--foxglove", &format!("127.0.0.1:{port}")])
        .arg("--alerts")
        .arg(&alerts)
        .arg("--report")
        .arg(dir.join("report.json"))
        .spawn()
        .unwrap();
    let mut ws = connect(port, Duration::from_secs(30));
    if let MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    let mut topics: HashMap<String, u64> = HashMap::new();
    let mut subscribed = false;
    let (mut got, mut annotations) = (Vec::new(), Vec::new());
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "replay never ended"
        );
        match ws.read() {
            Ok(Message::Text(t)) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["op"] == "advertise" {
                    for c in v["channels"].as_array().unwrap() {
                        topics.insert(
                            c["topic"].as_str().unwrap().into(),
                            c["id"].as_u64().unwrap(),
                        );
                    }
                }
                let (a, n) = (
                    topics.get("/pedcache/alerts"),
                    topics.get("/pedcache/annotations"),
                );
                if let (false, Some(&a), Some(&n)) = (subscribed, a, n) {
                    let sub = serde_json::json!({"op": "subscribe", "subscriptions": [
                        {"id": 1, "channelId": a}, {"id": 2, "channelId": n}]});
                    ws.send(Message::text(sub.to_string())).unwrap();
                    subscribed = true;
                }
            }
            Ok(Message::Binary(b)) => {
                assert_eq!(b[0], 1, "message data opcode");
                let sub = u32::from_le_bytes(b[1..5].try_into().unwrap());
                let payload = &b[13..];
                match sub {
                    1 => got.push(serde_json::from_slice::<serde_json::Value>(payload).unwrap()),
                    2 => annotations
                        .push(foxglove::messages::ImageAnnotations::decode(payload).unwrap()),
                    s => panic!("unknown subscription {s}"),
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if replay.try_wait().unwrap().is_some() {
                    break;
                }
            }
            // The server closing at the end of the run.
            Err(_) => break,
        }
    }
    assert!(replay.wait().unwrap().success());
    let sent = common::read_jsonl(&alerts);
    eprintln!(
        "client: {} of {} alerts, {} annotation messages ({} boxes)",
        got.len(),
        sent.len(),
        annotations.len(),
        annotations.iter().map(|a| a.points.len()).sum::<usize>()
    );
    assert!(
        got.len() >= 30,
        "alerts received during the replay: {}",
        got.len()
    );
    // What the client saw is the run's alerts from the moment it subscribed, in order.
    let k = sent
        .iter()
        .position(|a| *a == got[0])
        .expect("first alert is one of the run's");
    assert_eq!(&sent[k..k + got.len()], &got[..], "in order, none missing");
    assert!(!annotations.is_empty());
    assert!(
        annotations.iter().any(|a| !a.points.is_empty()),
        "boxes drawn"
    );
    // One annotation message per frame result (empty when nothing was detected), a score label
    // per box, each box a 4-corner outline.
    assert_eq!(annotations.len(), got.len());
    for (a, alert) in annotations.iter().zip(&got) {
        let boxes = alert["boxes"].as_array().map_or(0, Vec::len);
        assert_eq!((a.points.len(), a.texts.len()), (boxes, boxes));
    }
    for a in annotations.iter().flat_map(|a| &a.points) {
        assert_eq!(a.points.len(), 4, "a box outline");
    }
}
