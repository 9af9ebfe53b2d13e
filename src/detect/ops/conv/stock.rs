//! The layer through candle's own ops: on devices other than the CPU, for the stock-candle
//! benchmark switch, and as the exactness reference of the CPU kernels.

use super::layer::Conv2d;
use super::spec::{Activation, ConvSpec, Padding};
use candle_core::{Result, Tensor};

impl Conv2d {
    /// A depthwise layer through element-wise candle ops (any device): the sum over the kernel
    /// taps `(i, j)` of the padded input's view shifted by `(i, j) * dilation` and subsampled by
    /// the stride, times the tap's per-channel weight; then bias and activation. `taps` is
    /// [`depthwise_taps`]' `[kh * kw, channels]`. Strides go through "phases": the padded input
    /// reshaped to `[.., H / s, s, W / s, s]`, phase `(p, q)` holding rows `a * s + p` and
    /// columns `b * s + q`, so every tap is a plain shifted window of one phase.
    pub fn forward_depthwise_taps(&self, x: &Tensor, taps: &Tensor) -> Result<Tensor> {
        let spec = &self.spec;
        let (n, c, h, w) = x.dims4()?;
        if c != spec.in_channels || spec.groups != c || spec.out_channels != c {
            candle_core::bail!("depthwise taps: {spec:?} on {c} input channels");
        }
        let (oh, ow, top, left) = spec.geometry(h, w)?;
        let (kh, kw) = spec.kernel;
        let (st, dil) = (spec.stride, spec.dilation);
        // Padded side: whole phases, enough for the last tap's last output ((k - 1) * dil + (o - 1)
        // * st < st * ((k - 1) * dil / st + o)), and never shorter than the padded input.
        let side = |k: usize, o: usize, pad: usize, n: usize| {
            (st * ((k - 1) * dil / st + o)).max((pad + n).div_ceil(st) * st)
        };
        let (hp, wp) = (side(kh, oh, top, h), side(kw, ow, left, w));
        let xp = x
            .pad_with_zeros(2, top, hp - top - h)?
            .pad_with_zeros(3, left, wp - left - w)?;
        let phases: Vec<Vec<Tensor>> = if st == 1 {
            vec![vec![xp]]
        } else {
            let split = xp.reshape((n, c, hp / st, st, wp / st, st))?;
            (0..st)
                .map(|p| {
                    (0..st)
                        .map(|q| {
                            split.narrow(3, p, 1)?.narrow(5, q, 1)?.reshape((
                                n,
                                c,
                                hp / st,
                                wp / st,
                            ))
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<_>>()?
        };
        let mut acc: Option<Tensor> = None;
        for i in 0..kh {
            for j in 0..kw {
                let (r, q) = (i * dil, j * dil);
                let view = phases[r % st][q % st]
                    .narrow(2, r / st, oh)?
                    .narrow(3, q / st, ow)?;
                let term = view.broadcast_mul(&taps.get(i * kw + j)?.reshape((1, c, 1, 1))?)?;
                acc = Some(match acc {
                    None => term,
                    Some(a) => (a + term)?,
                });
            }
        }
        let Some(y) = acc else {
            candle_core::bail!("depthwise taps: empty kernel {spec:?}");
        };
        let y = y.broadcast_add(&self.bias.reshape((1, c, 1, 1))?)?;
        match spec.activation {
            Activation::None => Ok(y),
            Activation::Relu => y.relu(),
            Activation::Relu6 => y.clamp(0f32, 6f32),
        }
    }

    /// The same layer through candle's stock ops (any device). Also the exactness reference.
    pub fn forward_candle(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (_, _, top, left) = self.spec.geometry(h, w)?;
        let (bottom, right) = match self.spec.padding {
            Padding::Explicit { bottom, right, .. } => (bottom, right),
            Padding::TfSame => {
                let (oh, ow, _, _) = self.spec.geometry(h, w)?;
                let ekh = self.spec.dilation * (self.spec.kernel.0 - 1) + 1;
                let ekw = self.spec.dilation * (self.spec.kernel.1 - 1) + 1;
                let ph = ((oh - 1) * self.spec.stride + ekh).saturating_sub(h);
                let pw = ((ow - 1) * self.spec.stride + ekw).saturating_sub(w);
                (ph - top, pw - left)
            }
        };
        let x = x
            .pad_with_zeros(2, top, bottom)?
            .pad_with_zeros(3, left, right)?;
        let y = x.conv2d(
            &self.weight,
            0,
            self.spec.stride,
            self.spec.dilation,
            self.spec.groups,
        )?;
        let y = y.broadcast_add(&self.bias.reshape((1, self.spec.out_channels, 1, 1))?)?;
        match self.spec.activation {
            Activation::None => Ok(y),
            Activation::Relu => y.relu(),
            Activation::Relu6 => y.clamp(0f32, 6f32),
        }
    }
}

/// For a depthwise layer (one filter per channel, channel multiplier 1), its OIHW weights
/// `[c, 1, kh, kw]` as `[kh * kw, c]`: row `i * kw + j` is tap `(i, j)` of every channel. `None`
/// for other layers.
pub fn depthwise_taps(spec: &ConvSpec, weight: &Tensor) -> Result<Option<Tensor>> {
    let c = spec.in_channels;
    if spec.groups != c || spec.out_channels != c || c < 2 {
        return Ok(None);
    }
    let (kh, kw) = spec.kernel;
    Ok(Some(
        weight
            .to_dtype(candle_core::DType::F32)?
            .reshape((c, kh * kw))?
            .t()?
            .contiguous()?,
    ))
}
