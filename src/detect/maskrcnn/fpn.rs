//! Feature pyramid network (torchvision `FeaturePyramidNetwork` + `LastLevelMaxPool`): 1x1
//! lateral convs, nearest-neighbour top-down path, 3x3 output convs, and a stride-2 subsample of
//! the coarsest output as the extra "pool" level.

use super::weights::conv_with_bias;
use crate::detect::ops::conv::{Conv2d, ConvSpec, Padding};
use candle_core::{Result, Tensor};
use std::collections::HashMap;

#[derive(Clone, Debug)]
pub struct Fpn {
    inner: Vec<Conv2d>,
    layer: Vec<Conv2d>,
}

/// Nearest-neighbour resize with torch's `interpolate(mode="nearest", size=...)` index rule:
/// source = floor(dst * in / out), computed in f32 as torch does.
pub fn upsample_nearest(x: &Tensor, oh: usize, ow: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let idx = |inn: usize, out: usize| -> Result<Tensor> {
        let scale = inn as f32 / out as f32;
        let v: Vec<u32> = (0..out)
            .map(|d| ((d as f32 * scale).floor() as usize).min(inn - 1) as u32)
            .collect();
        Tensor::from_vec(v, out, x.device())
    };
    x.index_select(&idx(h, oh)?, 2)?
        .index_select(&idx(w, ow)?, 3)
}

impl Fpn {
    pub fn load(sd: &HashMap<String, Tensor>, in_channels: &[usize], c: usize) -> Result<Self> {
        let mut inner = Vec::new();
        let mut layer = Vec::new();
        for (i, &cin) in in_channels.iter().enumerate() {
            inner.push(conv_with_bias(
                sd,
                &format!("backbone.fpn.inner_blocks.{i}.0"),
                ConvSpec::new(cin, c, 1),
            )?);
            layer.push(conv_with_bias(
                sd,
                &format!("backbone.fpn.layer_blocks.{i}.0"),
                ConvSpec::new(c, c, 3).padding(Padding::symmetric(1)),
            )?);
        }
        Ok(Self { inner, layer })
    }

    /// Levels '0'..'3' then 'pool', finest first.
    pub fn forward(&self, feats: &[Tensor]) -> Result<Vec<Tensor>> {
        let n = feats.len();
        let mut last = self.inner[n - 1].forward(&feats[n - 1])?;
        let mut out = vec![self.layer[n - 1].forward(&last)?];
        for i in (0..n - 1).rev() {
            let lateral = self.inner[i].forward(&feats[i])?;
            let (_, _, h, w) = lateral.dims4()?;
            last = (lateral + upsample_nearest(&last, h, w)?)?;
            out.insert(0, self.layer[i].forward(&last)?);
        }
        // max_pool2d(kernel 1, stride 2): every other pixel.
        let top = &out[n - 1];
        let (_, _, h, w) = top.dims4()?;
        let pick = |len: usize| {
            Tensor::from_vec(
                (0..len).step_by(2).map(|v| v as u32).collect::<Vec<_>>(),
                len.div_ceil(2),
                top.device(),
            )
        };
        let pool = top.index_select(&pick(h)?, 2)?.index_select(&pick(w)?, 3)?;
        out.push(pool);
        Ok(out)
    }
}
