//! The CPU kernels against candle's stock `conv2d` (the reference), over odd shapes.

use super::*;
use crate::runtime::Kernels;
use candle_core::{Device, Tensor};

fn rand(shape: &[usize], seed: u64) -> Tensor {
    // A small deterministic LCG: tests must not depend on a global RNG.
    let n: usize = shape.iter().product();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

fn max_rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs() / scale))
}

fn check(spec: ConvSpec, n: usize, h: usize, w: usize, seed: u64) {
    let (kh, kw) = spec.kernel;
    let wt = rand(
        &[spec.out_channels, spec.in_channels / spec.groups, kh, kw],
        seed,
    );
    let b = rand(&[spec.out_channels], seed + 1);
    let x = rand(&[n, spec.in_channels, h, w], seed + 2);
    for path in Kernels::available() {
        let conv = Conv2d::with_kernels(spec, wt.clone(), Some(b.clone()), path).expect("conv");
        let reference = conv.forward_candle(&x).expect("candle");
        let ours = conv.forward(&x).expect("ours");
        assert_eq!(ours.dims(), reference.dims(), "{spec:?} on {h}x{w}");
        let e = max_rel_err(&ours, &reference);
        assert!(
            e <= 1e-4,
            "{}: {spec:?} on {n}x{h}x{w}: max rel err {e}",
            path.name()
        );
    }
}

#[test]
fn every_kernel_matches_candle_over_odd_shapes() {
    let mut seed = 1;
    for &(h, w) in &[(1, 1), (7, 7), (33, 33), (7, 33), (8, 10)] {
        for &stride in &[1, 2] {
            for &(k, pad) in &[(1, 0), (3, 1), (3, 0), (3, 2), (7, 3), (1, 1)] {
                for &dil in &[1, 2] {
                    for &(cin, cout, groups) in &[(3, 5, 1), (13, 17, 1), (12, 18, 3), (11, 11, 11)]
                    {
                        let spec = ConvSpec::new(cin, cout, k)
                            .stride(stride)
                            .dilation(dil)
                            .groups(groups)
                            .padding(Padding::symmetric(pad))
                            .activation(match seed % 3 {
                                0 => Activation::None,
                                1 => Activation::Relu,
                                _ => Activation::Relu6,
                            });
                        seed += 1;
                        if spec.geometry(h, w).is_err() {
                            continue;
                        }
                        check(spec, 2, h, w, seed);
                    }
                }
            }
        }
    }
}

#[test]
fn engine_paths_at_wider_shapes() {
    // Past the small odd shapes: packed 1x1 panels (K <= 1024) and in-place reads
    // (K > 1024), many channel blocks, runs of several tiles, short last tiles, and
    // phase-split stride-2 3x3/7x7 inputs.
    let relu = Activation::Relu;
    for (spec, h, w) in [
        (ConvSpec::new(300, 70, 1).activation(relu), 17, 29),
        (ConvSpec::new(1100, 36, 1), 7, 7),
        (
            ConvSpec::new(40, 24, 3).padding(Padding::symmetric(1)),
            37,
            53,
        ),
        (
            ConvSpec::new(64, 40, 3)
                .stride(2)
                .padding(Padding::symmetric(1)),
            30,
            61,
        ),
        (
            ConvSpec::new(3, 16, 7)
                .stride(2)
                .padding(Padding::symmetric(3)),
            45,
            70,
        ),
        (ConvSpec::new(96, 130, 1).stride(2), 21, 33),
        // SSDLite's depthwise layers (the padded, phase-split 3x3 kernel): 150x150 at stride 2
        // with TF padding, and a stride-1 map wider than a few vectors with a partial last one.
        (
            ConvSpec::depthwise(24, 3)
                .stride(2)
                .padding(Padding::TfSame)
                .activation(Activation::Relu6),
            150,
            150,
        ),
        (
            ConvSpec::depthwise(20, 3)
                .padding(Padding::symmetric(1))
                .activation(Activation::Relu6),
            19,
            75,
        ),
    ] {
        check(spec, 1, h, w, 11);
    }
}

#[test]
fn tf_same_padding_is_asymmetric_at_stride_two() {
    // 300 -> 150 at stride 2: TF pads 0 on top/left and 1 on bottom/right.
    let spec = ConvSpec::new(3, 8, 3).stride(2).padding(Padding::TfSame);
    assert_eq!(spec.geometry(300, 300).unwrap(), (150, 150, 0, 0));
    assert_eq!(spec.geometry(75, 75).unwrap(), (38, 38, 1, 1));
    for &(h, w) in &[(10, 10), (19, 19), (2, 2), (1, 1), (9, 14)] {
        check(spec, 1, h, w, 99);
        check(
            ConvSpec::depthwise(8, 3).stride(2).padding(Padding::TfSame),
            1,
            h,
            w,
            7,
        );
    }
}

#[test]
fn fused_residual_matches_separate_add() {
    for (spec, h, w) in [
        (ConvSpec::new(16, 24, 1).activation(Activation::Relu), 9, 13),
        (
            ConvSpec::new(8, 8, 3)
                .padding(Padding::symmetric(1))
                .activation(Activation::Relu),
            33,
            7,
        ),
        (ConvSpec::new(12, 20, 1).stride(2), 17, 17),
        (
            ConvSpec::depthwise(10, 3)
                .padding(Padding::TfSame)
                .activation(Activation::Relu6),
            11,
            8,
        ),
    ] {
        let (kh, kw) = spec.kernel;
        let conv = Conv2d::new(
            spec,
            rand(
                &[spec.out_channels, spec.in_channels / spec.groups, kh, kw],
                5,
            ),
            Some(rand(&[spec.out_channels], 6)),
        )
        .unwrap();
        let x = rand(&[2, spec.in_channels, h, w], 7);
        let plain = Conv2d::new(
            spec.activation(Activation::None),
            conv.weight.clone(),
            Some(conv.bias.clone()),
        )
        .unwrap();
        let y0 = plain.forward_candle(&x).unwrap();
        let r = rand(y0.dims(), 8);
        let reference = (y0 + &r).unwrap();
        let reference = match spec.activation {
            Activation::None => reference,
            Activation::Relu => reference.relu().unwrap(),
            Activation::Relu6 => reference.clamp(0f32, 6f32).unwrap(),
        };
        let e = max_rel_err(&conv.forward_add(&x, &r).unwrap(), &reference);
        assert!(e <= 1e-4, "{spec:?}: {e}");
    }
}

/// The path depthwise layers take on GPUs, checked here on the CPU against candle's grouped
/// conv over strides, dilations, kernels, both paddings and odd sides, with each activation.
#[test]
fn depthwise_taps_match_candle() {
    let mut seed = 100;
    let mut checked = 0;
    for &(h, w) in &[(1, 1), (2, 3), (7, 7), (8, 10), (19, 19), (150, 150)] {
        for &stride in &[1, 2, 3] {
            for &dil in &[1, 2] {
                for &k in &[1, 3, 5] {
                    for pad in [Padding::TfSame, Padding::symmetric(k / 2)] {
                        for act in [Activation::None, Activation::Relu, Activation::Relu6] {
                            let spec = ConvSpec::depthwise(6, k)
                                .stride(stride)
                                .dilation(dil)
                                .padding(pad)
                                .activation(act);
                            if spec.geometry(h, w).is_err() {
                                continue;
                            }
                            seed += 3;
                            let wt = rand(&[6, 1, k, k], seed);
                            let conv =
                                Conv2d::new(spec, wt.clone(), Some(rand(&[6], seed + 1))).unwrap();
                            let taps = depthwise_taps(&spec, &wt).unwrap().unwrap();
                            assert_eq!(taps.dims(), [k * k, 6]);
                            let x = (rand(&[2, 6, h, w], seed + 2) * 4.0).unwrap();
                            let reference = conv.forward_candle(&x).unwrap();
                            let ours = conv.forward_depthwise_taps(&x, &taps).unwrap();
                            assert_eq!(ours.dims(), reference.dims(), "{spec:?} {h}x{w}");
                            let e = max_rel_err(&ours, &reference);
                            assert!(e <= 1e-5, "{spec:?} on {h}x{w}: max rel err {e}");
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 300, "{checked}");
    // Only depthwise layers have taps; on the CPU a layer never keeps them.
    let dense = ConvSpec::new(4, 4, 3);
    assert!(depthwise_taps(&dense, &rand(&[4, 4, 3, 3], 1))
        .unwrap()
        .is_none());
    let dw = ConvSpec::depthwise(4, 3);
    let conv = Conv2d::new(dw, rand(&[4, 1, 3, 3], 2), None).unwrap();
    assert!(conv.dw_taps.is_none() && conv.packed.is_none());
}

#[test]
fn rejects_bad_weights() {
    let spec = ConvSpec::new(3, 4, 3);
    assert!(Conv2d::new(spec, rand(&[4, 3, 1, 1], 1), None).is_err());
    let mut v = vec![0f32; 4 * 3 * 9];
    v[5] = f32::NAN;
    let wt = Tensor::from_vec(v, (4, 3, 3, 3), &Device::Cpu).unwrap();
    let err = Conv2d::new(spec, wt, None).unwrap_err().to_string();
    assert!(err.contains("non-finite"), "{err}");
}

/// The Winograd path (3x3 stride-1 dense layers with >= 16 channels) against candle over map
/// sizes that leave partial tiles on both edges, tiny maps, batches whose tiles share blocks,
/// and every padding side alone, with each activation and the fused residual.
#[test]
fn winograd_matches_candle() {
    let pad = |top, bottom, left, right| Padding::Explicit {
        top,
        bottom,
        left,
        right,
    };
    let mut seed = 500;
    for (cin, cout) in [(16, 16), (24, 40), (64, 72)] {
        for p in [
            Padding::symmetric(1),
            Padding::symmetric(0),
            pad(0, 2, 0, 2),
            pad(2, 0, 1, 0),
        ] {
            for act in [Activation::None, Activation::Relu, Activation::Relu6] {
                let spec = ConvSpec::new(cin, cout, 3).padding(p).activation(act);
                for &(n, h, w) in &[(1, 1, 1), (2, 3, 5), (1, 7, 7), (3, 14, 14), (1, 21, 67)] {
                    seed += 3;
                    if spec.geometry(h, w).is_ok() {
                        check(spec, n, h, w, seed);
                    }
                }
            }
        }
    }
}

#[test]
fn winograd_fused_residual_matches_separate_add() {
    let spec = ConvSpec::new(32, 48, 3)
        .padding(Padding::symmetric(1))
        .activation(Activation::Relu);
    let wt = rand(&[48, 32, 3, 3], 9);
    let b = rand(&[48], 10);
    let x = rand(&[2, 32, 13, 22], 11);
    let plain = Conv2d::new(
        spec.activation(Activation::None),
        wt.clone(),
        Some(b.clone()),
    )
    .unwrap();
    let y0 = plain.forward_candle(&x).unwrap();
    let r = rand(y0.dims(), 12);
    let reference = (y0 + &r).unwrap().relu().unwrap();
    for path in Kernels::available() {
        let conv = Conv2d::with_kernels(spec, wt.clone(), Some(b.clone()), path).unwrap();
        let e = max_rel_err(&conv.forward_add(&x, &r).unwrap(), &reference);
        assert!(e <= 1e-4, "{}: {e}", path.name());
    }
}
