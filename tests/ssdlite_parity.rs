//! Parity of the candle SSDLite port with the original TensorFlow graph, on real images.
//! Fixtures: `tests/fixtures/ssdlite_tf/`, made by `scripts/tf_reference.py fixtures`.

mod common;

use candle_core::{Device, Tensor};
use pedcache::detect::ssdlite::tiles::Tile;
use pedcache::detect::Staged;
use serde::Deserialize;
use std::collections::HashMap;

#[derive(Deserialize)]
struct Manifest {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    root: String,
    source: String,
    crop: Option<[usize; 4]>,
    height: usize,
    width: usize,
    file: String,
}

fn fixtures() -> std::path::PathBuf {
    common::repo().join("tests/fixtures/ssdlite_tf")
}

fn load_fixture(file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join(file), &Device::Cpu).expect("fixture")
}

fn vec2(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2().expect("2d")
}

fn max_abs(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn anchors_match_tensorflow() {
    let fx = load_fixture("anchors.safetensors");
    let tf = vec2(&fx["anchors"]);
    let ours: Vec<Vec<f32>> = pedcache::detect::ssdlite::anchors::generate()
        .iter()
        .map(|a| a.to_vec())
        .collect();
    assert_eq!(tf.len(), ours.len());
    let e = max_abs(&tf, &ours);
    assert!(e < 1e-6, "anchors differ by {e}");
}

#[test]
#[ignore = "needs ../shared/data and models/ssdlite_ped.safetensors (scripts/test.sh)"]
fn raw_outputs_and_detections_match_tensorflow() {
    let Some(model) = common::load_ssdlite() else {
        return;
    };
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(fixtures().join("manifest.json")).expect("manifest"))
            .expect("json");
    assert!(manifest.cases.len() >= 6);
    let mut checked = 0;
    for case in &manifest.cases {
        let root = if case.root == "data" {
            common::data_root()
        } else {
            common::repo()
        };
        let Some(path) = common::require(&root.join(&case.source), &case.name) else {
            continue;
        };
        let frame = pedcache::frame::load_rgb(&path).expect("decode");
        let tile = match case.crop {
            Some([x, y, w, h]) => Tile { x, y, w, h },
            None => Tile {
                x: 0,
                y: 0,
                w: frame.width,
                h: frame.height,
            },
        };
        assert_eq!((tile.w, tile.h), (case.width, case.height), "{}", case.name);
        let fx = load_fixture(&case.file);
        let input = model.preprocess(&frame, &[tile]).expect("preprocess");
        if let (Some(yx), Some(probe)) = (
            fx.get("preprocessed_probe_yx"),
            fx.get("preprocessed_probe"),
        ) {
            // TF's preprocessed input at probe pixels (NHWC); ours is NCHW.
            let yx: Vec<i64> = yx.flatten_all().unwrap().to_vec1().unwrap();
            let want: Vec<Vec<f32>> = probe.to_vec2().unwrap();
            let ours: Vec<f32> = input.flatten_all().unwrap().to_vec1().unwrap();
            let plane = 300 * 300;
            let mut e = 0f32;
            for (k, w) in want.iter().enumerate() {
                let (y, x) = (yx[2 * k] as usize, yx[2 * k + 1] as usize);
                for c in 0..3 {
                    e = e.max((ours[c * plane + y * 300 + x] - w[c]).abs());
                }
            }
            assert!(
                e < 1e-5,
                "{}: preprocessed input differs by {e} at probe pixels",
                case.name
            );
            let stats: Vec<Vec<f32>> = fx["preprocessed_stats"].to_vec2().unwrap();
            for (c, st) in stats.iter().enumerate() {
                let v = &ours[c * plane..(c + 1) * plane];
                let mean = v.iter().map(|&x| x as f64).sum::<f64>() / plane as f64;
                assert!(
                    (mean - st[0] as f64).abs() < 1e-5,
                    "{}: channel {c} mean {mean} vs {}",
                    case.name,
                    st[0]
                );
            }
        }
        // Raw head outputs.
        let mut st = model.start(&input).unwrap();
        for i in 0..model.stage_names().len() {
            st = model.run_stage(i, st).unwrap();
        }
        let (boxes, logits) = model.raw_head(st.clone()).unwrap();
        let boxes = vec2(&boxes.squeeze(0).unwrap());
        let logits = vec2(&logits.squeeze(0).unwrap());
        let eb = max_abs(&boxes, &vec2(&fx["box_encodings"]));
        let el = max_abs(&logits, &vec2(&fx["class_predictions"]));
        eprintln!(
            "{}: max |box enc diff| {eb:.2e}, max |logit diff| {el:.2e}",
            case.name
        );
        assert!(
            eb < 2e-4 && el < 2e-4,
            "{}: raw outputs differ (boxes {eb}, logits {el})",
            case.name
        );

        // Final detections, in image pixels.
        let ours = &model.finish(st).unwrap()[0];
        let n: f32 = fx["num_detections"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0];
        let tf_boxes = vec2(&fx["detection_boxes"]);
        let tf_scores: Vec<f32> = fx["detection_scores"].to_vec1().unwrap();
        let (w, h) = (case.width as f32, case.height as f32);
        let px = |b: &[f32]| [b[1] * w, b[0] * h, b[3] * w, b[2] * h];
        let tf: Vec<([f32; 4], f32)> = (0..n as usize)
            .map(|i| (px(&tf_boxes[i]), tf_scores[i]))
            .collect();
        let mine: Vec<([f32; 4], f32)> = ours
            .boxes
            .iter()
            .zip(&ours.scores)
            .map(|(b, &s)| (px(b), s))
            .collect();
        // Every detection scoring >= 0.3 on either side must be matched, in order, on the other.
        let above = |v: &[([f32; 4], f32)]| v.iter().filter(|d| d.1 >= 0.3).count();
        let (na, nb) = (above(&tf), above(&mine));
        let margin =
            |v: &[([f32; 4], f32)], k: usize| v.get(k).is_some_and(|d| (d.1 - 0.3).abs() < 1e-3);
        assert!(
            na == nb || margin(&tf, na.min(nb)) || margin(&mine, na.min(nb)),
            "{}: {na} TF detections >= 0.3, {nb} ours",
            case.name
        );
        for (k, (t, o)) in tf.iter().zip(&mine).take(na.max(nb)).enumerate() {
            let db =
                t.0.iter()
                    .zip(&o.0)
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                db <= 1.0,
                "{} det {k}: box off by {db:.3} px ({:?} vs {:?})",
                case.name,
                t.0,
                o.0
            );
            assert!(
                (t.1 - o.1).abs() <= 1e-3,
                "{} det {k}: score {} vs {}",
                case.name,
                t.1,
                o.1
            );
        }
        checked += 1;
    }
    eprintln!("checked {checked} cases");
}
