//! Fuzzing every parser of untrusted bytes (README "Input limits"): `.pth` (zip and pickle),
//! GraphDef, safetensors, PNG and JPEG through the project's decoder, label maps, the node RON,
//! `exits.ron` (against a detector) with `heads.safetensors`, the raw video frame stream, and ROS 2
//! MCAP recordings.
//!
//! Each parser gets its seeds and `PEDCACHE_FUZZ_INPUTS` mutants (1000 by default: the bounded
//! CI run); the long run is `PEDCACHE_FUZZ_INPUTS=100000 cargo test --release --test fuzz`.
//! Every input must end in `Ok` or a one-line error (naming the file where the parser is given
//! one), without a panic, within its allocation limit and in bounded time. Inputs that once
//! broke that contract are kept under `tests/fixtures/fuzz/` and rerun by `regressions`.

mod fuzzing;

use candle_core::Device;
use fuzzing::seeds::{self, Seed};
use fuzzing::{campaign, check_fixture, inputs_per_parser, Parse};
use pedcache::cache::calibration::{ExitEntry, ExitsFile};
use pedcache::cache::head::{CacheHead, ConvDef, HeadArch};
use pedcache::detect::maskrcnn::MaskRcnn;
use std::path::Path;
use std::sync::OnceLock;

#[global_allocator]
static ALLOC: fuzzing::Counting = fuzzing::Counting;

const MIB: usize = 1 << 20;

/// Parsers of structured bytes: bookkeeping per input byte (decoded messages, pickle values,
/// JSON/RON nodes) of at most 128 bytes, plus a fixed allowance.
fn structured(len: usize) -> usize {
    128 * len + 16 * MIB
}
/// The image decoder's documented bound (`frame::MAX_DECODE_ALLOC` plus the RGB conversion).
fn images(len: usize) -> usize {
    512 * MIB + 2 * len
}
/// MCAP recordings: the structured bound plus one record being decompressed (at most
/// `RECORD_LIMIT`) and zstd's largest default window (128 MiB) for a chunk's frame.
fn recordings(len: usize) -> usize {
    structured(len) + pedcache::sim::mcap::RECORD_LIMIT + 128 * MIB
}
/// GraphDefs: the structured bound plus the fills a graph may expand (`MAX_FILL_ELEMENTS`
/// floats, decoded and folded).
fn graphs(len: usize) -> usize {
    256 * len + 3 * 4 * pedcache::convert::tf_ssdlite::MAX_FILL_ELEMENTS + 16 * MIB
}

// ---------- targets ----------

fn pth(b: &[u8]) -> Result<(), String> {
    pedcache::detect::weights::pth::read_pth_from(std::io::Cursor::new(b), b.len() as u64)
        .map(|_| ())
}

fn safetensors(b: &[u8]) -> Result<(), String> {
    pedcache::detect::weights::parse_safetensors(b, &Device::Cpu)
        .map(|_| ())
        .map_err(|e| e.one_line())
}

fn graphdef(b: &[u8]) -> Result<(), String> {
    pedcache::convert::convert_graph_bytes(b, "fuzz.pb", false)
        .map(|_| ())
        .map_err(|e| e.one_line())
}

fn image_rgb(b: &[u8]) -> Result<(), String> {
    pedcache::frame::decode_rgb(b)
        .map(|_| ())
        .map_err(|e| e.one_line())
}

fn label_map(b: &[u8]) -> Result<(), String> {
    pedcache::frame::decode_luma(b)
        .map(|_| ())
        .map_err(|e| e.one_line())
}

fn node_ron(b: &[u8]) -> Result<(), String> {
    pedcache::node::config::NodeConfig::parse(&String::from_utf8_lossy(b), "fuzz.ron")
        .map(|_| ())
        .map_err(|e| e.one_line())
}

fn scenario_ron(b: &[u8]) -> Result<(), String> {
    pedcache::sim::scenario::Scenario::parse(&String::from_utf8_lossy(b), "scenario.ron")
        .map(|_| ())
        .map_err(|e| e.one_line())
}

fn exits_ron(b: &[u8]) -> Result<(), String> {
    let f = pedcache::cache::files::parse_exits(
        &String::from_utf8_lossy(b),
        Path::new("fuzz/exits.ron"),
    )
    .map_err(|e| e.one_line())?;
    f.check_detector(detector()).map_err(|e| e.one_line())
}

fn heads(b: &[u8]) -> Result<(), String> {
    pedcache::cache::files::load_heads(
        &exits_file(),
        b,
        Path::new("fuzz/heads.safetensors"),
        &Device::Cpu,
    )
    .map(|_| ())
    .map_err(|e| e.one_line())
}

/// The raw rgb24 stream: the first two bytes choose the frame size (1..=64 a side), the rest
/// is the stream, read to its end.
fn video(b: &[u8]) -> Result<(), String> {
    let (w, h) = match b {
        [a, c, ..] => (1 + *a as usize % 64, 1 + *c as usize % 64),
        _ => (1, 1),
    };
    let rest = b.get(2..).unwrap_or(&[]);
    let frames =
        pedcache::sim::video::RawFrames::new(rest, w, h, "fuzz.avi").map_err(|e| e.one_line())?;
    for (_, f) in frames {
        f.map_err(|e| e.one_line())?;
    }
    Ok(())
}

/// A ROS 2 recording: the image topic found, then every message on it decoded. Bytes go
/// through a file, as the source reads them.
fn mcap_recording(b: &[u8]) -> Result<(), String> {
    use pedcache::sim::mcap::{probe, McapFrames};
    let dir = std::env::temp_dir().join(format!("pedcache-fuzz-mcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join("fuzz.mcap");
    std::fs::write(&path, b).map_err(|e| e.to_string())?;
    let (topic, n) = probe(&path, None).map_err(|e| e.one_line())?;
    let mut first_error = None;
    for m in McapFrames::open(&path, &topic)
        .map_err(|e| e.one_line())?
        .take(n)
    {
        if let Err(e) = m {
            first_error.get_or_insert(e.one_line());
        }
    }
    first_error.map_or(Ok(()), Err)
}

// ---------- seeds ----------

/// A Mask R-CNN small enough to build in milliseconds: `exits.ron` is checked against its
/// stage names and channel counts, which is all the check reads.
fn detector() -> &'static MaskRcnn {
    static DET: OnceLock<MaskRcnn> = OnceLock::new();
    DET.get_or_init(|| {
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
        let sd = state_dict(&arch, Variant::Hash, &Device::Cpu).expect("stand-in weights");
        MaskRcnn::from_state_dict(&sd, arch, &Device::Cpu).expect("stand-in Mask R-CNN")
    })
}

fn arch() -> HeadArch {
    HeadArch {
        grid: 2,
        convs: vec![ConvDef {
            kernel: 1,
            stride: 1,
            out: 4,
        }],
        linears: vec![8],
        classes: 91,
    }
}

/// A valid `exits.ron` for [`detector`]: layer1 selected with a head, layer2 dropped.
fn exits_file() -> ExitsFile {
    let entry = |layer: &str, stage: usize, channels: usize, head: Option<HeadArch>| ExitEntry {
        layer: layer.into(),
        stage,
        channels,
        selected: head.is_some(),
        dropped: head.is_none().then(|| "near chance".into()),
        head,
        temperature: 1.5,
        threshold: 0.9,
        budget: 0.01,
        c1: 1000,
        c2: 100000,
    };
    ExitsFile {
        model: "maskrcnn-r50-fpn".into(),
        policy: pedcache::cache::ExitOn::Pedestrian,
        tolerance: 0.02,
        classes: 91,
        positive: 1,
        full_flops: 200000,
        exits: vec![
            entry("layer1", 0, 16, Some(arch())),
            entry("layer2", 1, 24, None),
        ],
        heads_sha256: None,
        source: None,
    }
}

fn exits_seeds() -> Vec<Seed> {
    let f = exits_file();
    let pretty = ron::ser::to_string_pretty(&f, ron::ser::PrettyConfig::default()).expect("ron");
    let compact = ron::ser::to_string(&f).expect("ron");
    vec![
        Seed::plain(pretty.into_bytes()),
        Seed::plain(compact.into_bytes()),
    ]
}

fn heads_seeds() -> Vec<Seed> {
    let head = CacheHead::new(arch(), 16, 7, &Device::Cpu).expect("head");
    let tensors = head.to_tensors("layer1");
    let bytes = safetensors::serialize(tensors.iter(), None).expect("serialize");
    vec![Seed {
        bytes,
        lens: vec![(0, seeds::Width::LeU64)],
    }]
}

fn pth_seeds() -> Vec<Seed> {
    vec![
        seeds::pth(&[("conv.weight", &[2, 3, 1, 1]), ("conv.bias", &[2])]),
        seeds::pth(&[("a", &[4]), ("b", &[]), ("c", &[1, 2, 2])]),
    ]
}

fn safetensors_seeds() -> Vec<Seed> {
    vec![
        seeds::safetensors(&[("w", &[2, 3]), ("b", &[3])]),
        seeds::safetensors(&[("x", &[]), ("y", &[0, 4]), ("z", &[5])]),
    ]
}

/// candle errors capture a backtrace when `RUST_BACKTRACE` is set, and resolving its symbols
/// the first time costs ~30 MB of debug info, once per process: an artefact of the environment,
/// not of a parser. `RUST_LIB_BACKTRACE=0` (which takes precedence for library backtraces, not
/// for panics) keeps it out of the measured peaks. Every test calls this before fuzzing.
fn quiet_backtraces() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var("RUST_LIB_BACKTRACE", "0"));
}

fn run(
    name: &str,
    seeds: &[Seed],
    parse: Parse,
    limit: fn(usize) -> usize,
    named: Option<&'static str>,
) {
    quiet_backtraces();
    let t = campaign(name, seeds, inputs_per_parser(), parse, limit, named);
    assert!(t.inputs >= inputs_per_parser(), "{name}: {t:?}");
    // The seeds are valid, so at least they parse: a campaign that only ever errors out would
    // not be exercising the parser.
    assert!(t.ok >= 1, "{name}: no input parsed ({t:?})");
}

#[test]
fn fuzz_pth_zip() {
    run("pth_zip", &pth_seeds(), pth, structured, None);
}

/// Mutations of the pickle inside an otherwise valid archive (re-zipped, so the CRC matches and
/// the pickle machine sees every mutant).
#[test]
fn fuzz_pth_pickle() {
    let tensors: &[(&str, &[usize])] = &[("conv.weight", &[2, 3, 1, 1]), ("conv.bias", &[2])];
    let pickles = vec![seeds::state_dict_pickle(&[
        seeds::PickledTensor {
            name: "conv.weight",
            storage: "FloatStorage",
            key: "0",
            numel: 6,
            offset: 0,
            shape: &[2, 3, 1, 1],
        },
        seeds::PickledTensor {
            name: "conv.bias",
            storage: "FloatStorage",
            key: "1",
            numel: 2,
            offset: 0,
            shape: &[2],
        },
    ])];
    // Mutate the pickle with the shared mutator, then wrap each mutant in a fresh archive.
    let mut rng = fuzzing::Rng(fuzzing::base_seed() ^ 0x91c1e);
    let mut wrapped: Vec<Seed> = vec![seeds::pth_from_pickle(&pickles[0], tensors)];
    for _ in 0..inputs_per_parser() {
        let m = fuzzing::mutate(&mut rng, &pickles[0], &pickles);
        wrapped.push(Seed::plain(
            seeds::pth_from_pickle(&Seed::plain(m), tensors).bytes,
        ));
    }
    // The wrapped mutants are the inputs themselves (no further mutation).
    quiet_backtraces();
    let t = campaign("pth_pickle", &wrapped, 0, pth, structured, None);
    assert!(t.inputs > inputs_per_parser() && t.ok >= 1, "{t:?}");
}

#[test]
fn fuzz_graphdef() {
    let s = vec![seeds::graphdef(1), seeds::graphdef(3)];
    run("graphdef", &s, graphdef, graphs, Some("fuzz.pb"));
}

#[test]
fn fuzz_safetensors() {
    run(
        "safetensors",
        &safetensors_seeds(),
        safetensors,
        structured,
        None,
    );
}

#[test]
fn fuzz_png() {
    let s = vec![seeds::png(16, 8, false), seeds::png(3, 5, false)];
    run("png", &s, image_rgb, images, None);
}

#[test]
fn fuzz_jpeg() {
    let s = vec![seeds::jpeg(16, 8), seeds::jpeg(9, 9)];
    run("jpeg", &s, image_rgb, images, None);
}

#[test]
fn fuzz_label_maps() {
    let s = vec![seeds::png(16, 8, true), seeds::png(5, 3, true)];
    run("label_map", &s, label_map, images, None);
}

#[test]
fn fuzz_node_ron() {
    run(
        "node_ron",
        &[seeds::node_ron()],
        node_ron,
        structured,
        Some("fuzz.ron"),
    );
}

#[test]
fn fuzz_scenario_ron() {
    run(
        "scenario_ron",
        &[seeds::scenario_ron()],
        scenario_ron,
        structured,
        Some("scenario.ron"),
    );
}

#[test]
fn fuzz_exits_ron() {
    run(
        "exits_ron",
        &exits_seeds(),
        exits_ron,
        structured,
        Some("exits.ron"),
    );
}

#[test]
fn fuzz_heads_safetensors() {
    run(
        "heads",
        &heads_seeds(),
        heads,
        structured,
        Some("heads.safetensors"),
    );
}

#[test]
fn fuzz_video_stream() {
    let frame = |w: u8, h: u8, n: usize| {
        let mut b = vec![w - 1, h - 1];
        b.extend((0..n * w as usize * h as usize * 3).map(|k| k as u8));
        Seed::plain(b)
    };
    run(
        "video",
        &[frame(4, 3, 2), frame(1, 1, 5)],
        video,
        structured,
        Some("fuzz.avi"),
    );
}

/// Recordings of two 4x3 frames (`sensor_msgs/msg/Image`, bgr8), chunked with zstd and not.
fn mcap_seeds() -> Vec<Seed> {
    let message = |k: u8| {
        let mut b = vec![0, 1, 0, 0];
        let u32 = |b: &mut Vec<u8>, v: u32| {
            while !(b.len() - 4).is_multiple_of(4) {
                b.push(0);
            }
            b.extend_from_slice(&v.to_le_bytes());
        };
        u32(&mut b, 1);
        u32(&mut b, 2);
        u32(&mut b, 4);
        b.extend_from_slice(b"cam\0");
        u32(&mut b, 3);
        u32(&mut b, 4);
        u32(&mut b, 5);
        b.extend_from_slice(b"bgr8\0");
        b.push(0);
        u32(&mut b, 12);
        u32(&mut b, 36);
        b.extend((0..36).map(|i| i as u8 ^ k));
        b
    };
    [Some(mcap::Compression::Zstd), None]
        .into_iter()
        .map(|compression| {
            let mut out = std::io::Cursor::new(Vec::new());
            let mut w = mcap::WriteOptions::new()
                .compression(compression)
                .create(&mut out)
                .unwrap();
            let s = w
                .add_schema("sensor_msgs/msg/Image", "ros2msg", b"")
                .unwrap();
            let c = w
                .add_channel(s, "/cam", "cdr", &Default::default())
                .unwrap();
            for k in 0..2u8 {
                let h = mcap::records::MessageHeader {
                    channel_id: c,
                    sequence: k as u32,
                    log_time: k as u64,
                    publish_time: k as u64,
                };
                w.write_to_known_channel(&h, &message(k)).unwrap();
            }
            w.finish().unwrap();
            drop(w);
            Seed::plain(out.into_inner())
        })
        .collect()
}

#[test]
fn fuzz_mcap_recording() {
    run(
        "mcap",
        &mcap_seeds(),
        mcap_recording,
        recordings,
        Some("fuzz.mcap"),
    );
}

/// Every input that once broke the contract, by parser (`tests/fixtures/fuzz/PARSER-*.bin`).
#[test]
fn regressions() {
    quiet_backtraces();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/fixtures/fuzz") {
        let path = entry.expect("entry").path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(String::from) else {
            continue;
        };
        if !name.ends_with(".bin") {
            continue;
        }
        let (parse, limit, named): (Parse, fn(usize) -> usize, Option<&'static str>) =
            match name.split('-').next().unwrap_or("") {
                "pth" => (pth, structured, None),
                "graphdef" => (graphdef, graphs, Some("fuzz.pb")),
                "safetensors" => (safetensors, structured, None),
                "png" | "jpeg" => (image_rgb, images, None),
                "labelmap" => (label_map, images, None),
                "noderon" => (node_ron, structured, Some("fuzz.ron")),
                "scenarioron" => (scenario_ron, structured, Some("scenario.ron")),
                "exitsron" => (exits_ron, structured, Some("exits.ron")),
                "heads" => (heads, structured, Some("heads.safetensors")),
                "video" => (video, structured, Some("fuzz.avi")),
                "mcap" => (mcap_recording, recordings, Some("fuzz.mcap")),
                other => panic!("{name}: unknown parser {other:?}"),
            };
        let input = std::fs::read(&path).expect("read");
        let peak = check_fixture(&name, input, parse, limit, named);
        eprintln!("fuzz regression {name}: refused, peak {peak} bytes");
        n += 1;
    }
    eprintln!("fuzz regressions: {n} inputs");
    assert!(n > 0, "no fixtures in {}", dir.display());
}
