//! Inference convolutions with bias and activation fused, for both detectors.
//!
//! Why not candle's `conv2d`: on CPU its 1x1 path copies element by element, its grouped path
//! loops per channel (a depthwise layer becomes hundreds of tiny convs), and bias/activation
//! are separate passes. Here each layer picks a kernel by shape:
//! - dense convs (groups == 1) on AVX-512 CPUs: the implicit-GEMM engine of
//!   [`super::conv_igemm`] (weights packed at load, no im2col buffer, bias/residual/activation
//!   applied on the registers);
//! - depthwise (groups == input channels): a direct row-wise kernel;
//! - other grouped convs, and every conv on CPUs without AVX-512: tiled im2col + the `gemm`
//!   crate ([`super::conv_kernels`]).
//!
//! On non-CPU devices the layer falls back to candle's own ops (padding applied explicitly, so
//! TF "SAME" stays asymmetric), except depthwise layers: candle's grouped `conv2d` runs one
//! convolution per channel (hundreds of kernel launches per layer on a GPU), so they run as a sum
//! of shifted views times per-channel weights ([`Conv2d::forward_depthwise_taps`]).

use super::conv_igemm::{self, PackedWeights};
use super::conv_kernels::{depthwise, gemm_conv, Epilogue, Geometry};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

/// Activation applied after bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    None,
    Relu,
    Relu6,
}

static STOCK_CANDLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Route every conv through candle's stock `conv2d` (plus separate bias/activation/add ops), for
/// side-by-side benchmarks of the engine (`pedcache bench backbone --engine candle`).
pub fn set_stock_candle(on: bool) {
    STOCK_CANDLE.store(on, std::sync::atomic::Ordering::Relaxed);
}

fn stock_candle() -> bool {
    STOCK_CANDLE.load(std::sync::atomic::Ordering::Relaxed)
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

/// A convolution layer with its weights (BN already folded in) and fused epilogue.
#[derive(Clone, Debug)]
pub struct Conv2d {
    spec: ConvSpec,
    /// OIHW, as candle expects; used by the non-CPU fallback.
    weight: Tensor,
    bias: Tensor,
    /// The same weights as a flat row-major `[out, in/groups * kh * kw]` matrix for the CPU kernels.
    w: std::sync::Arc<Vec<f32>>,
    b: std::sync::Arc<Vec<f32>>,
    /// The weights regrouped for the AVX-512 implicit-GEMM kernel, packed once here at load
    /// (None for grouped convs or CPUs without AVX-512, which take the GEMM path, and for
    /// weights on other devices).
    packed: Option<std::sync::Arc<PackedWeights>>,
    /// Depthwise layers with weights off the CPU: per tap `(i, j)`, row `i * kw + j` holds the
    /// channels' weights, `[kh * kw, channels]` on the weights' device.
    dw_taps: Option<Tensor>,
}

impl Conv2d {
    /// `weight` is OIHW `[out, in/groups, kh, kw]`, `bias` is `[out]` (None = zeros).
    pub fn new(spec: ConvSpec, weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (kh, kw) = spec.kernel;
        if spec.groups == 0
            || !spec.in_channels.is_multiple_of(spec.groups)
            || !spec.out_channels.is_multiple_of(spec.groups)
            || spec.stride == 0
            || spec.dilation == 0
            || kh == 0
            || kw == 0
        {
            candle_core::bail!("invalid conv spec {spec:?}");
        }
        let expect = [spec.out_channels, spec.in_channels / spec.groups, kh, kw];
        if weight.dims() != expect {
            candle_core::bail!(
                "conv weight has shape {:?}, expected {:?}",
                weight.dims(),
                expect
            );
        }
        let bias = match bias {
            Some(b) => {
                if b.dims() != [spec.out_channels] {
                    candle_core::bail!(
                        "conv bias has shape {:?}, expected [{}]",
                        b.dims(),
                        spec.out_channels
                    );
                }
                b
            }
            None => Tensor::zeros(spec.out_channels, candle_core::DType::F32, weight.device())?,
        };
        let w: Vec<f32> = weight
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?;
        let b: Vec<f32> = bias.to_dtype(candle_core::DType::F32)?.to_vec1()?;
        if let Some(i) = w.iter().chain(b.iter()).position(|v| !v.is_finite()) {
            candle_core::bail!("conv weights hold a non-finite value (element {i})");
        }
        let on_cpu = weight.device().is_cpu();
        let packed = (spec.groups == 1 && on_cpu && conv_igemm::available()).then(|| {
            std::sync::Arc::new(PackedWeights::new(
                &w,
                spec.out_channels,
                spec.in_channels * kh * kw,
            ))
        });
        let dw_taps = if on_cpu {
            None
        } else {
            depthwise_taps(&spec, &weight)?
        };
        Ok(Self {
            spec,
            weight,
            bias,
            w: std::sync::Arc::new(w),
            b: std::sync::Arc::new(b),
            packed,
            dw_taps,
        })
    }

    /// The same layer without the AVX-512 engine: the GEMM path CPUs without AVX-512 take.
    #[cfg(test)]
    fn without_engine(mut self) -> Self {
        self.packed = None;
        self
    }

    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }

    /// NCHW in, NCHW out.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() && !stock_candle() {
            let x = x.to_dtype(candle_core::DType::F32)?.contiguous()?;
            x.apply_op1_no_bwd(self)
        } else if let Some(taps) = &self.dw_taps {
            self.forward_depthwise_taps(x, taps)
        } else {
            self.forward_candle(x)
        }
    }

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

    fn run_cpu(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        residual: Option<&[f32]>,
    ) -> Result<(Vec<f32>, usize, usize)> {
        let s = &self.spec;
        let (oh, ow, top, left) = s.geometry(h, w)?;
        let total = n * s.out_channels * oh * ow;
        if let Some(r) = residual {
            if r.len() != total {
                candle_core::bail!("residual holds {} values, conv output {total}", r.len());
            }
        }
        let in_img = s.in_channels * h * w;
        let out_img = s.out_channels * oh * ow;
        let g = Geometry {
            h,
            w,
            oh,
            ow,
            top,
            left,
        };
        if let Some(packed) = &self.packed {
            // The kernel writes every output value exactly once, so the buffer is not zeroed
            // first (a zeroing pass over a 32 MB layer1 output costs as much as the conv).
            let mut out: Vec<f32> = Vec::with_capacity(total);
            let spare = &mut out.spare_capacity_mut()[..total];
            for (i, (xi, oi)) in x
                .chunks_exact(in_img)
                .zip(spare.chunks_exact_mut(out_img))
                .enumerate()
            {
                let residual = residual.map(|r| &r[i * out_img..(i + 1) * out_img]);
                conv_igemm::conv(s, &g, packed, &self.b, xi, residual, oi);
            }
            // SAFETY: conv_igemm::conv initialised all `total` values above.
            unsafe { out.set_len(total) };
            return Ok((out, oh, ow));
        }
        let mut out = vec![0f32; total];
        if s.groups == s.in_channels && s.groups == s.out_channels && s.groups > 1 {
            depthwise(
                s,
                &g,
                &self.w,
                &self.b,
                x,
                &mut out,
                &Epilogue {
                    act: s.activation,
                    residual,
                },
            );
        } else {
            for (i, (xi, oi)) in x
                .chunks_exact(in_img)
                .zip(out.chunks_exact_mut(out_img))
                .enumerate()
            {
                let residual = residual.map(|r| &r[i * out_img..(i + 1) * out_img]);
                gemm_conv(
                    s,
                    &g,
                    &self.w,
                    &self.b,
                    xi,
                    oi,
                    &Epilogue {
                        act: s.activation,
                        residual,
                    },
                );
            }
        }
        Ok((out, oh, ow))
    }

    /// `act(conv(x) + residual)`: the residual add of a ResNet block fused into the epilogue.
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() && !stock_candle() {
            let x = x.to_dtype(candle_core::DType::F32)?.contiguous()?;
            let r = residual.to_dtype(candle_core::DType::F32)?.contiguous()?;
            x.apply_op2_no_bwd(&r, &ResidualConv(self))
        } else {
            let plain = Conv2d {
                spec: self.spec.activation(Activation::None),
                ..self.clone()
            };
            // Not on the CPU engine: the stock ops (depthwise taps where they apply).
            let y = (plain.forward(x)? + residual)?;
            match self.spec.activation {
                Activation::None => Ok(y),
                Activation::Relu => y.relu(),
                Activation::Relu6 => y.clamp(0f32, 6f32),
            }
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

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let data = match storage {
        CpuStorage::F32(v) => v,
        _ => candle_core::bail!("conv expects f32 input"),
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("conv expects a contiguous input");
    };
    Ok(&data[start..end])
}

/// The conv with a residual input, as a candle op.
struct ResidualConv<'a>(&'a Conv2d);

impl CustomOp2 for ResidualConv<'_> {
    fn name(&self) -> &'static str {
        "pedcache-conv2d-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let conv = self.0;
        let (n, c, h, w) = l1.shape().dims4()?;
        if c != conv.spec.in_channels {
            candle_core::bail!(
                "conv expects {} input channels, got {c}",
                conv.spec.in_channels
            );
        }
        let (out, oh, ow) = conv.run_cpu(f32_slice(s1, l1)?, n, h, w, Some(f32_slice(s2, l2)?))?;
        let shape = Shape::from((n, conv.spec.out_channels, oh, ow));
        if l2.shape() != &shape {
            candle_core::bail!(
                "residual shape {:?} differs from conv output {:?}",
                l2.shape(),
                shape
            );
        }
        Ok((CpuStorage::F32(out), shape))
    }
}

impl CustomOp1 for Conv2d {
    fn name(&self) -> &'static str {
        "pedcache-conv2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        if c != self.spec.in_channels {
            candle_core::bail!(
                "conv expects {} input channels, got {c}",
                self.spec.in_channels
            );
        }
        let (out, oh, ow) = self.run_cpu(f32_slice(storage, layout)?, n, h, w, None)?;
        Ok((
            CpuStorage::F32(out),
            Shape::from((n, self.spec.out_channels, oh, ow)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let conv = Conv2d::new(spec, wt, Some(b)).expect("conv");
        let x = rand(&[n, spec.in_channels, h, w], seed + 2);
        let reference = conv.forward_candle(&x).expect("candle");
        let fallback = conv.clone().without_engine();
        for (path, conv) in [("engine", &conv), ("gemm fallback", &fallback)] {
            let ours = conv.forward(&x).expect("ours");
            assert_eq!(ours.dims(), reference.dims(), "{spec:?} on {h}x{w}");
            let e = max_rel_err(&ours, &reference);
            assert!(
                e <= 1e-4,
                "{path}: {spec:?} on {n}x{h}x{w}: max rel err {e}"
            );
        }
    }

    #[test]
    fn every_kernel_matches_candle_over_odd_shapes() {
        let mut seed = 1;
        for &(h, w) in &[(1, 1), (7, 7), (33, 33), (7, 33), (8, 10)] {
            for &stride in &[1, 2] {
                for &(k, pad) in &[(1, 0), (3, 1), (3, 0), (7, 3), (1, 1)] {
                    for &dil in &[1, 2] {
                        for &(cin, cout, groups) in
                            &[(3, 5, 1), (13, 17, 1), (12, 18, 3), (11, 11, 11)]
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
                                    Conv2d::new(spec, wt.clone(), Some(rand(&[6], seed + 1)))
                                        .unwrap();
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
}
