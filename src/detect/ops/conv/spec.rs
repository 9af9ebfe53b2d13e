//! What a convolution is, independent of how it runs: the layer description ([`ConvSpec`],
//! [`Padding`], [`Activation`]), the resolved per-call `Geometry`, the fused `Epilogue`, and
//! the output pointer tasks share. A leaf: every kernel module imports it, it imports none.

use candle_core::Result;

/// Activation applied after bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    None,
    Relu,
    Relu6,
}

/// How a layer pads its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Explicit zero padding: top, bottom, left, right.
    Explicit {
        top: usize,
        bottom: usize,
        left: usize,
        right: usize,
    },
    /// TensorFlow "SAME": output = ceil(input / stride); the odd pixel of padding goes to the
    /// bottom/right (so stride-2 layers on even inputs pad only at the end).
    TfSame,
}

impl Padding {
    pub fn symmetric(p: usize) -> Self {
        Padding::Explicit {
            top: p,
            bottom: p,
            left: p,
            right: p,
        }
    }
}

/// Static description of one convolution layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: (usize, usize),
    pub stride: usize,
    pub dilation: usize,
    pub groups: usize,
    pub padding: Padding,
    pub activation: Activation,
}

impl ConvSpec {
    pub fn new(in_channels: usize, out_channels: usize, k: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel: (k, k),
            stride: 1,
            dilation: 1,
            groups: 1,
            padding: Padding::symmetric(0),
            activation: Activation::None,
        }
    }
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = s;
        self
    }
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = d;
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    pub fn padding(mut self, p: Padding) -> Self {
        self.padding = p;
        self
    }
    pub fn activation(mut self, a: Activation) -> Self {
        self.activation = a;
        self
    }
    /// Depthwise: one filter per input channel (channel multiplier 1).
    pub fn depthwise(channels: usize, k: usize) -> Self {
        Self::new(channels, channels, k).groups(channels)
    }

    /// Output size and resolved pads `(out_h, out_w, top, left)` for an input of `h x w`.
    pub fn geometry(&self, h: usize, w: usize) -> Result<(usize, usize, usize, usize)> {
        let (kh, kw) = self.kernel;
        let ekh = self.dilation * (kh - 1) + 1;
        let ekw = self.dilation * (kw - 1) + 1;
        let (top, bottom, left, right) = match self.padding {
            Padding::Explicit {
                top,
                bottom,
                left,
                right,
            } => (top, bottom, left, right),
            Padding::TfSame => {
                let oh = h.div_ceil(self.stride);
                let ow = w.div_ceil(self.stride);
                let ph = ((oh - 1) * self.stride + ekh).saturating_sub(h);
                let pw = ((ow - 1) * self.stride + ekw).saturating_sub(w);
                (ph / 2, ph - ph / 2, pw / 2, pw - pw / 2)
            }
        };
        let (hp, wp) = (h + top + bottom, w + left + right);
        if hp < ekh || wp < ekw {
            candle_core::bail!(
                "conv input {h}x{w} (padded {hp}x{wp}) smaller than kernel {ekh}x{ekw}"
            );
        }
        Ok((
            (hp - ekh) / self.stride + 1,
            (wp - ekw) / self.stride + 1,
            top,
            left,
        ))
    }

    /// Multiply-accumulates per output pixel, times 2: FLOPs per output location.
    pub fn flops(&self, out_h: usize, out_w: usize) -> u64 {
        let k = (self.in_channels / self.groups) * self.kernel.0 * self.kernel.1;
        2 * (k as u64) * (self.out_channels as u64) * (out_h * out_w) as u64
    }
}

/// One call's resolved sizes: input `h x w`, output `oh x ow`, leading pads `top`, `left`.
/// Made by [`Geometry::of`]; the kernels' bounds arguments rest on the sizes agreeing with the
/// layer's spec, so their safe entry points check `g == Geometry::of(spec, g.h, g.w)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub top: usize,
    pub left: usize,
}

impl Geometry {
    /// `spec` on an `h x w` input.
    pub(crate) fn of(spec: &ConvSpec, h: usize, w: usize) -> Result<Self> {
        let (oh, ow, top, left) = spec.geometry(h, w)?;
        Ok(Self {
            h,
            w,
            oh,
            ow,
            top,
            left,
        })
    }

    /// Whether the output has the input's size and no leading pad: then (for a stride-1 1x1
    /// conv) output pixel `p` reads input pixel `p`, and the input can be read in place.
    pub(crate) fn same_size_unpadded(&self) -> bool {
        self.top == 0 && self.left == 0 && self.oh == self.h && self.ow == self.w
    }
}

/// What happens after the GEMM, per output element: `act(acc + residual)`.
pub(crate) struct Epilogue<'a> {
    pub act: Activation,
    /// Same layout as the output image.
    pub residual: Option<&'a [f32]>,
}

impl Activation {
    #[inline]
    pub(crate) fn apply(self, row: &mut [f32]) {
        match self {
            Activation::None => {}
            Activation::Relu => row.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::Relu6 => row.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        }
    }
}

/// A raw output pointer shared by tasks that write disjoint parts of one buffer (column ranges
/// here, (channel block, tile) cells in the implicit-GEMM engine).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: tasks write disjoint cells of one buffer that outlives them.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Through a method, so closures capture the whole (Send) wrapper, not the raw field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Range of output columns `o` for which `o * stride + off` lands inside `[0, len)`.
#[inline]
pub(crate) fn valid_range(off: isize, stride: usize, len: usize, out_len: usize) -> (usize, usize) {
    let s = stride as isize;
    let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
    let hi = if (len as isize) - 1 - off < 0 {
        0
    } else {
        ((len as isize) - 1 - off) / s + 1
    };
    let lo = lo.clamp(0, out_len as isize) as usize;
    let hi = hi.clamp(0, out_len as isize) as usize;
    (lo, hi.max(lo))
}
