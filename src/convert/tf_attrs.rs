//! Reading and checking TensorFlow node attributes: typed access with defaults, and the conv
//! attributes the fold supports (NHWC, no dilation). Errors are one line naming the node.

use super::graphdef::{attr_value::Value, AttrValue, NodeDef};
use crate::{bail, Result};

pub(super) fn attr<'n>(n: &'n NodeDef, key: &str) -> Option<&'n Value> {
    n.attr.get(key).and_then(|a: &AttrValue| a.value.as_ref())
}

/// A string attr, `default` when absent; an error when it has another type.
pub(super) fn attr_str(
    file: &str,
    n: &NodeDef,
    key: &str,
    default: Option<&str>,
) -> Result<String> {
    match attr(n, key) {
        Some(Value::S(s)) => Ok(String::from_utf8_lossy(s).into_owned()),
        Some(_) => bail!("{file}: {} '{}' attr '{key}' is not a string", n.op, n.name),
        None => match default {
            Some(d) => Ok(d.to_string()),
            None => bail!("{file}: {} '{}' has no '{key}' attr", n.op, n.name),
        },
    }
}

/// An int-list attr, `default` when absent.
pub(super) fn attr_ints(
    file: &str,
    n: &NodeDef,
    key: &str,
    default: Option<&[i64]>,
) -> Result<Vec<i64>> {
    match attr(n, key) {
        Some(Value::List(l)) => Ok(l.i.clone()),
        Some(_) => bail!(
            "{file}: {} '{}' attr '{key}' is not an int list",
            n.op,
            n.name
        ),
        None => match default {
            Some(d) => Ok(d.to_vec()),
            None => bail!("{file}: {} '{}' has no '{key}' attr", n.op, n.name),
        },
    }
}

/// Check data_format NHWC, padding SAME, dilations all 1 and a sane strides attr.
pub(super) fn check_conv_attrs(file: &str, n: &NodeDef) -> Result<()> {
    let fmt = attr_str(file, n, "data_format", Some("NHWC"))?;
    if fmt != "NHWC" {
        bail!(
            "{file}: {} '{}' has data_format {fmt}, expected NHWC",
            n.op,
            n.name
        );
    }
    let pad = attr_str(file, n, "padding", None)?;
    if pad != "SAME" {
        bail!(
            "{file}: {} '{}' has padding {pad}, only SAME is supported",
            n.op,
            n.name
        );
    }
    let dil = attr_ints(file, n, "dilations", Some(&[1, 1, 1, 1]))?;
    if dil.iter().any(|&d| d != 1) {
        bail!(
            "{file}: {} '{}' has dilations {dil:?}, only 1 is supported",
            n.op,
            n.name
        );
    }
    let strides = attr_ints(file, n, "strides", None)?;
    if strides.len() != 4 || strides[0] != 1 || strides[3] != 1 || strides.iter().any(|&s| s < 1) {
        bail!(
            "{file}: {} '{}' has strides {strides:?}, expected [1, s, s, 1]",
            n.op,
            n.name
        );
    }
    Ok(())
}

/// Check that a BN / bias parameter is a vector of `len` values.
pub(super) fn check_vec(
    file: &str,
    what: &str,
    node: &NodeDef,
    shape: &[usize],
    len: usize,
) -> Result<()> {
    if shape != [len] {
        bail!(
            "{file}: {what} of {} '{}' has shape {shape:?}, expected [{len}]",
            node.op,
            node.name
        );
    }
    Ok(())
}
