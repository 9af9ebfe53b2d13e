//! The node's per-frame path: one decoded demo frame (768x576, one SSDLite tile) from pixels to
//! its answer through the cache-enabled SSDLite with the committed calibration
//! (`calib/ssdlite-ped-vtest`, one selected exit after `expanded_conv_2`), 2 threads:
//! - `full`: no exits, the whole detector (what the node does without a calibration);
//! - `cache_hit`: the exit fires, the rest of the network is skipped;
//! - `cache_miss`: the exit is evaluated, does not fire, and the frame falls through to the rest
//!   of the detector (full detection plus the head's cost).
//!
//! Frames, chosen honestly from a replay of the whole demo sequence with this calibration
//! (`pedcache replay --config sim/demo.ron --max-speed`): the exit answers 793 of 795 frames, and
//! frames 420 and 625 are its only misses. So the hit is timed on frame 0 and the miss on frame
//! 420, each beside `full` on the same frame; before timing, the bench asserts that frame 0 really
//! hits and frame 420 really falls through. Preprocessing (`frame_units`) is inside the timing,
//! decoding is not (the node's source thread decodes). Short measurement windows: it is meant to
//! be run in a minute, `cargo bench --bench frame_path`.

use criterion::{criterion_group, criterion_main, Criterion};
use pedcache::cache::calibration::CacheableDetector;
use pedcache::cache::enabled::{CacheEnabled, Resolution};
use pedcache::detect::ssdlite::SsdLite;
use pedcache::frame::RgbFrame;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

const HIT_FRAME: usize = 0;
const MISS_FRAME: usize = 420;

/// What the cache-enabled forward did with the frame's (only) unit.
#[derive(Debug, PartialEq)]
enum Route {
    Hit,
    FellThrough,
}

fn run(cached: &CacheEnabled<'_, SsdLite>, model: &SsdLite, frame: &RgbFrame) -> Route {
    let (input, regions) = model.frame_units(frame).expect("frame units");
    let groups = vec![0usize; regions.len()];
    let out = cached
        .forward(&input, &groups, &mut |_, _, _| {})
        .expect("cache-enabled forward");
    if out.items.iter().all(|r| matches!(r, Resolution::Full(_))) {
        Route::FellThrough
    } else {
        Route::Hit
    }
}

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = match SsdLite::load(
        &root.join("models/ssdlite_ped.safetensors"),
        &candle_core::Device::Cpu,
    ) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("skipping frame_path bench: {e:#} (run models/fetch.sh)");
            return;
        }
    };
    let frame_path = |i: usize| {
        root.join(format!(
            "sim/vtest/leftImg8bit_sequence/demo/vtest/vtest_000000_{i:06}_leftImg8bit.png"
        ))
    };
    let (hit_frame, miss_frame) = match (
        pedcache::frame::load_rgb(&frame_path(HIT_FRAME)),
        pedcache::frame::load_rgb(&frame_path(MISS_FRAME)),
    ) {
        (Ok(h), Ok(m)) => (h, m),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("skipping frame_path bench: {e:#} (run sim/make_demo.sh)");
            return;
        }
    };
    let calib = root.join("calib/ssdlite-ped-vtest");
    let (file, exits) = pedcache::cache::files::load(&calib, &candle_core::Device::Cpu)
        .expect("committed calibration");
    assert!(!exits.is_empty(), "{}: no selected exit", calib.display());
    let cached = CacheEnabled {
        detector: &model,
        exits,
        policy: file.policy,
        positive: file.positive,
    };
    let full = CacheEnabled {
        detector: &model,
        exits: Vec::new(),
        policy: file.policy,
        positive: file.positive,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("pool");
    pool.install(|| {
        assert_eq!(
            run(&cached, &model, &hit_frame),
            Route::Hit,
            "frame {HIT_FRAME} must be a cache hit"
        );
        assert_eq!(
            run(&cached, &model, &miss_frame),
            Route::FellThrough,
            "frame {MISS_FRAME} must be a cache miss"
        );
        assert_eq!(run(&full, &model, &hit_frame), Route::FellThrough);
    });

    let mut g = c.benchmark_group("frame_path_2t");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (name, engine, frame) in [
        (format!("full/frame{HIT_FRAME}"), &full, &hit_frame),
        (format!("cache_hit/frame{HIT_FRAME}"), &cached, &hit_frame),
        (format!("full/frame{MISS_FRAME}"), &full, &miss_frame),
        (
            format!("cache_miss/frame{MISS_FRAME}"),
            &cached,
            &miss_frame,
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| pool.install(|| black_box(run(engine, &model, frame))))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
