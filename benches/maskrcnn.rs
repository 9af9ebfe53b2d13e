//! Mask R-CNN ResNet50-FPN latency per part on one 2048x1024 Cityscapes frame, 2 threads, with
//! deterministic full-width stand-in weights (`standin`, hash variant): the transform, the stem,
//! each body layer from the previous stage's output, the FPN, the RPN, the box branch of the RoI
//! heads (at score_thresh 0.05 and 0.0), the mask branch alone and with the paste, and the whole detector (at
//! 0.05 and 0.0). `scripts/bench_maskrcnn.sh` runs this beside PyTorch eager
//! (`scripts/torch_reference.py bench`) and prints one table.
//!
//! Detections depend on the weights: the counts are printed, and when none survive the 0.05
//! score threshold the mask row is timed on the top-100 detections at `score_thresh = 0.0`
//! (what the PyTorch bench's 0.0 run does too).

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use pedcache::detect::maskrcnn::roi_heads::BoxDetections;
use pedcache::detect::maskrcnn::{standin, MaskRcnn, RcnnState};
use pedcache::detect::ops::paste::paste_window;
use pedcache::detect::ops::tv_boxes::resize_boxes;
use pedcache::detect::Staged;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

const FRAME: &str =
    "../shared/data/cityscapes-seq/leftImg8bit_sequence/train/aachen/aachen_000000_000010_leftImg8bit.jpg";

/// Mask branch and paste for image 0, as `MaskRcnn::heads` does them: mask probabilities, the
/// boxes back in original pixels, each mask pasted into its window and thresholded at 0.5.
fn masks_and_paste(
    model: &MaskRcnn,
    levels: &[Tensor],
    dets: &BoxDetections,
    size: (usize, usize),
    orig: (usize, usize),
) -> u64 {
    let masks = model
        .roi_heads
        .detect_masks(&levels[..4], 0, dets, size)
        .expect("masks");
    let mut boxes = dets.boxes.clone();
    resize_boxes(&mut boxes, size, orig);
    boxes
        .iter()
        .zip(&masks)
        .filter_map(|(b, m)| paste_window(m, 28, b, orig.0, orig.1, 1))
        .map(|w| w.values.iter().filter(|&&v| v > 0.5).count() as u64)
        .sum()
}

fn bench(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(FRAME);
    if !path.exists() {
        eprintln!(
            "skipping Mask R-CNN bench: {} not found (shared Cityscapes data)",
            path.display()
        );
        return;
    }
    let frame = pedcache::frame::load_rgb(&path).expect("frame");
    let dev = Device::Cpu;
    let arch = standin::resnet50_fpn_arch();
    let sd = standin::state_dict(&arch, standin::Variant::Hash, &dev).expect("stand-in weights");
    let model = MaskRcnn::from_state_dict(&sd, arch, &dev).expect("model");
    drop(sd);
    let mut model0 = model.clone();
    model0.roi_heads.config.score_thresh = 0.0;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("pool");

    // Every part's input, computed once.
    let (input, states, levels, proposals, dets, dets0) = pool.install(|| {
        let input = model.preprocess(&[&frame]).expect("preprocess");
        let mut states: Vec<RcnnState> = vec![model.start(&input).expect("stem")];
        for i in 0..4 {
            let next = model.run_stage(i, states[i].clone()).expect("body stage");
            states.push(next);
        }
        let levels = model.fpn(&states[4].layers).expect("fpn");
        let proposals = model
            .rpn
            .forward(&levels, &input.image_sizes)
            .expect("rpn")
            .remove(0);
        let size = input.image_sizes[0];
        let dets = model
            .roi_heads
            .detect_boxes(&levels[..4], 0, &proposals, size)
            .expect("boxes");
        let dets0 = model0
            .roi_heads
            .detect_boxes(&levels[..4], 0, &proposals, size)
            .expect("boxes at 0");
        (input, states, levels, proposals, dets, dets0)
    });
    let size = input.image_sizes[0];
    let orig = input.original_sizes[0];
    let mask_on_thresh0 = dets.boxes.is_empty();
    let mask_dets = if mask_on_thresh0 { &dets0 } else { &dets };
    eprintln!(
        "maskrcnn bench: frame {}x{}, resized {}x{} (batch {:?}), {} proposals, \
         {} detections at score_thresh 0.05, {} at 0.0; mask row on {} detections ({})",
        orig.1,
        orig.0,
        size.1,
        size.0,
        input.batch.dims(),
        proposals.len(),
        dets.boxes.len(),
        dets0.boxes.len(),
        mask_dets.boxes.len(),
        if mask_on_thresh0 {
            "score_thresh 0.0, since none survive 0.05"
        } else {
            "score_thresh 0.05"
        }
    );
    // For the script's table.
    let counts = serde_json::json!({
        "num_proposals": proposals.len(),
        "num_detections_thresh_0.05": dets.boxes.len(),
        "num_detections_thresh_0.0": dets0.boxes.len(),
        "mask_row_detections": mask_dets.boxes.len(),
        "mask_row_score_thresh": if mask_on_thresh0 { 0.0 } else { 0.05 },
    });
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/criterion/maskrcnn_2t");
    if std::fs::create_dir_all(&out_dir).is_ok() {
        let _ = std::fs::write(out_dir.join("counts.json"), counts.to_string());
    }

    let mut g = c.benchmark_group("maskrcnn_2t");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("transform", |b| {
        b.iter(|| pool.install(|| model.preprocess(&[&frame]).expect("preprocess")))
    });
    g.bench_function("stem", |b| {
        b.iter(|| pool.install(|| model.start(&input).expect("stem")))
    });
    for (i, state) in states[..4].iter().enumerate() {
        g.bench_function(format!("layer{}", i + 1), |b| {
            b.iter_batched(
                || state.clone(),
                |st| pool.install(|| model.run_stage(i, st).expect("stage")),
                criterion::BatchSize::PerIteration,
            )
        });
    }
    g.bench_function("fpn", |b| {
        b.iter(|| pool.install(|| model.fpn(&states[4].layers).expect("fpn")))
    });
    g.bench_function("rpn", |b| {
        b.iter(|| pool.install(|| model.rpn.forward(&levels, &input.image_sizes).expect("rpn")))
    });
    g.bench_function("roi_box", |b| {
        b.iter(|| {
            pool.install(|| {
                model
                    .roi_heads
                    .detect_boxes(&levels[..4], 0, &proposals, size)
                    .expect("boxes")
            })
        })
    });
    g.bench_function("roi_box_thresh0", |b| {
        b.iter(|| {
            pool.install(|| {
                model0
                    .roi_heads
                    .detect_boxes(&levels[..4], 0, &proposals, size)
                    .expect("boxes")
            })
        })
    });
    g.bench_function("roi_mask", |b| {
        b.iter(|| {
            pool.install(|| {
                model
                    .roi_heads
                    .detect_masks(&levels[..4], 0, mask_dets, size)
                    .expect("masks")
            })
        })
    });
    g.bench_function("roi_mask+paste", |b| {
        b.iter(|| pool.install(|| masks_and_paste(&model, &levels, mask_dets, size, orig)))
    });
    // The whole detector (preprocess + staged forward, masks and paste included) at the default
    // threshold, and at 0.0, where the mask branch always runs on the top 100.
    for (name, m) in [("total", &model), ("total_thresh0", &model0)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                pool.install(|| {
                    let input = m.preprocess(&[black_box(&frame)]).expect("preprocess");
                    m.forward_staged(&input).expect("forward")
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
