//! Parity of the candle Mask R-CNN with torchvision 0.29.1 on real images at their real size,
//! on the narrow variant whose weights are in the fixture (`scripts/torch_reference.py`).

mod common;

use candle_core::{DType, Device, Tensor};
use pedcache::detect::maskrcnn::MaskRcnn;
use pedcache::detect::Staged;
use std::collections::HashMap;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    common::repo().join("tests/fixtures/maskrcnn_tv")
}

fn load(file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join(file), &Device::Cpu).expect("fixture")
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn ints(t: &Tensor) -> Vec<i64> {
    t.to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// max |a - b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// `[C, h, w]` window at (y, x) of image 0 of an NCHW tensor.
fn crop(t: &Tensor, y: usize, x: usize, h: usize, w: usize) -> Vec<f32> {
    f32s(
        &t.get(0)
            .unwrap()
            .narrow(1, y, h)
            .unwrap()
            .narrow(2, x, w)
            .unwrap(),
    )
}

const CASES: [(&str, &str, &str); 3] = [
    (
        "city_000000_000010",
        "cityscapes-seq/leftImg8bit_sequence/train/aachen/aachen_000000_000010_leftImg8bit.jpg",
        "narrow_city_000000_000010.safetensors",
    ),
    (
        "city_000005_000020",
        "cityscapes-seq/leftImg8bit_sequence/train/aachen/aachen_000005_000020_leftImg8bit.jpg",
        "narrow_city_000005_000020.safetensors",
    ),
    (
        "pennfudan_1",
        "pennfudan/PNGImages/FudanPed00004.png",
        "narrow_pennfudan_1.safetensors",
    ),
];

fn model(file: &str) -> MaskRcnn {
    MaskRcnn::load(&fixtures().join(file), &Device::Cpu).expect("load narrow model")
}

/// Compare detections: every reference detection has one of ours with the same label, box
/// within `px` pixels and score within 1e-4; counts equal.
fn compare_dets(
    name: &str,
    ours: &[pedcache::detect::Detection],
    boxes: &[f32],
    scores: &[f32],
    labels: &[i64],
    areas: &[i64],
) {
    assert_eq!(
        ours.len(),
        scores.len(),
        "{name}: {} detections vs torchvision {}",
        ours.len(),
        scores.len()
    );
    let mut used = vec![false; ours.len()];
    let (mut max_box, mut max_score, mut area_diff, mut area_total) = (0f32, 0f32, 0i64, 0i64);
    for i in 0..scores.len() {
        let b = &boxes[i * 4..i * 4 + 4];
        let found = ours.iter().enumerate().position(|(j, d)| {
            !used[j]
                && d.label as i64 == labels[i]
                && d.bbox.iter().zip(b).all(|(x, y)| (x - y).abs() <= 0.5)
                && (d.score - scores[i]).abs() <= 1e-4
        });
        let j = found.unwrap_or_else(|| {
            panic!(
                "{name}: torchvision detection {i} (label {}, score {}, box {b:?}) has no match",
                labels[i], scores[i]
            )
        });
        used[j] = true;
        let d = &ours[j];
        max_box = d
            .bbox
            .iter()
            .zip(b)
            .fold(max_box, |m, (x, y)| m.max((x - y).abs()));
        max_score = max_score.max((d.score - scores[i]).abs());
        area_diff += (d.mask_area.unwrap_or(0) as i64 - areas[i]).abs();
        area_total += areas[i];
    }
    let agreement = 1.0 - area_diff as f64 / area_total.max(1) as f64;
    eprintln!("{name}: {} detections, max box diff {max_box:.2e} px, max score diff {max_score:.2e}, mask-area agreement {:.5}", scores.len(), agreement);
    assert!(
        agreement >= 0.995,
        "{name}: mask area agreement {agreement}"
    );
}

#[test]
#[ignore = "needs ../shared/data (scripts/test.sh runs it)"]
fn narrow_model_matches_torchvision_stage_by_stage() {
    let m = model("narrow_weights.safetensors");
    for (name, src, file) in CASES {
        let Some(path) = common::require(&common::data_root().join(src), name) else {
            continue;
        };
        let fx = load(file);
        let frame = pedcache::frame::load_rgb(&path).expect("image");
        let input = m.preprocess(&[&frame]).unwrap();
        let (hp, wp) = (input.batch.dim(2).unwrap(), input.batch.dim(3).unwrap());
        assert_eq!(
            vec![hp as i64, wp as i64],
            ints(&fx["batch_size_hw"]),
            "{name}: padded size"
        );
        let sizes = ints(&fx["image_sizes"]);
        assert_eq!(
            (input.image_sizes[0].0 as i64, input.image_sizes[0].1 as i64),
            (sizes[0], sizes[1])
        );
        // Transformed input at probe pixels (corners included) and per-channel statistics.
        let yx = ints(&fx["transformed_probe_yx"]);
        let want: Vec<Vec<f32>> = fx["transformed_probe"].to_vec2().unwrap();
        let batch: Vec<f32> = f32s(&input.batch);
        let mut e = 0f32;
        for (c, row) in want.iter().enumerate() {
            for (k, w) in row.iter().enumerate() {
                let (y, x) = (yx[2 * k] as usize, yx[2 * k + 1] as usize);
                e = e.max((batch[(c * hp + y) * wp + x] - w).abs());
            }
        }
        let stats: Vec<Vec<f32>> = fx["transformed_stats"]
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec2()
            .unwrap();
        for (c, st) in stats.iter().enumerate() {
            let v = &batch[c * hp * wp..(c + 1) * hp * wp];
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
            assert!(
                (mean - st[0] as f64).abs() < 1e-5,
                "{name}: channel {c} mean {mean} vs {}",
                st[0]
            );
        }
        eprintln!("{name}: transformed input max abs err at 64 probe pixels {e:.1e}");
        assert!(e <= 1e-5, "{name}: transformed input");

        // Body, one stage at a time; the staged forward must also equal the one-shot one.
        let mut st = m.start(&input).unwrap();
        for i in 0..4 {
            st = m.run_stage(i, st).unwrap();
            let key = format!("layer{}", i + 1);
            let want = &fx[&format!("{key}_crop")];
            let (_, cs, hs, ws) = (
                0,
                want.dim(0).unwrap(),
                want.dim(1).unwrap(),
                want.dim(2).unwrap(),
            );
            assert_eq!(st.x.dim(1).unwrap(), cs);
            let e = rel_err(&crop(&st.x, 0, 0, hs, ws), &f32s(want));
            assert!(e <= 1e-4, "{name} {key}: rel err {e}");
        }
        let levels = m.fpn(&st.layers).unwrap();
        for (l, key) in ["fpn_0", "fpn_1", "fpn_2", "fpn_3", "fpn_pool"]
            .iter()
            .enumerate()
        {
            assert_eq!(
                levels[l]
                    .dims()
                    .iter()
                    .map(|&d| d as i64)
                    .collect::<Vec<_>>(),
                ints(&fx[&format!("{key}_shape")]),
                "{name} {key} shape"
            );
            let offs = ints(&fx[&format!("{key}_crop_offsets")]);
            let want = &fx[&format!("{key}_crops")];
            let s = want.dim(2).unwrap();
            let mut worst = 0f32;
            for k in 0..3 {
                let w = f32s(&want.get(k).unwrap());
                worst = worst.max(rel_err(
                    &crop(
                        &levels[l],
                        offs[2 * k] as usize,
                        offs[2 * k + 1] as usize,
                        s,
                        s,
                    ),
                    &w,
                ));
            }
            eprintln!("{name} {key}: max rel err {worst:.1e}");
            assert!(worst <= 1e-4, "{name} {key}: rel err {worst}");
        }

        // RPN proposals: as a set (scores have exact ties, so order may differ among them).
        let out = m.finish(st).unwrap().remove(0);
        let want = f32s(&fx["proposals"]);
        assert_eq!(
            out.proposals.len() * 4,
            want.len(),
            "{name}: proposal count"
        );
        let mut unmatched = 0;
        for p in want.chunks_exact(4) {
            if !out
                .proposals
                .iter()
                .any(|q| q.iter().zip(p).all(|(a, b)| (a - b).abs() <= 0.01))
            {
                unmatched += 1;
            }
        }
        eprintln!(
            "{name}: {} proposals, {unmatched} without a match within 0.01 px",
            want.len() / 4
        );
        assert!(unmatched <= 2, "{name}: {unmatched} proposals differ");

        // Final detections at the default threshold.
        compare_dets(
            &format!("{name} score>0.05"),
            &out.detections,
            &f32s(&fx["s005.boxes"]),
            &f32s(&fx["s005.scores"]),
            &ints(&fx["s005.labels"]),
            &ints(&fx["s005.mask_area"]),
        );
        // The top masks pixel by pixel.
        for k in 0..3 {
            let Some(want) = fx.get(&format!("s005.mask{k}_crop")) else {
                continue;
            };
            let yx = ints(&fx[&format!("s005.mask{k}_crop_yxyx")]);
            let want = f32s(want);
            let d = &out.masks[k];
            let (h, w) = ((yx[2] - yx[0]) as usize, (yx[3] - yx[1]) as usize);
            let mut agree = 0usize;
            for y in 0..h {
                for x in 0..w {
                    let (gy, gx) = (yx[0] as usize + y, yx[1] as usize + x);
                    let ours = gy >= d.y
                        && gy < d.y + d.h
                        && gx >= d.x
                        && gx < d.x + d.w
                        && d.bits[(gy - d.y) * d.w + (gx - d.x)] == 1;
                    agree += usize::from(ours == (want[y * w + x] > 0.5));
                }
            }
            let frac = agree as f64 / (h * w) as f64;
            assert!(frac >= 0.995, "{name} mask {k}: {frac} of pixels agree");
        }
    }
}

#[test]
#[ignore = "needs ../shared/data (scripts/test.sh runs it)"]
fn whole_top_100_at_score_zero_and_old_key_names() {
    // The published COCO file's key generation, from a torch .pth.
    let mut m = model("narrow_weights_oldnames.pth");
    m.roi_heads.config.score_thresh = 0.0;
    let new = model("narrow_weights.safetensors");
    assert_eq!(m.arch, new.arch);
    for (name, src, file) in CASES {
        let Some(path) = common::require(&common::data_root().join(src), name) else {
            continue;
        };
        let fx = load(file);
        let frame = pedcache::frame::load_rgb(&path).expect("image");
        let out = m.detect(&[&frame]).unwrap().remove(0);
        compare_dets(
            &format!("{name} score>0"),
            &out.detections,
            &f32s(&fx["s000.boxes"]),
            &f32s(&fx["s000.scores"]),
            &ints(&fx["s000.labels"]),
            &ints(&fx["s000.mask_area"]),
        );
    }
}

#[test]
#[ignore = "needs ../shared/data (scripts/test.sh runs it)"]
fn staged_forward_equals_one_shot_bit_for_bit() {
    let m = model("narrow_weights.safetensors");
    let Some(path) = common::require(&common::data_root().join(CASES[2].1), "Penn-Fudan image")
    else {
        return;
    };
    let frame = pedcache::frame::load_rgb(&path).unwrap();
    let a = m.detect(&[&frame]).unwrap().remove(0);
    // Stop after every stage, take the state apart the way the cache engine does (batch select),
    // and resume.
    let input = m.preprocess(&[&frame, &frame]).unwrap();
    let mut st = m.start(&input).unwrap();
    for i in 0..m.stage_names().len() {
        st = m.select(&st, &[if i == 0 { 1 } else { 0 }]).unwrap();
        st = m.run_stage(i, st).unwrap();
    }
    let b = m.finish(st).unwrap().remove(0);
    assert_eq!(a.detections, b.detections);
    assert_eq!(a.masks, b.masks);
    assert_eq!(a.class_probs, b.class_probs);
}
