//! Every kernel path with its buffers ending exactly against a `PROT_NONE` page.
//!
//! The test binary's global allocator places every heap block so that its last byte is the
//! last byte before an inaccessible page (electric-fence style, built on `mmap`/`mprotect`).
//! That covers the caller's buffers (tensors hold exactly-sized `Vec`s) and the scratch the
//! kernels allocate themselves (phase-split inputs, packed panels, transform buffers): a vector
//! load that reaches even one float past any of them faults, and the test binary dies with
//! SIGSEGV. `guard_is_armed` proves the trap works by re-running this binary on a probe that
//! reads one float past a `Vec` and expecting that child to die from the signal.
//!
//! The conv checks also compare every output with candle's stock `conv2d`, so a kernel that
//! stopped reading past the end by reading the wrong values would fail too.

use candle_core::{Device, Tensor};
use pedcache::detect::ops::conv::{Activation, Conv2d, ConvSpec, Padding};
use pedcache::runtime::Kernels;
use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks end flush against a guard page; alignment is honoured by moving the start down, so
/// for `f32` buffers (align 4, sizes in whole floats) the end is exact.
struct GuardAlloc;

const PAGE: usize = 4096;

// SAFETY: `alloc` returns a block of at least `size` bytes aligned to `align` inside a fresh
// private mapping (or System's block), and `dealloc` unmaps exactly the mapping `alloc` made for
// that pointer and size (recomputed from them), so blocks never overlap and are freed once.
unsafe impl GlobalAlloc for GuardAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() > PAGE {
            return System.alloc(layout);
        }
        let data_pages = layout.size().div_ceil(PAGE).max(1);
        let len = (data_pages + 1) * PAGE;
        // SAFETY: an anonymous private mapping with no address hint; checked for failure.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        let base = base.cast::<u8>();
        // SAFETY: the guard page is the mapping's last page, inside the mapping just made.
        let guard = unsafe { base.add(data_pages * PAGE) };
        // SAFETY: `guard` is page-aligned and inside the mapping.
        if unsafe { libc::mprotect(guard.cast(), PAGE, libc::PROT_NONE) } != 0 {
            // SAFETY: unmapping the mapping made above, nothing points into it yet.
            unsafe { libc::munmap(base.cast(), len) };
            return std::ptr::null_mut();
        }
        let start = (guard as usize - layout.size()) & !(layout.align() - 1);
        start as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.align() > PAGE {
            return System.dealloc(ptr, layout);
        }
        let data_pages = layout.size().div_ceil(PAGE).max(1);
        // The block ends less than `align` bytes before the guard, which is page-aligned.
        let guard = (ptr as usize + layout.size()).div_ceil(PAGE) * PAGE;
        let guard = if layout.size() == 0 {
            guard + PAGE
        } else {
            guard
        };
        let base = guard - data_pages * PAGE;
        // SAFETY: `base..guard + PAGE` is the mapping `alloc` made for this pointer and size.
        unsafe { libc::munmap(base as *mut libc::c_void, (data_pages + 1) * PAGE) };
    }
}

#[global_allocator]
static GUARD: GuardAlloc = GuardAlloc;

/// Deterministic values in [-1, 1) (an LCG: no global RNG).
fn rand(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(6364136223846793005) ^ 0x9E37_79B9_7F4A_7C15;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

fn max_rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs() / scale))
}

/// The probe `guard_is_armed` runs in a child (with `PEDCACHE_GUARD_PROBE` set): one float past
/// a Vec's end must fault. Run directly it does nothing, so `--include-ignored` (CI) cannot
/// crash the test binary with it.
#[test]
fn probe_reads_one_past_the_end() {
    if std::env::var_os("PEDCACHE_GUARD_PROBE").is_none() {
        return;
    }
    let v = vec![1f32; 1000];
    let p = v.as_ptr();
    // SAFETY: deliberately not sound — reading one element past the end is exactly the fault
    // this probe exists to provoke; the guard page turns it into SIGSEGV before any value is used.
    let past = unsafe { std::ptr::read_volatile(p.add(v.len())) };
    println!("read {past} past the end: the guard page is not armed");
}

#[test]
fn guard_is_armed() {
    use std::os::unix::process::ExitStatusExt;
    let exe = std::env::current_exe().expect("test binary");
    let status = std::process::Command::new(exe)
        .env("PEDCACHE_GUARD_PROBE", "1")
        .args(["--exact", "probe_reads_one_past_the_end", "--nocapture"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run probe");
    assert_eq!(
        status.signal(),
        Some(libc::SIGSEGV),
        "the probe reading one float past a Vec did not fault: {status:?}"
    );
}

/// One conv layer, on `n` images of `h x w`, against candle's stock conv; with `residual`, the
/// fused residual add too.
fn check_conv(conv: &Conv2d, n: usize, h: usize, w: usize, seed: u64, what: &str) {
    let spec = *conv.spec();
    if spec.geometry(h, w).is_err() {
        return;
    }
    let x = rand(&[n, spec.in_channels, h, w], seed);
    let reference = conv.forward_candle(&x).expect("candle");
    let ours = conv.forward(&x).expect("ours");
    let e = max_rel_err(&ours, &reference);
    assert!(
        e <= 1e-4,
        "{what}: {spec:?} on {n}x{h}x{w}: max rel err {e}"
    );
    let r = rand(reference.dims(), seed + 1);
    let plain = Conv2d::new(
        spec.activation(Activation::None),
        conv.weight_tensor().clone(),
        Some(conv.bias_tensor().clone()),
    )
    .expect("plain conv");
    let sum = (plain.forward_candle(&x).expect("candle") + &r).expect("add");
    let reference = match spec.activation {
        Activation::None => sum,
        Activation::Relu => sum.relu().unwrap(),
        Activation::Relu6 => sum.clamp(0f32, 6f32).unwrap(),
    };
    let e = max_rel_err(
        &conv.forward_add(&x, &r).expect("ours + residual"),
        &reference,
    );
    assert!(e <= 1e-4, "{what} + residual: {spec:?} on {n}x{h}x{w}: {e}");
}

/// The layer on every kernel path this CPU runs (AVX-512, the GEMM fallback with its in-place
/// 1x1 reads, ...), each a separate `Conv2d` with its own packed weights.
fn layers(spec: ConvSpec, seed: u64) -> Vec<(Conv2d, &'static str)> {
    let (kh, kw) = spec.kernel;
    let wt = rand(
        &[spec.out_channels, spec.in_channels / spec.groups, kh, kw],
        seed,
    );
    let b = rand(&[spec.out_channels], seed + 7);
    Kernels::available()
        .into_iter()
        .map(|k| {
            let conv = Conv2d::with_kernels(spec, wt.clone(), Some(b.clone()), k).expect("conv");
            (conv, k.name())
        })
        .collect()
}

/// Dense convs of every kernel size and stride the detectors use (the 7x7/2 stem, 3x3/1 on the
/// implicit GEMM and on Winograd, 3x3/2, 1x1/1 read in place, 1x1/2, dilated), with pads on
/// every side alone, over widths that leave every short last tile length (1..47 lanes of the
/// 48-lane tile, 1..15 of a vector, partial Winograd tiles and blocks), on every kernel path.
#[test]
fn dense_convs_stay_inside_their_buffers() {
    let relu = Activation::Relu;
    let pad = |top, bottom, left, right| Padding::Explicit {
        top,
        bottom,
        left,
        right,
    };
    let specs = [
        ConvSpec::new(3, 16, 7)
            .stride(2)
            .padding(Padding::symmetric(3)),
        ConvSpec::new(8, 16, 3)
            .padding(Padding::symmetric(1))
            .activation(relu),
        ConvSpec::new(8, 8, 3)
            .stride(2)
            .padding(Padding::symmetric(1)),
        ConvSpec::new(8, 8, 3).padding(Padding::TfSame),
        ConvSpec::new(8, 8, 3).stride(2).padding(Padding::TfSame),
        ConvSpec::new(8, 8, 3)
            .dilation(2)
            .padding(Padding::symmetric(2)),
        ConvSpec::new(16, 24, 1).activation(relu),
        ConvSpec::new(16, 8, 1).stride(2),
        ConvSpec::new(8, 8, 1).padding(pad(0, 1, 0, 2)),
        ConvSpec::new(8, 8, 3).padding(pad(0, 2, 0, 2)),
        ConvSpec::new(8, 8, 3).padding(pad(2, 0, 2, 0)),
        ConvSpec::new(8, 8, 3),
        ConvSpec::new(8, 16, 5).padding(Padding::symmetric(2)),
        ConvSpec::new(6, 10, 3).padding(Padding::symmetric(1)),
        // >= 16 channels at 3x3/1: the Winograd path, with every padding side alone.
        ConvSpec::new(16, 24, 3)
            .padding(Padding::symmetric(1))
            .activation(relu),
        ConvSpec::new(24, 16, 3),
        // A whole 64-channel group: the output transform reads the last row of its buffer.
        ConvSpec::new(16, 64, 3).padding(Padding::symmetric(1)),
        ConvSpec::new(16, 16, 3).padding(pad(0, 2, 0, 2)),
        ConvSpec::new(16, 16, 3).padding(pad(2, 0, 1, 0)),
    ];
    let mut seed = 1;
    for spec in specs {
        for (conv, path) in layers(spec, seed) {
            for &(h, w) in &[(1, 1), (3, 5), (7, 7), (9, 13), (14, 14), (5, 47), (4, 61)] {
                for n in [1, 2] {
                    seed += 3;
                    check_conv(&conv, n, h, w, seed, path);
                }
            }
        }
    }
    // Every last-tile length: 1 and 3 rows of width 1..=100 at 3x3/1 (pad 1), the 7x7/2 stem
    // and a 1x1 read in place.
    for spec in [
        ConvSpec::new(4, 8, 3).padding(Padding::symmetric(1)),
        ConvSpec::new(16, 16, 3).padding(Padding::symmetric(1)),
        ConvSpec::new(3, 8, 7)
            .stride(2)
            .padding(Padding::symmetric(3)),
        ConvSpec::new(4, 8, 1),
    ] {
        for (conv, path) in layers(spec, seed) {
            for w in 1..=100 {
                check_conv(&conv, 1, 1, w, seed + w as u64, path);
                check_conv(&conv, 1, 3, w, seed + w as u64, path);
            }
        }
    }
}

/// Grouped and depthwise convs (their own kernels), at the shapes MobileNet uses.
#[test]
fn grouped_and_depthwise_convs_stay_inside_their_buffers() {
    let specs = [
        ConvSpec::depthwise(12, 3)
            .padding(Padding::TfSame)
            .activation(Activation::Relu6),
        ConvSpec::depthwise(12, 3)
            .stride(2)
            .padding(Padding::TfSame),
        ConvSpec::depthwise(12, 3).padding(Padding::symmetric(1)),
        ConvSpec::depthwise(12, 3)
            .stride(2)
            .padding(Padding::symmetric(1)),
        ConvSpec::depthwise(12, 3)
            .stride(2)
            .padding(Padding::symmetric(2)),
        ConvSpec::depthwise(8, 5)
            .dilation(2)
            .padding(Padding::symmetric(4)),
        ConvSpec::new(12, 18, 3)
            .groups(3)
            .padding(Padding::symmetric(1)),
        ConvSpec::new(12, 18, 1).groups(3),
    ];
    for (i, spec) in specs.into_iter().enumerate() {
        for (conv, path) in layers(spec, 100 + i as u64) {
            for &(h, w) in &[(1, 1), (2, 3), (7, 7), (10, 19), (19, 19)] {
                check_conv(&conv, 2, h, w, 200 + i as u64, path);
            }
        }
    }
}

#[test]
fn pooling_stays_inside_its_buffers() {
    use pedcache::detect::ops::pool::max_pool_3x3_s2_p1;
    for &(h, w) in &[(1, 1), (2, 2), (3, 5), (8, 9), (17, 33)] {
        let x = rand(&[2, 3, h, w], (h * 100 + w) as u64);
        let y = max_pool_3x3_s2_p1(&x).expect("pool");
        let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let ys: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        let (oh, ow) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
        assert_eq!(y.dims(), [2, 3, oh, ow]);
        for p in 0..6 {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut m = f32::NEG_INFINITY;
                    for iy in (2 * oy).saturating_sub(1)..(2 * oy + 2).min(h) {
                        for ix in (2 * ox).saturating_sub(1)..(2 * ox + 2).min(w) {
                            m = m.max(xs[p * h * w + iy * w + ix]);
                        }
                    }
                    assert_eq!(ys[p * oh * ow + oy * ow + ox], m, "{h}x{w}");
                }
            }
        }
    }
}

#[test]
fn roi_align_paste_and_resize_stay_inside_their_buffers() {
    use pedcache::detect::ops::{interp, paste, resize, roi_align};
    let (c, h, w) = (3, 13, 17);
    let feat: Vec<f32> = (0..c * h * w).map(|i| (i % 23) as f32 - 11.0).collect();
    // RoIs touching and leaving every border, tiny and whole-image ones.
    let rois = [
        [0.0, 0.0, 16.9, 12.9],
        [-5.0, -3.0, 2.0, 1.0],
        [15.5, 11.5, 40.0, 30.0],
        [3.2, 4.1, 3.3, 4.2],
        [0.0, 0.0, 0.0, 0.0],
    ];
    for aligned in [false, true] {
        for sr in [0, 2] {
            let out = roi_align::roi_align(&feat, c, h, w, &rois, 0.5, 7, 7, sr, aligned);
            assert_eq!(out.len(), rois.len() * c * 49);
            assert!(out.iter().all(|v| v.is_finite()));
        }
    }
    let levels: Vec<roi_align::Level> = vec![(&feat, c, h, w), (&feat[..c * 7 * 9], c, 7, 9)];
    let out = roi_align::multiscale_roi_align(&levels, (26, 34), &rois, (14, 14), 2);
    assert_eq!(out.len(), rois.len() * c * 196);

    // Masks pasted at the image's edges and outside it.
    let m = 28;
    let masks: Vec<f32> = (0..rois.len() * m * m)
        .map(|i| (i % 97) as f32 / 97.0)
        .collect();
    for (ih, iw) in [(13, 17), (1, 1), (64, 3)] {
        let planes = paste::paste_masks_in_image(&masks, m, &rois, ih, iw, 1);
        assert_eq!(planes.len(), rois.len() * ih * iw);
        for (k, b) in rois.iter().enumerate() {
            let (area, _) =
                paste::mask_area_and_bbox(&masks[k * m * m..(k + 1) * m * m], m, b, ih, iw, 1, 0.5);
            let counted = planes[k * ih * iw..(k + 1) * ih * iw]
                .iter()
                .filter(|&&v| v > 0.5)
                .count();
            assert_eq!(area as usize, counted, "mask {k} in {ih}x{iw}");
        }
    }

    // Bilinear resizes up and down, to and from single pixels.
    for &(sh, sw, oh, ow) in &[
        (13, 17, 29, 3),
        (1, 1, 5, 7),
        (5, 7, 1, 1),
        (64, 48, 17, 33),
    ] {
        let src: Vec<f32> = (0..c * sh * sw).map(|i| i as f32).collect();
        let out = interp::resize_bilinear_chw(&src, c, sh, sw, oh, ow);
        assert_eq!(out.len(), c * oh * ow);
        let rgb: Vec<u8> = (0..3 * sh * sw).map(|i| (i % 251) as u8).collect();
        let frame = pedcache::frame::RgbFrame::new(sw, sh, rgb).expect("frame");
        let mut dst = vec![0f32; 3 * oh * ow];
        resize::resize_bilinear_tf1_chw(&frame, oh, ow, |v| v / 255.0, &mut dst);
        assert!(dst.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
