//! MobileNetV2 (depth multiplier 1.0) as the TF Object Detection API builds it for SSDLite:
//! every conv is followed by (folded) batch norm, ReLU6 everywhere except the linear projections,
//! TF "SAME" padding throughout.

use crate::detect::ops::conv::{Activation, Conv2d, ConvSpec, Padding};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// Load one conv layer `name` (keys `name.weight`, `name.bias`) for `spec`.
pub(crate) fn load_conv(vb: &VarBuilder, name: &str, spec: ConvSpec) -> Result<Conv2d> {
    let vb = vb.pp(name);
    let (kh, kw) = spec.kernel;
    let w = vb.get(
        (spec.out_channels, spec.in_channels / spec.groups, kh, kw),
        "weight",
    )?;
    let b = vb.get(spec.out_channels, "bias")?;
    Conv2d::new(spec, w, Some(b))
        .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", vb.prefix())))
}

pub(crate) fn same(spec: ConvSpec) -> ConvSpec {
    spec.padding(Padding::TfSame)
}

/// An inverted residual block: 1x1 expand (absent in the first block), 3x3 depthwise, 1x1 linear
/// projection, and a skip connection when shape is preserved.
#[derive(Clone, Debug)]
pub struct InvertedResidual {
    pub name: &'static str,
    expand: Option<Conv2d>,
    depthwise: Conv2d,
    project: Conv2d,
    residual: bool,
}

impl InvertedResidual {
    pub fn load(vb: &VarBuilder, b: &BlockDef, in_channels: usize) -> Result<Self> {
        let vb = vb.pp(b.name);
        let hidden = b.expand.unwrap_or(in_channels);
        let expand = match b.expand {
            Some(e) => Some(load_conv(
                &vb,
                "expand",
                same(ConvSpec::new(in_channels, e, 1).activation(Activation::Relu6)),
            )?),
            None => None,
        };
        let depthwise = load_conv(
            &vb,
            "depthwise",
            same(
                ConvSpec::depthwise(hidden, 3)
                    .stride(b.stride)
                    .activation(Activation::Relu6),
            ),
        )?;
        let project = load_conv(&vb, "project", same(ConvSpec::new(hidden, b.out, 1)))?;
        Ok(Self {
            name: b.name,
            expand,
            depthwise,
            project,
            residual: b.stride == 1 && in_channels == b.out,
        })
    }

    /// Returns the block output and the expansion output (the SSD taps one of those).
    pub fn forward_tapped(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let expanded = match &self.expand {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        let dw = self.depthwise.forward(&expanded)?;
        let y = if self.residual {
            self.project.forward_add(&dw, x)?
        } else {
            self.project.forward(&dw)?
        };
        Ok((y, expanded))
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_tapped(x)?.0)
    }

    /// FLOPs of this block for an input of `h x w`; returns (flops, out_h, out_w).
    pub fn flops(&self, h: usize, w: usize) -> Result<(u64, usize, usize)> {
        let mut total = 0;
        if let Some(e) = &self.expand {
            total += e.spec().flops(h, w);
        }
        let (oh, ow, _, _) = self.depthwise.spec().geometry(h, w)?;
        total += self.depthwise.spec().flops(oh, ow) + self.project.spec().flops(oh, ow);
        Ok((total, oh, ow))
    }
}

/// One row of the MobileNetV2 table.
pub struct BlockDef {
    pub name: &'static str,
    pub expand: Option<usize>,
    pub out: usize,
    pub stride: usize,
}

const fn block(name: &'static str, expand: usize, out: usize, stride: usize) -> BlockDef {
    BlockDef {
        name,
        expand: Some(expand),
        out,
        stride,
    }
}

/// The 17 inverted residual blocks after the 32-channel stem.
pub const BLOCKS: [BlockDef; 17] = [
    BlockDef {
        name: "expanded_conv",
        expand: None,
        out: 16,
        stride: 1,
    },
    block("expanded_conv_1", 96, 24, 2),
    block("expanded_conv_2", 144, 24, 1),
    block("expanded_conv_3", 144, 32, 2),
    block("expanded_conv_4", 192, 32, 1),
    block("expanded_conv_5", 192, 32, 1),
    block("expanded_conv_6", 192, 64, 2),
    block("expanded_conv_7", 384, 64, 1),
    block("expanded_conv_8", 384, 64, 1),
    block("expanded_conv_9", 384, 64, 1),
    block("expanded_conv_10", 384, 96, 1),
    block("expanded_conv_11", 576, 96, 1),
    block("expanded_conv_12", 576, 96, 1),
    block("expanded_conv_13", 576, 160, 2),
    block("expanded_conv_14", 960, 160, 1),
    block("expanded_conv_15", 960, 160, 1),
    block("expanded_conv_16", 960, 320, 1),
];

/// Index of the block whose expansion output is the first SSD feature map (19x19x576).
pub const TAP_BLOCK: usize = 13;
