//! Loading weight files into a candle `VarBuilder`, with errors that name the file and tensor.
//!
//! Weight files are input like any other: a file is read only below [`MAX_WEIGHTS_FILE_BYTES`],
//! safetensors headers are checked against the bytes that follow them (the `safetensors` crate
//! refuses offsets and shapes the file cannot hold), and `.pth` files go through [`pth`], which
//! bounds every allocation by the file.

pub mod pth;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::path::Path;

/// Largest weights file read (safetensors or `.pth`): 4 GiB, 20 times torchvision's Mask R-CNN.
pub const MAX_WEIGHTS_FILE_BYTES: u64 = 4 << 30;

/// All of a weights file, below [`MAX_WEIGHTS_FILE_BYTES`].
pub fn read_weights_file(path: &Path) -> crate::Result<Vec<u8>> {
    crate::fsio::read_limited(path, MAX_WEIGHTS_FILE_BYTES, "weights file")
        .map_err(|e| crate::err!("loading {}", e.one_line()))
}

/// The tensors of in-memory safetensors bytes; the error is the cause (the caller names the
/// file). Offsets, shapes and the header length are checked against the bytes by `safetensors`
/// before any tensor is built.
pub fn parse_safetensors(bytes: &[u8], device: &Device) -> crate::Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load_buffer(bytes, device).map_err(|e| {
        crate::err!(
            "not a valid safetensors file ({})",
            first_line(&e.to_string())
        )
    })
}

/// candle appends a backtrace to some error texts; the first line is the cause.
fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// All tensors of a safetensors file, checked to be finite.
pub fn load_safetensors(path: &Path, device: &Device) -> crate::Result<HashMap<String, Tensor>> {
    let bytes = read_weights_file(path)?;
    let map = parse_safetensors(&bytes, device)
        .map_err(|e| crate::err!("loading {}: {}", path.display(), e.one_line()))?;
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
