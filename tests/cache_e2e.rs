//! The caching engine end to end through the command line: calibrate then evaluate, on both
//! detectors; calibration is deterministic for a fixed seed.

mod common;

use std::path::Path;
use std::process::Command;

fn pedcache(args: &[&str]) -> std::process::Output {
    let out = Command::new(common::bin())
        .current_dir(common::repo())
        .args(["--threads", "2"])
        .args(args)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).expect("json written")).expect("valid json")
}

#[test]
#[ignore = "needs ../shared/data (scripts/test.sh runs it)"]
fn maskrcnn_calibrates_and_evaluates_end_to_end() {
    let Some(city) = common::require(
        &common::data_root().join("cityscapes-seq/leftImg8bit_sequence"),
        "Cityscapes",
    ) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("pedcache-rcnn-cal-{}", std::process::id()));
    let weights = common::repo().join("tests/fixtures/maskrcnn_tv/narrow_weights.safetensors");
    let (w, c, d) = (
        weights.to_str().unwrap(),
        city.to_str().unwrap(),
        dir.to_str().unwrap(),
    );
    pedcache(&[
        "calibrate",
        "--model",
        "maskrcnn-r50-fpn",
        "--weights",
        w,
        "--source",
        c,
        "--seq-frames",
        "0..8",
        "--out",
        d,
    ]);
    let exits = std::fs::read_to_string(dir.join("exits.ron")).unwrap();
    for layer in ["layer1", "layer2", "layer3"] {
        assert!(
            exits.contains(&format!("layer: \"{layer}\"")),
            "{layer} missing from exits.ron:\n{exits}"
        );
    }
    let report = json(&dir.join("report.json"));
    assert_eq!(report["frames"], 24);
    assert_eq!(report["exits"].as_array().unwrap().len(), 3);
    assert!(report["validation_samples"].as_u64().unwrap() > 0);
    let ev = dir.join("eval.json");
    pedcache(&[
        "evaluate",
        "--calib",
        d,
        "--weights",
        w,
        "--source",
        c,
        "--seq-frames",
        "8..10",
        "--json",
        ev.to_str().unwrap(),
    ]);
    let r = json(&ev);
    assert_eq!(r["frames"], 6);
    let p = &r["presence"]["vs_detector"];
    let total: u64 = ["tp", "fp", "fn", "tn"]
        .iter()
        .map(|k| p[k].as_u64().unwrap())
        .sum();
    assert_eq!(total, 6);
    assert!(
        r["presence"]["vs_ground_truth"].is_object(),
        "Cityscapes label maps give ground truth"
    );
    assert!(
        r["flops_per_frame"]["full"].as_f64().unwrap()
            >= r["flops_per_frame"]["cached"].as_f64().unwrap() * 0.9
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
#[ignore = "needs ../shared/data and models/ssdlite_ped.safetensors (scripts/test.sh)"]
fn calibration_is_deterministic_for_a_seed() {
    let Some(city) = common::require(
        &common::data_root().join("cityscapes-seq/leftImg8bit_sequence"),
        "Cityscapes",
    ) else {
        return;
    };
    if common::model_path().is_none() {
        return;
    }
    let base = std::env::temp_dir().join(format!("pedcache-det-{}", std::process::id()));
    let mut files = Vec::new();
    for run in 0..2 {
        let d = base.join(run.to_string());
        pedcache(&[
            "calibrate",
            "--model",
            "ssdlite-ped",
            "--source",
            city.to_str().unwrap(),
            "--seq-frames",
            "0..12",
            "--seed",
            "3",
            "--out",
            d.to_str().unwrap(),
        ]);
        files.push((
            std::fs::read(d.join("exits.ron")).unwrap(),
            std::fs::read(d.join("heads.safetensors")).unwrap(),
        ));
    }
    assert!(
        files[0] == files[1],
        "two calibrations with --seed 3 differ"
    );
    std::fs::remove_dir_all(&base).ok();
}
