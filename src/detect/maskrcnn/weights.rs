//! torchvision Mask R-CNN weights: `.safetensors` or `.pth` (zip pickle), either key generation,
//! architecture read off the tensor shapes, checked against the full expected key set, batch
//! norm folded into the convs.
//!
//! The published COCO file predates torchvision's `Conv2dNormActivation` wrappers and uses
//! `backbone.fpn.inner_blocks.0.weight`, `rpn.head.conv.weight`,
//! `roi_heads.mask_head.mask_fcn1.weight`; `state_dict()` of torchvision 0.29 writes
//! `backbone.fpn.inner_blocks.0.0.weight`, `rpn.head.conv.0.0.weight`,
//! `roi_heads.mask_head.0.0.weight`. Both load; keys are normalised to the new names.

use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// FrozenBatchNorm2d's epsilon as torchvision runs the COCO_V1 model: `maskrcnn_resnet50_fpn`
/// calls `overwrite_eps(model, 0.0)` after loading those weights (the module default is 1e-5).
pub const BN_EPS: f64 = 0.0;

/// Shapes that define the network, read from the weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arch {
    pub stem_channels: usize,
    /// Per layer: (number of blocks, inner width, output channels).
    pub layers: [(usize, usize, usize); 4],
    pub fpn_channels: usize,
    pub anchors_per_cell: usize,
    pub representation: usize,
    pub num_classes: usize,
    /// Widths of the mask head's convs.
    pub mask_layers: Vec<usize>,
    pub mask_predictor_channels: usize,
}

/// Rename an old-generation key to torchvision 0.29's name; `None` for keys we drop.
pub fn normalise_key(k: &str) -> Option<String> {
    if k.ends_with("num_batches_tracked") {
        return None;
    }
    let k = k.strip_prefix("module.").unwrap_or(k);
    for block in ["inner_blocks", "layer_blocks"] {
        let prefix = format!("backbone.fpn.{block}.");
        if let Some(rest) = k.strip_prefix(&prefix) {
            let mut parts = rest.splitn(2, '.');
            if let (Some(i), Some(tail)) = (parts.next(), parts.next()) {
                if tail == "weight" || tail == "bias" {
                    return Some(format!("{prefix}{i}.0.{tail}"));
                }
            }
        }
    }
    if let Some(tail) = k.strip_prefix("rpn.head.conv.") {
        if tail == "weight" || tail == "bias" {
            return Some(format!("rpn.head.conv.0.0.{tail}"));
        }
    }
    if let Some(rest) = k.strip_prefix("roi_heads.mask_head.mask_fcn") {
        if let Some((n, tail)) = rest.split_once('.') {
            if let Ok(n) = n.parse::<usize>() {
                return Some(format!(
                    "roi_heads.mask_head.{}.0.{tail}",
                    n.saturating_sub(1)
                ));
            }
        }
    }
    Some(k.to_string())
}

/// Read every tensor of a `.safetensors` or torch `.pth` file, as f32 with normalised names.
/// Both readers bound what they allocate by the file ([`crate::detect::weights`]).
pub fn read_state_dict(path: &Path) -> crate::Result<HashMap<String, Tensor>> {
    let ctx = |e: &dyn std::fmt::Display| crate::err!("loading {}: {e}", path.display());
    let mut head = [0u8; 4];
    let len = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| ctx(&e))?;
        let len = f.metadata().map_err(|e| ctx(&e))?.len();
        let n = f.read(&mut head).map_err(|e| ctx(&e))?;
        crate::ensure!(
            n == 4,
            "loading {}: file too short ({n} bytes)",
            path.display()
        );
        len
    };
    crate::ensure!(
        len <= crate::detect::weights::MAX_WEIGHTS_FILE_BYTES,
        "loading {}: weights file is {len} bytes, over the limit of {} bytes",
        path.display(),
        crate::detect::weights::MAX_WEIGHTS_FILE_BYTES
    );
    let raw: Vec<(String, Tensor)> = if &head == b"PK\x03\x04" {
        crate::detect::weights::pth::read_pth(path)
            .map_err(|e| ctx(&format!("not a readable torch .pth (zip pickle): {e}")))?
    } else {
        let bytes = crate::detect::weights::read_weights_file(path)?;
        crate::detect::weights::parse_safetensors(&bytes, &Device::Cpu)
            .map_err(|e| ctx(&e.one_line()))?
            .into_iter()
            .collect()
    };
    crate::ensure!(
        !raw.is_empty(),
        "loading {}: no tensors in file",
        path.display()
    );
    let mut out = HashMap::new();
    for (k, t) in raw {
        let Some(name) = normalise_key(&k) else {
            continue;
        };
        let t = t
            .to_dtype(DType::F32)
            .map_err(|e| ctx(&format!("{k}: {e}")))?;
        let finite = t
            .flatten_all()
            .and_then(|f| f.to_vec1::<f32>())
            .map(|v| v.iter().all(|x| x.is_finite()));
        crate::ensure!(
            finite.unwrap_or(false),
            "loading {}: tensor {k} holds NaN or infinite values",
            path.display()
        );
        if out.insert(name.clone(), t).is_some() {
            crate::bail!(
                "loading {}: tensor {name} appears twice (old and new key names mixed)",
                path.display()
            );
        }
    }
    Ok(out)
}

fn dims(sd: &HashMap<String, Tensor>, k: &str) -> crate::Result<Vec<usize>> {
    sd.get(k)
        .map(|t| t.dims().to_vec())
        .ok_or_else(|| crate::err!("missing tensor {k}"))
}

/// Read the architecture off the shapes of a few defining tensors.
pub fn infer_arch(sd: &HashMap<String, Tensor>) -> crate::Result<Arch> {
    let stem = dims(sd, "backbone.body.conv1.weight")?[0];
    let mut layers = [(0, 0, 0); 4];
    for (l, slot) in layers.iter_mut().enumerate() {
        let p = format!("backbone.body.layer{}", l + 1);
        let blocks = (0..)
            .take_while(|j| sd.contains_key(&format!("{p}.{j}.conv1.weight")))
            .count();
        crate::ensure!(blocks > 0, "missing tensor {p}.0.conv1.weight");
        let width = dims(sd, &format!("{p}.0.conv1.weight"))?[0];
        let out = dims(sd, &format!("{p}.0.conv3.weight"))?[0];
        *slot = (blocks, width, out);
    }
    let fpn_channels = dims(sd, "backbone.fpn.inner_blocks.0.0.weight")?[0];
    let anchors_per_cell = dims(sd, "rpn.head.cls_logits.weight")?[0];
    let representation = dims(sd, "roi_heads.box_head.fc6.weight")?[0];
    let num_classes = dims(sd, "roi_heads.box_predictor.cls_score.weight")?[0];
    let mask_layers: Vec<usize> = (0..)
        .map_while(|i| {
            sd.get(&format!("roi_heads.mask_head.{i}.0.weight"))
                .map(|t| t.dims()[0])
        })
        .collect();
    crate::ensure!(
        !mask_layers.is_empty(),
        "missing tensor roi_heads.mask_head.0.0.weight"
    );
    let mask_predictor_channels = dims(sd, "roi_heads.mask_predictor.conv5_mask.weight")?[1];
    Ok(Arch {
        stem_channels: stem,
        layers,
        fpn_channels,
        anchors_per_cell,
        representation,
        num_classes,
        mask_layers,
        mask_predictor_channels,
    })
}

fn bn(out: &mut BTreeMap<String, Vec<usize>>, p: &str, c: usize) {
    for s in ["weight", "bias", "running_mean", "running_var"] {
        out.insert(format!("{p}.{s}"), vec![c]);
    }
}

/// Every tensor the network needs, with its shape (new key names).
pub fn expected_shapes(a: &Arch) -> BTreeMap<String, Vec<usize>> {
    let mut m = BTreeMap::new();
    m.insert(
        "backbone.body.conv1.weight".into(),
        vec![a.stem_channels, 3, 7, 7],
    );
    bn(&mut m, "backbone.body.bn1", a.stem_channels);
    let mut cin = a.stem_channels;
    for (l, &(blocks, width, out)) in a.layers.iter().enumerate() {
        for j in 0..blocks {
            let p = format!("backbone.body.layer{}.{j}", l + 1);
            let bin = if j == 0 { cin } else { out };
            m.insert(format!("{p}.conv1.weight"), vec![width, bin, 1, 1]);
            bn(&mut m, &format!("{p}.bn1"), width);
            m.insert(format!("{p}.conv2.weight"), vec![width, width, 3, 3]);
            bn(&mut m, &format!("{p}.bn2"), width);
            m.insert(format!("{p}.conv3.weight"), vec![out, width, 1, 1]);
            bn(&mut m, &format!("{p}.bn3"), out);
            if j == 0 {
                m.insert(format!("{p}.downsample.0.weight"), vec![out, bin, 1, 1]);
                bn(&mut m, &format!("{p}.downsample.1"), out);
            }
        }
        cin = out;
    }
    let c = a.fpn_channels;
    for (i, &(_, _, out)) in a.layers.iter().enumerate() {
        m.insert(
            format!("backbone.fpn.inner_blocks.{i}.0.weight"),
            vec![c, out, 1, 1],
        );
        m.insert(format!("backbone.fpn.inner_blocks.{i}.0.bias"), vec![c]);
        m.insert(
            format!("backbone.fpn.layer_blocks.{i}.0.weight"),
            vec![c, c, 3, 3],
        );
        m.insert(format!("backbone.fpn.layer_blocks.{i}.0.bias"), vec![c]);
    }
    let na = a.anchors_per_cell;
    m.insert("rpn.head.conv.0.0.weight".into(), vec![c, c, 3, 3]);
    m.insert("rpn.head.conv.0.0.bias".into(), vec![c]);
    m.insert("rpn.head.cls_logits.weight".into(), vec![na, c, 1, 1]);
    m.insert("rpn.head.cls_logits.bias".into(), vec![na]);
    m.insert("rpn.head.bbox_pred.weight".into(), vec![4 * na, c, 1, 1]);
    m.insert("rpn.head.bbox_pred.bias".into(), vec![4 * na]);
    let r = a.representation;
    let k = a.num_classes;
    m.insert("roi_heads.box_head.fc6.weight".into(), vec![r, c * 7 * 7]);
    m.insert("roi_heads.box_head.fc6.bias".into(), vec![r]);
    m.insert("roi_heads.box_head.fc7.weight".into(), vec![r, r]);
    m.insert("roi_heads.box_head.fc7.bias".into(), vec![r]);
    m.insert(
        "roi_heads.box_predictor.cls_score.weight".into(),
        vec![k, r],
    );
    m.insert("roi_heads.box_predictor.cls_score.bias".into(), vec![k]);
    m.insert(
        "roi_heads.box_predictor.bbox_pred.weight".into(),
        vec![4 * k, r],
    );
    m.insert("roi_heads.box_predictor.bbox_pred.bias".into(), vec![4 * k]);
    let mut cin = c;
    for (i, &w) in a.mask_layers.iter().enumerate() {
        m.insert(
            format!("roi_heads.mask_head.{i}.0.weight"),
            vec![w, cin, 3, 3],
        );
        m.insert(format!("roi_heads.mask_head.{i}.0.bias"), vec![w]);
        cin = w;
    }
    let mp = a.mask_predictor_channels;
    // ConvTranspose2d weights are [in, out, kh, kw].
    m.insert(
        "roi_heads.mask_predictor.conv5_mask.weight".into(),
        vec![cin, mp, 2, 2],
    );
    m.insert("roi_heads.mask_predictor.conv5_mask.bias".into(), vec![mp]);
    m.insert(
        "roi_heads.mask_predictor.mask_fcn_logits.weight".into(),
        vec![k, mp, 1, 1],
    );
    m.insert(
        "roi_heads.mask_predictor.mask_fcn_logits.bias".into(),
        vec![k],
    );
    m
}

/// Missing, unexpected and mis-shaped tensors, all named in one message.
pub fn check(
    sd: &HashMap<String, Tensor>,
    expected: &BTreeMap<String, Vec<usize>>,
) -> Result<(), String> {
    let missing: Vec<&str> = expected
        .keys()
        .filter(|k| !sd.contains_key(*k))
        .map(String::as_str)
        .collect();
    let mut unexpected: Vec<&str> = sd
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .map(String::as_str)
        .collect();
    unexpected.sort();
    let misshaped: Vec<String> = expected
        .iter()
        .filter_map(|(k, s)| {
            let t = sd.get(k)?;
            (t.dims() != s.as_slice()).then(|| format!("{k} is {:?}, expected {s:?}", t.dims()))
        })
        .collect();
    let mut parts = Vec::new();
    let list = |v: &[&str]| {
        let shown: Vec<&str> = v.iter().take(8).copied().collect();
        let more = if v.len() > 8 {
            format!(" and {} more", v.len() - 8)
        } else {
            String::new()
        };
        format!("{}{more}", shown.join(", "))
    };
    if !missing.is_empty() {
        parts.push(format!("missing tensors: {}", list(&missing)));
    }
    if !unexpected.is_empty() {
        parts.push(format!("unexpected tensors: {}", list(&unexpected)));
    }
    if !misshaped.is_empty() {
        let v: Vec<&str> = misshaped.iter().map(String::as_str).collect();
        parts.push(format!("wrong shapes: {}", list(&v)));
    }
    if parts.is_empty() {
        Ok(())
    } else {
        Err(parts.join("; "))
    }
}

/// One tensor of a state dict by name, or an error naming it.
pub fn tensor(sd: &HashMap<String, Tensor>, key: &str) -> candle_core::Result<Tensor> {
    sd.get(key)
        .cloned()
        .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor {key}")))
}

/// A conv layer `{prefix}.weight` + `{prefix}.bias` (no batch norm).
pub fn conv_with_bias(
    sd: &HashMap<String, Tensor>,
    prefix: &str,
    spec: crate::detect::ops::conv::ConvSpec,
) -> candle_core::Result<crate::detect::ops::conv::Conv2d> {
    crate::detect::ops::conv::Conv2d::new(
        spec,
        tensor(sd, &format!("{prefix}.weight"))?,
        Some(tensor(sd, &format!("{prefix}.bias"))?),
    )
}

/// A conv weight with its FrozenBatchNorm folded in: returns (weight, bias).
pub fn fold_bn(
    sd: &HashMap<String, Tensor>,
    conv: &str,
    bn: &str,
) -> candle_core::Result<(Tensor, Tensor)> {
    let get = |k: String| tensor(sd, &k);
    let w = get(format!("{conv}.weight"))?;
    let gamma = get(format!("{bn}.weight"))?.to_dtype(DType::F64)?;
    let beta = get(format!("{bn}.bias"))?.to_dtype(DType::F64)?;
    let mean = get(format!("{bn}.running_mean"))?.to_dtype(DType::F64)?;
    let var = get(format!("{bn}.running_var"))?.to_dtype(DType::F64)?;
    // torchvision's FrozenBatchNorm2d: scale = w * rsqrt(var + eps), bias = b - mean * scale.
    let scale = (gamma * (var + BN_EPS)?.sqrt()?.recip()?)?;
    let bias = (beta - (mean * &scale)?)?;
    let c = w.dim(0)?;
    let w = w
        .to_dtype(DType::F64)?
        .broadcast_mul(&scale.reshape((c, 1, 1, 1))?)?;
    Ok((w.to_dtype(DType::F32)?, bias.to_dtype(DType::F32)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_keys_map_to_new() {
        let cases = [
            (
                "backbone.fpn.inner_blocks.0.weight",
                "backbone.fpn.inner_blocks.0.0.weight",
            ),
            (
                "backbone.fpn.layer_blocks.3.bias",
                "backbone.fpn.layer_blocks.3.0.bias",
            ),
            ("rpn.head.conv.weight", "rpn.head.conv.0.0.weight"),
            (
                "roi_heads.mask_head.mask_fcn1.weight",
                "roi_heads.mask_head.0.0.weight",
            ),
            (
                "roi_heads.mask_head.mask_fcn4.bias",
                "roi_heads.mask_head.3.0.bias",
            ),
            // New names and everything else pass through.
            (
                "backbone.fpn.inner_blocks.0.0.weight",
                "backbone.fpn.inner_blocks.0.0.weight",
            ),
            ("rpn.head.conv.0.0.weight", "rpn.head.conv.0.0.weight"),
            (
                "backbone.body.layer1.0.conv1.weight",
                "backbone.body.layer1.0.conv1.weight",
            ),
        ];
        for (old, new) in cases {
            assert_eq!(normalise_key(old).as_deref(), Some(new), "{old}");
        }
        assert_eq!(normalise_key("backbone.body.bn1.num_batches_tracked"), None);
    }

    #[test]
    fn bn_fold_matches_unfolded_formula() {
        let dev = Device::Cpu;
        let mut sd = HashMap::new();
        let w = Tensor::new(&[[[[1.0f32]], [[2.0]]], [[[3.0]], [[-1.0]]]], &dev).unwrap(); // [2,2,1,1]
        sd.insert("c.weight".to_string(), w);
        sd.insert(
            "b.weight".to_string(),
            Tensor::new(&[2.0f32, 0.5], &dev).unwrap(),
        );
        sd.insert(
            "b.bias".to_string(),
            Tensor::new(&[0.1f32, -0.2], &dev).unwrap(),
        );
        sd.insert(
            "b.running_mean".to_string(),
            Tensor::new(&[1.0f32, 3.0], &dev).unwrap(),
        );
        sd.insert(
            "b.running_var".to_string(),
            Tensor::new(&[4.0f32, 0.25], &dev).unwrap(),
        );
        let (fw, fb) = fold_bn(&sd, "c", "b").unwrap();
        // x = [1, 1]: conv gives [3, 2]; BN: (3-1)/sqrt(4+eps)*2+0.1, (2-3)/sqrt(.25+eps)*.5-.2.
        let x = Tensor::new(&[[[[1.0f32]], [[1.0]]]], &dev).unwrap();
        let y = x.conv2d(&fw, 0, 1, 1, 1).unwrap().flatten_all().unwrap();
        let y: Vec<f32> = (y + fb).unwrap().to_vec1().unwrap();
        let e0 = (3.0 - 1.0) / (4.0f64 + BN_EPS).sqrt() * 2.0 + 0.1;
        let e1 = (2.0 - 3.0) / (0.25f64 + BN_EPS).sqrt() * 0.5 - 0.2;
        assert!(
            (y[0] as f64 - e0).abs() < 1e-5 && (y[1] as f64 - e1).abs() < 1e-5,
            "{y:?}"
        );
    }
}
