//! [`Conv2d`]: a layer with its weights, and which kernel runs it.

use super::depthwise::depthwise;
use super::gemm::gemm_conv;
use super::igemm::{self, PackedWeights};
use super::isa::Isa;
use super::op::ResidualConv;
use super::spec::{Activation, ConvSpec, Epilogue, Geometry};
use super::stock::depthwise_taps;
use super::winograd::{self, WinogradWeights};
use crate::runtime::Kernels;
use candle_core::{Result, Tensor};

static STOCK_CANDLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Route every conv through candle's stock `conv2d` (plus separate bias/activation/add ops), for
/// side-by-side benchmarks of the engine (`pedcache bench backbone --engine candle`).
pub fn set_stock_candle(on: bool) {
    STOCK_CANDLE.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub(super) fn stock_candle() -> bool {
    STOCK_CANDLE.load(std::sync::atomic::Ordering::Relaxed)
}

/// A convolution layer with its weights (BN already folded in) and fused epilogue.
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub(super) spec: ConvSpec,
    /// OIHW, as candle expects; used by the non-CPU fallback.
    pub(super) weight: Tensor,
    pub(super) bias: Tensor,
    /// The same weights as a flat row-major `[out, in/groups * kh * kw]` matrix for the CPU kernels.
    pub(super) w: std::sync::Arc<Vec<f32>>,
    pub(super) b: std::sync::Arc<Vec<f32>>,
    /// The weights regrouped for the implicit-GEMM kernels (AVX-512 or AVX2), packed once here
    /// at load (None for grouped convs, on the fallback path, for Winograd layers and for
    /// weights on other devices).
    pub(super) packed: Option<std::sync::Arc<PackedWeights>>,
    /// 3x3 stride-1 dense layers on a path of ours: the Winograd-transformed filters.
    pub(super) winograd: Option<std::sync::Arc<WinogradWeights>>,
    /// Depthwise layers with weights off the CPU: per tap `(i, j)`, row `i * kw + j` holds the
    /// channels' weights, `[kh * kw, channels]` on the weights' device.
    pub(super) dw_taps: Option<Tensor>,
    /// The vector instruction set of this layer's kernel path on the CPU (None on the fallback
    /// path and off the CPU); depthwise layers use it directly, dense ones through `packed`.
    pub(super) isa: Option<Isa>,
}

impl Conv2d {
    /// `weight` is OIHW `[out, in/groups, kh, kw]`, `bias` is `[out]` (None = zeros). CPU
    /// layers run this process's kernel path ([`crate::runtime::kernels`]).
    pub fn new(spec: ConvSpec, weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let kernels = crate::runtime::kernels().map_err(candle_core::Error::msg)?;
        Self::with_kernels(spec, weight, bias, kernels)
    }

    /// [`Conv2d::new`] on a given kernel path (`Err` if this CPU cannot run it), so tests and
    /// benchmarks can compare paths in one process.
    pub fn with_kernels(
        spec: ConvSpec,
        weight: Tensor,
        bias: Option<Tensor>,
        kernels: Kernels,
    ) -> Result<Self> {
        kernels
            .check()
            .map_err(|e| candle_core::Error::msg(format!("kernels {}: {e}", kernels.name())))?;
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
        // Dense CPU layers on a path of ours get packed weights, which carry the proof that the
        // CPU runs their kernels; everything else takes the GEMM or depthwise kernels.
        let vector = Isa::for_kernels(kernels).filter(|_| on_cpu);
        let isa = vector.filter(|_| spec.groups == 1);
        let winograd = isa.filter(|_| winograd::applies(&spec)).map(|isa| {
            std::sync::Arc::new(WinogradWeights::new(
                isa,
                &w,
                spec.out_channels,
                spec.in_channels,
            ))
        });
        let packed = isa.filter(|_| winograd.is_none()).map(|isa| {
            std::sync::Arc::new(PackedWeights::new(
                isa,
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
            winograd,
            dw_taps,
            isa: vector,
        })
    }

    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }

    /// The OIHW weights as given (BN folded in).
    pub fn weight_tensor(&self) -> &Tensor {
        &self.weight
    }

    /// The `[out]` bias (zeros when none was given).
    pub fn bias_tensor(&self) -> &Tensor {
        &self.bias
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

    pub(super) fn run_cpu(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        residual: Option<&[f32]>,
    ) -> Result<(Vec<f32>, usize, usize)> {
        let s = &self.spec;
        let g = Geometry::of(s, h, w)?;
        let (oh, ow) = (g.oh, g.ow);
        if x.len() != n * s.in_channels * h * w {
            candle_core::bail!(
                "conv input holds {} values, not {n}x{}x{h}x{w}",
                x.len(),
                s.in_channels
            );
        }
        let total = n * s.out_channels * oh * ow;
        if let Some(r) = residual {
            if r.len() != total {
                candle_core::bail!("residual holds {} values, conv output {total}", r.len());
            }
        }
        let in_img = s.in_channels * h * w;
        let out_img = s.out_channels * oh * ow;
        if let Some(wg) = &self.winograd {
            // The whole batch at once: its tiles are numbered across images (RoI batches of
            // 14x14 maps share blocks). Not zeroed first, as below.
            let mut out: Vec<f32> = Vec::with_capacity(total);
            winograd::conv(
                s,
                &g,
                n,
                wg,
                &self.b,
                x,
                residual,
                &mut out.spare_capacity_mut()[..total],
            );
            // SAFETY: winograd::conv writes every value of its `total`-value output.
            unsafe { out.set_len(total) };
            return Ok((out, oh, ow));
        }
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
                igemm::conv(s, &g, packed, &self.b, xi, residual, oi);
            }
            // SAFETY: `x` holds exactly `n` images (checked above), so the loop ran once per
            // image over all `n` output chunks, and igemm::conv writes every value of its chunk.
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
                self.isa,
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
