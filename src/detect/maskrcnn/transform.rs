//! torchvision's `GeneralizedRCNNTransform`: scale to [0, 1], normalise with the ImageNet mean
//! and std, resize so the short side is `min_size` unless the long side would pass `max_size`
//! (bilinear, align_corners = false), then pad the batch with zeros to a multiple of 32.

use crate::detect::ops::interp::{resize_bilinear_chw, resized_size};
use crate::frame::RgbFrame;
use candle_core::{Device, Result, Tensor};

#[derive(Clone, Debug, PartialEq)]
pub struct TransformConfig {
    pub min_size: usize,
    pub max_size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub size_divisible: usize,
}

impl Default for TransformConfig {
    fn default() -> Self {
        Self {
            min_size: 800,
            max_size: 1333,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            size_divisible: 32,
        }
    }
}

/// A transformed batch and the sizes needed to map results back.
#[derive(Clone, Debug)]
pub struct Transformed {
    /// `[B, 3, Hp, Wp]`, zero-padded.
    pub batch: Tensor,
    /// Resized size of each image, before padding.
    pub image_sizes: Vec<(usize, usize)>,
    /// Each image's original size.
    pub original_sizes: Vec<(usize, usize)>,
}

impl Transformed {
    /// Keep only the given batch items (the padded size stays the batch's).
    pub fn select(&self, keep: &[usize]) -> Result<Self> {
        let idx = Tensor::from_vec(
            keep.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            keep.len(),
            self.batch.device(),
        )?;
        Ok(Self {
            batch: self.batch.index_select(&idx, 0)?,
            image_sizes: keep.iter().map(|&i| self.image_sizes[i]).collect(),
            original_sizes: keep.iter().map(|&i| self.original_sizes[i]).collect(),
        })
    }
}

/// Normalise and resize one frame: `[3, oh, ow]` values and the resized size.
pub fn normalise_resize(cfg: &TransformConfig, f: &RgbFrame) -> (Vec<f32>, usize, usize) {
    let (h, w) = (f.height, f.width);
    let plane = h * w;
    let mut chw = vec![0f32; 3 * plane];
    for (i, px) in f.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            // to_tensor divides by 255; Normalize subtracts the mean and divides by the std.
            chw[c * plane + i] = (px[c] as f32 / 255.0 - cfg.mean[c]) / cfg.std[c];
        }
    }
    let (oh, ow, _) = resized_size(h, w, cfg.min_size, cfg.max_size);
    (resize_bilinear_chw(&chw, 3, h, w, oh, ow), oh, ow)
}

pub fn transform(
    cfg: &TransformConfig,
    frames: &[&RgbFrame],
    device: &Device,
) -> Result<Transformed> {
    let resized: Vec<(Vec<f32>, usize, usize)> =
        frames.iter().map(|f| normalise_resize(cfg, f)).collect();
    let d = cfg.size_divisible;
    let hp = resized.iter().map(|r| r.1).max().unwrap_or(0).div_ceil(d) * d;
    let wp = resized.iter().map(|r| r.2).max().unwrap_or(0).div_ceil(d) * d;
    let mut buf = vec![0f32; frames.len() * 3 * hp * wp];
    for (b, (img, oh, ow)) in resized.iter().enumerate() {
        for c in 0..3 {
            for y in 0..*oh {
                let src = &img[(c * oh + y) * ow..(c * oh + y + 1) * ow];
                let dst = ((b * 3 + c) * hp + y) * wp;
                buf[dst..dst + ow].copy_from_slice(src);
            }
        }
    }
    Ok(Transformed {
        batch: Tensor::from_vec(buf, (frames.len(), 3, hp, wp), device)?,
        image_sizes: resized.iter().map(|r| (r.1, r.2)).collect(),
        original_sizes: frames.iter().map(|f| (f.height, f.width)).collect(),
    })
}
