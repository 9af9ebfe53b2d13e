//! Small valid inputs for every parser of untrusted bytes, built at test time (nothing read from
//! `../shared`, no third-party data), each with the offsets of its length fields so the mutator
//! can inflate them.

use std::collections::BTreeMap;

/// How a length field is encoded.
#[derive(Clone, Copy, Debug)]
pub enum Width {
    LeU16,
    LeU32,
    LeU64,
    BeU16,
    BeU32,
    /// A protobuf varint (its current encoding is rewritten in place, padded to its length).
    Varint,
}

/// A seed input and where its length fields are.
#[derive(Clone, Debug)]
pub struct Seed {
    pub bytes: Vec<u8>,
    pub lens: Vec<(usize, Width)>,
}

impl Seed {
    pub fn plain(bytes: Vec<u8>) -> Self {
        Seed {
            bytes,
            lens: Vec::new(),
        }
    }
}

/// IEEE CRC-32 (zip, PNG).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A zip of stored (uncompressed) entries, as `torch.save` writes them; returns the bytes and,
/// per entry, the offset of its data and the offsets of the archive's length fields.
pub fn stored_zip(entries: &[(&str, &[u8])]) -> (Vec<u8>, Vec<usize>, Vec<(usize, Width)>) {
    let mut out = Vec::new();
    let mut central = Vec::new();
    let mut data_at = Vec::new();
    let mut lens = Vec::new();
    for (name, data) in entries {
        let crc = crc32(data);
        let local = out.len();
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // version, flags, stored, time
        out.extend_from_slice(&crc.to_le_bytes());
        lens.push((out.len(), Width::LeU32));
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        lens.push((out.len(), Width::LeU32));
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        lens.push((out.len(), Width::LeU16));
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        data_at.push(out.len());
        out.extend_from_slice(data);
        central.push((name, crc, data.len(), local));
    }
    let cd_start = out.len();
    for (name, crc, len, local) in &central {
        out.extend_from_slice(b"PK\x01\x02");
        out.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&crc.to_le_bytes());
        lens.push((out.len(), Width::LeU32));
        out.extend_from_slice(&(*len as u32).to_le_bytes());
        lens.push((out.len(), Width::LeU32));
        out.extend_from_slice(&(*len as u32).to_le_bytes());
        lens.push((out.len(), Width::LeU16));
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0; 12]); // extra, comment, disk, attributes
        lens.push((out.len(), Width::LeU32));
        out.extend_from_slice(&(*local as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
    }
    let cd_len = out.len() - cd_start;
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    lens.push((out.len(), Width::LeU16));
    out.extend_from_slice(&(central.len() as u16).to_le_bytes());
    lens.push((out.len(), Width::LeU16));
    out.extend_from_slice(&(central.len() as u16).to_le_bytes());
    lens.push((out.len(), Width::LeU32));
    out.extend_from_slice(&(cd_len as u32).to_le_bytes());
    lens.push((out.len(), Width::LeU32));
    out.extend_from_slice(&(cd_start as u32).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    (out, data_at, lens)
}

/// One tensor of a pickled state dict.
pub struct PickledTensor<'a> {
    pub name: &'a str,
    pub storage: &'a str,
    pub key: &'a str,
    pub numel: usize,
    pub offset: usize,
    pub shape: &'a [usize],
}

/// A protocol-2 pickle of an `OrderedDict` of tensors in the opcodes `torch.save` uses, with
/// the offsets of its string-length and integer fields.
pub fn state_dict_pickle(tensors: &[PickledTensor]) -> Seed {
    let mut p = Seed::plain(b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(".to_vec());
    let unicode = |p: &mut Seed, s: &str| {
        p.bytes.push(b'X');
        p.lens.push((p.bytes.len(), Width::LeU32));
        p.bytes.extend_from_slice(&(s.len() as u32).to_le_bytes());
        p.bytes.extend_from_slice(s.as_bytes());
    };
    let int = |p: &mut Seed, v: usize| {
        p.bytes.push(b'J');
        p.lens.push((p.bytes.len(), Width::LeU32));
        p.bytes.extend_from_slice(&(v as u32).to_le_bytes());
    };
    for (i, t) in tensors.iter().enumerate() {
        unicode(&mut p, t.name);
        p.bytes
            .extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        // Persistent id: ('storage', torch.FloatStorage, key, 'cpu', numel).
        p.bytes.push(b'(');
        unicode(&mut p, "storage");
        p.bytes
            .extend_from_slice(format!("ctorch\n{}\n", t.storage).as_bytes());
        unicode(&mut p, t.key);
        unicode(&mut p, "cpu");
        int(&mut p, t.numel);
        p.bytes.extend_from_slice(b"tQ");
        int(&mut p, t.offset);
        p.bytes.push(b'(');
        for &d in t.shape {
            int(&mut p, d);
        }
        p.bytes.extend_from_slice(b"t(");
        let mut stride = 1;
        let mut strides = vec![0; t.shape.len()];
        for (k, &d) in t.shape.iter().enumerate().rev() {
            strides[k] = stride;
            stride *= d;
        }
        for s in strides {
            int(&mut p, s);
        }
        p.bytes
            .extend_from_slice(b"t\x89ccollections\nOrderedDict\n)RtR");
        // Memoise and fetch back, as the pickler does for shared objects.
        p.bytes.extend_from_slice(&[b'q', (i + 2) as u8]);
    }
    p.bytes.extend_from_slice(b"u.");
    p
}

/// A `.pth` of small f32 tensors: `(name, shape)`, values `0.5 * k`.
pub fn pth(tensors: &[(&str, &[usize])]) -> Seed {
    let keys: Vec<String> = (0..tensors.len()).map(|i| i.to_string()).collect();
    let pickled: Vec<PickledTensor> = tensors
        .iter()
        .zip(&keys)
        .map(|((name, shape), key)| PickledTensor {
            name,
            storage: "FloatStorage",
            key,
            numel: shape.iter().product(),
            offset: 0,
            shape,
        })
        .collect();
    let pkl = state_dict_pickle(&pickled);
    pth_from_pickle(&pkl, tensors)
}

/// [`pth`] around a given pickle (data entries sized from `tensors`).
pub fn pth_from_pickle(pkl: &Seed, tensors: &[(&str, &[usize])]) -> Seed {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, shape)| {
            (0..shape.iter().product::<usize>())
                .flat_map(|k| (0.5 * k as f32).to_le_bytes())
                .collect()
        })
        .collect();
    let names: Vec<String> = (0..tensors.len())
        .map(|i| format!("archive/data/{i}"))
        .collect();
    let mut entries: Vec<(&str, &[u8])> = vec![("archive/data.pkl", &pkl.bytes)];
    for (n, d) in names.iter().zip(&data) {
        entries.push((n, d));
    }
    entries.push(("archive/version", b"3\n"));
    let (bytes, data_at, mut lens) = stored_zip(&entries);
    lens.extend(pkl.lens.iter().map(|&(o, w)| (o + data_at[0], w)));
    Seed { bytes, lens }
}

/// safetensors bytes of f32 tensors `(name, shape)`, values `0.25 * k`, header offsets noted.
pub fn safetensors(tensors: &[(&str, &[usize])]) -> Seed {
    let mut header = BTreeMap::new();
    let mut data = Vec::new();
    for (name, shape) in tensors {
        let n: usize = shape.iter().product();
        let start = data.len();
        data.extend((0..n).flat_map(|k| (0.25 * k as f32).to_le_bytes()));
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut head = serde_json::to_vec(&header).expect("json");
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let mut bytes = (head.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&head);
    bytes.extend_from_slice(&data);
    Seed {
        bytes,
        lens: vec![(0, Width::LeU64)],
    }
}

/// A PNG of `w x h` RGB (or gray) pixels, with its IHDR size and chunk lengths noted.
pub fn png(w: u32, h: u32, gray: bool) -> Seed {
    let mut bytes = Vec::new();
    let mut cur = std::io::Cursor::new(&mut bytes);
    if gray {
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([((x + y) % 30) as u8]))
            .write_to(&mut cur, image::ImageFormat::Png)
    } else {
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 3) as u8, 90]))
            .write_to(&mut cur, image::ImageFormat::Png)
    }
    .expect("png");
    // Chunks after the 8-byte signature: length (BE u32), type, data, crc.
    let mut lens = vec![(16, Width::BeU32), (20, Width::BeU32)];
    let mut at = 8;
    while at + 8 <= bytes.len() {
        lens.push((at, Width::BeU32));
        let n = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        at += 12 + n as usize;
    }
    Seed { bytes, lens }
}

/// A JPEG of `w x h` pixels, with its frame size and segment lengths noted.
pub fn jpeg(w: u32, h: u32) -> Seed {
    let mut bytes = Vec::new();
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 5) as u8, (y * 9) as u8, 60]))
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Jpeg,
        )
        .expect("jpeg");
    let mut lens = Vec::new();
    let mut at = 2;
    while at + 4 <= bytes.len() && bytes[at] == 0xFF {
        let marker = bytes[at + 1];
        lens.push((at + 2, Width::BeU16));
        if (0xC0..=0xC2).contains(&marker) {
            lens.push((at + 5, Width::BeU16)); // height
            lens.push((at + 7, Width::BeU16)); // width
        }
        if marker == 0xDA {
            break;
        }
        at += 2 + u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
    }
    Seed { bytes, lens }
}

/// Overwrite the frame size in a JPEG's SOF segment (the header a decoder allocates from).
pub fn jpeg_with_size(mut bytes: Vec<u8>, w: u16, h: u16) -> Vec<u8> {
    let sof = bytes
        .windows(2)
        .position(|m| m[0] == 0xFF && (0xC0..=0xC2).contains(&m[1]))
        .expect("SOF");
    bytes[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    bytes
}

/// A PNG whose header says `w x h` with no pixel data behind it (a decoder that trusts the
/// header allocates for `w x h` before noticing).
pub fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let chunk = |t: &[u8], d: &[u8]| {
        let mut c = (d.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(t);
        c.extend_from_slice(d);
        let mut td = t.to_vec();
        td.extend_from_slice(d);
        c.extend_from_slice(&crc32(&td).to_be_bytes());
        c
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(chunk(b"IHDR", &ihdr));
    out.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    out.extend(chunk(b"IEND", &[]));
    out
}

/// A tiny SSD-shaped frozen graph: `convs` Conv2D nodes under `FeatureExtractor/`, each with a
/// 3x3 weight `Const` and a `BiasAdd`, as protobuf bytes with the varint lengths noted.
pub fn graphdef(convs: usize) -> Seed {
    use pedcache::convert::graphdef::{
        attr_value::Value, tensor_shape_proto::Dim, AttrValue, GraphDef, ListValue, NodeDef,
        TensorProto, TensorShapeProto, DT_FLOAT,
    };
    use prost::Message;
    let konst = |name: String, shape: &[i64], values: Vec<f32>| NodeDef {
        name,
        op: "Const".into(),
        attr: [(
            "value".to_string(),
            AttrValue {
                value: Some(Value::Tensor(TensorProto {
                    dtype: DT_FLOAT,
                    tensor_shape: Some(TensorShapeProto {
                        dim: shape
                            .iter()
                            .map(|&size| Dim {
                                size,
                                name: String::new(),
                            })
                            .collect(),
                        unknown_rank: false,
                    }),
                    tensor_content: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    ..Default::default()
                })),
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    let attr = |v: Value| AttrValue { value: Some(v) };
    let mut g = GraphDef::default();
    g.node.push(NodeDef {
        name: "image".into(),
        op: "Placeholder".into(),
        ..Default::default()
    });
    let mut prev = "image".to_string();
    for i in 0..convs {
        let s = format!("FeatureExtractor/MobilenetV2/c{i}");
        g.node.push(konst(
            format!("{s}/weights"),
            &[3, 3, 2, 2],
            (0..36).map(|k| 0.01 * k as f32).collect(),
        ));
        g.node
            .push(konst(format!("{s}/biases"), &[2], vec![0.1, -0.2]));
        g.node.push(NodeDef {
            name: format!("{s}/Conv2D"),
            op: "Conv2D".into(),
            input: vec![prev.clone(), format!("{s}/weights")],
            attr: [
                (
                    "strides".to_string(),
                    attr(Value::List(ListValue {
                        i: vec![1, 1, 1, 1],
                        ..Default::default()
                    })),
                ),
                ("padding".to_string(), attr(Value::S(b"SAME".to_vec()))),
                ("data_format".to_string(), attr(Value::S(b"NHWC".to_vec()))),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        });
        g.node.push(NodeDef {
            name: format!("{s}/BiasAdd"),
            op: "BiasAdd".into(),
            input: vec![format!("{s}/Conv2D"), format!("{s}/biases")],
            ..Default::default()
        });
        prev = format!("{s}/BiasAdd");
    }
    let bytes = g.encode_to_vec();
    // Every length-delimited field's length varint: walk the top level (node = field 1).
    let mut lens = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        at += 1; // tag 0x0a
        lens.push((at, Width::Varint));
        let (n, used) = varint(&bytes[at..]);
        at += used + n as usize;
    }
    Seed { bytes, lens }
}

/// A protobuf varint at the start of `b`: (value, bytes used).
pub fn varint(b: &[u8]) -> (u64, usize) {
    let mut v = 0u64;
    for (i, &x) in b.iter().enumerate().take(10) {
        v |= ((x & 0x7f) as u64) << (7 * i);
        if x & 0x80 == 0 {
            return (v, i + 1);
        }
    }
    (v, b.len().min(10))
}

/// A node scenario in the RON the bundled ones use.
/// A node configuration (`NodeConfig`): every key, with a calibration folder the repository
/// holds.
pub fn node_ron() -> Seed {
    Seed::plain(
        br#"(
    model: "ssdlite-ped",
    device: "cpu",
    calib: "calib/ssdlite-ped-vtest",
    deadline_ms: 100.0,
    policy: exit,
    queue: 2,
    score_thresh: 0.5,
    retrain: true,
)
"#
        .to_vec(),
    )
}

/// A replay scenario: the node's keys plus what replaying adds; its source is a folder every
/// checkout has (`tests/`), so the seed parses without the demo sequence.
pub fn scenario_ron() -> Seed {
    Seed::plain(
        br#"(
    model: "ssdlite-ped",
    device: "cpu",
    calib: "calib/ssdlite-ped-vtest",
    sources: ["tests"],
    fps: 17.0,
    deadline_ms: 100.0,
    policy: exit,
    queue: 2,
    score_thresh: 0.5,
    gt_min_pixels: 2000,
    limit: 10,
    seq_frames: (0, 30),
    seq: ["demo_vtest"],
    not_seq: [],
    retrain: false,
)
"#
        .to_vec(),
    )
}
