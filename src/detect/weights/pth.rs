//! torch `.pth` files (`torch.save`'s zip format) with every allocation bounded by the file.
//!
//! A `.pth` is a zip holding `PREFIX/data.pkl` (a pickle of the state dict whose tensors point
//! at storages by key) and one `PREFIX/data/KEY` entry of raw little-endian bytes per storage.
//! candle's reader trusts the pickle: a 5-byte opcode can ask for a 4 GiB string, a tensor's
//! shape for any number of bytes, memo references are deep-copied (a few bytes can ask for
//! exponential memory) and nested objects are dropped recursively (a deep nest overflows the
//! stack). This reader runs the pickle as a flat arena of objects (containers hold indices, so
//! nothing is copied or dropped recursively), checks every length against the bytes that are
//! actually there, and materialises no more tensor bytes in total than the file holds.
//!
//! Supported: protocol 2 to 5 pickles of plain state dicts (`OrderedDict` of tensors and
//! parameters), as `torch.save` writes them; entries stored uncompressed, as `torch.save`
//! writes them; C-contiguous tensors of f32, f64, f16, bf16, u8 and i64 storages.

use candle_core::{DType, Device, Tensor};
use std::io::Read;
use std::path::Path;

/// Largest `data.pkl` read: a state dict's pickle is about 100 bytes per tensor (torchvision's
/// Mask R-CNN: 40 KB), so 64 MiB is room for half a million tensors.
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;

mod pickle;

pub use pickle::MAX_PICKLE_OBJECTS;
use pickle::{Obj, Vm, R};

/// Where a tensor's bytes are, as `_rebuild_tensor_v2` describes them.
struct TensorRef {
    key: String,
    dtype: DType,
    storage_numel: usize,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

impl Vm<'_> {
    /// The tensor a dict value describes, `Ok(None)` for a value that is not a tensor. Walks a
    /// fixed shape (a parameter wraps a tensor; `_rebuild_from_type_v2` wraps either), so the
    /// nesting it follows is bounded whatever the pickle holds.
    fn tensor_ref(&self, value: usize) -> R<Option<TensorRef>> {
        let mut v = value;
        for _ in 0..3 {
            let Obj::Reduce { callable, args } = self.objs[v] else {
                return Ok(None);
            };
            let a = self.tuple(args).unwrap_or(&[]);
            match self.global(callable) {
                Some(("torch._utils", "_rebuild_parameter"))
                | Some(("torch._utils", "_rebuild_parameter_with_state")) => {
                    v = *a.first().ok_or("_rebuild_parameter without arguments")?;
                }
                Some(("torch._tensor", "_rebuild_from_type_v2")) => {
                    // (func, type, args, state): rebuild `func(*args)`.
                    let (&func, &inner) =
                        a.first().zip(a.get(2)).ok_or("bad _rebuild_from_type_v2")?;
                    if !matches!(
                        self.global(func),
                        Some(("torch._utils", "_rebuild_tensor_v2"))
                    ) {
                        return Ok(None);
                    }
                    return self.rebuild_tensor(inner).map(Some);
                }
                Some(("torch._utils", "_rebuild_tensor_v2")) => {
                    return self.rebuild_tensor(args).map(Some)
                }
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, ...)`.
    fn rebuild_tensor(&self, args: usize) -> R<TensorRef> {
        let a = self
            .tuple(args)
            .ok_or("_rebuild_tensor_v2 arguments are not a tuple")?;
        if a.len() < 4 {
            return Err("_rebuild_tensor_v2 with fewer than 4 arguments".into());
        }
        let Obj::Persid(pid) = self.objs[a[0]] else {
            return Err("tensor storage is not a persistent id".into());
        };
        // ('storage', StorageType, key, location, numel)
        let p = self
            .tuple(pid)
            .filter(|p| p.len() >= 5)
            .ok_or("bad storage persistent id")?;
        let (_, class) = self.global(p[1]).ok_or("storage type is not a class")?;
        let dtype = match class {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "ByteStorage" => DType::U8,
            "LongStorage" => DType::I64,
            other => return Err(format!("unsupported storage type {other}")),
        };
        let key = match &self.objs[p[2]] {
            Obj::Str(s) => s.clone(),
            _ => return Err("storage key is not a string".into()),
        };
        let num = |i: usize, what: &str| -> R<usize> {
            self.int(i)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| format!("tensor {what} is not a non-negative integer"))
        };
        Ok(TensorRef {
            key,
            dtype,
            storage_numel: num(p[4], "storage size")?,
            offset: num(a[1], "storage offset")?,
            shape: self
                .ints(a[2])
                .ok_or("tensor size is not a tuple of integers")?,
            stride: self
                .ints(a[3])
                .ok_or("tensor stride is not a tuple of integers")?,
        })
    }
}

/// Row-major element strides of `shape`; dimensions of size 1 may have any stride.
fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    if shape.len() != stride.len() {
        return false;
    }
    let mut want = 1usize;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != want {
            return false;
        }
        want = want.saturating_mul(d);
    }
    true
}

/// Every tensor of a torch `.pth` file, by state-dict key, in the file's order. Errors are
/// causes without the file name (the caller adds it).
pub fn read_pth(path: &Path) -> R<Vec<(String, Tensor)>> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    read_pth_from(std::io::BufReader::new(file), file_len)
}

/// [`read_pth`] from any seekable bytes of length `file_len` (an in-memory file, for tests and
/// fuzzing).
pub fn read_pth_from<F: Read + std::io::Seek>(
    reader: F,
    file_len: u64,
) -> R<Vec<(String, Tensor)>> {
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| format!("not a readable zip ({e})"))?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    let pkl = names
        .iter()
        .find(|n| n.ends_with("data.pkl"))
        .ok_or("no data.pkl in the archive (not a torch.save file)")?
        .clone();
    let dir = pkl.strip_suffix(".pkl").unwrap_or(&pkl).to_string();
    // `len` bytes of entry `name` from byte `skip` on (`None`: all of it). Only what the entry
    // holds can be asked for, and a stored entry holds no more than the file.
    let mut read_entry = |name: &str, skip: u64, len: Option<u64>, max: u64| -> R<Vec<u8>> {
        let mut f = zip
            .by_name(name)
            .map_err(|e| format!("archive entry {name}: {e}"))?;
        if f.compression() != zip::CompressionMethod::Stored {
            return Err(format!(
                "archive entry {name} is compressed ({:?}); torch.save stores entries uncompressed",
                f.compression()
            ));
        }
        let size = f.size();
        let len = len.unwrap_or(size);
        if len > max {
            return Err(format!(
                "archive entry {name} is {len} bytes, over the limit of {max}"
            ));
        }
        let end = skip
            .checked_add(len)
            .filter(|&e| e <= size && size <= file_len);
        if end.is_none() {
            return Err(format!(
                "archive entry {name} holds {size} bytes, {len} wanted at byte {skip}"
            ));
        }
        std::io::copy(&mut f.by_ref().take(skip), &mut std::io::sink())
            .map_err(|e| format!("archive entry {name}: {e}"))?;
        let mut buf = Vec::with_capacity(len as usize);
        f.take(len)
            .read_to_end(&mut buf)
            .map_err(|e| format!("archive entry {name}: {e}"))?;
        if buf.len() as u64 != len {
            return Err(format!("archive entry {name} is truncated"));
        }
        Ok(buf)
    };
    let pickle = read_entry(&pkl, 0, None, MAX_PICKLE_BYTES)?;
    let mut vm = Vm::new(&pickle);
    let root = vm.run()?;
    let Obj::Dict(entries) = &vm.objs[root] else {
        return Err("data.pkl does not hold a state dict (a dict of tensors)".into());
    };
    // Views of one storage each cost their own bytes; all of them together may not ask for more
    // than the file holds.
    let mut budget = file_len;
    let mut out = Vec::new();
    for &(k, v) in entries {
        let Obj::Str(name) = &vm.objs[k] else {
            continue;
        };
        let Some(t) = vm
            .tensor_ref(v)
            .map_err(|e| format!("tensor {name}: {e}"))?
        else {
            continue;
        };
        let elsize = t.dtype.size_in_bytes();
        let numel = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("tensor {name}: size {:?} overflows", t.shape))?;
        if !is_contiguous(&t.shape, &t.stride) {
            return Err(format!(
                "tensor {name}: non-contiguous (size {:?}, stride {:?}) is not supported",
                t.shape, t.stride
            ));
        }
        let fits = t
            .offset
            .checked_add(numel)
            .is_some_and(|end| end <= t.storage_numel);
        if !fits {
            return Err(format!(
                "tensor {name}: {numel} elements at offset {} do not fit its storage of {}",
                t.offset, t.storage_numel
            ));
        }
        let bytes = (numel as u64) * elsize as u64;
        budget = budget.checked_sub(bytes).ok_or_else(|| {
            format!("tensors ask for more bytes than the {file_len}-byte file holds (at {name})")
        })?;
        let data = read_entry(
            &format!("{dir}/{}", t.key),
            (t.offset as u64) * elsize as u64,
            Some(bytes),
            u64::MAX,
        )
        .map_err(|e| format!("tensor {name}: {e}"))?;
        let tensor = Tensor::from_raw_buffer(&data, t.dtype, &t.shape, &Device::Cpu)
            .map_err(|e| format!("tensor {name}: {e}"))?;
        out.push((name.clone(), tensor));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguity() {
        assert!(is_contiguous(&[2, 3, 4], &[12, 4, 1]));
        assert!(is_contiguous(&[2, 1, 4], &[4, 99, 1]));
        assert!(is_contiguous(&[], &[]));
        assert!(!is_contiguous(&[2, 3], &[1, 2]));
        assert!(!is_contiguous(&[2, 3], &[3]));
    }
}

#[cfg(test)]
mod against_candle {
    /// The torch-written fixture reads the same as candle's own reader: same keys, same values.
    #[test]
    fn torch_written_file_matches_candles_reader() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/maskrcnn_tv/narrow_weights_oldnames.pth");
        let ours = super::read_pth(&p).expect("ours");
        let theirs: std::collections::HashMap<String, candle_core::Tensor> =
            candle_core::pickle::read_all(&p)
                .expect("candle")
                .into_iter()
                .collect();
        assert_eq!(ours.len(), theirs.len());
        assert!(ours.len() > 100, "{}", ours.len());
        for (k, t) in &ours {
            let r = &theirs[k];
            assert_eq!(t.dims(), r.dims(), "{k}");
            assert_eq!(t.dtype(), r.dtype(), "{k}");
            let a: Vec<f64> = t
                .flatten_all()
                .and_then(|x| x.to_dtype(candle_core::DType::F64))
                .and_then(|x| x.to_vec1())
                .expect("ours");
            let b: Vec<f64> = r
                .flatten_all()
                .and_then(|x| x.to_dtype(candle_core::DType::F64))
                .and_then(|x| x.to_vec1())
                .expect("candle");
            assert_eq!(a, b, "{k}");
        }
    }
}
