//! Bad input to the command line: each case exits non-zero with one line naming the file and
//! the cause, and never panics. In a multi-image `detect`, the good images are still written.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("pedcache-bad-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch dir");
        Scratch(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(common::bin())
        .current_dir(common::repo())
        .args(args)
        .output()
        .expect("run pedcache")
}

/// Asserts a failed run whose stderr is exactly one line mentioning every `needle`, no panic.
fn assert_one_line_error(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "panic: {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} not in {:?}", lines[0]);
    }
    lines[0].to_string()
}

fn png_bytes(w: u32, h: u32) -> Vec<u8> {
    let mut v = Vec::new();
    let img =
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 3) as u8, 128]));
    img.write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Png)
        .expect("png");
    v
}

fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
    let mut v = Vec::new();
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 5) as u8, (y * 9) as u8, 60]));
    img.write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Jpeg)
        .expect("jpeg");
    v
}

fn detect_one(img: &Path, json: &Path) -> Output {
    run(&[
        "detect".as_ref(),
        "--json".as_ref(),
        json.as_os_str(),
        img.as_os_str(),
    ])
}

#[test]
#[ignore = "needs models/ssdlite_ped.safetensors (scripts/test.sh makes it)"]
fn missing_image() {
    if common::model_path().is_none() {
        return;
    }
    let s = Scratch::new("missing");
    let img = s.path("nope.png");
    assert_one_line_error(
        &detect_one(&img, &s.path("o.json")),
        &["nope.png", "No such file"],
    );
}

#[test]
#[ignore = "needs models/ssdlite_ped.safetensors (scripts/test.sh makes it)"]
fn truncated_png_and_jpeg_and_garbage() {
    if common::model_path().is_none() {
        return;
    }
    let s = Scratch::new("corrupt");
    let png = png_bytes(64, 48);
    let jpg = jpeg_bytes(64, 48);
    let cases = [
        ("half.png", png[..png.len() / 2].to_vec(), "corrupt"),
        ("half.jpg", jpg[..jpg.len() / 2].to_vec(), "corrupt"),
        (
            "text.png",
            b"this is not an image".to_vec(),
            "not a PNG or JPEG",
        ),
        ("empty.jpg", Vec::new(), "empty file"),
    ];
    for (name, bytes, cause) in cases {
        let p = s.path(name);
        std::fs::write(&p, bytes).unwrap();
        assert_one_line_error(&detect_one(&p, &s.path("o.json")), &[name, cause]);
    }
}

#[test]
#[ignore = "needs models/ssdlite_ped.safetensors (scripts/test.sh makes it)"]
fn zero_size_image() {
    if common::model_path().is_none() {
        return;
    }
    let s = Scratch::new("zero");
    // A PNG header claiming 0x0 pixels: decoders refuse it; either way it must be one clean line.
    let mut v = png_bytes(1, 1);
    // IHDR width/height live at bytes 16..24.
    v[16..24].copy_from_slice(&[0; 8]);
    let p = s.path("zero.png");
    std::fs::write(&p, v).unwrap();
    assert_one_line_error(&detect_one(&p, &s.path("o.json")), &["zero.png"]);
}

#[test]
#[ignore = "needs models/ssdlite_ped.safetensors (scripts/test.sh makes it)"]
fn multi_image_detect_keeps_the_good_ones() {
    if common::model_path().is_none() {
        return;
    }
    let s = Scratch::new("multi");
    let good1 = s.path("good1.png");
    let good2 = s.path("good2.jpg");
    let bad = s.path("bad.png");
    std::fs::write(&good1, png_bytes(320, 240)).unwrap();
    std::fs::write(&good2, jpeg_bytes(200, 300)).unwrap();
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nbroken").unwrap();
    let json = s.path("out.json");
    let out = run(&[
        "detect".as_ref(),
        "--json".as_ref(),
        json.as_os_str(),
        good1.as_os_str(),
        bad.as_os_str(),
        good2.as_os_str(),
    ]);
    assert_one_line_error(&out, &["bad.png"]);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).unwrap();
    let paths: Vec<&str> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 2);
    assert!(paths[0].ends_with("good1.png") && paths[1].ends_with("good2.jpg"));
    assert_eq!(v["images"][1]["width"], 200);
    assert!(v["errors"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("bad.png"));
}

#[test]
fn unknown_model_name() {
    let s = Scratch::new("model");
    let img = s.path("x.png");
    std::fs::write(&img, png_bytes(8, 8)).unwrap();
    let out = run(&[
        "detect".as_ref(),
        "--model".as_ref(),
        "yolo9000".as_ref(),
        "--json".as_ref(),
        s.path("o.json").as_os_str(),
        img.as_os_str(),
    ]);
    assert_one_line_error(&out, &["unknown model", "yolo9000"]);
}

#[test]
#[ignore = "needs the SSDLite graph in models/cache (scripts/test.sh fetches it)"]
fn truncated_and_missing_pb() {
    let s = Scratch::new("pb");
    let out = run(&[
        "convert-tf".as_ref(),
        s.path("none.pb").as_os_str(),
        "--out".as_ref(),
        s.path("o.safetensors").as_os_str(),
    ]);
    assert_one_line_error(&out, &["none.pb"]);
    let Some(pb) = common::require(
        &common::repo().join("models/cache/frozen_inference_graph.pb"),
        "TF graph",
    ) else {
        return;
    };
    let bytes = std::fs::read(pb).unwrap();
    let cut = s.path("cut.pb");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = run(&[
        "convert-tf".as_ref(),
        cut.as_os_str(),
        "--out".as_ref(),
        s.path("o.safetensors").as_os_str(),
    ]);
    assert_one_line_error(&out, &["cut.pb"]);
    assert!(
        !s.path("o.safetensors").exists(),
        "nothing written from a truncated graph"
    );
}

/// Rewrite the converted model with one tensor changed by `edit` (None = removed).
fn edited_model(
    dst: &Path,
    name: &str,
    edit: impl Fn(&candle_core::Tensor) -> Option<candle_core::Tensor>,
) {
    let src = common::repo().join("models/ssdlite_ped.safetensors");
    let mut map = candle_core::safetensors::load(&src, &candle_core::Device::Cpu).expect("model");
    let t = map.remove(name).expect("tensor present");
    if let Some(new) = edit(&t) {
        map.insert(name.to_string(), new);
    }
    candle_core::safetensors::save(&map, dst).expect("save");
}

#[test]
#[ignore = "needs models/ssdlite_ped.safetensors (scripts/test.sh makes it)"]
fn bad_weights_files() {
    if common::model_path().is_none() {
        return;
    }
    let s = Scratch::new("weights");
    let img = s.path("x.png");
    std::fs::write(&img, png_bytes(64, 64)).unwrap();
    let with = |w: &Path| {
        run(&[
            "detect".as_ref(),
            "--weights".as_ref(),
            w.as_os_str(),
            "--json".as_ref(),
            s.path("o.json").as_os_str(),
            img.as_os_str(),
        ])
    };
    let key = "FeatureExtractor.MobilenetV2.expanded_conv_3.project.weight";
    let missing = s.path("missing.safetensors");
    edited_model(&missing, key, |_| None);
    assert_one_line_error(&with(&missing), &["missing.safetensors", key]);

    let shaped = s.path("shape.safetensors");
    edited_model(&shaped, key, |t| Some(t.narrow(0, 0, 8).unwrap()));
    assert_one_line_error(&with(&shaped), &["shape.safetensors", key, "shape"]);

    let nan = s.path("nan.safetensors");
    edited_model(&nan, key, |t| Some(t.affine(0.0, f64::NAN).unwrap()));
    assert_one_line_error(&with(&nan), &["nan.safetensors", key, "NaN"]);

    let trunc = s.path("trunc.safetensors");
    let bytes = std::fs::read(common::repo().join("models/ssdlite_ped.safetensors")).unwrap();
    std::fs::write(&trunc, &bytes[..bytes.len() / 3]).unwrap();
    assert_one_line_error(&with(&trunc), &["trunc.safetensors"]);

    assert_one_line_error(
        &with(&s.path("absent.safetensors")),
        &["absent.safetensors", "not found"],
    );
}

/// The narrow torchvision fixture with one tensor edited (None = removed), as safetensors.
fn edited_rcnn(
    dst: &Path,
    name: &str,
    edit: impl Fn(&candle_core::Tensor) -> Option<candle_core::Tensor>,
) {
    let src = common::repo().join("tests/fixtures/maskrcnn_tv/narrow_weights.safetensors");
    let mut map = candle_core::safetensors::load(&src, &candle_core::Device::Cpu).expect("fixture");
    let t = map.remove(name).expect("tensor present");
    if let Some(new) = edit(&t) {
        map.insert(name.to_string(), new);
    }
    candle_core::safetensors::save(&map, dst).expect("save");
}

#[test]
fn bad_maskrcnn_weights() {
    let s = Scratch::new("rcnn");
    let img = s.path("x.png");
    std::fs::write(&img, png_bytes(64, 48)).unwrap();
    let with = |w: &Path| {
        run(&[
            "detect".as_ref(),
            "--model".as_ref(),
            "maskrcnn-r50-fpn".as_ref(),
            "--weights".as_ref(),
            w.as_os_str(),
            "--json".as_ref(),
            s.path("o.json").as_os_str(),
            img.as_os_str(),
        ])
    };
    let key = "backbone.body.layer2.0.conv2.weight";
    let missing = s.path("missing.safetensors");
    edited_rcnn(&missing, key, |_| None);
    assert_one_line_error(
        &with(&missing),
        &["missing.safetensors", "missing tensors", key],
    );

    let shaped = s.path("shape.safetensors");
    edited_rcnn(&shaped, "roi_heads.box_head.fc7.weight", |t| {
        Some(t.narrow(0, 0, 10).unwrap())
    });
    assert_one_line_error(
        &with(&shaped),
        &[
            "shape.safetensors",
            "wrong shapes",
            "roi_heads.box_head.fc7.weight",
        ],
    );

    let extra = s.path("extra.safetensors");
    edited_rcnn(&extra, "rpn.head.cls_logits.bias", |t| Some(t.clone()));
    let mut map = candle_core::safetensors::load(&extra, &candle_core::Device::Cpu).unwrap();
    map.insert(
        "rpn.head.surprise".into(),
        candle_core::Tensor::zeros(3, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&map, &extra).unwrap();
    assert_one_line_error(
        &with(&extra),
        &[
            "extra.safetensors",
            "unexpected tensors",
            "rpn.head.surprise",
        ],
    );

    let nan = s.path("nan.safetensors");
    edited_rcnn(&nan, "backbone.fpn.layer_blocks.1.0.weight", |t| {
        Some(t.affine(0.0, f64::NAN).unwrap())
    });
    assert_one_line_error(
        &with(&nan),
        &[
            "nan.safetensors",
            "backbone.fpn.layer_blocks.1.0.weight",
            "NaN",
        ],
    );

    // torch .pth (zip pickle): truncated, and an old-name file with a tensor missing.
    let pth = std::fs::read(
        common::repo().join("tests/fixtures/maskrcnn_tv/narrow_weights_oldnames.pth"),
    )
    .unwrap();
    let cut = s.path("cut.pth");
    std::fs::write(&cut, &pth[..pth.len() / 2]).unwrap();
    assert_one_line_error(&with(&cut), &["cut.pth"]);
    let trunc = s.path("trunc.safetensors");
    let st =
        std::fs::read(common::repo().join("tests/fixtures/maskrcnn_tv/narrow_weights.safetensors"))
            .unwrap();
    std::fs::write(&trunc, &st[..st.len() / 2]).unwrap();
    assert_one_line_error(&with(&trunc), &["trunc.safetensors"]);
    assert_one_line_error(&with(&s.path("absent.pth")), &["absent.pth"]);
}
