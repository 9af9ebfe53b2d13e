//! Deterministic stand-in weights for the full-width network, from a closed-form formula that
//! `scripts/torch_reference.py` evaluates the same way on torchvision's side (see
//! `tests/fixtures/maskrcnn_tv/fullwidth_stats.json`): used for shape/statistics parity of the
//! full-size model and for benches, where no COCO weights can be downloaded.

use super::weights::{expected_shapes, Arch};
use candle_core::{Device, Result, Tensor};
use std::collections::HashMap;

/// Which `S(k)` the weights use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `sin(0.37 k)`.
    Sin,
    /// `sqrt(1.5) * (2 u(k) - 1)`, `u` from the splitmix64 finaliser of `k`.
    Hash,
}

fn splitmix_unit(k: u64) -> f64 {
    let mut z = (k.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

fn s(v: Variant, k: u64) -> f64 {
    match v {
        Variant::Sin => (0.37 * k as f64).sin(),
        Variant::Hash => 1.5f64.sqrt() * (2.0 * splitmix_unit(k) - 1.0),
    }
}

/// The value of element `k` of tensor `name` with shape `shape`.
pub fn value(v: Variant, name: &str, shape: &[usize], k: u64) -> f32 {
    let kf = k as f64;
    let leaf = name.rsplit('.').next().unwrap_or("");
    let is_bn = name.contains(".bn") || name.contains("downsample.1.");
    let x = match leaf {
        "running_mean" => 0.05 * (0.5 * kf).sin(),
        "running_var" => 1.0 + 0.2 * (0.3 * kf).sin().abs(),
        "weight" if is_bn => 1.0 + 0.1 * kf.sin(),
        "bias" if is_bn => 0.1 * kf.cos(),
        "bias" => 0.01 * kf.sin(),
        _ => {
            let fan_in: usize = shape[1..].iter().product();
            0.5 * (2.0 / fan_in as f64).sqrt() * s(v, k)
        }
    };
    x as f32
}

/// A full state dict for `arch` (torchvision 0.29 key names).
pub fn state_dict(arch: &Arch, v: Variant, device: &Device) -> Result<HashMap<String, Tensor>> {
    expected_shapes(arch)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n as u64).map(|k| value(v, &name, &shape, k)).collect();
            Ok((name, Tensor::from_vec(data, shape, device)?))
        })
        .collect()
}

/// torchvision's `maskrcnn_resnet50_fpn` shapes.
pub fn resnet50_fpn_arch() -> Arch {
    Arch {
        stem_channels: 64,
        layers: [(3, 64, 256), (4, 128, 512), (6, 256, 1024), (3, 512, 2048)],
        fpn_channels: 256,
        anchors_per_cell: 3,
        representation: 1024,
        num_classes: 91,
        mask_layers: vec![256; 4],
        mask_predictor_channels: 256,
    }
}
