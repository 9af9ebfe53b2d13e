//! Fold the convolutions of a TensorFlow SSDLite-MobileNetV2 frozen graph into
//! (weight, bias) pairs in candle's layout.
//!
//! For every `Conv2D` / `DepthwiseConv2dNative` node named `FeatureExtractor/...` or
//! `BoxPredictor_...`, the weight `Const` (reached through `Identity` `.../read` nodes) is
//! transposed from TF's HWIO (`[kh, kw, in, out]`) or depthwise `[kh, kw, in, mult]` layout to
//! OIHW (`[out, in, kh, kw]`, depthwise `[in*mult, 1, kh, kw]` with output channel
//! `c*mult + m`). The single consumer of the conv output must be a `FusedBatchNorm`, which is
//! folded in (`scale = gamma / sqrt(var + eps)`, `w *= scale`, `b = beta - mean * scale`, in
//! f64), or a `BiasAdd`, whose bias is copied.
//!
//! Every error is one line: `"{file}: {cause}"`, naming the node involved.

use std::collections::HashMap;

use crate::{bail, err, Result};

use super::graphdef::{attr_value::Value, GraphDef, NodeDef, DT_FLOAT};
pub use super::ssdlite_layout::{check_ssdlite_layout, ssdlite_scopes};
use super::tf_attrs::{attr, attr_str, check_conv_attrs, check_vec};

/// Batch-norm op names folded into the preceding conv (same inputs: x, gamma, beta, mean, var).
const BN_OPS: &[&str] = &["FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"];
/// TF's default `FusedBatchNorm.epsilon` when the attr is absent.
const TF_DEFAULT_BN_EPSILON: f32 = 1e-4;
/// How many `Identity` hops are followed from a conv/BN input to its `Const`.
const MAX_IDENTITY_HOPS: usize = 16;
/// Float values that single-value constants (`float_val: [v]` with a shape, TF's fill) may
/// expand to, over the whole graph: 16 MiB of f32. The SSDLite graph stores its weights in
/// `tensor_content`; fills are per-channel vectors at most.
pub const MAX_FILL_ELEMENTS: usize = 1 << 22;

/// The two convolution flavours found in the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKind {
    Conv2D,
    Depthwise,
}

/// What followed the conv in the graph (and was folded into `bias`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PostOp {
    BatchNorm { epsilon: f32 },
    BiasAdd,
}

/// One converted convolution.
#[derive(Debug, Clone)]
pub struct FoldedConv {
    /// The TF node name, e.g. `FeatureExtractor/MobilenetV2/Conv/Conv2D`.
    pub node: String,
    /// The scope with `/` -> `.`, e.g. `FeatureExtractor.MobilenetV2.Conv`.
    pub key_prefix: String,
    pub kind: ConvKind,
    pub post: PostOp,
    /// OIHW; `[in*mult, 1, kh, kw]` for depthwise.
    pub weight_shape: [usize; 4],
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// Whether a node is one of the convs the converter exports.
fn is_exported_conv(n: &NodeDef) -> bool {
    (n.op == "Conv2D" || n.op == "DepthwiseConv2dNative")
        && (n.name.starts_with("FeatureExtractor/") || n.name.starts_with("BoxPredictor_"))
}

/// `"^name"` -> `("name", true)`, `"name:0"` -> `("name", false)`.
fn parse_input(s: &str) -> (&str, bool) {
    let (s, control) = match s.strip_prefix('^') {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let base = match s.rsplit_once(':') {
        Some((b, port)) if port.bytes().all(|c| c.is_ascii_digit()) && !port.is_empty() => b,
        _ => s,
    };
    (base, control)
}

/// The graph with name and consumer indexes.
struct Graph<'a> {
    file: &'a str,
    /// Float values the constants may still decode to. A constant shared by many convs is
    /// decoded (and folded) once per use, so without this bound a few bytes of extra conv nodes
    /// could ask for copies of one big constant without end: all uses together may not decode
    /// more values than the graph's bytes hold, plus [`MAX_FILL_ELEMENTS`] from fills.
    budget: std::cell::Cell<usize>,
    by_name: HashMap<&'a str, &'a NodeDef>,
    /// node name -> (consumer, data input position); control inputs are not listed.
    consumers: HashMap<&'a str, Vec<(&'a NodeDef, usize)>>,
}

impl<'a> Graph<'a> {
    fn new(g: &'a GraphDef, file: &'a str) -> Result<Self> {
        let mut by_name = HashMap::with_capacity(g.node.len());
        let mut consumers: HashMap<&str, Vec<(&NodeDef, usize)>> = HashMap::new();
        for n in &g.node {
            if by_name.insert(n.name.as_str(), n).is_some() {
                bail!("{file}: two nodes are named '{}'", n.name);
            }
            for (pos, inp) in n.input.iter().enumerate() {
                let (base, control) = parse_input(inp);
                if !control {
                    consumers.entry(base).or_default().push((n, pos));
                }
            }
        }
        use prost::Message;
        Ok(Self {
            file,
            budget: std::cell::Cell::new(g.encoded_len() / 4 + MAX_FILL_ELEMENTS),
            by_name,
            consumers,
        })
    }

    /// The `pos`-th data input of `n` (port stripped) and its node, or an error naming `role`.
    fn data_input(&self, n: &NodeDef, pos: usize, role: &str) -> Result<(&'a str, &'a NodeDef)> {
        let file = self.file;
        let data: Vec<&str> = n
            .input
            .iter()
            .map(|s| parse_input(s))
            .filter(|(_, control)| !control)
            .map(|(b, _)| b)
            .collect();
        match data.get(pos) {
            Some(name) => match self.by_name.get_key_value(*name) {
                Some((k, node)) => Ok((*k, *node)),
                None => bail!(
                    "{file}: {role} of {} '{}' is missing: no node named '{name}' \
                     (truncated file?)",
                    n.op,
                    n.name
                ),
            },
            None => bail!(
                "{file}: {} '{}' has {} data inputs, expected a {role} at input {pos}",
                n.op,
                n.name,
                data.len()
            ),
        }
    }

    /// Follow `Identity` nodes from `n`'s input `pos` to a `Const`; decode it as f32.
    fn const_input(&self, n: &NodeDef, pos: usize, role: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let file = self.file;
        let (mut name, mut node) = self.data_input(n, pos, role)?;
        for _ in 0..=MAX_IDENTITY_HOPS {
            match node.op.as_str() {
                "Const" => return self.decode_const(node, role, n),
                "Identity" | "Snapshot" => (name, node) = self.data_input(node, 0, role)?,
                op => bail!(
                    "{file}: {role} of {} '{}' comes from '{name}' (op {op}), expected a \
                     Const (through Identity)",
                    n.op,
                    n.name
                ),
            }
        }
        bail!(
            "{file}: {role} of {} '{}': more than {MAX_IDENTITY_HOPS} Identity nodes before a \
             Const",
            n.op,
            n.name
        )
    }

    /// Decode a `DT_FLOAT` `Const` node's `value` tensor.
    fn decode_const(
        &self,
        c: &NodeDef,
        role: &str,
        user: &NodeDef,
    ) -> Result<(Vec<usize>, Vec<f32>)> {
        let file = self.file;
        let what = format!("{role} Const '{}' (used by '{}')", c.name, user.name);
        let t = match c.attr.get("value").and_then(|a| a.value.as_ref()) {
            Some(Value::Tensor(t)) => t,
            _ => bail!("{file}: {what} has no tensor 'value' attr"),
        };
        if t.dtype != DT_FLOAT {
            bail!(
                "{file}: {what} has dtype {} (TF DataType enum), expected DT_FLOAT",
                t.dtype
            );
        }
        let mut shape = Vec::new();
        if let Some(s) = &t.tensor_shape {
            if s.unknown_rank {
                bail!("{file}: {what} has an unknown rank");
            }
            for d in &s.dim {
                match usize::try_from(d.size) {
                    Ok(v) => shape.push(v),
                    Err(_) => bail!("{file}: {what} has dimension size {}", d.size),
                }
            }
        }
        let n = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= (1 << 31))
            .ok_or_else(|| err!("{file}: {what} has an absurd shape {shape:?}"))?;
        let left = self.budget.get();
        if n > left {
            bail!(
                "{file}: {what} has shape {shape:?} ({n} values): the graph's constants ask for \
                 more values than its bytes hold (limit {MAX_FILL_ELEMENTS} from fills)"
            );
        }
        self.budget.set(left - n);
        let data = if !t.tensor_content.is_empty() {
            if t.tensor_content.len() != n * 4 {
                bail!(
                    "{file}: {what} has {} bytes of tensor_content, shape {shape:?} needs {} \
                     (truncated file?)",
                    t.tensor_content.len(),
                    n * 4
                );
            }
            t.tensor_content
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        } else if t.float_val.len() == n {
            t.float_val.clone()
        } else if t.float_val.len() == 1 {
            vec![t.float_val[0]; n]
        } else {
            bail!(
                "{file}: {what} has {} float_val values for shape {shape:?} ({n} elements)",
                t.float_val.len()
            );
        };
        Ok((shape, data))
    }
}

/// Convert every exported conv of `g`, in graph order. `file` names the source in errors.
pub fn fold_convs(g: &GraphDef, file: &str) -> Result<Vec<FoldedConv>> {
    let graph = Graph::new(g, file)?;
    let mut out: Vec<FoldedConv> = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for n in g.node.iter().filter(|n| is_exported_conv(n)) {
        let conv = fold_one(&graph, n)?;
        if let Some(prev) = seen.insert(conv.key_prefix.clone(), n.name.clone()) {
            bail!(
                "{file}: convs '{prev}' and '{}' share the scope '{}'",
                n.name,
                conv.key_prefix
            );
        }
        out.push(conv);
    }
    Ok(out)
}

fn fold_one(graph: &Graph<'_>, n: &NodeDef) -> Result<FoldedConv> {
    let file = graph.file;
    let kind = if n.op == "Conv2D" {
        ConvKind::Conv2D
    } else {
        ConvKind::Depthwise
    };
    let Some((scope, _)) = n.name.rsplit_once('/') else {
        bail!("{file}: {} '{}' has no scope", n.op, n.name);
    };
    check_conv_attrs(file, n)?;

    // Weights: [kh, kw, in, out] or [kh, kw, in, mult].
    let (wshape, w) = graph.const_input(n, 1, "weights")?;
    let &[kh, kw, cin, last] = wshape.as_slice() else {
        bail!(
            "{file}: weights of {} '{}' have shape {wshape:?}, expected 4-D [kh, kw, in, out]",
            n.op,
            n.name
        );
    };
    let cout = match kind {
        ConvKind::Conv2D => last,
        ConvKind::Depthwise => cin * last,
    };
    if cout == 0 || cin == 0 || kh == 0 || kw == 0 {
        bail!(
            "{file}: weights of {} '{}' have an empty shape {wshape:?}",
            n.op,
            n.name
        );
    }

    // The single data consumer: FusedBatchNorm or BiasAdd on input 0.
    let consumers = graph
        .consumers
        .get(n.name.as_str())
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let (post_node, pos) = match consumers {
        [] => bail!(
            "{file} has no FusedBatchNorm/BiasAdd after {} (its output is unused; truncated \
             file?)",
            n.name
        ),
        [(c, pos)] => (*c, *pos),
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|(c, _)| format!("{} '{}'", c.op, c.name))
                .collect();
            bail!(
                "{file}: output of {} feeds {} nodes ({}); expected only a FusedBatchNorm or \
                 BiasAdd",
                n.name,
                many.len(),
                names.join(", ")
            )
        }
    };
    let is_bn = BN_OPS.contains(&post_node.op.as_str());
    if !(is_bn || post_node.op == "BiasAdd") || pos != 0 {
        bail!(
            "{file} has no FusedBatchNorm/BiasAdd after {} (its output feeds {} '{}' at input \
             {pos})",
            n.name,
            post_node.op,
            post_node.name
        );
    }
    let fmt = attr_str(file, post_node, "data_format", Some("NHWC"))?;
    if fmt != "NHWC" {
        bail!(
            "{file}: {} '{}' has data_format {fmt}, expected NHWC",
            post_node.op,
            post_node.name
        );
    }

    // Per-output-channel (scale, bias) in f64.
    let (scale, bias, post): (Vec<f64>, Vec<f64>, PostOp) = if is_bn {
        match attr(post_node, "is_training") {
            Some(Value::B(false)) => {}
            Some(Value::B(true)) | None => bail!(
                "{file}: {} '{}' has is_training=true (batch statistics), cannot fold",
                post_node.op,
                post_node.name
            ),
            Some(_) => bail!(
                "{file}: {} '{}' attr 'is_training' is not a bool",
                post_node.op,
                post_node.name
            ),
        }
        let eps = match attr(post_node, "epsilon") {
            Some(Value::F(e)) => *e,
            None => TF_DEFAULT_BN_EPSILON,
            Some(_) => bail!(
                "{file}: {} '{}' attr 'epsilon' is not a float",
                post_node.op,
                post_node.name
            ),
        };
        let mut params = Vec::with_capacity(4);
        for (pos, role) in [
            (1, "gamma"),
            (2, "beta"),
            (3, "moving_mean"),
            (4, "moving_variance"),
        ] {
            let (shape, v) = graph.const_input(post_node, pos, role)?;
            check_vec(file, role, post_node, &shape, cout)?;
            params.push(v);
        }
        let (gamma, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
        let mut scale = Vec::with_capacity(cout);
        let mut bias = Vec::with_capacity(cout);
        for o in 0..cout {
            let denom = (f64::from(var[o]) + f64::from(eps)).sqrt();
            if !(denom > 0.0 && denom.is_finite()) {
                bail!(
                    "{file}: {} '{}' channel {o}: moving_variance {} + epsilon {eps} is not \
                     positive",
                    post_node.op,
                    post_node.name,
                    var[o]
                );
            }
            let s = f64::from(gamma[o]) / denom;
            scale.push(s);
            bias.push(f64::from(beta[o]) - f64::from(mean[o]) * s);
        }
        (scale, bias, PostOp::BatchNorm { epsilon: eps })
    } else {
        let (shape, b) = graph.const_input(post_node, 1, "biases")?;
        check_vec(file, "biases", post_node, &shape, cout)?;
        (
            vec![1.0; cout],
            b.iter().map(|&v| f64::from(v)).collect(),
            PostOp::BiasAdd,
        )
    };

    // Re-layout to OIHW and scale per output channel.
    let (weight_shape, weight) = match kind {
        ConvKind::Conv2D => {
            let mut o_w = vec![0f32; cout * cin * kh * kw];
            for y in 0..kh {
                for x in 0..kw {
                    for i in 0..cin {
                        for (o, &s) in scale.iter().enumerate() {
                            let src = ((y * kw + x) * cin + i) * cout + o;
                            let dst = ((o * cin + i) * kh + y) * kw + x;
                            o_w[dst] = (f64::from(w[src]) * s) as f32;
                        }
                    }
                }
            }
            ([cout, cin, kh, kw], o_w)
        }
        ConvKind::Depthwise => {
            let mult = last;
            let mut o_w = vec![0f32; cout * kh * kw];
            for y in 0..kh {
                for x in 0..kw {
                    for c in 0..cin {
                        for m in 0..mult {
                            let o = c * mult + m;
                            let src = ((y * kw + x) * cin + c) * mult + m;
                            let dst = (o * kh + y) * kw + x;
                            o_w[dst] = (f64::from(w[src]) * scale[o]) as f32;
                        }
                    }
                }
            }
            ([cout, 1, kh, kw], o_w)
        }
    };
    if let Some(i) = weight.iter().position(|v| !v.is_finite()) {
        bail!(
            "{file}: folded weights of {} '{}' are not finite at element {i}",
            n.op,
            n.name
        );
    }
    let bias: Vec<f32> = bias.iter().map(|&b| b as f32).collect();
    if let Some(i) = bias.iter().position(|v| !v.is_finite()) {
        bail!(
            "{file}: folded bias of {} '{}' is not finite at channel {i}",
            n.op,
            n.name
        );
    }
    Ok(FoldedConv {
        node: n.name.clone(),
        key_prefix: scope.replace('/', "."),
        kind,
        post,
        weight_shape,
        weight,
        bias,
    })
}
