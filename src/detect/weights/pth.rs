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
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// Largest `data.pkl` read: a state dict's pickle is about 100 bytes per tensor (torchvision's
/// Mask R-CNN: 40 KB), so 64 MiB is room for half a million tensors.
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// Most values (and stack entries) one pickle may create: about 15 per tensor in a state dict.
/// Each costs under 100 bytes, so the limit holds the machine to a few hundred MiB whatever the
/// pickle does.
pub const MAX_PICKLE_OBJECTS: usize = 4 << 20;

/// One pickled value. Containers refer to other values by their index in the arena.
#[derive(Debug)]
enum Obj {
    None,
    Bool,
    Int(i64),
    Float,
    Str(String),
    Bytes,
    Tuple(Vec<usize>),
    List(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Global {
        module: String,
        name: String,
    },
    Reduce {
        callable: usize,
        args: usize,
    },
    Persid(usize),
    /// Anything we only need to step over (NEWOBJ results, BUILD targets we do not model).
    Opaque,
}

#[derive(Clone, Copy)]
enum Item {
    Mark,
    Obj(usize),
}

/// The pickle virtual machine's state: the arena, the stack, the memo.
struct Vm<'a> {
    bytes: &'a [u8],
    pos: usize,
    objs: Vec<Obj>,
    stack: Vec<Item>,
    memo: HashMap<u32, usize>,
}

type R<T> = std::result::Result<T, String>;

impl<'a> Vm<'a> {
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "pickle truncated: {n} bytes wanted at byte {} of {}",
                    self.pos,
                    self.bytes.len()
                )
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn le<const N: usize>(&mut self) -> R<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn len_u32(&mut self) -> R<usize> {
        Ok(u32::from_le_bytes(self.le()?) as usize)
    }
    fn len_u64(&mut self) -> R<usize> {
        usize::try_from(u64::from_le_bytes(self.le()?))
            .map_err(|_| "pickle length overflows".into())
    }
    fn line(&mut self) -> R<String> {
        let rest = &self.bytes[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("pickle truncated: GLOBAL without a newline")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
    fn text(&mut self, n: usize) -> R<String> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "pickle string is not UTF-8".to_string())
    }

    fn push(&mut self, o: Obj) {
        self.objs.push(o);
        self.stack.push(Item::Obj(self.objs.len() - 1));
    }
    fn pop(&mut self) -> R<usize> {
        match self.stack.pop() {
            Some(Item::Obj(i)) => Ok(i),
            Some(Item::Mark) => Err("pickle pops a MARK as a value".into()),
            None => Err("pickle stack underflow".into()),
        }
    }
    fn top(&self) -> R<usize> {
        match self.stack.last() {
            Some(Item::Obj(i)) => Ok(*i),
            _ => Err("pickle stack has no value on top".into()),
        }
    }
    fn pop_to_mark(&mut self) -> R<Vec<usize>> {
        let m = self
            .stack
            .iter()
            .rposition(|x| matches!(x, Item::Mark))
            .ok_or("pickle has no MARK to pop to")?;
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .map(|x| match x {
                Item::Obj(i) => i,
                Item::Mark => unreachable!("the last MARK was at m"),
            })
            .collect())
    }
    fn memo_get(&mut self, k: u32) -> R<()> {
        let i = *self
            .memo
            .get(&k)
            .ok_or_else(|| format!("pickle reads memo {k}, never stored"))?;
        self.stack.push(Item::Obj(i));
        Ok(())
    }
    fn memo_put(&mut self, k: u32) -> R<()> {
        let i = self.top()?;
        self.memo.insert(k, i);
        Ok(())
    }
    fn extend_list(&mut self, list: usize, items: Vec<usize>) -> R<()> {
        match &mut self.objs[list] {
            Obj::List(v) => v.extend(items),
            // Appending to something we do not model (a custom container) changes nothing we read.
            Obj::Opaque => {}
            _ => return Err("pickle APPENDs to a non-list".into()),
        }
        Ok(())
    }
    fn set_items(&mut self, dict: usize, kv: Vec<usize>) -> R<()> {
        if !kv.len().is_multiple_of(2) {
            return Err("pickle SETITEMS with an odd number of values".into());
        }
        match &mut self.objs[dict] {
            Obj::Dict(v) => v.extend(kv.chunks_exact(2).map(|p| (p[0], p[1]))),
            Obj::Opaque => {}
            _ => return Err("pickle SETITEM on a non-dict".into()),
        }
        Ok(())
    }

    /// Run to STOP; returns the index of the result.
    fn run(&mut self) -> R<usize> {
        loop {
            let at = self.pos;
            if self.objs.len() > MAX_PICKLE_OBJECTS || self.stack.len() > MAX_PICKLE_OBJECTS {
                return Err(format!(
                    "pickle creates more than {MAX_PICKLE_OBJECTS} values (at byte {at})"
                ));
            }
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO n
                }
                0x95 => {
                    self.take(8)?; // FRAME: a size hint only
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Item::Mark),
                b'0' => {
                    self.stack.pop().ok_or("pickle POP on an empty stack")?;
                }
                b'1' => {
                    self.pop_to_mark()?;
                }
                b'2' => {
                    let i = self.top()?;
                    self.stack.push(Item::Obj(i));
                }
                b'N' => self.push(Obj::None),
                0x88 | 0x89 => self.push(Obj::Bool),
                b'J' => {
                    let v = i32::from_le_bytes(self.le()?);
                    self.push(Obj::Int(v as i64))
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Obj::Int(v as i64))
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le()?);
                    self.push(Obj::Int(v as i64))
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.u8()? as usize
                    } else {
                        self.len_u32()?
                    };
                    if n > 8 {
                        return Err(format!("pickle integer of {n} bytes at byte {at}"));
                    }
                    let b = self.take(n)?;
                    let mut v: i64 = 0;
                    for (k, &x) in b.iter().enumerate() {
                        v |= (x as i64) << (8 * k);
                    }
                    // Sign-extend from the top byte (two's complement, as Python writes it).
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.push(Obj::Int(v))
                }
                b'G' => {
                    self.take(8)?;
                    self.push(Obj::Float)
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => self.len_u32()?,
                        0x8c => self.u8()? as usize,
                        _ => self.len_u64()?,
                    };
                    let s = self.text(n)?;
                    self.push(Obj::Str(s))
                }
                b'B' | b'C' | b'T' | b'U' | 0x8e => {
                    let n = match op {
                        b'B' | b'T' => self.len_u32()?,
                        0x8e => self.len_u64()?,
                        _ => self.u8()? as usize,
                    };
                    self.take(n)?;
                    self.push(Obj::Bytes)
                }
                b')' => self.push(Obj::Tuple(Vec::new())),
                b't' => {
                    let v = self.pop_to_mark()?;
                    self.push(Obj::Tuple(v))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut v = Vec::with_capacity(n);
                    for _ in 0..n {
                        v.push(self.pop()?);
                    }
                    v.reverse();
                    self.push(Obj::Tuple(v))
                }
                b']' => self.push(Obj::List(Vec::new())),
                b'l' => {
                    let v = self.pop_to_mark()?;
                    self.push(Obj::List(v))
                }
                b'a' => {
                    let x = self.pop()?;
                    let l = self.top()?;
                    self.extend_list(l, vec![x])?;
                }
                b'e' => {
                    let v = self.pop_to_mark()?;
                    let l = self.top()?;
                    self.extend_list(l, v)?;
                }
                b'}' => self.push(Obj::Dict(Vec::new())),
                b'd' => {
                    let v = self.pop_to_mark()?;
                    self.push(Obj::Dict(Vec::new()));
                    let d = self.top()?;
                    self.set_items(d, v)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let d = self.top()?;
                    self.set_items(d, vec![k, v])?;
                }
                b'u' => {
                    let v = self.pop_to_mark()?;
                    let d = self.top()?;
                    self.set_items(d, v)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Obj::Global { module, name })
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&self.objs[module], &self.objs[name]) {
                        (Obj::Str(m), Obj::Str(n)) => {
                            let (module, name) = (m.clone(), n.clone());
                            self.push(Obj::Global { module, name })
                        }
                        _ => {
                            return Err(format!("pickle STACK_GLOBAL of non-strings at byte {at}"))
                        }
                    }
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?
                }
                b'r' => {
                    let k = u32::from_le_bytes(self.le()?);
                    self.memo_put(k)?
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    self.memo_get(k)?
                }
                b'j' => {
                    let k = u32::from_le_bytes(self.le()?);
                    self.memo_get(k)?
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let ordered_dict = matches!(&self.objs[callable],
                        Obj::Global { module, name } if module == "collections" && name == "OrderedDict");
                    if ordered_dict {
                        self.push(Obj::Dict(Vec::new()))
                    } else {
                        self.push(Obj::Reduce { callable, args })
                    }
                }
                b'b' => {
                    // BUILD sets attributes (`_metadata` on an OrderedDict, a parameter's state):
                    // nothing a state dict's tensors depend on. The object stays on the stack.
                    self.pop()?;
                    self.top()?;
                }
                0x81 => {
                    self.pop()?;
                    self.pop()?;
                    self.push(Obj::Opaque)
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push(Obj::Persid(pid))
                }
                _ => return Err(format!("unsupported pickle opcode 0x{op:02x} at byte {at}")),
            }
        }
    }
}

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
    fn global(&self, i: usize) -> Option<(&str, &str)> {
        match &self.objs[i] {
            Obj::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }
    fn tuple(&self, i: usize) -> Option<&[usize]> {
        match &self.objs[i] {
            Obj::Tuple(v) => Some(v),
            _ => None,
        }
    }
    fn int(&self, i: usize) -> Option<i64> {
        match self.objs[i] {
            Obj::Int(v) => Some(v),
            _ => None,
        }
    }
    fn ints(&self, i: usize) -> Option<Vec<usize>> {
        self.tuple(i)?
            .iter()
            .map(|&j| usize::try_from(self.int(j)?).ok())
            .collect()
    }

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
    let mut vm = Vm {
        bytes: &pickle,
        pos: 0,
        objs: Vec::new(),
        stack: Vec::new(),
        memo: HashMap::new(),
    };
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

    fn vm_run(bytes: &[u8]) -> R<usize> {
        let mut vm = Vm {
            bytes,
            pos: 0,
            objs: Vec::new(),
            stack: Vec::new(),
            memo: HashMap::new(),
        };
        vm.run()
    }

    #[test]
    fn lengths_beyond_the_pickle_are_refused_before_allocating() {
        // BINUNICODE claiming 4 GiB in a 6-byte pickle.
        let e = vm_run(b"X\xff\xff\xff\xff.").unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let e = vm_run(b"\x8d\xff\xff\xff\xff\xff\xff\xff\x7f.").unwrap_err();
        assert!(e.contains("truncated") || e.contains("overflow"), "{e}");
        assert!(vm_run(b"h\x05.").unwrap_err().contains("memo 5"));
        assert!(vm_run(b"\xff").unwrap_err().contains("opcode 0xff"));
        assert!(vm_run(b"").unwrap_err().contains("truncated"));
    }

    #[test]
    fn memo_references_share_instead_of_copying() {
        // A list memoised, then referenced 1000 times and appended to itself: one arena slot per
        // opcode, no copies.
        let mut p = b"]q\x00(".to_vec();
        for _ in 0..1000 {
            p.extend_from_slice(b"h\x00");
        }
        p.extend_from_slice(b"e.");
        let mut vm = Vm {
            bytes: &p,
            pos: 0,
            objs: Vec::new(),
            stack: Vec::new(),
            memo: HashMap::new(),
        };
        let root = vm.run().expect("runs");
        assert_eq!(vm.objs.len(), 1);
        assert!(matches!(&vm.objs[root], Obj::List(v) if v.len() == 1000));
    }

    #[test]
    fn integers_decode_like_python() {
        let mut vm = Vm {
            bytes: b"\x8a\x02\xff\x7f\x8a\x01\xff\x8a\x00J\xfe\xff\xff\xffK\x07M\x00\x01",
            pos: 0,
            objs: Vec::new(),
            stack: Vec::new(),
            memo: HashMap::new(),
        };
        let err = vm.run().unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        let ints: Vec<i64> = vm
            .objs
            .iter()
            .filter_map(|o| match o {
                Obj::Int(v) => Some(*v),
                _ => None,
            })
            .collect();
        assert_eq!(ints, [0x7fff, -1, 0, -2, 7, 256]);
    }

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
