//! The candle `CustomOp` wiring: a conv (and a conv with a fused residual add) as candle ops
//! over contiguous f32 CPU storage.

use super::layer::Conv2d;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape};

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
pub(super) struct ResidualConv<'a>(pub(super) &'a Conv2d);

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
