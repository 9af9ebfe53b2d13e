//! One criterion bench per conv shape class and kernel path (`avx512`, `avx2`, `fallback`, as
//! this CPU runs them) beside candle's stock conv2d, on ResNet50-body, FPN / mask-head and
//! MobileNetV2 shapes, 2 threads. Filter with e.g. `cargo bench --bench conv -- 3x3_s1`.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use pedcache::detect::ops::conv::{Activation, Conv2d, ConvSpec, Padding};
use pedcache::runtime::Kernels;

fn tensor(shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32
                - 0.5
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

/// (name, spec, batch, input H, input W)
fn cases() -> Vec<(&'static str, ConvSpec, usize, usize, usize)> {
    let relu = Activation::Relu;
    let p1 = Padding::symmetric(1);
    let mut v = vec![
        (
            "fpn_3x3_s1_256_168x336",
            ConvSpec::new(256, 256, 3).padding(p1),
            1,
            168,
            336,
        ),
        (
            "mask_3x3_s1_256_100x14x14",
            ConvSpec::new(256, 256, 3).padding(p1).activation(relu),
            100,
            14,
            14,
        ),
    ];
    v.extend(body_cases().into_iter().map(|(n, s, h, w)| (n, s, 1, h, w)));
    v
}

/// (name, spec, input H, input W) at a 512x1024 input.
fn body_cases() -> Vec<(&'static str, ConvSpec, usize, usize)> {
    let relu = Activation::Relu;
    vec![
        (
            "stem_7x7_s2_3to64",
            ConvSpec::new(3, 64, 7)
                .stride(2)
                .padding(Padding::symmetric(3))
                .activation(relu),
            512,
            1024,
        ),
        (
            "1x1_s1_256to64_128x256",
            ConvSpec::new(256, 64, 1).activation(relu),
            128,
            256,
        ),
        (
            "1x1_s1_64to256_128x256",
            ConvSpec::new(64, 256, 1),
            128,
            256,
        ),
        (
            "3x3_s1_64_128x256",
            ConvSpec::new(64, 64, 3)
                .padding(Padding::symmetric(1))
                .activation(relu),
            128,
            256,
        ),
        (
            "3x3_s2_128_128x256",
            ConvSpec::new(128, 128, 3)
                .stride(2)
                .padding(Padding::symmetric(1))
                .activation(relu),
            128,
            256,
        ),
        (
            "1x1_s2_256to512_128x256",
            ConvSpec::new(256, 512, 1).stride(2),
            128,
            256,
        ),
        (
            "3x3_s1_256_32x64",
            ConvSpec::new(256, 256, 3)
                .padding(Padding::symmetric(1))
                .activation(relu),
            32,
            64,
        ),
        (
            "3x3_s1_512_16x32",
            ConvSpec::new(512, 512, 3)
                .padding(Padding::symmetric(1))
                .activation(relu),
            16,
            32,
        ),
        (
            "dw3x3_s1_144_75x75",
            ConvSpec::depthwise(144, 3)
                .padding(Padding::TfSame)
                .activation(Activation::Relu6),
            75,
            75,
        ),
        (
            "dw3x3_s2_96_150x150",
            ConvSpec::depthwise(96, 3)
                .stride(2)
                .padding(Padding::TfSame)
                .activation(Activation::Relu6),
            150,
            150,
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("pool");
    let mut g = c.benchmark_group("conv_2t");
    g.sample_size(10);
    for (name, spec, n, h, w) in cases() {
        let (kh, kw) = spec.kernel;
        let wt = tensor(
            &[spec.out_channels, spec.in_channels / spec.groups, kh, kw],
            1,
        )
        .affine(0.1, 0.0)
        .expect("w");
        let b = tensor(&[spec.out_channels], 2);
        let x = tensor(&[n, spec.in_channels, h, w], 3);
        let mut last = None;
        for k in Kernels::available() {
            let conv = Conv2d::with_kernels(spec, wt.clone(), Some(b.clone()), k).expect("conv");
            g.bench_function(format!("{name}/{}", k.name()), |b| {
                b.iter(|| pool.install(|| conv.forward(&x).expect("ours")))
            });
            last = Some(conv);
        }
        let conv = last.expect("the fallback path is always available");
        g.bench_function(format!("{name}/candle"), |b| {
            b.iter(|| pool.install(|| conv.forward_candle(&x).expect("candle")))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
