//! Inference convolutions with bias and activation fused, for both detectors.
//!
//! Why not candle's `conv2d`: on CPU its 1x1 path copies element by element, its grouped path
//! loops per channel (a depthwise layer becomes hundreds of tiny convs), and bias/activation
//! are separate passes. Here each layer picks a kernel by shape:
//! - dense convs (groups == 1) on AVX-512 CPUs: the implicit-GEMM engine of `igemm` (weights
//!   packed at load, no im2col buffer, bias/residual/activation applied on the registers);
//! - depthwise (groups == input channels): a direct row-wise kernel (`depthwise`);
//! - other grouped convs, and every conv on CPUs without AVX-512: tiled im2col + the `gemm`
//!   crate (`gemm`).
//!
//! On non-CPU devices the layer falls back to candle's own ops (padding applied explicitly, so
//! TF "SAME" stays asymmetric), except depthwise layers: candle's grouped `conv2d` runs one
//! convolution per channel (hundreds of kernel launches per layer on a GPU), so they run as a sum
//! of shifted views times per-channel weights ([`Conv2d::forward_depthwise_taps`], `stock`).
//!
//! Module map: [`spec`] is the leaf every other part imports (layer description, geometry,
//! epilogue, shared output pointer); `layer` holds [`Conv2d`] and picks the kernel; `op` is
//! the candle `CustomOp` wiring; `stock` the candle-op paths (other devices, the reference).

mod depthwise;
mod gemm;
mod igemm;
mod isa;
mod layer;
mod op;
pub mod spec;
mod stock;
#[cfg(test)]
mod tests;
mod winograd;

pub use layer::{set_stock_candle, Conv2d};
pub use spec::{Activation, ConvSpec, Padding};
pub use stock::depthwise_taps;
