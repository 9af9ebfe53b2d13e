//! `replay --record OUT.mcap`: the file holds every alert of the run on `/pedcache/alerts`, in
//! order, equal to the `--alerts` JSONL, and a latency message per alert that has a latency.

mod common;

use std::path::PathBuf;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pedcache-record-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
#[ignore = "needs the converted model and the demo sequence (scripts/test.sh)"]
fn the_recording_holds_every_alert_in_order() {
    common::model_path();
    let demo = common::require(&common::repo().join("sim/vtest"), "demo sequence").unwrap();
    let dir = tmpdir("alerts");
    // Ten demo frames and one that does not decode, so a BadFrame is among the alerts.
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let mut src: Vec<PathBuf> = walk(&demo);
    src.sort();
    for (i, p) in src.iter().take(10).enumerate() {
        std::fs::copy(p, frames.join(format!("f{i:03}.png"))).unwrap();
    }
    let bytes = std::fs::read(&src[10]).unwrap();
    std::fs::write(frames.join("f010.png"), &bytes[..bytes.len() / 3]).unwrap();
    let (rec, alerts) = (dir.join("out/run.mcap"), dir.join("alerts.jsonl"));
    let out = common::pedcache()
        .args(["replay", "--config", "sim/demo.ron", "--max-speed"])
        .arg("--source")
        .arg(&frames)
        .arg("--record")
        .arg(&rec)
        .arg("--alerts")
        .arg(&alerts)
        .arg("--report")
        .arg(dir.join("report.json"))
        .output()
        .unwrap();
    common::assert_success(&out, "replay");
    let sent = common::read_jsonl(&alerts);
    assert!(sent.iter().any(|a| a["type"] == "BadFrame"), "{sent:?}");

    let data = std::fs::read(&rec).unwrap();
    let (mut got, mut latency, mut last_time) = (Vec::new(), Vec::new(), 0u64);
    for m in mcap::MessageStream::new(&data).unwrap() {
        let m = m.unwrap();
        assert_eq!(m.channel.message_encoding, "json");
        let schema = m.channel.schema.as_ref().expect("a schema per channel");
        assert_eq!(schema.encoding, "jsonschema");
        assert!(m.log_time >= last_time, "log times in order");
        last_time = m.log_time;
        let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
        match m.channel.topic.as_str() {
            "/pedcache/alerts" => got.push(v),
            "/pedcache/latency" => latency.push(v),
            t => panic!("unexpected topic {t}"),
        }
    }
    assert_eq!(got, sent, "every alert, in order");
    let with_latency: Vec<_> = sent
        .iter()
        .filter(|a| a.get("latency_ms").is_some())
        .collect();
    assert_eq!(latency.len(), with_latency.len());
    for (l, a) in latency.iter().zip(with_latency) {
        assert_eq!(l["frame"], a["frame"]);
        assert_eq!(l["latency_ms"], a["latency_ms"]);
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "png") {
            out.push(p);
        }
    }
    out
}
