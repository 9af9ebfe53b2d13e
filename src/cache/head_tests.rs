//! Tests of `cache::head` (kept apart so head.rs stays readable).

use super::*;

fn ramp(shape: (usize, usize, usize, usize)) -> Tensor {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 113) as f32 / 10.0 - 5.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// PyTorch's definition, written as loops.
fn brute_pool(x: &Tensor, g: usize) -> Vec<f32> {
    let (b, c, h, w) = x.dims4().unwrap();
    let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut out = Vec::new();
    for bc in 0..b * c {
        for i in 0..g {
            for j in 0..g {
                let (h0, h1) = (i * h / g, ((i + 1) * h).div_ceil(g));
                let (w0, w1) = (j * w / g, ((j + 1) * w).div_ceil(g));
                let mut s = 0f64;
                for y in h0..h1 {
                    for x in w0..w1 {
                        s += v[bc * h * w + y * w + x] as f64;
                    }
                }
                out.push((s / ((h1 - h0) * (w1 - w0)) as f64) as f32);
            }
        }
    }
    out
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn adaptive_pool_matches_brute_force() {
    for (h, w, g) in [
        (19, 19, 4),
        (38, 38, 4),
        (10, 10, 4),
        (7, 13, 2),
        (5, 3, 4),
        (9, 9, 1),
    ] {
        let x = ramp((2, 3, h, w));
        let got = flat(&adaptive_avg_pool(&x, g).unwrap());
        assert!(max_diff(&got, &brute_pool(&x, g)) < 1e-5, "{h}x{w}->{g}");
    }
}

#[test]
fn regrid_equals_direct_pool() {
    let x = ramp((2, 5, 16, 24));
    let x4 = adaptive_avg_pool(&x, 4).unwrap();
    for g in [1, 2] {
        let a = flat(&regrid(&x4, g).unwrap());
        let b = flat(&adaptive_avg_pool(&x, g).unwrap());
        assert!(max_diff(&a, &b) < 1e-5);
    }
    assert_eq!(flat(&regrid(&x4, 4).unwrap()), flat(&x4));
    assert!(regrid(&x4, 3).is_err());
}

#[test]
fn flops_and_describe() {
    let a = HeadArch {
        grid: 4,
        convs: vec![conv(3, 1, 32)],
        linears: vec![64],
        classes: 2,
    };
    assert_eq!(a.describe(), "grid 4, conv3x3/1x32, fc64");
    // conv: 16 positions x 32 out x 96 in x 9; fc: 512 x 64; out: 64 x 2.
    assert_eq!(a.flops(96), 2 * (16 * 32 * 96 * 9 + 512 * 64 + 64 * 2));
    let b = HeadArch {
        grid: 4,
        convs: vec![conv(3, 2, 8)],
        linears: vec![],
        classes: 2,
    };
    assert_eq!(b.flops(4), 2 * (4 * 8 * 4 * 9 + 32 * 2));
    let sp = search_space(2);
    assert!((12..=24).contains(&sp.len()));
    assert!(sp
        .iter()
        .chain(&full_space(2))
        .all(|a| a.validate().is_ok()));
    assert_eq!(full_space(2).len(), 516);
}

#[test]
fn forward_shapes_and_roundtrip() {
    let dev = Device::Cpu;
    for arch in search_space(3) {
        let g = arch.grid;
        let head = CacheHead::new(arch.clone(), 6, 7, &dev).unwrap();
        let x = ramp((5, 6, g, g));
        let y = head.forward(&x).unwrap();
        assert_eq!(y.dims(), &[5, 3], "{}", arch.describe());
        let map = head.to_tensors("layer2");
        let back = CacheHead::from_tensors(arch.clone(), 6, &map, "layer2").unwrap();
        assert_eq!(flat(&back.forward(&x).unwrap()), flat(&y));
        let same = CacheHead::new(arch, 6, 7, &dev).unwrap();
        assert_eq!(flat(&same.forward(&x).unwrap()), flat(&y));
    }
}

#[test]
fn from_tensors_names_the_bad_tensor() {
    let arch = search_space(2)[16].clone();
    let head = CacheHead::new(arch.clone(), 6, 1, &Device::Cpu).unwrap();
    let mut map = head.to_tensors("");
    map.remove("conv1.bias");
    let e = CacheHead::from_tensors(arch.clone(), 6, &map, "").unwrap_err();
    assert!(e.to_string().contains("missing tensor conv1.bias"), "{e}");
    let e = CacheHead::from_tensors(arch, 7, &head.to_tensors(""), "").unwrap_err();
    assert!(e.to_string().contains("tensor conv0.weight: shape"), "{e}");
}

/// Backprop through strided convs and linears agrees with finite differences.
#[test]
fn gradients_match_finite_differences() {
    let arch = HeadArch {
        grid: 4,
        convs: vec![conv(3, 2, 4), conv(1, 1, 3)],
        linears: vec![5],
        classes: 2,
    };
    let head = CacheHead::new(arch, 3, 11, &Device::Cpu).unwrap();
    let x = ramp((2, 3, 4, 4)).affine(0.3, 0.1).unwrap();
    let loss =
        |h: &CacheHead| -> Tensor { h.forward(&x).unwrap().sqr().unwrap().sum_all().unwrap() };
    let grads = loss(&head).backward().unwrap();
    for v in head.vars() {
        let g = flat(grads.get(v.as_tensor()).unwrap());
        let base = flat(v.as_tensor());
        for i in [0, base.len() / 2, base.len() - 1] {
            let eps = 1e-2f32;
            let mut p = base.clone();
            p[i] += eps;
            v.set(&Tensor::from_vec(p.clone(), v.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let up: f32 = loss(&head).to_scalar().unwrap();
            p[i] -= 2.0 * eps;
            v.set(&Tensor::from_vec(p, v.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let down: f32 = loss(&head).to_scalar().unwrap();
            v.set(&Tensor::from_vec(base.clone(), v.shape(), &Device::Cpu).unwrap())
                .unwrap();
            let fd = (up - down) / (2.0 * eps);
            assert!(
                (fd - g[i]).abs() < 2e-2 * (1.0 + g[i].abs()),
                "{fd} vs {}",
                g[i]
            );
        }
    }
}
