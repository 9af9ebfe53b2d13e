//! Cache heads (paper 3.2.1): small classifiers that read a pooled intermediate activation and
//! predict the frozen detector's output distribution.
//!
//! A head's input is the layer's activation after an adaptive average pool to a `g x g` grid.
//! The medial store keeps every layer pooled to [`STORE_GRID`] (4x4), so a frame costs kilobytes;
//! heads with grid 2 or 1 re-pool the stored 4x4 with [`regrid`], which equals pooling the raw
//! map directly whenever its sides are multiples of 4.
//!
//! The space the types allow (what a RON file may name): any grid >= 1 (the store serves 1, 2, 4),
//! then 0..=2 convolutions (kernel 1 or 3, stride 1 or 2, padding k/2, any width, ReLU after
//! each), flatten, 0..=2 hidden linear layers (any width, ReLU), and a final linear to `classes`
//! logits (the teacher's class count; log-softmax is applied by the loss / calibration). The
//! default search enumerates a small curated subset ([`search_space`]); [`full_space`] lists
//! the larger product for users with more budget.

use candle_core::{bail, DType, Device, Result, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Grid the medial store pools every candidate layer to (4): defined by the store, re-exported
/// here because [`regrid`] only accepts inputs of that size.
pub use super::store::STORE_GRID;

/// Small deterministic RNG (splitmix64). candle's random tensors cannot be seeded per call, and
/// training / search must be reproducible bit for bit, so heads and mini-batch orders use this.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose whole stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in [0, n) (n > 0); the modulo bias is negligible for dataset sizes.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Fisher-Yates shuffle, so the permutation depends only on the seed.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// `[g, n]` matrix whose row i averages input bin i of PyTorch's adaptive pooling:
/// indices floor(i*n/g) .. ceil((i+1)*n/g).
fn pool_matrix(n: usize, g: usize, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; g * n];
    for i in 0..g {
        let (lo, hi) = (i * n / g, ((i + 1) * n).div_ceil(g));
        for j in lo..hi {
            m[i * n + j] = 1.0 / (hi - lo) as f32;
        }
    }
    Tensor::from_vec(m, (g, n), device)
}

/// Adaptive average pool of `x` `[B,C,H,W]` to `[B,C,g,g]` with PyTorch `adaptive_avg_pool2d`
/// semantics (overlapping bins on sides not divisible by g). Done as two matrix products with
/// fixed averaging matrices, which is fast for big maps and works on any device.
pub fn adaptive_avg_pool(x: &Tensor, g: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if g == 0 || h == 0 || w == 0 {
        bail!("adaptive_avg_pool: grid {g} from a {h}x{w} map");
    }
    let dt = x.dtype();
    let pw = pool_matrix(w, g, x.device())?.to_dtype(dt)?;
    let ph = pool_matrix(h, g, x.device())?.to_dtype(dt)?;
    // Columns: [B*C*H, W] x [W, g] -> [B, C, H, g].
    let y = x.contiguous()?.reshape((b * c * h, w))?.matmul(&pw.t()?)?;
    // Rows: bring H last, [B*C*g, H] x [H, g] -> [B, C, gw, gh], then swap back.
    let y = y.reshape((b, c, h, g))?.transpose(2, 3)?.contiguous()?;
    let y = y.reshape((b * c * g, h))?.matmul(&ph.t()?)?;
    y.reshape((b, c, g, g))?.transpose(2, 3)?.contiguous()
}

/// Re-pool a stored `[B,C,4,4]` grid to `g` in {1, 2, 4} (mean of 2x2 blocks / of all 16).
pub fn regrid(x4: &Tensor, g: usize) -> Result<Tensor> {
    let (_, _, h, w) = x4.dims4()?;
    if h != STORE_GRID || w != STORE_GRID {
        bail!("regrid: expected a {STORE_GRID}x{STORE_GRID} stored grid, got {h}x{w}");
    }
    match g {
        4 => Ok(x4.clone()),
        1 | 2 => adaptive_avg_pool(x4, g),
        _ => bail!("regrid: grid {g} is not one of 1, 2, 4"),
    }
}

/// One convolution of a head: `kernel` 1 or 3 (padding kernel/2), `stride` 1 or 2, `out` channels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvDef {
    pub kernel: usize,
    pub stride: usize,
    pub out: usize,
}

impl ConvDef {
    /// Output side for an input side `n` (padding kernel/2).
    pub fn out_side(&self, n: usize) -> usize {
        (n + 2 * (self.kernel / 2) - self.kernel) / self.stride + 1
    }
}

/// A head architecture: input grid, 0..=2 convs, 0..=2 hidden linear widths, class count.
/// Serialized in RON files, so [`HeadArch::validate`] checks what a user may have written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadArch {
    pub grid: usize,
    pub convs: Vec<ConvDef>,
    pub linears: Vec<usize>,
    pub classes: usize,
}

/// Widest conv or hidden linear a head may declare. The search space stays below 100; a head
/// read from `exits.ron` is input, and its widths size its weights, so they are bounded.
pub const MAX_HEAD_WIDTH: usize = 4096;
/// Most classes a head may declare (COCO's 91 fit many times over).
pub const MAX_HEAD_CLASSES: usize = 1024;

impl HeadArch {
    /// Rejects architectures outside the search space with a cause naming the field.
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.grid, 1 | 2 | 4) || !(2..=MAX_HEAD_CLASSES).contains(&self.classes) {
            bail!(
                "head {}: grid must be 1, 2 or 4 and classes 2..={MAX_HEAD_CLASSES}, got grid {} \
                 and {} classes",
                self.describe(),
                self.grid,
                self.classes
            );
        }
        if self.convs.iter().any(|c| c.out > MAX_HEAD_WIDTH)
            || self.linears.iter().any(|&l| l > MAX_HEAD_WIDTH)
        {
            bail!(
                "head {}: a layer is wider than the limit of {MAX_HEAD_WIDTH}",
                self.describe()
            );
        }
        if self.convs.len() > 2 || self.linears.len() > 2 {
            bail!(
                "head {}: at most 2 convs and 2 hidden linears",
                self.describe()
            );
        }
        for c in &self.convs {
            if !matches!(c.kernel, 1 | 3) || !matches!(c.stride, 1 | 2) || c.out == 0 {
                bail!(
                    "head {}: conv needs kernel 1|3, stride 1|2, out > 0",
                    self.describe()
                );
            }
        }
        if self.linears.contains(&0) {
            bail!("head {}: hidden linear width 0", self.describe());
        }
        Ok(())
    }

    /// Analytic cost of one forward, 2 x multiply-accumulates (biases and ReLUs ignored), for
    /// the subset selection's C1 (eq. 4) and the search's FLOPs penalty.
    pub fn flops(&self, in_channels: usize) -> u64 {
        let (mut ch, mut side, mut macs) = (in_channels as u64, self.grid as u64, 0u64);
        for c in &self.convs {
            let o = c.out_side(side as usize) as u64;
            macs += o * o * c.out as u64 * ch * (c.kernel * c.kernel) as u64;
            (ch, side) = (c.out as u64, o);
        }
        let mut width = ch * side * side;
        for &l in self.linears.iter().chain(std::iter::once(&self.classes)) {
            macs += width * l as u64;
            width = l as u64;
        }
        2 * macs
    }

    /// Short human-readable form, e.g. "grid 4, conv3x3/1x32, fc64" (final linear implied).
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("grid {}", self.grid)];
        for c in &self.convs {
            parts.push(format!("conv{0}x{0}/{1}x{2}", c.kernel, c.stride, c.out));
        }
        parts.extend(self.linears.iter().map(|l| format!("fc{l}")));
        if self.convs.is_empty() && self.linears.is_empty() {
            parts.push("linear".into());
        }
        parts.join(", ")
    }
}

fn conv(kernel: usize, stride: usize, out: usize) -> ConvDef {
    ConvDef {
        kernel,
        stride,
        out,
    }
}

/// The default search: 18 candidates from cheap linear probes to two-conv heads, spread over
/// grids 1, 2, 4, so a search on ~100 samples per layer takes seconds. Wider/deeper heads rarely
/// pay off on a binary presence task with a few hundred frames (they overfit), hence the subset.
pub fn search_space(classes: usize) -> Vec<HeadArch> {
    let a = |grid, convs: Vec<ConvDef>, linears: Vec<usize>| HeadArch {
        grid,
        convs,
        linears,
        classes,
    };
    vec![
        a(1, vec![], vec![]),
        a(1, vec![], vec![32]),
        a(1, vec![], vec![64, 32]),
        a(2, vec![], vec![]),
        a(2, vec![], vec![64]),
        a(2, vec![conv(1, 1, 16)], vec![]),
        a(2, vec![conv(1, 1, 32)], vec![32]),
        a(2, vec![conv(3, 1, 16)], vec![]),
        a(2, vec![conv(3, 2, 32)], vec![32]),
        a(4, vec![], vec![]),
        a(4, vec![], vec![64]),
        a(4, vec![conv(1, 1, 16)], vec![]),
        a(4, vec![conv(1, 1, 32)], vec![32]),
        a(4, vec![conv(3, 1, 16)], vec![]),
        a(4, vec![conv(3, 2, 32)], vec![]),
        a(4, vec![conv(3, 2, 32)], vec![64]),
        a(4, vec![conv(1, 1, 32), conv(3, 2, 16)], vec![]),
        a(4, vec![conv(1, 1, 16), conv(3, 1, 16)], vec![32, 32]),
    ]
}

/// The full product the paper's space suggests: grids {1,2,4} x convs {none, one, two} from
/// {1x1/1, 3x3/1, 3x3/2} x {16, 32} x hidden {none, 32, 64, 64+32} (516 candidates).
pub fn full_space(classes: usize) -> Vec<HeadArch> {
    let one: Vec<ConvDef> = [(1, 1), (3, 1), (3, 2)]
        .iter()
        .flat_map(|&(k, s)| [16, 32].map(|o| conv(k, s, o)))
        .collect();
    let mut convs: Vec<Vec<ConvDef>> = vec![vec![]];
    convs.extend(one.iter().map(|c| vec![c.clone()]));
    for a in &one {
        convs.extend(one.iter().map(|b| vec![a.clone(), b.clone()]));
    }
    let lins = [vec![], vec![32], vec![64], vec![64, 32]];
    let mut out = Vec::new();
    for grid in [1, 2, 4] {
        for c in &convs {
            for l in &lins {
                out.push(HeadArch {
                    grid,
                    convs: c.clone(),
                    linears: l.clone(),
                    classes,
                });
            }
        }
    }
    out
}

/// A cache head with its parameters as candle `Var`s (so AdamW trains exactly these and nothing
/// of the detector). Order: per conv (weight `[out,in,k,k]`, bias), per hidden linear and the
/// output linear (weight `[out,in]`, bias).
#[derive(Clone, Debug)]
pub struct CacheHead {
    pub arch: HeadArch,
    pub in_channels: usize,
    vars: Vec<Var>,
}

impl CacheHead {
    /// (name, shape, fan_in) of every parameter, in `vars` order.
    fn param_specs(arch: &HeadArch, in_channels: usize) -> Vec<(String, Vec<usize>, usize)> {
        let mut specs = Vec::new();
        let (mut ch, mut side) = (in_channels, arch.grid);
        for (i, c) in arch.convs.iter().enumerate() {
            let fan = ch * c.kernel * c.kernel;
            specs.push((
                format!("conv{i}.weight"),
                vec![c.out, ch, c.kernel, c.kernel],
                fan,
            ));
            specs.push((format!("conv{i}.bias"), vec![c.out], fan));
            (ch, side) = (c.out, c.out_side(side));
        }
        let mut width = ch * side * side;
        for (i, &l) in arch.linears.iter().enumerate() {
            specs.push((format!("fc{i}.weight"), vec![l, width], width));
            specs.push((format!("fc{i}.bias"), vec![l], width));
            width = l;
        }
        specs.push(("out.weight".into(), vec![arch.classes, width], width));
        specs.push(("out.bias".into(), vec![arch.classes], width));
        specs
    }

    /// A freshly initialised head, fully determined by `seed`: weights uniform in
    /// ±sqrt(6/fan_in) (He/Kaiming uniform, for ReLU layers), the output layer in ±1/sqrt(fan_in)
    /// so the first predictions are near uniform, biases zero.
    pub fn new(arch: HeadArch, in_channels: usize, seed: u64, device: &Device) -> Result<Self> {
        arch.validate()?;
        let mut rng = SplitMix64::new(seed);
        let specs = Self::param_specs(&arch, in_channels);
        let mut vars = Vec::with_capacity(specs.len());
        for (name, shape, fan) in specs {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with("bias") {
                vec![0.0; n]
            } else {
                let gain = if name.starts_with("out") { 1.0 } else { 6.0 };
                let bound = (gain / fan.max(1) as f64).sqrt();
                (0..n)
                    .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
                    .collect()
            };
            vars.push(Var::from_vec(data, shape, device)?);
        }
        Ok(Self {
            arch,
            in_channels,
            vars,
        })
    }

    /// The trainable parameters (shared handles: updating them updates the head).
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The device the parameters live on (heads always have at least the output layer).
    pub fn device(&self) -> &Device {
        self.vars[0].device()
    }

    /// The same head with its parameters on `device` (copies; the head itself when already
    /// there).
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        if self.device().same_device(device) {
            return Ok(self.clone());
        }
        let vars = self
            .vars
            .iter()
            .map(|v| Var::from_tensor(&v.as_tensor().to_device(device)?))
            .collect::<Result<_>>()?;
        Ok(Self {
            arch: self.arch.clone(),
            in_channels: self.in_channels,
            vars,
        })
    }

    /// Logits `[B, classes]` for pooled inputs `[B, in_channels, grid, grid]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let g = self.arch.grid;
        if c != self.in_channels || h != g || w != g {
            bail!(
                "head {}: expected input [B,{},{g},{g}], got [{b},{c},{h},{w}]",
                self.arch.describe(),
                self.in_channels
            );
        }
        let mut v = self.vars.iter().map(|v| v.as_tensor());
        let mut next = || v.next().expect("param_specs matches the architecture");
        let mut x = x.clone();
        for cd in &self.arch.convs {
            let (wt, bias) = (next(), next());
            x = x.conv2d(wt, cd.kernel / 2, cd.stride, 1, 1)?;
            x = x.broadcast_add(&bias.reshape((1, cd.out, 1, 1))?)?.relu()?;
        }
        let mut x = x.flatten_from(1)?;
        for _ in &self.arch.linears {
            let (wt, bias) = (next(), next());
            x = x.matmul(&wt.t()?)?.broadcast_add(bias)?.relu()?;
        }
        let (wt, bias) = (next(), next());
        x.matmul(&wt.t()?)?.broadcast_add(bias)
    }

    /// Snapshot of the parameter values (detached copies), e.g. to restore the best epoch.
    pub fn snapshot(&self) -> Result<Vec<Tensor>> {
        self.vars.iter().map(|v| v.as_tensor().copy()).collect()
    }

    /// Overwrite the parameters with a [`CacheHead::snapshot`] of the same head.
    pub fn restore(&self, snap: &[Tensor]) -> Result<()> {
        if snap.len() != self.vars.len() {
            bail!(
                "head {}: snapshot has the wrong length",
                self.arch.describe()
            );
        }
        self.vars.iter().zip(snap).try_for_each(|(v, t)| v.set(t))
    }

    /// Named tensors for `heads.safetensors`: `{prefix}.conv0.weight`, ..., `{prefix}.out.bias`
    /// (no dot when `prefix` is empty).
    pub fn to_tensors(&self, prefix: &str) -> HashMap<String, Tensor> {
        Self::param_specs(&self.arch, self.in_channels)
            .into_iter()
            .zip(&self.vars)
            .map(|((name, _, _), v)| (key(prefix, &name), v.as_detached_tensor()))
            .collect()
    }

    /// Rebuild a head from named tensors; errors name the missing or mis-shaped tensor.
    pub fn from_tensors(
        arch: HeadArch,
        in_channels: usize,
        map: &HashMap<String, Tensor>,
        prefix: &str,
    ) -> Result<Self> {
        arch.validate()?;
        let mut vars = Vec::new();
        for (name, shape, _) in Self::param_specs(&arch, in_channels) {
            let k = key(prefix, &name);
            let Some(t) = map.get(&k) else {
                bail!("head {}: missing tensor {k}", arch.describe());
            };
            if t.dims() != shape.as_slice() {
                bail!("tensor {k}: shape {:?}, expected {shape:?}", t.dims());
            }
            // from_tensor copies a plain tensor, so the head never aliases the caller's map.
            vars.push(Var::from_tensor(&t.to_dtype(DType::F32)?)?);
        }
        Ok(Self {
            arch,
            in_channels,
            vars,
        })
    }
}

fn key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
