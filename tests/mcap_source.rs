//! ROS 2 recordings (MCAP, CDR) as a replay source. The recordings are written here at test time
//! with the `mcap` crate, from frames the test makes or from `../shared/data` (never committed).

mod common;

use pedcache::frame::RgbFrame;
use pedcache::sim::source::{read_frames, select_frames, FrameRef, Selection};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const COMPRESSED: &str = "sensor_msgs/msg/CompressedImage";
const RAW: &str = "sensor_msgs/msg/Image";

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pedcache-mcap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// CDR little-endian, fields aligned to their size from the end of the 4-byte header.
struct Cdr(Vec<u8>);

impl Cdr {
    fn new() -> Self {
        Cdr(vec![0, 1, 0, 0])
    }
    fn u32(mut self, v: u32) -> Self {
        while !(self.0.len() - 4).is_multiple_of(4) {
            self.0.push(0);
        }
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn string(self, s: &str) -> Self {
        let mut c = self.u32(s.len() as u32 + 1);
        c.0.extend_from_slice(s.as_bytes());
        c.0.push(0);
        c
    }
    fn bytes(self, b: &[u8]) -> Self {
        let mut c = self.u32(b.len() as u32);
        c.0.extend_from_slice(b);
        c
    }
    fn header(self, stamp_s: u32) -> Self {
        self.u32(stamp_s).u32(500).string("camera")
    }
}

fn compressed(stamp_s: u32, format: &str, data: &[u8]) -> Vec<u8> {
    Cdr::new().header(stamp_s).string(format).bytes(data).0
}

fn raw_bgr8(stamp_s: u32, f: &RgbFrame) -> Vec<u8> {
    let bgr: Vec<u8> = f
        .data
        .chunks_exact(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    Cdr::new()
        .header(stamp_s)
        .u32(f.height as u32)
        .u32(f.width as u32)
        .string("bgr8")
        .u8(0)
        .u32(f.width as u32 * 3)
        .bytes(&bgr)
        .0
}

/// Write `messages` (topic, schema name, CDR body) in order, one channel per topic.
fn write_mcap(path: &Path, messages: &[(&str, &str, Vec<u8>)]) {
    let mut w = mcap::Writer::new(std::io::BufWriter::new(
        std::fs::File::create(path).unwrap(),
    ))
    .unwrap();
    let mut channels: BTreeMap<String, u16> = BTreeMap::new();
    for (i, (topic, schema, body)) in messages.iter().enumerate() {
        let id = match channels.get(*topic) {
            Some(&id) => id,
            None => {
                let s = w.add_schema(schema, "ros2msg", b"").unwrap();
                let id = w.add_channel(s, topic, "cdr", &BTreeMap::new()).unwrap();
                channels.insert(topic.to_string(), id);
                id
            }
        };
        let header = mcap::records::MessageHeader {
            channel_id: id,
            sequence: i as u32,
            log_time: i as u64 * 58_800_000,
            publish_time: i as u64 * 58_800_000,
        };
        w.write_to_known_channel(&header, body).unwrap();
    }
    w.finish().unwrap();
}

fn png(f: &RgbFrame) -> Vec<u8> {
    let img = image::RgbImage::from_raw(f.width as u32, f.height as u32, f.data.clone()).unwrap();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn made_frame(k: u8) -> RgbFrame {
    let (w, h) = (40, 24);
    let data = (0..w * h * 3)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(k))
        .collect();
    RgbFrame::new(w, h, data).unwrap()
}

fn frames_of(source: &Path, topic: Option<&str>) -> pedcache::Result<Vec<FrameRef>> {
    let sel = Selection {
        topic: topic.map(str::to_string),
        ..Selection::default()
    };
    select_frames(&[source.to_path_buf()], &sel)
}

#[test]
fn compressed_and_raw_messages_decode_and_a_corrupt_one_is_that_frame_only() {
    let dir = tmpdir("made");
    let frames: Vec<RgbFrame> = (0..5).map(made_frame).collect();
    let mut msgs: Vec<(&str, &str, Vec<u8>)> = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let body = if i == 2 {
            compressed(i as u32, "png", b"\x89PNG\r\n\x1a\n truncated")
        } else {
            compressed(i as u32, "png", &png(f))
        };
        msgs.push(("/camera/image/compressed", COMPRESSED, body));
        msgs.push(("/camera/image_raw", RAW, raw_bgr8(i as u32, f)));
        msgs.push(("/rosout", "rcl_interfaces/msg/Log", vec![0, 1, 0, 0]));
    }
    let rec = dir.join("drive.mcap");
    write_mcap(&rec, &msgs);

    // Two image topics: the caller must choose; the error lists them.
    let e = frames_of(&rec, None).unwrap_err().to_string();
    assert!(
        e.contains("2 image topics") && e.contains("/camera/image/compressed, /camera/image_raw"),
        "{e}"
    );
    assert!(!e.contains('\n'), "one line: {e}");
    let e = frames_of(&rec, Some("/rosout")).unwrap_err().to_string();
    assert!(e.contains("not an image topic"), "{e}");
    let e = frames_of(&rec, Some("/nope")).unwrap_err().to_string();
    assert!(e.contains("no topic /nope"), "{e}");

    let refs = frames_of(&rec, Some("/camera/image_raw")).unwrap();
    assert_eq!(refs.len(), 5);
    for ((_, got), want) in read_frames(&refs).zip(&frames) {
        assert_eq!(&got.unwrap(), want, "bgr8 comes back as the frame's RGB");
    }
    let refs = frames_of(&rec, Some("/camera/image/compressed")).unwrap();
    let decoded: Vec<_> = read_frames(&refs).map(|(_, r)| r).collect();
    for (i, (got, want)) in decoded.iter().zip(&frames).enumerate() {
        match got {
            Ok(f) => assert_eq!(f, want, "frame {i}"),
            Err(e) => {
                assert_eq!(i, 2, "only the corrupt message fails: {e}");
                let e = e.to_string();
                assert!(e.contains("drive.mcap") && e.contains("message 6"), "{e}");
            }
        }
    }
    assert_eq!(decoded.iter().filter(|r| r.is_err()).count(), 1);
}

#[test]
fn a_truncated_recording_replays_what_it_holds() {
    let dir = tmpdir("cut");
    let frames: Vec<RgbFrame> = (0..6).map(made_frame).collect();
    let msgs: Vec<_> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| ("/cam", RAW, raw_bgr8(i as u32, f)))
        .collect();
    let rec = dir.join("full.mcap");
    write_mcap(&rec, &msgs);
    let bytes = std::fs::read(&rec).unwrap();
    for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 9] {
        let p = dir.join(format!("cut{cut}.mcap"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        match frames_of(&p, None) {
            Err(e) => assert!(e.to_string().contains(&format!("cut{cut}.mcap")), "{e}"),
            Ok(refs) => {
                for ((_, got), want) in read_frames(&refs).zip(&frames) {
                    if let Ok(f) = got {
                        assert_eq!(&f, want);
                    }
                }
            }
        }
    }
}

#[test]
#[ignore = "needs ../shared/data (Cityscapes snippets) and models/ssdlite_ped.safetensors"]
fn cityscapes_frames_as_compressed_images_replay_like_the_folder() {
    let root = common::data_root().join("cityscapes-seq/leftImg8bit_sequence");
    let Some(root) = common::require(&root, "shared Cityscapes snippets") else {
        return;
    };
    common::model_path();
    let folder = frames_of(&root, None).unwrap();
    assert_eq!(folder.len(), 90);
    let dir = tmpdir("cityscapes");
    let msgs: Vec<_> = folder
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let jpeg = std::fs::read(f.path()).unwrap();
            (
                "/camera/image/compressed",
                COMPRESSED,
                compressed(i as u32, "jpeg", &jpeg),
            )
        })
        .collect();
    let rec = dir.join("cityscapes.mcap");
    write_mcap(&rec, &msgs);
    let recorded = frames_of(&rec, None).unwrap();
    assert_eq!(recorded.len(), 90);
    for ((_, a), (_, b)) in read_frames(&folder).zip(read_frames(&recorded)) {
        assert_eq!(a.unwrap(), b.unwrap());
    }
    // The same replay from both: the same detections, frame by frame.
    let detections = |source: &Path, name: &str| {
        let alerts = dir.join(format!("{name}.jsonl"));
        let out = common::pedcache()
            .args(["replay", "--model", "ssdlite-ped", "--no-cache"])
            .args(["--max-speed", "--score-thresh", "0.25", "--source"])
            .arg(source)
            .arg("--report")
            .arg(dir.join(format!("{name}.json")))
            .arg("--alerts")
            .arg(&alerts)
            .output()
            .unwrap();
        common::assert_success(&out, "replay");
        std::fs::read_to_string(&alerts)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|a| a["type"] == "Detections")
            .map(|a| (a["frame"].clone(), a["boxes"].clone(), a["scores"].clone()))
            .collect::<Vec<_>>()
    };
    let from_folder = detections(&root, "folder");
    let from_mcap = detections(&rec, "mcap");
    assert_eq!(from_folder.len(), 90);
    assert_eq!(from_folder, from_mcap);

    // A corrupt message is one bad frame; the replay goes on.
    let mut msgs: Vec<_> = msgs.into_iter().take(10).collect();
    let half = msgs[3].2.len() / 2;
    msgs[3].2.truncate(half);
    let cut = dir.join("corrupt.mcap");
    write_mcap(&cut, &msgs);
    let from_cut = detections(&cut, "corrupt");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("corrupt.json")).unwrap()).unwrap();
    assert_eq!(report["bad_frames"], 1, "{report}");
    assert_eq!(report["processed"], 9);
    let frames: Vec<_> = from_cut.iter().map(|d| d.0.as_u64().unwrap()).collect();
    assert_eq!(frames, [0, 1, 2, 4, 5, 6, 7, 8, 9]);
    assert_eq!(from_cut[3..], from_folder[4..10]);
}
