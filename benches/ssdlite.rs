//! SSDLite forward latency: one 300x300 forward, and one 2048x1024 street frame (2 tiles run as
//! a batch), each on 1 and 2 threads. `scripts/bench_ssdlite.sh` runs this beside TensorFlow.

use criterion::{criterion_group, criterion_main, Criterion};
use pedcache::detect::ssdlite::{SsdLite, TileMode};
use pedcache::frame::RgbFrame;
use std::path::Path;

fn frame(width: usize, height: usize) -> RgbFrame {
    // A real frame when the shared data is there, so the NMS load is realistic; else a pattern.
    let real = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/cityscapes-seq/leftImg8bit_sequence/train/aachen/aachen_000005_000020_leftImg8bit.jpg");
    let src = pedcache::frame::load_rgb(&real).ok();
    let data = (0..width * height)
        .flat_map(|i| {
            let (x, y) = (i % width, i / width);
            match &src {
                Some(f) => {
                    let (sx, sy) = (x * f.width / width, y * f.height / height);
                    let k = (sy * f.width + sx) * 3;
                    [f.data[k], f.data[k + 1], f.data[k + 2]]
                }
                None => [
                    (x * 7 % 251) as u8,
                    (y * 3 % 241) as u8,
                    ((x + y) % 256) as u8,
                ],
            }
        })
        .collect();
    RgbFrame::new(width, height, data).expect("frame")
}

fn bench(c: &mut Criterion) {
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/ssdlite_ped.safetensors");
    let model = match SsdLite::load(&weights, &candle_core::Device::Cpu) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("skipping SSDLite bench: {e:#} (run models/fetch.sh)");
            return;
        }
    };
    let small = frame(300, 300);
    let street = frame(2048, 1024);
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        let mut g = c.benchmark_group(format!("ssdlite_{threads}t"));
        g.sample_size(30);
        g.bench_function("300x300", |b| {
            b.iter(|| {
                pool.install(|| {
                    model
                        .detect(&small, TileMode::Fixed(1), 0.3)
                        .expect("detect")
                })
            })
        });
        g.bench_function("2048x1024_2tiles", |b| {
            b.iter(|| pool.install(|| model.detect(&street, TileMode::Auto, 0.3).expect("detect")))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
