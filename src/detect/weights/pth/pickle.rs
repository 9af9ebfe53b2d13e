//! The pickle machine behind [`super::read_pth`]: runs protocol 2 to 5 pickles into a flat
//! arena of values. Containers hold indices into the arena, so a memo reference shares instead
//! of copying, and dropping the result never recurses whatever the nesting; every length is
//! checked against the bytes that are there before anything is allocated for it, and the
//! number of values is bounded ([`MAX_PICKLE_OBJECTS`]).

use std::collections::HashMap;

/// Most values (and stack entries) one pickle may create: about 15 per tensor in a state dict.
/// Each costs under 100 bytes, so the limit holds the machine to a few hundred MiB whatever the
/// pickle does.
pub const MAX_PICKLE_OBJECTS: usize = 4 << 20;

/// One pickled value. Containers refer to other values by their index in the arena.
#[derive(Debug)]
pub(super) enum Obj {
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
pub(super) struct Vm<'a> {
    bytes: &'a [u8],
    pos: usize,
    pub(super) objs: Vec<Obj>,
    stack: Vec<Item>,
    memo: HashMap<u32, usize>,
}

pub(super) type R<T> = std::result::Result<T, String>;

impl<'a> Vm<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Vm {
            bytes,
            pos: 0,
            objs: Vec::new(),
            stack: Vec::new(),
            memo: HashMap::new(),
        }
    }

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
    pub(super) fn run(&mut self) -> R<usize> {
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

impl Vm<'_> {
    pub(super) fn global(&self, i: usize) -> Option<(&str, &str)> {
        match &self.objs[i] {
            Obj::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }
    pub(super) fn tuple(&self, i: usize) -> Option<&[usize]> {
        match &self.objs[i] {
            Obj::Tuple(v) => Some(v),
            _ => None,
        }
    }
    pub(super) fn int(&self, i: usize) -> Option<i64> {
        match self.objs[i] {
            Obj::Int(v) => Some(v),
            _ => None,
        }
    }
    pub(super) fn ints(&self, i: usize) -> Option<Vec<usize>> {
        self.tuple(i)?
            .iter()
            .map(|&j| usize::try_from(self.int(j)?).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm_run(bytes: &[u8]) -> R<usize> {
        let mut vm = Vm::new(bytes);
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
        let mut vm = Vm::new(&p);
        let root = vm.run().expect("runs");
        assert_eq!(vm.objs.len(), 1);
        assert!(matches!(&vm.objs[root], Obj::List(v) if v.len() == 1000));
    }

    #[test]
    fn integers_decode_like_python() {
        let mut vm =
            Vm::new(b"\x8a\x02\xff\x7f\x8a\x01\xff\x8a\x00J\xfe\xff\xff\xffK\x07M\x00\x01");
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
}
