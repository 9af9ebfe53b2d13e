//! Loading weight files into a candle `VarBuilder`, with errors that name the file and tensor.

use crate::error::Context;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::path::Path;

/// All tensors of a safetensors file, checked to be finite.
pub fn load_safetensors(path: &Path, device: &Device) -> crate::Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("loading {}", path.display()))?;
    let map = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| {
        crate::err!(
            "loading {}: not a valid safetensors file ({e})",
            path.display()
        )
    })?;
    for (name, t) in &map {
        let t32 = t.to_dtype(DType::F32).and_then(|t| t.flatten_all());
        let finite = t32
            .and_then(|t| t.to_vec1::<f32>())
            .map(|v| v.iter().all(|x| x.is_finite()))
            .unwrap_or(false);
        crate::ensure!(
            finite,
            "loading {}: tensor {name} holds NaN or infinite values",
            path.display()
        );
    }
    Ok(map)
}

/// A `VarBuilder` over a safetensors file.
pub fn var_builder(path: &Path, device: &Device) -> crate::Result<VarBuilder<'static>> {
    let map = load_safetensors(path, device)?;
    Ok(VarBuilder::from_tensors(map, DType::F32, device))
}
