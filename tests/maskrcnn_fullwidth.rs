//! The full-width `maskrcnn_resnet50_fpn` on a real 2048x1024 frame, with deterministic weights
//! generated here by the same closed-form formula torchvision's side used: shapes and
//! stage-by-stage statistics against `tests/fixtures/maskrcnn_tv/fullwidth_stats.json`.

mod common;

use candle_core::{DType, Device, Tensor};
use pedcache::detect::maskrcnn::standin::{resnet50_fpn_arch, state_dict, value, Variant};
use pedcache::detect::maskrcnn::weights::{check, expected_shapes};
use pedcache::detect::maskrcnn::MaskRcnn;
use pedcache::detect::Staged;
use serde_json::Value;

fn stats(t: &Tensor) -> (f64, f64, f64) {
    let v: Vec<f32> = t
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (
        mean,
        var.sqrt(),
        v.iter().fold(0f64, |m, &x| m.max((x as f64).abs())),
    )
}

fn close(name: &str, ours: (f64, f64, f64), want: &Value) {
    let w = (
        want["mean"].as_f64().unwrap(),
        want["std"].as_f64().unwrap(),
        want["absmax"].as_f64().unwrap(),
    );
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-12);
    eprintln!(
        "{name}: mean {:.6e} vs {:.6e}, std {:.6e} vs {:.6e}, absmax {:.6e} vs {:.6e}",
        ours.0, w.0, ours.1, w.1, ours.2, w.2
    );
    // The mean of a near-zero-mean map is a small difference of large sums: compare it on the
    // scale of the std.
    assert!((ours.0 - w.0).abs() <= 1e-4 * w.1, "{name} mean");
    assert!(
        rel(ours.1, w.1) <= 1e-4 && rel(ours.2, w.2) <= 1e-4,
        "{name} std/absmax"
    );
}

#[test]
#[ignore = "needs ../shared/data (scripts/test.sh runs it)"]
fn full_width_model_matches_torchvision_statistics() {
    let fx: Value = serde_json::from_slice(
        &std::fs::read(common::repo().join("tests/fixtures/maskrcnn_tv/fullwidth_stats.json"))
            .expect("fixture"),
    )
    .expect("json");
    let Some(path) = common::require(
        &common::data_root().join(fx["source"].as_str().unwrap()),
        "Cityscapes frame",
    ) else {
        return;
    };
    let arch = resnet50_fpn_arch();
    assert_eq!(
        expected_shapes(&arch).len() as u64,
        fx["num_tensors"].as_u64().unwrap(),
        "tensor count"
    );
    let frame = pedcache::frame::load_rgb(&path).unwrap();
    // The 'hash' variant makes every layer depend on its weights ('sin' nearly cancels).
    for (variant, key) in [(Variant::Hash, "hash")] {
        let want = &fx["variants"][key];
        for (name, probe) in want["weight_probes"].as_object().unwrap() {
            let shape: Vec<usize> = probe["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            for (k, v) in probe["k"]
                .as_array()
                .unwrap()
                .iter()
                .zip(probe["values"].as_array().unwrap())
            {
                let ours = value(variant, name, &shape, k.as_u64().unwrap());
                assert!(
                    (ours as f64 - v.as_f64().unwrap()).abs() < 1e-7,
                    "{name}[{k}]: {ours} vs {v}"
                );
            }
        }
        let sd = state_dict(&arch, variant, &Device::Cpu).unwrap();
        check(&sd, &expected_shapes(&arch)).unwrap();
        let m = MaskRcnn::from_state_dict(&sd, arch.clone(), &Device::Cpu).unwrap();
        let input = m.preprocess(&[&frame]).unwrap();
        let hw: Vec<u64> = fx["batch_shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(
            input
                .batch
                .dims()
                .iter()
                .map(|&d| d as u64)
                .collect::<Vec<_>>(),
            hw
        );
        close("transformed", stats(&input.batch), &fx["transformed"]);
        let mut st = m.start(&input).unwrap();
        close("stem", stats(&st.x), &want["stem"]);
        for i in 0..4 {
            st = m.run_stage(i, st).unwrap();
            let w = &want["body"][format!("layer{}", i + 1)];
            let shape: Vec<u64> = w["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(
                st.x.dims().iter().map(|&d| d as u64).collect::<Vec<_>>(),
                shape
            );
            close(&format!("layer{}", i + 1), stats(&st.x), w);
        }
        let levels = m.fpn(&st.layers).unwrap();
        for (l, name) in ["0", "1", "2", "3", "pool"].iter().enumerate() {
            close(
                &format!("fpn {name}"),
                stats(&levels[l]),
                &want["fpn"][name],
            );
        }
        let props = m
            .rpn
            .forward(&levels, &input.image_sizes)
            .unwrap()
            .remove(0);
        assert_eq!(props.len() as u64, want["num_proposals"].as_u64().unwrap());
    }
}
