//! The full detector with its candidate layers tapped: each unit's activation at every candidate
//! stage pooled to the store's grid (the medial store's inputs), and the detector's outputs (the
//! teacher). The learner runs it to audit hits; perception runs it when it has the time to.

use crate::cache::enabled::pooled_rows;
use crate::detect::Staged;
use candle_core::Result;

/// One pass of the full detector with taps.
pub struct Tapped<O> {
    /// Per batch item, the detector's output.
    pub outputs: Vec<O>,
    /// Per batch item, per tapped stage (in the order given), the pooled activation.
    pub feats: Vec<Vec<Vec<f32>>>,
    /// Per tapped stage, the activation's spatial size (the pooling cost).
    pub sizes: Vec<(usize, usize)>,
}

/// Run `det` on `input`, tapping `stages` (ascending); `between()` is reached after every stage
/// (a learner pauses there, or gives up with an `Err`).
pub fn full_tapped<D: Staged>(
    det: &D,
    input: &D::Input,
    stages: &[usize],
    between: &dyn Fn() -> Result<()>,
) -> Result<Tapped<D::Output>> {
    let mut state = det.start(input)?;
    let mut feats: Vec<Vec<Vec<f32>>> = Vec::new();
    let mut sizes = Vec::with_capacity(stages.len());
    for stage in 0..det.stage_names().len() {
        state = det.run_stage(stage, state)?;
        if stages.contains(&stage) {
            let act = det.activation(&state);
            let (_, _, h, w) = act.dims4()?;
            sizes.push((h, w));
            let rows: Vec<Vec<f32>> = pooled_rows(act)?.flatten_from(1)?.to_vec2()?;
            if feats.is_empty() {
                feats = vec![Vec::with_capacity(stages.len()); rows.len()];
            }
            for (u, r) in rows.into_iter().enumerate() {
                feats[u].push(r);
            }
        }
        between()?;
    }
    let outputs = det.finish(state)?;
    if feats.is_empty() {
        feats = vec![Vec::new(); outputs.len()];
    }
    Ok(Tapped {
        outputs,
        feats,
        sizes,
    })
}
