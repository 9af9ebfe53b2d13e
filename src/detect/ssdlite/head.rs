//! The SSD part: extra feature layers after MobileNetV2 and the SSDLite box predictors
//! (depthwise 3x3 + 1x1 conv per feature map, separately for box encodings and class logits).

use super::anchors::ANCHORS_PER_CELL;
use super::mobilenet::{load_conv, same};
use crate::detect::ops::conv::{Activation, Conv2d, ConvSpec};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// One extra layer: 1x1 reduce, 3x3 depthwise stride 2, 1x1 expand.
#[derive(Clone, Debug)]
pub struct ExtraLayer {
    reduce: Conv2d,
    depthwise: Conv2d,
    expand: Conv2d,
}

/// (index, reduce channels, output channels) of `layer_19_*_Conv2d_{i}_*`.
pub const EXTRAS: [(usize, usize, usize); 4] =
    [(2, 256, 512), (3, 128, 256), (4, 128, 256), (5, 64, 128)];

impl ExtraLayer {
    fn load(
        vb: &VarBuilder,
        in_channels: usize,
        (i, mid, out): (usize, usize, usize),
    ) -> Result<Self> {
        let relu6 = Activation::Relu6;
        let reduce = load_conv(
            vb,
            &format!("layer_19_1_Conv2d_{i}_1x1_{mid}"),
            same(ConvSpec::new(in_channels, mid, 1).activation(relu6)),
        )?;
        let depthwise = load_conv(
            vb,
            &format!("layer_19_2_Conv2d_{i}_3x3_s2_{out}_depthwise"),
            same(ConvSpec::depthwise(mid, 3).stride(2).activation(relu6)),
        )?;
        let expand = load_conv(
            vb,
            &format!("layer_19_2_Conv2d_{i}_3x3_s2_{out}"),
            same(ConvSpec::new(mid, out, 1).activation(relu6)),
        )?;
        Ok(Self {
            reduce,
            depthwise,
            expand,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.expand
            .forward(&self.depthwise.forward(&self.reduce.forward(x)?)?)
    }
}

/// The four extra layers, producing feature maps 3..6 from the 10x10 `Conv_1` map.
#[derive(Clone, Debug)]
pub struct Extras(Vec<ExtraLayer>);

impl Extras {
    pub fn load(vb: &VarBuilder) -> Result<Self> {
        let mut c = 1280;
        let mut layers = Vec::new();
        for e in EXTRAS {
            layers.push(ExtraLayer::load(vb, c, e)?);
            c = e.2;
        }
        Ok(Self(layers))
    }

    /// Feature maps after each extra layer.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut maps = Vec::with_capacity(self.0.len());
        let mut cur = x.clone();
        for l in &self.0 {
            cur = l.forward(&cur)?;
            maps.push(cur.clone());
        }
        Ok(maps)
    }
}

/// Channels of the six feature maps fed to the predictors.
pub const FEATURE_CHANNELS: [usize; 6] = [576, 1280, 512, 256, 256, 128];

/// Predictor for one feature map.
#[derive(Clone, Debug)]
pub struct BoxPredictor {
    box_dw: Conv2d,
    box_conv: Conv2d,
    class_dw: Conv2d,
    class_conv: Conv2d,
    anchors: usize,
}

impl BoxPredictor {
    pub fn load(vb: &VarBuilder, i: usize, num_classes_with_bg: usize) -> Result<Self> {
        let vb = vb.pp(format!("BoxPredictor_{i}"));
        let c = FEATURE_CHANNELS[i];
        let a = ANCHORS_PER_CELL[i];
        let dw = || same(ConvSpec::depthwise(c, 3).activation(Activation::Relu6));
        Ok(Self {
            box_dw: load_conv(&vb, "BoxEncodingPredictor_depthwise", dw())?,
            box_conv: load_conv(
                &vb,
                "BoxEncodingPredictor",
                same(ConvSpec::new(c, a * 4, 1)),
            )?,
            class_dw: load_conv(&vb, "ClassPredictor_depthwise", dw())?,
            class_conv: load_conv(
                &vb,
                "ClassPredictor",
                same(ConvSpec::new(c, a * num_classes_with_bg, 1)),
            )?,
            anchors: a,
        })
    }

    /// Box encodings `[B, H*W*A, 4]` and class logits `[B, H*W*A, classes]`, in TF's
    /// (row, column, anchor) order.
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let boxes = self.box_conv.forward(&self.box_dw.forward(x)?)?;
        let classes = self.class_conv.forward(&self.class_dw.forward(x)?)?;
        Ok((
            self.to_rows(&boxes, 4)?,
            self.to_rows(&classes, classes.dim(1)? / self.anchors)?,
        ))
    }

    fn to_rows(&self, t: &Tensor, per_anchor: usize) -> Result<Tensor> {
        let (b, _, h, w) = t.dims4()?;
        t.permute((0, 2, 3, 1))?
            .reshape((b, h * w * self.anchors, per_anchor))
    }
}
