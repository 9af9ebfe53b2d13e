//! The whole ResNet50 body through our conv engine against the same body through candle's stock
//! `conv2d` (plus separate bias/ReLU/add ops): every stage's output, torchvision-shaped model
//! with deterministic stand-in weights, on a real Cityscapes frame.
//!
//! One test in its own binary: the stock-candle switch is process-wide. The model's layers run
//! this process's kernel path; check every path with
//! `for k in avx512 avx2 fallback; do PEDCACHE_KERNELS=$k cargo test --release --test conv_engine -- --include-ignored; done`
//! (the per-layer tests in `src/detect/ops/conv/tests.rs` iterate over the paths themselves).

mod common;

use candle_core::{Device, Tensor};
use pedcache::detect::maskrcnn::standin::{resnet50_fpn_arch, state_dict, Variant};
use pedcache::detect::maskrcnn::MaskRcnn;
use pedcache::detect::ops::conv::set_stock_candle;

fn stages(model: &MaskRcnn, x: &Tensor) -> Vec<Tensor> {
    let body = model.body();
    let mut out = vec![body.stem(x).expect("stem")];
    for i in 0..4 {
        let y = body.layer(i, out.last().expect("stage")).expect("layer");
        out.push(y);
    }
    out
}

#[test]
#[ignore = "needs ../shared/data (scripts/test.sh runs it)"]
fn resnet50_body_equals_stock_candle() {
    let city = common::data_root().join("cityscapes-seq/leftImg8bit_sequence/train/aachen");
    let Some(city) = common::require(&city, "Cityscapes sequence frames") else {
        return;
    };
    // The first frame of the city, whatever its name.
    let mut frames: Vec<_> = std::fs::read_dir(&city)
        .expect("city dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    frames.sort();
    let img = image::open(&frames[0]).expect("frame").to_rgb8();
    // A 160x320 crop-and-subsample keeps the test quick while every stage still has an odd or
    // small spatial size somewhere (40x80 -> 5x10 at layer4) and tiles straddle rows.
    let (h, w) = (160usize, 320usize);
    let mut v = vec![0f32; 3 * h * w];
    for y in 0..h {
        for x in 0..w {
            let p = img.get_pixel((x * 6) as u32, (y * 6) as u32);
            for c in 0..3 {
                v[c * h * w + y * w + x] = (p[c] as f32 / 255.0 - 0.45) / 0.225;
            }
        }
    }
    let dev = Device::Cpu;
    let x = Tensor::from_vec(v, (1, 3, h, w), &dev).expect("input");
    let arch = resnet50_fpn_arch();
    let model = MaskRcnn::from_state_dict(
        &state_dict(&arch, Variant::Hash, &dev).expect("weights"),
        arch,
        &dev,
    )
    .expect("model");

    set_stock_candle(false);
    let ours = stages(&model, &x);
    set_stock_candle(true);
    let reference = stages(&model, &x);
    set_stock_candle(false);

    for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
        assert_eq!(a.dims(), b.dims(), "stage {i}");
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            scale > 0.0 && scale.is_finite(),
            "stage {i}: degenerate reference"
        );
        let err = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale;
        println!(
            "{}: stage {i}: max |ours - candle| / max |candle| = {err:.2e}",
            pedcache::runtime::kernels().map_or("?", |k| k.name())
        );
        assert!(err <= 1e-4, "stage {i}: relative error {err}");
    }
}
