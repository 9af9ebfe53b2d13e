//! A stable-Rust fuzzing harness: deterministic mutations of small seeds (bit flips, byte
//! overwrites, truncation, insertions and deletions, splices between seeds, inflated length
//! fields), each input run on a worker thread under `catch_unwind`, with its peak allocation
//! measured by a counting allocator ([`Counting`], installed by the test binary that fuzzes) and
//! its time bounded. Every input must end in `Ok` or a one-line error; a panic, an allocation
//! over the parser's limit, or an input that does not finish in time fails the campaign.
#![allow(dead_code)]

pub mod seeds;

use seeds::{Seed, Width};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// splitmix64: small, deterministic, good enough to drive mutations.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

const INTERESTING_U8: [u8; 8] = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, b'(', b'.'];
const INTERESTING_U32: [u32; 6] = [0, 1, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, 0xffff_ffff];

/// Write `v` over the length field at `at` (clipped to the buffer).
fn write_len(b: &mut Vec<u8>, at: usize, w: Width, v: u64) {
    let bytes: Vec<u8> = match w {
        Width::LeU16 => (v as u16).to_le_bytes().to_vec(),
        Width::LeU32 => (v as u32).to_le_bytes().to_vec(),
        Width::LeU64 => v.to_le_bytes().to_vec(),
        Width::BeU16 => (v as u16).to_be_bytes().to_vec(),
        Width::BeU32 => (v as u32).to_be_bytes().to_vec(),
        Width::Varint => {
            // A 5-byte varint replaces the old one: the field now claims up to 4 GiB.
            let (_, used) = seeds::varint(b.get(at..).unwrap_or(&[]));
            let mut enc = Vec::new();
            let mut x = v & 0xffff_ffff;
            for _ in 0..5 {
                let more = x >> 7 != 0;
                enc.push((x & 0x7f) as u8 | if more { 0x80 } else { 0 });
                x >>= 7;
                if !more {
                    break;
                }
            }
            if at <= b.len() {
                let end = (at + used).min(b.len());
                b.splice(at..end, enc);
            }
            return;
        }
    };
    for (k, x) in bytes.into_iter().enumerate() {
        if let Some(slot) = b.get_mut(at + k) {
            *slot = x;
        }
    }
}

fn read_len(b: &[u8], at: usize, w: Width) -> u64 {
    let get = |n: usize| b.get(at..at + n).map(|s| s.to_vec());
    match w {
        Width::LeU16 => get(2).map_or(0, |s| u16::from_le_bytes([s[0], s[1]]) as u64),
        Width::LeU32 => get(4).map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as u64),
        Width::LeU64 => get(8).map_or(0, |s| {
            u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
        }),
        Width::BeU16 => get(2).map_or(0, |s| u16::from_be_bytes([s[0], s[1]]) as u64),
        Width::BeU32 => get(4).map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as u64),
        Width::Varint => seeds::varint(b.get(at..).unwrap_or(&[])).0,
    }
}

/// One mutated input from `seed` (and, for splices, `others`).
pub fn mutate(rng: &mut Rng, seed: &Seed, others: &[Seed]) -> Vec<u8> {
    let mut b = seed.bytes.clone();
    for _ in 0..1 + rng.below(3) {
        let n = b.len();
        match rng.below(9) {
            0 if n > 0 => {
                let i = rng.below(n);
                b[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n);
                b[i] = if rng.below(2) == 0 {
                    INTERESTING_U8[rng.below(INTERESTING_U8.len())]
                } else {
                    rng.next_u64() as u8
                };
            }
            2 => b.truncate(rng.below(n + 1)),
            3 | 4 if !seed.lens.is_empty() => {
                // Inflate a length field: huge, just past the end, or the original times 1000.
                let (at, w) = seed.lens[rng.below(seed.lens.len())];
                let old = read_len(&b, at, w);
                let v = match rng.below(5) {
                    0 => u64::MAX,
                    1 => 0x7fff_ffff,
                    2 => old.saturating_mul(1000).max(1 << 20),
                    3 => old + 1 + rng.below(64) as u64,
                    _ => 1 << (16 + rng.below(48)),
                };
                write_len(&mut b, at, w, v);
            }
            5 if !others.is_empty() => {
                let o = &others[rng.below(others.len())].bytes;
                let cut = rng.below(n + 1);
                let from = rng.below(o.len() + 1);
                b.truncate(cut);
                b.extend_from_slice(&o[from..]);
            }
            6 => {
                let at = rng.below(n + 1);
                let k = 1 + rng.below(16);
                let ins: Vec<u8> = (0..k).map(|_| rng.next_u64() as u8).collect();
                b.splice(at..at, ins);
            }
            7 if n > 0 => {
                let at = rng.below(n);
                let end = (at + 1 + rng.below(32)).min(n);
                b.drain(at..end);
            }
            _ if n >= 4 => {
                let at = rng.below(n - 3);
                let v = INTERESTING_U32[rng.below(INTERESTING_U32.len())];
                b[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            _ => b.push(rng.next_u64() as u8),
        }
    }
    b
}

thread_local! {
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

/// No single fuzzed input may hold more than this; past it the allocator refuses (the process
/// aborts, naming the campaign on stderr) rather than let a parser take the machine down.
pub const HARD_CAP: usize = 1536 << 20;

/// A global allocator that counts, per thread, the bytes an armed thread holds and its peak.
pub struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !note_alloc(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !note_alloc(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free(layout.size());
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        if new > layout.size() && !note_alloc(new - layout.size()) {
            return std::ptr::null_mut();
        }
        if new < layout.size() {
            note_free(layout.size() - new);
        }
        System.realloc(ptr, layout, new)
    }
}

/// Counts `n` more bytes on this thread; false when an armed thread would pass [`HARD_CAP`].
fn note_alloc(n: usize) -> bool {
    let Ok(armed) = ARMED.try_with(|a| a.get()) else {
        return true;
    };
    let cur = CURRENT.with(|c| {
        let v = c.get().saturating_add(n as isize);
        c.set(v);
        v
    });
    if armed {
        if cur > HARD_CAP as isize {
            refuse(n);
            CURRENT.with(|c| c.set(c.get() - n as isize));
            return false;
        }
        PEAK.with(|p| p.set(p.get().max(cur)));
    }
    true
}

fn note_free(n: usize) {
    let _ = CURRENT.try_with(|c| c.set(c.get().saturating_sub(n as isize)));
}

/// Say on stderr, without allocating, that an input asked for too much.
fn refuse(n: usize) {
    let mut buf = [0u8; 96];
    let msg = b"fuzz: an input asked for more than the hard cap; request of ";
    let mut k = 0;
    for &c in msg {
        buf[k] = c;
        k += 1;
    }
    let mut digits = [0u8; 20];
    let (mut v, mut d) = (n, 0);
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while d > 0 && k < buf.len() - 8 {
        d -= 1;
        buf[k] = digits[d];
        k += 1;
    }
    for &c in b" bytes\n" {
        buf[k] = c;
        k += 1;
    }
    // SAFETY: writes `k` initialised bytes of `buf` to stderr.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), k);
    }
}

/// Run `f` with this thread's allocations counted from zero; returns its result and the peak
/// bytes it held at once (0 when [`Counting`] is not the global allocator).
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
    CURRENT.with(|c| c.set(0));
    PEAK.with(|p| p.set(0));
    ARMED.with(|a| a.set(true));
    let out = f();
    ARMED.with(|a| a.set(false));
    (out, PEAK.with(|p| p.get()).max(0) as usize)
}

/// What a parser under test does with one input: `Ok`, or the one-line error it reports.
pub type Parse = fn(&[u8]) -> Result<(), String>;

/// A campaign's figures.
#[derive(Debug, Default)]
pub struct Tally {
    pub inputs: usize,
    pub ok: usize,
    pub errors: usize,
    pub max_peak: usize,
    pub slowest_ms: u128,
}

/// Per-input wall-time bound: far above any real parse here (milliseconds), so only a hang or
/// an effectively unbounded loop can reach it.
pub const TIME_LIMIT: Duration = Duration::from_secs(20);

/// Check one input: runs `parse` on a worker under `catch_unwind` and the allocation count;
/// returns the error text on failure of the contract.
fn check_one(
    parse: Parse,
    input: Vec<u8>,
    mem_limit: usize,
    must_name: Option<&'static str>,
    tx: &std::sync::mpsc::Sender<Job>,
    rx: &std::sync::mpsc::Receiver<Outcome>,
) -> Result<(bool, usize, u128), String> {
    let len = input.len();
    let started = Instant::now();
    tx.send(Job { parse, input })
        .map_err(|_| "worker gone".to_string())?;
    let (res, peak) = rx
        .recv_timeout(TIME_LIMIT)
        .map_err(|_| format!("no answer within {TIME_LIMIT:?} (hang?)"))?;
    let ms = started.elapsed().as_millis();
    let ok = match res {
        Err(panic) => return Err(format!("panicked: {panic}")),
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            if e.trim().is_empty() || e.contains('\n') {
                return Err(format!("error is not one non-empty line: {e:?}"));
            }
            if let Some(name) = must_name {
                if !e.contains(name) {
                    return Err(format!("error does not name {name}: {e}"));
                }
            }
            false
        }
    };
    if peak > mem_limit {
        return Err(format!(
            "held {peak} bytes for a {len}-byte input, over its limit of {mem_limit}"
        ));
    }
    Ok((ok, peak, ms))
}

struct Job {
    parse: Parse,
    input: Vec<u8>,
}
type Outcome = (Result<Result<(), String>, String>, usize);

fn worker() -> (
    std::sync::mpsc::Sender<Job>,
    std::sync::mpsc::Receiver<Outcome>,
) {
    let (tx, jobs) = std::sync::mpsc::channel::<Job>();
    let (done, rx) = std::sync::mpsc::channel::<Outcome>();
    std::thread::Builder::new()
        .name("fuzz-worker".into())
        .spawn(move || {
            for Job { parse, input } in jobs {
                let (res, peak) = measure(|| {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(&input)))
                });
                let res = res.map_err(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "non-string panic".into())
                });
                if done.send((res, peak)).is_err() {
                    break;
                }
            }
        })
        .expect("spawn fuzz worker");
    (tx, rx)
}

/// Inputs per parser: `PEDCACHE_FUZZ_INPUTS`, else 1000 (the bounded CI run).
pub fn inputs_per_parser() -> usize {
    std::env::var("PEDCACHE_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// The campaign's base seed: `PEDCACHE_FUZZ_SEED`, else a fixed one (so CI runs repeat).
pub fn base_seed() -> u64 {
    std::env::var("PEDCACHE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f00d)
}

/// `target/fuzz-failures/`, where failing inputs are saved.
fn failures_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Fuzz `parse` from `seeds`: the seeds themselves, then `n` mutants. Panics (failing the
/// test) on the first input that breaks the contract, after saving it under
/// `target/fuzz-failures/` for minimising.
pub fn campaign(
    name: &str,
    seeds: &[Seed],
    n: usize,
    parse: Parse,
    mem_limit: fn(usize) -> usize,
    must_name: Option<&'static str>,
) -> Tally {
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let mut rng = Rng(base_seed() ^ name.bytes().fold(0u64, |h, b| h.rotate_left(5) ^ b as u64));
    let (tx, rx) = worker();
    let mut t = Tally::default();
    let total = seeds.len() + n;
    for i in 0..total {
        let input = if i < seeds.len() {
            seeds[i].bytes.clone()
        } else {
            let s = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, s, seeds)
        };
        let keep = input.clone();
        // An input that aborts the process (an allocation past the hard cap) leaves no panic to
        // report: it is on disk here, for minimising.
        let _ = std::fs::write(failures_dir().join(format!("{name}-current.bin")), &keep);
        match check_one(parse, input, mem_limit(keep.len()), must_name, &tx, &rx) {
            Ok((ok, peak, ms)) => {
                t.inputs += 1;
                if ok {
                    t.ok += 1;
                } else {
                    t.errors += 1;
                }
                t.max_peak = t.max_peak.max(peak);
                t.slowest_ms = t.slowest_ms.max(ms);
            }
            Err(why) => {
                let file = failures_dir().join(format!("{name}-{i}.bin"));
                let _ = std::fs::write(&file, &keep);
                panic!(
                    "fuzz {name}: input {i} ({} bytes, saved to {}): {why}",
                    keep.len(),
                    file.display()
                );
            }
        }
    }
    eprintln!(
        "fuzz {name}: {} inputs ({} ok, {} errors), peak {} bytes, slowest {} ms",
        t.inputs, t.ok, t.errors, t.max_peak, t.slowest_ms
    );
    t
}

/// Run one saved input through `parse` under the same contract, for regression fixtures: each
/// is an input that must be refused, so it must also end in an error. Returns its peak bytes.
pub fn check_fixture(
    name: &str,
    input: Vec<u8>,
    parse: Parse,
    mem_limit: fn(usize) -> usize,
    must_name: Option<&'static str>,
) -> usize {
    let (tx, rx) = worker();
    let limit = mem_limit(input.len());
    match check_one(parse, input, limit, must_name, &tx, &rx) {
        Err(why) => panic!("fuzz regression {name}: {why}"),
        Ok((true, _, _)) => panic!("fuzz regression {name}: accepted, but it must be refused"),
        Ok((false, peak, _)) => peak,
    }
}
