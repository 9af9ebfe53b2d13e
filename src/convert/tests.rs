//! Converter tests: hand-built GraphDefs through the whole conversion (`fold`), malformed
//! inputs and the real SSDLite graph from `models/fetch.sh` (`malformed`). This file holds what
//! both use: a tiny GraphDef builder and independent reference convolutions.

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

mod fold;
mod malformed;
