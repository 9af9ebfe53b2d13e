//! Converter tests: hand-built GraphDefs through the whole conversion, malformed inputs, and the
//! real SSDLite graph from `models/fetch.sh`.

use super::graphdef::{
    attr_value::Value, tensor_shape_proto::Dim, AttrValue, GraphDef, ListValue, NodeDef,
    TensorProto, TensorShapeProto, DT_FLOAT,
};
use super::*;
use std::path::PathBuf;

// ---------- tiny GraphDef builder ----------

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn s_attr(v: &str) -> AttrValue {
    AttrValue {
        value: Some(Value::S(v.as_bytes().to_vec())),
    }
}

fn ints_attr(v: &[i64]) -> AttrValue {
    AttrValue {
        value: Some(Value::List(ListValue {
            i: v.to_vec(),
            ..Default::default()
        })),
    }
}

fn node(name: &str, op: &str, inputs: &[&str], attrs: Vec<(&str, AttrValue)>) -> NodeDef {
    NodeDef {
        name: name.into(),
        op: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        device: String::new(),
        attr: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

fn shape_proto(shape: &[usize]) -> Option<TensorShapeProto> {
    Some(TensorShapeProto {
        dim: shape
            .iter()
            .map(|&d| Dim {
                size: d as i64,
                name: String::new(),
            })
            .collect(),
        unknown_rank: false,
    })
}

/// A float `Const` using `tensor_content`, or `float_val` when `float_val` is set.
fn const_node(name: &str, shape: &[usize], data: &[f32], float_val: bool) -> NodeDef {
    let t = TensorProto {
        dtype: DT_FLOAT,
        tensor_shape: shape_proto(shape),
        tensor_content: if float_val { vec![] } else { f32_bytes(data) },
        float_val: if float_val { data.to_vec() } else { vec![] },
        ..Default::default()
    };
    node(
        name,
        "Const",
        &[],
        vec![
            (
                "value",
                AttrValue {
                    value: Some(Value::Tensor(t)),
                },
            ),
            (
                "dtype",
                AttrValue {
                    value: Some(Value::Type(DT_FLOAT)),
                },
            ),
        ],
    )
}

/// `Const name` + `Identity name/read`, like a frozen variable.
fn push_var(g: &mut Vec<NodeDef>, name: &str, shape: &[usize], data: &[f32], fv: bool) {
    g.push(const_node(name, shape, data, fv));
    g.push(node(&format!("{name}/read"), "Identity", &[name], vec![]));
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| lo + (self.next() + 1.0) * 0.5 * (hi - lo))
            .collect()
    }
}

#[derive(Clone, Copy)]
enum Post {
    Bn,
    Bias,
}

/// One conv of a test graph with its TF-layout parameters.
struct Spec {
    scope: &'static str,
    depthwise: bool,
    k: usize,
    cin: usize,
    /// out channels (Conv2D) or channel multiplier (depthwise)
    last: usize,
    stride: usize,
    post: Post,
    w: Vec<f32>,
    // BN: gamma, beta, mean, var; BiasAdd: bias in p[0]
    p: Vec<Vec<f32>>,
}

impl Spec {
    #[allow(clippy::too_many_arguments)]
    fn new(
        rng: &mut Rng,
        scope: &'static str,
        depthwise: bool,
        k: usize,
        cin: usize,
        last: usize,
        stride: usize,
        post: Post,
    ) -> Self {
        let cout = if depthwise { cin * last } else { last };
        let w = rng.vec(k * k * cin * last, -1.0, 1.0);
        let p = match post {
            Post::Bn => vec![
                rng.vec(cout, 0.5, 1.5),
                rng.vec(cout, -0.5, 0.5),
                rng.vec(cout, -0.5, 0.5),
                rng.vec(cout, 0.2, 1.2),
            ],
            Post::Bias => vec![rng.vec(cout, -1.0, 1.0)],
        };
        Spec {
            scope,
            depthwise,
            k,
            cin,
            last,
            stride,
            post,
            w,
            p,
        }
    }
    fn cout(&self) -> usize {
        if self.depthwise {
            self.cin * self.last
        } else {
            self.last
        }
    }
    fn conv_name(&self) -> String {
        let leaf = if self.depthwise {
            "depthwise"
        } else {
            "Conv2D"
        };
        format!("{}/{leaf}", self.scope)
    }
}

const EPS: f32 = 0.001;

/// Append the nodes of one conv (+ BN or BiasAdd + Relu6) reading `input`.
fn push_conv(g: &mut Vec<NodeDef>, s: &Spec, input: &str, padding: &str) {
    let wname = format!("{}/weights", s.scope);
    push_var(g, &wname, &[s.k, s.k, s.cin, s.last], &s.w, false);
    let st = s.stride as i64;
    g.push(node(
        &s.conv_name(),
        if s.depthwise {
            "DepthwiseConv2dNative"
        } else {
            "Conv2D"
        },
        &[input, &format!("{wname}/read")],
        vec![
            (
                "T",
                AttrValue {
                    value: Some(Value::Type(DT_FLOAT)),
                },
            ),
            ("data_format", s_attr("NHWC")),
            ("padding", s_attr(padding)),
            ("strides", ints_attr(&[1, st, st, 1])),
            ("dilations", ints_attr(&[1, 1, 1, 1])),
        ],
    ));
    let post_name = match s.post {
        Post::Bn => {
            let names = ["gamma", "beta", "moving_mean", "moving_variance"];
            let mut inputs = vec![format!("{}:0", s.conv_name())];
            for (i, pn) in names.iter().enumerate() {
                let full = format!("{}/BatchNorm/{pn}", s.scope);
                // beta: one broadcast float_val when all values are equal;
                // moving_mean: a full float_val; the rest: tensor_content.
                let broadcast = i == 1 && s.p[1].windows(2).all(|w| w[0] == w[1]);
                let data = if broadcast {
                    vec![s.p[1][0]]
                } else {
                    s.p[i].clone()
                };
                push_var(g, &full, &[s.cout()], &data, broadcast || i == 2);
                inputs.push(format!("{full}/read"));
            }
            inputs.push("^FeatureExtractor/ctrl".into());
            let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            let name = format!("{}/BatchNorm/FusedBatchNorm", s.scope);
            g.push(node(
                &name,
                "FusedBatchNorm",
                &refs,
                vec![
                    (
                        "epsilon",
                        AttrValue {
                            value: Some(Value::F(EPS)),
                        },
                    ),
                    ("data_format", s_attr("NHWC")),
                    (
                        "is_training",
                        AttrValue {
                            value: Some(Value::B(false)),
                        },
                    ),
                ],
            ));
            name
        }
        Post::Bias => {
            let bname = format!("{}/biases", s.scope);
            push_var(g, &bname, &[s.cout()], &s.p[0], false);
            let name = format!("{}/BiasAdd", s.scope);
            g.push(node(
                &name,
                "BiasAdd",
                &[&s.conv_name(), &format!("{bname}/read")],
                vec![("data_format", s_attr("NHWC"))],
            ));
            name
        }
    };
    g.push(node(
        &format!("{}/Relu6", s.scope),
        "Relu6",
        &[&post_name],
        vec![],
    ));
}

fn build_graph(specs: &[Spec], padding: &str) -> GraphDef {
    let mut g = vec![
        node("image_tensor", "Placeholder", &[], vec![]),
        node("FeatureExtractor/ctrl", "NoOp", &[], vec![]),
    ];
    for s in specs {
        push_conv(&mut g, s, "image_tensor:0", padding);
    }
    GraphDef { node: g }
}

fn test_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "pedcache-convert-test-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn write_pb(dir: &Path, g: &GraphDef) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("g.pb");
    std::fs::write(&p, g.encode_to_vec()).unwrap();
    p
}

// ---------- independent reference convolutions ----------

/// SAME padding as TF: (output size, padding before).
fn same(n: usize, k: usize, s: usize) -> (usize, usize) {
    let out = n.div_ceil(s);
    let total = ((out - 1) * s + k).saturating_sub(n);
    (out, total / 2)
}

/// TF semantics on one NHWC image [h, w, cin] with TF-layout weights, then the unfolded
/// FusedBatchNorm / BiasAdd. Returns NHWC [oh, ow, cout].
fn tf_reference(s: &Spec, x: &[f32], h: usize, w: usize) -> (Vec<f64>, usize, usize) {
    let (oh, pt) = same(h, s.k, s.stride);
    let (ow, pl) = same(w, s.k, s.stride);
    let (cin, cout, k) = (s.cin, s.cout(), s.k);
    let mut y = vec![0f64; oh * ow * cout];
    for oy in 0..oh {
        for ox in 0..ow {
            for ky in 0..k {
                for kx in 0..k {
                    let iy = (oy * s.stride + ky) as isize - pt as isize;
                    let ix = (ox * s.stride + kx) as isize - pl as isize;
                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                        continue;
                    }
                    let xb = (iy as usize * w + ix as usize) * cin;
                    let yb = (oy * ow + ox) * cout;
                    for i in 0..cin {
                        let xv = x[xb + i] as f64;
                        if s.depthwise {
                            for m in 0..s.last {
                                let wv = s.w[((ky * k + kx) * cin + i) * s.last + m];
                                y[yb + i * s.last + m] += xv * wv as f64;
                            }
                        } else {
                            for o in 0..cout {
                                let wv = s.w[((ky * k + kx) * cin + i) * cout + o];
                                y[yb + o] += xv * wv as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    for (idx, v) in y.iter_mut().enumerate() {
        let o = idx % cout;
        *v = match s.post {
            Post::Bn => {
                let (g, b, m, var) = (s.p[0][o], s.p[1][o], s.p[2][o], s.p[3][o]);
                (*v - m as f64) / (var as f64 + EPS as f64).sqrt() * g as f64 + b as f64
            }
            Post::Bias => *v + s.p[0][o] as f64,
        };
    }
    (y, oh, ow)
}

/// PyTorch/candle semantics: NCHW input, OIHW weights [cout, cin/groups, kh, kw], bias.
#[allow(clippy::too_many_arguments)]
fn nchw_conv(
    x: &[f32],
    cin: usize,
    h: usize,
    w: usize,
    wt: &[f32],
    wshape: &[usize],
    bias: &[f32],
    groups: usize,
    stride: usize,
) -> (Vec<f64>, usize, usize) {
    let (cout, cin_g, kh, kw) = (wshape[0], wshape[1], wshape[2], wshape[3]);
    assert_eq!(cin_g * groups, cin);
    let cout_g = cout / groups;
    let (oh, pt) = same(h, kh, stride);
    let (ow, pl) = same(w, kw, stride);
    let mut y = vec![0f64; cout * oh * ow];
    for o in 0..cout {
        let g = o / cout_g;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = bias[o] as f64;
                for i in 0..cin_g {
                    let ic = g * cin_g + i;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * stride + ky) as isize - pt as isize;
                            let ix = (ox * stride + kx) as isize - pl as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                continue;
                            }
                            let xv = x[(ic * h + iy as usize) * w + ix as usize] as f64;
                            let wv = wt[((o * cin_g + i) * kh + ky) * kw + kx] as f64;
                            acc += xv * wv;
                        }
                    }
                }
                y[(o * oh + oy) * ow + ox] = acc;
            }
        }
    }
    (y, oh, ow)
}

fn specs(rng: &mut Rng) -> Vec<Spec> {
    vec![
        Spec::new(rng, "FeatureExtractor/A/conv", false, 3, 3, 4, 1, Post::Bn),
        Spec::new(rng, "FeatureExtractor/A/dw1", true, 3, 3, 1, 2, Post::Bn),
        Spec::new(rng, "FeatureExtractor/A/dw2", true, 3, 3, 2, 1, Post::Bn),
        Spec::new(
            rng,
            "BoxPredictor_0/ClassPredictor",
            false,
            3,
            3,
            5,
            1,
            Post::Bias,
        ),
        Spec::new(rng, "BoxPredictor_0/Box1x1", false, 1, 3, 6, 2, Post::Bias),
    ]
}

#[test]
fn folded_weights_match_tf_reference() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut sp = specs(&mut rng);
    // One BN whose beta is a single broadcast float_val.
    let c = sp[2].cout();
    sp[2].p[1] = vec![0.25; c];
    let g = build_graph(&sp, "SAME");
    let dir = test_dir("fold");
    let pb = write_pb(&dir, &g);
    let out = dir.join("sub/out.safetensors");
    let r = convert_graph_file(&pb, &out, false).unwrap();
    assert_eq!(r.n_convs, sp.len());
    assert_eq!(r.n_bn, 3);
    assert_eq!(r.n_bias_add, 2);

    let bytes = std::fs::read(&out).unwrap();
    // Deterministic: a second conversion gives the same bytes.
    let out2 = dir.join("again.safetensors");
    convert_graph_file(&pb, &out2, false).unwrap();
    assert!(
        std::fs::read(&out2).unwrap() == bytes,
        "output is not deterministic"
    );
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 2 * sp.len());
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let md = meta.metadata().clone().unwrap();
    assert_eq!(md["format"], "pedcache-ssdlite-v1");
    assert_eq!(md["converter"], "pedcache convert-tf");
    assert_eq!(md["bn_epsilon"], "0.001");
    let want_sha: String = Sha256::digest(std::fs::read(&pb).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(md["source_sha256"], want_sha);

    let (h, w) = (7, 6);
    for s in &sp {
        let x = rng.vec(h * w * s.cin, -1.0, 1.0); // NHWC
        let (want, oh, ow) = tf_reference(s, &x, h, w);
        let key = s.scope.replace('/', ".");
        let wt = st.tensor(&format!("{key}.weight")).unwrap();
        let bt = st.tensor(&format!("{key}.bias")).unwrap();
        let to_f32 = |d: &[u8]| -> Vec<f32> {
            d.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        let (wv, bv) = (to_f32(wt.data()), to_f32(bt.data()));
        let cout = s.cout();
        let expect_shape = if s.depthwise {
            vec![cout, 1, s.k, s.k]
        } else {
            vec![cout, s.cin, s.k, s.k]
        };
        assert_eq!(wt.shape(), expect_shape.as_slice(), "{key}");
        assert_eq!(bt.shape(), &[cout], "{key}");
        let mut xc = vec![0f32; x.len()]; // NCHW
        for yy in 0..h {
            for xx in 0..w {
                for c in 0..s.cin {
                    xc[(c * h + yy) * w + xx] = x[(yy * w + xx) * s.cin + c];
                }
            }
        }
        let groups = if s.depthwise { s.cin } else { 1 };
        let (got, goh, gow) = nchw_conv(&xc, s.cin, h, w, &wv, wt.shape(), &bv, groups, s.stride);
        assert_eq!((goh, gow), (oh, ow));
        let mut max = 0f64;
        for o in 0..cout {
            for yy in 0..oh {
                for xx in 0..ow {
                    let a = got[(o * oh + yy) * ow + xx];
                    let b = want[(yy * ow + xx) * cout + o];
                    max = max.max((a - b).abs());
                }
            }
        }
        assert!(max < 1e-5, "{key}: max abs diff {max}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn convert_err(g: &GraphDef, name: &str) -> (String, PathBuf) {
    let dir = test_dir(name);
    let pb = write_pb(&dir, g);
    let e = convert_graph_file(&pb, &dir.join("out.safetensors"), false)
        .expect_err("conversion should fail");
    let msg = format!("{e:#}");
    assert!(!msg.contains('\n'), "multi-line error: {msg}");
    assert!(!dir.join("out.safetensors").exists());
    let _ = std::fs::remove_dir_all(&dir);
    (msg, pb)
}

#[test]
fn truncated_graph_is_a_clean_error() {
    let mut rng = Rng(7);
    let g = build_graph(&specs(&mut rng), "SAME");
    let bytes = g.encode_to_vec();
    let dir = test_dir("trunc");
    std::fs::create_dir_all(&dir).unwrap();
    for cut in [bytes.len() / 2, bytes.len() - 1, 3] {
        let pb = dir.join(format!("cut{cut}.pb"));
        std::fs::write(&pb, &bytes[..cut]).unwrap();
        let e = convert_graph_file(&pb, &dir.join("o.safetensors"), false).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains(&pb.display().to_string()), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn partial_graph_names_what_is_missing() {
    // A graph cut at a node boundary decodes fine; the missing pieces must be named.
    let mut rng = Rng(11);
    let mut g = build_graph(&specs(&mut rng)[..1], "SAME");
    let bn = g
        .node
        .iter()
        .position(|n| n.op == "FusedBatchNorm")
        .unwrap();
    g.node.truncate(bn);
    let (msg, _) = convert_err(&g, "partial");
    assert!(
        msg.contains("no FusedBatchNorm/BiasAdd after FeatureExtractor/A/conv/Conv2D"),
        "{msg}"
    );
}

#[test]
fn empty_and_missing_files() {
    let dir = test_dir("empty");
    std::fs::create_dir_all(&dir).unwrap();
    let pb = dir.join("empty.pb");
    std::fs::write(&pb, b"").unwrap();
    let msg = format!(
        "{:#}",
        convert_ssdlite_graph(&pb, &dir.join("o")).unwrap_err()
    );
    assert!(
        msg.contains("empty.pb") && msg.contains("empty file"),
        "{msg}"
    );
    let missing = dir.join("nope.pb");
    let msg = format!(
        "{:#}",
        convert_ssdlite_graph(&missing, &dir.join("o")).unwrap_err()
    );
    assert!(
        msg.starts_with("loading ") && msg.contains("nope.pb"),
        "{msg}"
    );
    let junk = dir.join("junk.pb");
    std::fs::write(&junk, b"\xff\xd8\xff\xe0 this is a jpeg").unwrap();
    let msg = format!(
        "{:#}",
        convert_ssdlite_graph(&junk, &dir.join("o")).unwrap_err()
    );
    assert!(msg.contains("junk.pb") && msg.contains("GraphDef"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_weight_const_is_named() {
    let mut rng = Rng(3);
    let mut g = build_graph(&specs(&mut rng)[..2], "SAME");
    g.node
        .retain(|n| n.name != "FeatureExtractor/A/dw1/weights");
    let (msg, pb) = convert_err(&g, "noweight");
    assert!(msg.contains("FeatureExtractor/A/dw1/weights"), "{msg}");
    assert!(msg.contains(&pb.display().to_string()), "{msg}");
}

#[test]
fn valid_padding_is_rejected_by_name() {
    let mut rng = Rng(5);
    let g = build_graph(&specs(&mut rng)[..1], "VALID");
    let (msg, pb) = convert_err(&g, "valid");
    assert!(msg.contains("FeatureExtractor/A/conv/Conv2D"), "{msg}");
    assert!(msg.contains("padding VALID"), "{msg}");
    assert!(msg.contains(&pb.display().to_string()), "{msg}");
}

#[test]
fn conv_without_bn_or_bias_is_rejected() {
    let mut rng = Rng(9);
    let mut g = build_graph(&specs(&mut rng)[..1], "SAME");
    for n in &mut g.node {
        if n.op == "FusedBatchNorm" {
            n.op = "Relu6".into();
        }
    }
    let (msg, _) = convert_err(&g, "nobn");
    assert!(
        msg.contains("no FusedBatchNorm/BiasAdd after FeatureExtractor/A/conv/Conv2D"),
        "{msg}"
    );
}

#[test]
fn ssdlite_scope_list_is_complete() {
    let v = tf_ssdlite::ssdlite_scopes();
    assert_eq!(v.len(), 88);
    let set: BTreeSet<&String> = v.iter().collect();
    assert_eq!(set.len(), 88);
    // The tiny test graph is not the ssdlite layout.
    let mut rng = Rng(1);
    let g = build_graph(&specs(&mut rng), "SAME");
    let dir = test_dir("layout");
    let pb = write_pb(&dir, &g);
    let msg = format!(
        "{:#}",
        convert_ssdlite_graph(&pb, &dir.join("o.safetensors")).unwrap_err()
    );
    assert!(msg.contains("FeatureExtractor/MobilenetV2/Conv"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Where `models/fetch.sh` extracts the wheel's frozen graph.
const REAL_PB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/models/cache/frozen_inference_graph.pb"
);

#[test]
#[ignore = "needs models/cache/frozen_inference_graph.pb (models/fetch.sh; scripts/test.sh runs it)"]
fn real_ssdlite_graph() {
    // The project's rule (tests/common): an ignored test that was asked to run fails when its
    // input is missing, never passes silently.
    let pb = Path::new(REAL_PB);
    assert!(
        pb.exists(),
        "{REAL_PB} not found (run models/fetch.sh to download it)"
    );
    let dir = test_dir("real");
    let out = dir.join("ssdlite_ped.safetensors");
    let summary = convert_ssdlite_graph(pb, &out).unwrap();
    assert!(summary.contains("88 convs"), "{summary}");
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 176);
    assert_eq!(
        st.names().iter().filter(|n| n.ends_with(".weight")).count(),
        88
    );
    assert_eq!(
        st.names().iter().filter(|n| n.ends_with(".bias")).count(),
        88
    );
    for (k, shape) in [
        (
            "FeatureExtractor.MobilenetV2.Conv.weight",
            &[32, 3, 3, 3][..],
        ),
        (
            "BoxPredictor_0.BoxEncodingPredictor.weight",
            &[12, 576, 1, 1],
        ),
        ("BoxPredictor_0.ClassPredictor.weight", &[6, 576, 1, 1]),
        ("BoxPredictor_1.ClassPredictor.weight", &[12, 1280, 1, 1]),
        (
            "FeatureExtractor.MobilenetV2.expanded_conv_1.depthwise.weight",
            &[96, 1, 3, 3],
        ),
        ("FeatureExtractor.MobilenetV2.Conv_1.bias", &[1280]),
    ] {
        assert_eq!(st.tensor(k).unwrap().shape(), shape, "{k}");
    }
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let md = meta.metadata().clone().unwrap();
    assert_eq!(md["source_sha256"], SSDLITE_PB_SHA256);
    assert_eq!(md["source"], SSDLITE_SOURCE);
    assert_eq!(md["format"], SSDLITE_FORMAT);
    assert_eq!(md["bn_epsilon"], "0.001");

    // Half the file: a clean one-line error naming the file.
    let half = dir.join("half.pb");
    let full = std::fs::read(pb).unwrap();
    std::fs::write(&half, &full[..full.len() / 2]).unwrap();
    let msg = format!(
        "{:#}",
        convert_ssdlite_graph(&half, &dir.join("h.safetensors")).unwrap_err()
    );
    assert!(msg.contains("half.pb") && !msg.contains('\n'), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}
