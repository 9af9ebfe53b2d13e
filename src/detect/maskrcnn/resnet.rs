//! ResNet body (torchvision `resnet50` v1.5: the stride sits on the 3x3 conv), batch norm frozen
//! and folded into the convs at load. Outputs of `layer1..layer4` feed the FPN.

use super::weights::{fold_bn, Arch};
use crate::detect::ops::conv::{Activation, Conv2d, ConvSpec, Padding};
use candle_core::{Result, Tensor};
use std::collections::HashMap;

fn conv_bn(sd: &HashMap<String, Tensor>, conv: &str, bn: &str, spec: ConvSpec) -> Result<Conv2d> {
    let (w, b) = fold_bn(sd, conv, bn)?;
    Conv2d::new(spec, w, Some(b)).map_err(|e| candle_core::Error::Msg(format!("{conv}: {e}")))
}

/// conv1x1 -> conv3x3 (stride) -> conv1x1, plus the (projected) input, then ReLU.
#[derive(Clone, Debug)]
pub struct Bottleneck {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    downsample: Option<Conv2d>,
}

impl Bottleneck {
    fn load(
        sd: &HashMap<String, Tensor>,
        p: &str,
        cin: usize,
        width: usize,
        out: usize,
        stride: usize,
        project: bool,
    ) -> Result<Self> {
        let relu = Activation::Relu;
        Ok(Self {
            conv1: conv_bn(
                sd,
                &format!("{p}.conv1"),
                &format!("{p}.bn1"),
                ConvSpec::new(cin, width, 1).activation(relu),
            )?,
            conv2: conv_bn(
                sd,
                &format!("{p}.conv2"),
                &format!("{p}.bn2"),
                ConvSpec::new(width, width, 3)
                    .stride(stride)
                    .padding(Padding::symmetric(1))
                    .activation(relu),
            )?,
            // The block's final ReLU comes after the residual add: fused into conv3's epilogue.
            conv3: conv_bn(
                sd,
                &format!("{p}.conv3"),
                &format!("{p}.bn3"),
                ConvSpec::new(width, out, 1).activation(relu),
            )?,
            downsample: if project {
                Some(conv_bn(
                    sd,
                    &format!("{p}.downsample.0"),
                    &format!("{p}.downsample.1"),
                    ConvSpec::new(cin, out, 1).stride(stride),
                )?)
            } else {
                None
            },
        })
    }

    /// FLOPs for an input of `h x w`; returns (flops, out_h, out_w).
    pub fn flops(&self, h: usize, w: usize) -> Result<(u64, usize, usize)> {
        let mut total = self.conv1.spec().flops(h, w);
        let (oh, ow, _, _) = self.conv2.spec().geometry(h, w)?;
        total += self.conv2.spec().flops(oh, ow) + self.conv3.spec().flops(oh, ow);
        if let Some(d) = &self.downsample {
            total += d.spec().flops(oh, ow);
        }
        Ok((total, oh, ow))
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let identity = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        self.conv3
            .forward_add(&self.conv2.forward(&self.conv1.forward(x)?)?, &identity)
    }
}

/// Stem (7x7/2 conv, ReLU, 3x3/2 max pool) and four layers of bottlenecks.
#[derive(Clone, Debug)]
pub struct ResNetBody {
    stem: Conv2d,
    pub layers: Vec<Vec<Bottleneck>>,
}

impl ResNetBody {
    pub fn load(sd: &HashMap<String, Tensor>, a: &Arch) -> Result<Self> {
        let stem = conv_bn(
            sd,
            "backbone.body.conv1",
            "backbone.body.bn1",
            ConvSpec::new(3, a.stem_channels, 7)
                .stride(2)
                .padding(Padding::symmetric(3))
                .activation(Activation::Relu),
        )?;
        let mut cin = a.stem_channels;
        let mut layers = Vec::new();
        for (l, &(blocks, width, out)) in a.layers.iter().enumerate() {
            let stride = if l == 0 { 1 } else { 2 };
            let mut v = Vec::new();
            for j in 0..blocks {
                let p = format!("backbone.body.layer{}.{j}", l + 1);
                let (bin, s) = if j == 0 { (cin, stride) } else { (out, 1) };
                v.push(Bottleneck::load(sd, &p, bin, width, out, s, j == 0)?);
            }
            layers.push(v);
            cin = out;
        }
        Ok(Self { stem, layers })
    }

    #[doc(hidden)]
    pub fn stem_conv_only(&self, x: &Tensor) -> Result<Tensor> {
        self.stem.forward(x)
    }

    /// Stem: conv, ReLU, then 3x3 stride-2 max pool with 1 pixel of padding.
    pub fn stem(&self, x: &Tensor) -> Result<Tensor> {
        crate::detect::ops::pool::max_pool_3x3_s2_p1(&self.stem.forward(x)?)
    }

    /// Analytic FLOPs (2 x multiply-adds of the convs) of the stem and the first `layers`
    /// layers for an `h x w` input, and the output size.
    pub fn flops(&self, h: usize, w: usize, layers: usize) -> Result<(u64, usize, usize)> {
        let (sh, sw, _, _) = self.stem.spec().geometry(h, w)?;
        let mut total = self.stem.spec().flops(sh, sw);
        // 3x3/2 max pool with padding 1.
        let (mut h, mut w) = ((sh + 2 - 3) / 2 + 1, (sw + 2 - 3) / 2 + 1);
        for layer in &self.layers[..layers] {
            for b in layer {
                let (f, oh, ow) = b.flops(h, w)?;
                total += f;
                (h, w) = (oh, ow);
            }
        }
        Ok((total, h, w))
    }

    pub fn layer(&self, i: usize, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for b in &self.layers[i] {
            x = b.forward(&x)?;
        }
        Ok(x)
    }
}
