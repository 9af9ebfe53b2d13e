//! The ResNet stem's 3x3 stride-2 max pool (padding 1), computed directly.
//!
//! candle has no padded max pool, so the stem used to pad twice (two copies of a 32 MB
//! activation at 512x1024) and then pool: a quarter of the stem's time. Here each output row
//! takes the element-wise max of its (up to) three input rows, then the max of three adjacent
//! columns. Out-of-image taps are skipped, which is torchvision's `-inf` padding exactly.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `max_pool2d(kernel 3, stride 2, padding 1)` on an NCHW tensor.
pub fn max_pool_3x3_s2_p1(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1_no_bwd(&MaxPool3x3S2)
    } else {
        // Other devices: edge-replicating padding gives the same maxima as -inf padding,
        // because every window that reaches past the border also holds the edge pixel.
        x.pad_with_same(2, 1, 1)?
            .pad_with_same(3, 1, 1)?
            .max_pool2d_with_stride(3, 2)
    }
}

fn out_len(n: usize) -> usize {
    (n + 2 - 3) / 2 + 1
}

struct MaxPool3x3S2;

impl CustomOp1 for MaxPool3x3S2 {
    fn name(&self) -> &'static str {
        "pedcache-maxpool-3x3-s2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = layout.shape().dims4()?;
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("max pool expects f32");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("max pool expects a contiguous input");
        };
        let x = &data[start..end];
        let (oh, ow) = (out_len(h), out_len(w));
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(h * w))
            .for_each_init(
                || vec![0f32; w],
                |rowmax, (dst, src)| {
                    for (oy, drow) in dst.chunks_exact_mut(ow).enumerate() {
                        let y0 = (2 * oy).saturating_sub(1);
                        let y1 = (2 * oy + 1).min(h - 1);
                        rowmax.copy_from_slice(&src[y0 * w..(y0 + 1) * w]);
                        for y in y0 + 1..=y1 {
                            for (m, v) in rowmax.iter_mut().zip(&src[y * w..(y + 1) * w]) {
                                *m = m.max(*v);
                            }
                        }
                        for (ox, d) in drow.iter_mut().enumerate() {
                            let x0 = (2 * ox).saturating_sub(1);
                            let x1 = (2 * ox + 1).min(w - 1);
                            *d = rowmax[x0..=x1]
                                .iter()
                                .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                        }
                    }
                },
            );
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Brute force over the padded window, `-inf` outside the image.
    fn reference(x: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
        let (oh, ow) = (out_len(h), out_len(w));
        let mut out = Vec::new();
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut m = f32::NEG_INFINITY;
                    for dy in 0..3 {
                        for dx in 0..3 {
                            let (y, xx) = (2 * oy + dy, 2 * ox + dx);
                            if y >= 1 && y <= h && xx >= 1 && xx <= w {
                                m = m.max(x[ch * h * w + (y - 1) * w + (xx - 1)]);
                            }
                        }
                    }
                    out.push(m);
                }
            }
        }
        out
    }

    #[test]
    fn matches_brute_force_with_negative_values_and_odd_sizes() {
        for &(h, w) in &[(1, 1), (2, 3), (7, 7), (8, 10), (33, 17)] {
            let c = 3;
            let v: Vec<f32> = (0..2 * c * h * w)
                .map(|i| ((i * 7919) % 101) as f32 - 60.0)
                .collect();
            let x = Tensor::from_vec(v.clone(), (2, c, h, w), &Device::Cpu).unwrap();
            let y: Vec<f32> = max_pool_3x3_s2_p1(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let img = c * h * w;
            let mut want = reference(&v[..img], c, h, w);
            want.extend(reference(&v[img..], c, h, w));
            assert_eq!(y, want, "{h}x{w}");
        }
    }
}
