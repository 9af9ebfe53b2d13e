//! Every allocation sized from input has a limit (README "Input limits"), and past it a one-line
//! error naming the file: image sizes checked from the header before decoding, the SSDLite tile
//! count, weight headers, GraphDef fills, and `exits.ron` checked against the detector at load.

mod common;
mod fuzzing;

use candle_core::Device;
use fuzzing::seeds;
use pedcache::cache::files::parse_exits;
use pedcache::detect::maskrcnn::MaskRcnn;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("pedcache-limits-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        Scratch(d)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn one_line(e: pedcache::Error) -> String {
    let s = e.one_line();
    assert!(!s.contains('\n'), "{s}");
    s
}

#[test]
fn image_sizes_are_refused_from_the_header() {
    let s = Scratch::new("img");
    for (name, bytes, want) in [
        ("wide.png", seeds::png_header_only(20000, 1), "20000x1"),
        ("tall.png", seeds::png_header_only(1, 16385), "1x16385"),
        ("huge.png", seeds::png_header_only(8192, 8192), "pixels"),
        (
            "huge.jpg",
            seeds::jpeg_with_size(seeds::jpeg(8, 8).bytes, 40000, 30000),
            "40000x30000",
        ),
    ] {
        let p = s.write(name, &bytes);
        let e = one_line(pedcache::frame::load_rgb(&p).unwrap_err());
        assert!(
            e.contains(name) && e.contains(want) && e.contains("limit"),
            "{e}"
        );
        // Label maps go through the same decoder and limits.
        let e = one_line(pedcache::frame::load_luma(&p).unwrap_err());
        assert!(e.contains(name) && e.contains("limit"), "{e}");
    }
    // At the limits, a real image still decodes: 16384x1 is within them.
    let ok = seeds::png(16384, 1, false).bytes;
    let f = pedcache::frame::decode_rgb(&ok).expect("16384x1 decodes");
    assert_eq!((f.width, f.height), (16384, 1));
}

#[test]
fn image_files_over_the_size_limit_are_not_read() {
    let s = Scratch::new("imgfile");
    let p = s.0.join("big.png");
    let f = std::fs::File::create(&p).expect("create");
    // A sparse file: no disk used, but its length is past the limit.
    f.set_len(pedcache::frame::MAX_IMAGE_FILE_BYTES + 1)
        .expect("set_len");
    let e = one_line(pedcache::frame::load_rgb(&p).unwrap_err());
    assert!(e.contains("big.png") && e.contains("over the limit"), "{e}");
}

/// A small Mask R-CNN (stand-in weights): `exits.ron` is checked against its stages.
fn tiny_rcnn() -> MaskRcnn {
    use pedcache::detect::maskrcnn::standin::{state_dict, Variant};
    use pedcache::detect::maskrcnn::weights::Arch;
    let arch = Arch {
        stem_channels: 8,
        layers: [(1, 4, 16), (1, 4, 24), (1, 4, 32), (1, 4, 40)],
        fpn_channels: 8,
        anchors_per_cell: 3,
        representation: 16,
        num_classes: 91,
        mask_layers: vec![8],
        mask_predictor_channels: 8,
    };
    let sd = state_dict(&arch, Variant::Hash, &Device::Cpu).expect("weights");
    MaskRcnn::from_state_dict(&sd, arch, &Device::Cpu).expect("model")
}

fn exits_ron(model: &str, classes: usize, exits: &[(&str, usize, usize, usize)]) -> String {
    let entries: Vec<String> = exits
        .iter()
        .map(|(layer, stage, channels, head_classes)| {
            format!(
                "(layer: \"{layer}\", stage: {stage}, channels: {channels}, head: Some((grid: 1, \
                 convs: [], linears: [], classes: {head_classes})), dropped: None, \
                 temperature: 1.0, threshold: 0.9, budget: 0.01, selected: true, c1: 1, c2: 2)"
            )
        })
        .collect();
    format!(
        "(model: \"{model}\", policy: pedestrian, tolerance: 0.02, classes: {classes}, \
         positive: 1, full_flops: 3, exits: [{}])",
        entries.join(", ")
    )
}

#[test]
fn exits_file_is_checked_against_the_detector() {
    let det = tiny_rcnn();
    let path = Path::new("calib/x/exits.ron");
    let check = |text: String| {
        parse_exits(&text, path)
            .and_then(|f| f.check_detector(&det))
            .map_err(one_line)
    };
    // The detector's own layout passes: layer1 (16 channels) and layer3 (32).
    let good = [("layer1", 0, 16, 91), ("layer3", 2, 32, 91)];
    check(exits_ron("maskrcnn-r50-fpn", 91, &good)).expect("matching file");
    for (text, want) in [
        // The reported case: a stage that names another layer loaded silently, never fired.
        (
            exits_ron("maskrcnn-r50-fpn", 91, &[("layer2", 0, 24, 91)]),
            "stage 0 of maskrcnn-r50-fpn is layer1, not layer2",
        ),
        (
            exits_ron("maskrcnn-r50-fpn", 91, &[("layer5", 4, 24, 91)]),
            "stage 4 does not exist",
        ),
        (
            exits_ron("maskrcnn-r50-fpn", 91, &[("layer2", 1, 64, 91)]),
            "64 channels, but maskrcnn-r50-fpn's layer2 has 24",
        ),
        (
            exits_ron("maskrcnn-r50-fpn", 91, &[("layer2", 1, 24, 2)]),
            "head has 2 classes",
        ),
        (
            exits_ron("maskrcnn-r50-fpn", 2, &[("layer2", 1, 24, 2)]),
            "2 classes with positive class 1, but maskrcnn-r50-fpn has 91",
        ),
        (
            exits_ron("ssdlite-ped", 91, &[("layer2", 1, 24, 91)]),
            "calibrated for ssdlite-ped, not maskrcnn-r50-fpn",
        ),
        (
            exits_ron(
                "maskrcnn-r50-fpn",
                91,
                &[("layer2", 1, 24, 91), ("layer1", 0, 16, 91)],
            ),
            "network order",
        ),
    ] {
        let e = check(text).unwrap_err();
        assert!(
            e.contains("calib/x/exits.ron") && e.contains(want),
            "{want:?} not in {e}"
        );
    }
}

#[test]
fn heads_past_the_architecture_limits_are_refused_at_load() {
    let text = exits_ron("maskrcnn-r50-fpn", 91, &[("layer1", 0, 16, 91)])
        .replace("grid: 1", "grid: 1000000000");
    let e = one_line(parse_exits(&text, Path::new("c/exits.ron")).unwrap_err());
    assert!(e.contains("c/exits.ron") && e.contains("grid"), "{e}");
    let text = exits_ron("maskrcnn-r50-fpn", 91, &[("layer1", 0, 16, 91)])
        .replace("linears: []", "linears: [100000000]");
    let e = one_line(parse_exits(&text, Path::new("c/exits.ron")).unwrap_err());
    assert!(e.contains("wider than the limit"), "{e}");
}

#[test]
fn weight_headers_cannot_ask_for_more_than_the_file() {
    let s = Scratch::new("weights");
    // safetensors: header length past the file, and a shape past its offsets.
    let mut st = seeds::safetensors(&[("w", &[2, 3])]).bytes;
    st[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let p = s.write("inflated.safetensors", &st);
    let e = one_line(pedcache::detect::weights::load_safetensors(&p, &Device::Cpu).unwrap_err());
    assert!(e.contains("inflated.safetensors"), "{e}");
    let text = String::from_utf8_lossy(&seeds::safetensors(&[("w", &[2, 3])]).bytes)
        .replace("[2,3]", "[2000000,3000000]");
    let p = s.write("shape.safetensors", text.as_bytes());
    let e = one_line(pedcache::detect::weights::load_safetensors(&p, &Device::Cpu).unwrap_err());
    assert!(e.contains("shape.safetensors"), "{e}");
    // .pth through the Mask R-CNN loader: a pickle string longer than the pickle, a tensor
    // larger than its storage.
    let fixtures = common::repo().join("tests/fixtures/fuzz");
    for (name, want) in [
        ("pth-binunicode-4gib.bin", "truncated"),
        ("pth-shape-beyond-storage.bin", "do not fit its storage"),
    ] {
        let p = s.write(
            &name.replace(".bin", ".pth"),
            &std::fs::read(fixtures.join(name)).expect("fixture"),
        );
        let e = one_line(pedcache::detect::maskrcnn::weights::read_state_dict(&p).unwrap_err());
        assert!(
            e.contains(&name.replace(".bin", ".pth")) && e.contains(want),
            "{e}"
        );
    }
    // GraphDef: a fill constant expanding to 2^30 floats.
    let p = s.write(
        "fill.pb",
        &std::fs::read(fixtures.join("graphdef-fill-4gib.bin")).expect("fixture"),
    );
    let e = one_line(
        pedcache::convert::convert_ssdlite_graph(&p, &s.0.join("out.safetensors")).unwrap_err(),
    );
    assert!(
        e.contains("fill.pb") && e.contains("more values than its bytes hold"),
        "{e}"
    );
    assert!(!s.0.join("out.safetensors").exists());
}

/// Runs the release binary and reports its exit status, stderr and peak resident memory (from
/// the kernel's accounting of this one child, `wait4`).
// The child is reaped by `wait4` (which also returns its rusage), not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&std::ffi::OsStr]) -> (i32, String, u64) {
    let child = Command::new(common::bin())
        .current_dir(common::repo())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn pedcache");
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr.expect("stderr");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut err).expect("read stderr");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing into the two locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, err, usage.ru_maxrss as u64 * 1024)
}

#[test]
#[ignore = "needs models/ssdlite_ped.safetensors (scripts/test.sh makes it)"]
fn wide_png_reproducer_fails_in_one_line_with_bounded_memory() {
    let _ = common::model_path();
    let s = Scratch::new("wide");
    // The reported case: a 138-byte 20000x1 PNG once asked auto tiling for ~21.6 GB.
    let wide = s.write("wide.png", &seeds::png(20000, 1, false).bytes);
    // Within the image limits but far past the tile limit: 16000 tiles.
    let narrow = s.write("narrow.png", &seeds::png(16000, 1, false).bytes);
    for (img, want) in [(&wide, "over the limit of 16384"), (&narrow, "limit of 8")] {
        let json = s.0.join("o.json");
        let (code, err, rss) = run_measured(&[
            "detect".as_ref(),
            "--model".as_ref(),
            "ssdlite-ped".as_ref(),
            "--json".as_ref(),
            json.as_os_str(),
            img.as_os_str(),
        ]);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_ne!(code, 0, "{err}");
        assert_eq!(lines.len(), 1, "{err}");
        assert!(
            lines[0].contains(img.to_str().expect("utf-8")) && lines[0].contains(want),
            "{err}"
        );
        assert!(rss < 1 << 30, "peak RSS {rss} bytes: {err}");
    }
}

#[test]
#[ignore = "needs models/ssdlite_ped.safetensors and sim/vtest (scripts/test.sh makes them)"]
fn replay_refuses_an_exits_file_whose_stage_names_another_layer() {
    let _ = common::model_path();
    let _ = common::require(&common::repo().join("sim/vtest"), "demo frames");
    let s = Scratch::new("exits");
    let calib = common::repo().join("calib/ssdlite-ped-vtest");
    let dir = s.0.join("calib");
    std::fs::create_dir_all(&dir).expect("dir");
    for f in ["exits.ron", "heads.safetensors"] {
        std::fs::copy(calib.join(f), dir.join(f)).expect("copy");
    }
    // The selected exit expanded_conv_2 is stage 1; say 2 (expanded_conv_5).
    let text = std::fs::read_to_string(dir.join("exits.ron")).expect("read");
    let edited = text.replacen(
        "layer: \"expanded_conv_2\",\n            stage: 1,",
        "layer: \"expanded_conv_2\",\n            stage: 2,",
        1,
    );
    assert_ne!(edited, text, "calibration layout changed; update the edit");
    std::fs::write(dir.join("exits.ron"), edited).expect("write");
    let report = s.0.join("r.json");
    let (code, err, _) = run_measured(&[
        "replay".as_ref(),
        "--model".as_ref(),
        "ssdlite-ped".as_ref(),
        "--source".as_ref(),
        "sim/vtest".as_ref(),
        "--calib".as_ref(),
        dir.as_os_str(),
        "--max-speed".as_ref(),
        "--limit".as_ref(),
        "2".as_ref(),
        "--report".as_ref(),
        report.as_os_str(),
    ]);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_ne!(code, 0, "{err}");
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("exits.ron")
            && lines[0].contains("stage 2 of ssdlite-ped is expanded_conv_5, not expanded_conv_2"),
        "{err}"
    );
    assert!(!report.exists());
}
