//! Quality of the SSDLite port on real data with ground truth: Penn-Fudan AP50 through the
//! `detect` command, and frame-level pedestrian presence on the Cityscapes snippets, each beside
//! TensorFlow's figure for the original graph (`reference_metrics.json`).

mod common;

use pedcache::detect::ssdlite::TileMode;
use pedcache::sim::groundtruth::{count_label, label_map_for, PERSON};
use pedcache::sim::metrics::{average_precision, Confusion, ScoredBox};
use serde_json::Value;
use std::path::Path;

fn reference() -> Value {
    let p = common::repo().join("tests/fixtures/ssdlite_tf/reference_metrics.json");
    serde_json::from_slice(&std::fs::read(p).expect("reference metrics")).expect("json")
}

/// PASCAL-style Penn-Fudan annotation: 1-based inclusive boxes -> pixel-edge `[x1, y1, x2, y2]`.
fn pennfudan_boxes(path: &Path) -> Vec<[f32; 4]> {
    let text = std::fs::read_to_string(path).expect("annotation");
    text.lines()
        .filter(|l| l.starts_with("Bounding box for object"))
        .map(|l| {
            let nums: Vec<f32> = l
                .rsplit(':')
                .next()
                .unwrap_or("")
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().expect("number"))
                .collect();
            assert_eq!(nums.len(), 4, "{l}");
            [nums[0] - 1.0, nums[1] - 1.0, nums[2], nums[3]]
        })
        .collect()
}

#[test]
#[ignore = "needs ../shared/data and models/ssdlite_ped.safetensors (scripts/test.sh)"]
fn pennfudan_ap50_through_the_detect_command() {
    let Some(root) = common::require(&common::data_root().join("pennfudan"), "Penn-Fudan") else {
        return;
    };
    if common::model_path().is_none() {
        return;
    }
    let mut images: Vec<_> = std::fs::read_dir(root.join("PNGImages"))
        .expect("PNGImages")
        .map(|e| e.expect("entry").path())
        .collect();
    images.sort();
    assert_eq!(images.len(), 119);
    let out = std::env::temp_dir().join(format!("pedcache-pennfudan-{}.json", std::process::id()));
    let status = std::process::Command::new(common::bin())
        .current_dir(common::repo())
        .args([
            "detect",
            "--model",
            "ssdlite-ped",
            "--tiles",
            "1",
            "--score-thresh",
            "0.01",
            "--json",
        ])
        .arg(&out)
        .args(&images)
        .status()
        .expect("run detect");
    assert!(status.success());
    let json: Value = serde_json::from_slice(&std::fs::read(&out).expect("json")).expect("parse");
    std::fs::remove_file(&out).ok();
    let mut gts = Vec::new();
    let mut dets = Vec::new();
    for (i, img) in json["images"]
        .as_array()
        .expect("images")
        .iter()
        .enumerate()
    {
        let path = Path::new(img["path"].as_str().expect("path"));
        let stem = path.file_stem().and_then(|s| s.to_str()).expect("stem");
        gts.push(pennfudan_boxes(
            &root.join("Annotation").join(format!("{stem}.txt")),
        ));
        for d in img["detections"].as_array().expect("dets") {
            let b: Vec<f32> = d["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            dets.push(ScoredBox {
                image: i,
                score: d["score"].as_f64().unwrap() as f32,
                bbox: [b[0], b[1], b[2], b[3]],
            });
        }
    }
    assert_eq!(gts.len(), 119);
    let r = average_precision(&dets, &gts, 0.5, 0.5);
    let tf_ap = reference()["pennfudan"]["ap50"].as_f64().expect("tf ap50");
    eprintln!(
        "Penn-Fudan (119 images, {} GT boxes, tiles 1): AP50 {:.4} (TensorFlow {tf_ap:.4}); at score 0.5: precision {:.3}, recall {:.3}",
        r.gt_boxes, r.ap, r.precision, r.recall
    );
    assert!(r.ap >= 0.90, "AP50 {:.4} below 0.90", r.ap);
    assert!(
        (r.ap - tf_ap).abs() < 0.005,
        "AP50 {:.4} vs TensorFlow {tf_ap:.4}",
        r.ap
    );
}

#[test]
#[ignore = "needs ../shared/data and models/ssdlite_ped.safetensors (scripts/test.sh)"]
fn cityscapes_presence_with_tiles() {
    let seq = common::data_root().join("cityscapes-seq/leftImg8bit_sequence");
    let Some(seq) = common::require(&seq, "Cityscapes sequences") else {
        return;
    };
    let Some(model) = common::load_ssdlite() else {
        return;
    };
    let frames = pedcache::sim::source::list_frames(&seq).expect("frames");
    assert_eq!(frames.len(), 90);
    let tf = reference();
    let tf_frames = tf["cityscapes"]["per_frame"].as_array().expect("per_frame");
    let mut vs_gt = Confusion::default();
    let mut disagreements = Vec::new();
    for (path, tf_frame) in frames.iter().zip(tf_frames) {
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(
            name.starts_with(tf_frame["frame"].as_str().unwrap()),
            "{name}"
        );
        let frame = pedcache::frame::load_rgb(path).expect("frame");
        let best = model
            .detect(&frame, TileMode::Auto, 0.0)
            .expect("detect")
            .first()
            .map_or(0.0, |d| d.score);
        let labels = label_map_for(path).expect("label map");
        let gt = count_label(&labels, PERSON).expect("labels") >= 2000;
        vs_gt.add(best >= 0.5, gt);
        let tf_best = tf_frame["tile_max_scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .fold(0f32, f32::max);
        if (best >= 0.5) != (tf_best >= 0.5) && (tf_best - 0.5).abs() > 1e-3 {
            disagreements.push(format!("{name}: ours {best:.4}, TF {tf_best:.4}"));
        }
    }
    let tf_c = &tf["cityscapes"]["tiles2"];
    eprintln!(
        "Cityscapes presence (90 frames, 2 tiles, score >= 0.5, GT >= 2000 px of label 24): {vs_gt}; TensorFlow: tp {} fp {} fn {} tn {}",
        tf_c["tp"], tf_c["fp"], tf_c["fn"], tf_c["tn"]
    );
    assert!(
        disagreements.is_empty(),
        "frames where presence differs from TensorFlow: {disagreements:?}"
    );
    assert!(vs_gt.accuracy() >= 0.80, "{vs_gt}");
}
