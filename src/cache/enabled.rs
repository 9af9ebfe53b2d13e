//! The cache-enabled forward (paper Algorithm 1): run the detector stage by stage; after a stage
//! with a selected exit, its head judges every item still in the batch; hits resolve at once
//! through the callback and leave the batch; the shrunken batch goes on. Items of one group (the
//! tiles of one frame) share a pedestrian answer: one tile's pedestrian hit resolves the frame.

use super::head::{adaptive_avg_pool, regrid, CacheHead};
use super::store::STORE_GRID;
use super::{ExitOn, Prediction};
use crate::detect::Staged;
use candle_core::{Result, Tensor};

/// A calibrated exit on one candidate layer.
#[derive(Clone, Debug)]
pub struct Exit {
    /// Index into the detector's stage list.
    pub stage: usize,
    pub layer: String,
    pub head: CacheHead,
    pub temperature: f32,
    pub theta: f32,
    /// Head FLOPs (pooling included), the paper's C1.
    pub c1: u64,
}

/// Pool a layer activation to the store's grid, one row of values per item: the same numbers
/// the medial store keeps, so heads see at run time exactly what they were trained on.
pub fn pooled_rows(act: &Tensor) -> Result<Tensor> {
    adaptive_avg_pool(act, STORE_GRID)
}

impl Exit {
    /// Calibrated predictions for a batch of activations `[B, C, H, W]`.
    pub fn predict(&self, act: &Tensor) -> Result<Vec<Prediction>> {
        let x4 = pooled_rows(act)?;
        self.predict_pooled(&x4)
    }

    /// Calibrated predictions for store-grid inputs `[B, C, 4, 4]`, on any device (moved to the
    /// head's when elsewhere, e.g. stored rows judged by heads on a GPU).
    pub fn predict_pooled(&self, x4: &Tensor) -> Result<Vec<Prediction>> {
        let x4 = x4.to_device(self.head.device())?;
        let logits: Vec<Vec<f32>> = self
            .head
            .forward(&regrid(&x4, self.head.arch.grid)?)?
            .to_vec2()?;
        Ok(logits
            .iter()
            .map(|l| super::calibration::predict(l, self.temperature))
            .collect())
    }
}

/// What sees each tapped stage's pooled output: `(stage, items still in the batch, pooled,
/// (h, w) of the activation)`.
pub type OnPooled<'a> = dyn FnMut(usize, &[usize], &Tensor, (usize, usize)) + 'a;

/// How one batch item was answered.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution<O> {
    /// A cache hit at exit `exit` (index into the exit list).
    Hit { exit: usize, prediction: Prediction },
    /// Another item of its group hit "pedestrian" at `exit`; this one stopped there too.
    Group { exit: usize },
    /// It went through the whole detector.
    Full(O),
}

/// Results of a cache-enabled batch.
#[derive(Clone, Debug)]
pub struct Outcome<O> {
    pub items: Vec<Resolution<O>>,
    /// Analytic FLOPs spent on each item (detector stages run + heads evaluated).
    pub flops: Vec<u64>,
}

/// A detector with its selected exits, in network order.
pub struct CacheEnabled<'d, D: Staged> {
    pub detector: &'d D,
    pub exits: Vec<Exit>,
    pub policy: ExitOn,
    /// Class index meaning "pedestrian present".
    pub positive: usize,
}

impl<D: Staged> CacheEnabled<'_, D> {
    /// Run a batch. `groups[i]` is item i's group (frame); `on_hit(item, exit, prediction)` is
    /// called for each hit as soon as it is known, before the rest of the batch goes on.
    pub fn forward(
        &self,
        input: &D::Input,
        groups: &[usize],
        on_hit: &mut dyn FnMut(usize, usize, Prediction),
    ) -> Result<Outcome<D::Output>> {
        self.forward_tapped(input, groups, &[], on_hit, &mut |_, _, _, _| {})
    }

    /// [`Self::forward`], and `on_pooled(stage, items, pooled, (h, w))` sees the output of every stage
    /// that has an exit or is listed in `taps`, before any head judges it: the activation pooled
    /// to the store's grid `[items.len(), C, 4, 4]` for the original batch indices `items` still
    /// in the batch (what the retrainer and the learner learn from), and its spatial size.
    pub fn forward_tapped(
        &self,
        input: &D::Input,
        groups: &[usize],
        taps: &[usize],
        on_hit: &mut dyn FnMut(usize, usize, Prediction),
        on_pooled: &mut OnPooled<'_>,
    ) -> Result<Outcome<D::Output>> {
        let profile = self.detector.flops_profile(input)?;
        let n = groups.len();
        let mut items: Vec<Option<Resolution<D::Output>>> = (0..n).map(|_| None).collect();
        let mut flops = vec![0u64; n];
        let mut heads = vec![0u64; n];
        // Original indices of the items still in the batch.
        let mut alive: Vec<usize> = (0..n).collect();
        let mut state = self.detector.start(input)?;
        for stage in 0..self.detector.stage_names().len() {
            state = self.detector.run_stage(stage, state)?;
            let has_exit = self.exits.iter().any(|x| x.stage == stage);
            if !has_exit && !taps.contains(&stage) {
                continue;
            }
            let act = self.detector.activation(&state);
            let (_, _, h, w) = act.dims4()?;
            let pooled = pooled_rows(act)?;
            on_pooled(stage, &alive, &pooled, (h, w));
            for (e, exit) in self
                .exits
                .iter()
                .enumerate()
                .filter(|(_, x)| x.stage == stage)
            {
                let pooled = if e > 0 && self.exits[e - 1].stage == stage {
                    // Two exits on one stage (not made by calibration): the batch may have shrunk.
                    pooled_rows(self.detector.activation(&state))?
                } else {
                    pooled.clone()
                };
                let preds = exit.predict_pooled(&pooled)?;
                let mut resolved = vec![false; alive.len()];
                for (pos, p) in preds.iter().enumerate() {
                    heads[alive[pos]] += exit.c1;
                    if resolved[pos] || !p.hits(exit.theta, self.policy, self.positive) {
                        continue;
                    }
                    let item = alive[pos];
                    on_hit(item, e, *p);
                    items[item] = Some(Resolution::Hit {
                        exit: e,
                        prediction: *p,
                    });
                    resolved[pos] = true;
                    if p.class == self.positive {
                        // The frame has its answer: its other tiles stop here too.
                        for (q, &other) in alive.iter().enumerate() {
                            if other != item && groups[other] == groups[item] && !resolved[q] {
                                items[other] = Some(Resolution::Group { exit: e });
                                resolved[q] = true;
                            }
                        }
                    }
                }
                for (pos, &item) in alive.iter().enumerate() {
                    if resolved[pos] {
                        flops[item] = profile.through_stage[stage] + heads[item];
                    }
                }
                if resolved.iter().any(|&r| r) {
                    let keep: Vec<usize> = (0..alive.len()).filter(|&p| !resolved[p]).collect();
                    if keep.is_empty() {
                        return Ok(finish(items, flops));
                    }
                    state = self.detector.select(&state, &keep)?;
                    alive = keep.iter().map(|&p| alive[p]).collect();
                }
            }
        }
        let outputs = self.detector.finish(state)?;
        for (item, out) in alive.iter().zip(outputs) {
            items[*item] = Some(Resolution::Full(out));
            flops[*item] = profile.full + heads[*item];
        }
        Ok(finish(items, flops))
    }
}

fn finish<O>(items: Vec<Option<Resolution<O>>>, flops: Vec<u64>) -> Outcome<O> {
    Outcome {
        items: items
            .into_iter()
            .map(|r| r.expect("every item resolved"))
            .collect(),
        flops,
    }
}
