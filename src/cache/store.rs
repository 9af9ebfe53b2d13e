//! The medial store (paper eq. 1): per sample, each candidate layer's activation pooled to a
//! small grid, the teacher's target distribution, and ground truth when known. Bounded by
//! reservoir sampling, so it holds a uniform sample of everything seen in bounded memory;
//! split 50/20/30 into train/val/test by a hash of the sample id, so a sample's split never
//! changes as the store evolves.

use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

/// Side of the pooled grid kept per layer (heads with smaller grids re-pool it).
pub const STORE_GRID: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Split {
    Train,
    Val,
    Test,
}

/// 50/20/30 by a hash of the id.
pub fn split_of(id: u64) -> Split {
    match splitmix(id ^ 0x5EED_CAFE) % 10 {
        0..=4 => Split::Train,
        5 | 6 => Split::Val,
        _ => Split::Test,
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One sample of the medial dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Unique, stable id (frame number x tiles + tile).
    pub id: u64,
    /// Per candidate layer: `channels * STORE_GRID^2` pooled values.
    pub feats: Vec<Vec<f32>>,
    /// Teacher distribution over the head's classes.
    pub target: Vec<f32>,
    /// Ground truth "pedestrian present", when labels exist.
    pub gt: Option<bool>,
}

/// A bounded reservoir of samples.
#[derive(Clone, Debug)]
pub struct MedialStore {
    pub capacity: usize,
    /// (layer name, channels) per candidate layer.
    pub layers: Vec<(String, usize)>,
    /// Spatial size of each candidate layer's activation per unit (for the pooling cost).
    pub layer_sizes: Vec<(usize, usize)>,
    pub samples: Vec<Sample>,
    seen: u64,
    rng: u64,
    /// Samples admitted since the last `mark_trained` (drives retraining, paper 3.7).
    pub new_since_training: usize,
}

impl MedialStore {
    pub fn new(capacity: usize, layers: Vec<(String, usize)>, seed: u64) -> Self {
        Self {
            capacity: capacity.max(1),
            layers,
            layer_sizes: Vec::new(),
            samples: Vec::new(),
            seen: 0,
            rng: seed,
            new_since_training: 0,
        }
    }

    /// Offer a sample (Algorithm R): the first `capacity` are kept; afterwards sample `k` replaces a
    /// random slot with probability capacity/k.
    pub fn push(&mut self, s: Sample) {
        self.seen += 1;
        if self.samples.len() < self.capacity {
            self.samples.push(s);
            self.new_since_training += 1;
            return;
        }
        self.rng = splitmix(self.rng);
        let j = (self.rng % self.seen) as usize;
        if j < self.capacity {
            self.samples[j] = s;
            self.new_since_training += 1;
        }
    }

    pub fn seen(&self) -> u64 {
        self.seen
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Share of the store that is new since the last training (retrain at >= 20%).
    pub fn fresh_fraction(&self) -> f64 {
        self.new_since_training.min(self.samples.len()) as f64 / self.samples.len().max(1) as f64
    }

    pub fn mark_trained(&mut self) {
        self.new_since_training = 0;
    }

    /// How many samples fall in a split.
    pub fn split_len(&self, which: Split) -> usize {
        self.samples
            .iter()
            .filter(|s| split_of(s.id) == which)
            .count()
    }

    /// Samples of a split, in id order (deterministic regardless of arrival order).
    pub fn split(&self, which: Split) -> Vec<&Sample> {
        let mut v: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| split_of(s.id) == which)
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Layer `l`'s inputs `[N, C, 4, 4]` and targets `[N, K]` for `samples`.
    pub fn tensors(
        &self,
        l: usize,
        samples: &[&Sample],
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let c = self.layers[l].1;
        let k = samples.first().map_or(0, |s| s.target.len());
        let x: Vec<f32> = samples
            .iter()
            .flat_map(|s| s.feats[l].iter().copied())
            .collect();
        let t: Vec<f32> = samples
            .iter()
            .flat_map(|s| s.target.iter().copied())
            .collect();
        Ok((
            Tensor::from_vec(x, (samples.len(), c, STORE_GRID, STORE_GRID), device)?,
            Tensor::from_vec(t, (samples.len(), k), device)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: u64) -> Sample {
        Sample {
            id,
            feats: vec![vec![id as f32; 2 * 16]],
            target: vec![0.5, 0.5],
            gt: None,
        }
    }

    #[test]
    fn never_exceeds_its_bound_and_stays_uniform() {
        let mut s = MedialStore::new(50, vec![("l".into(), 2)], 7);
        let mut early = 0usize;
        for id in 0..5000 {
            s.push(sample(id));
            assert!(s.len() <= 50);
        }
        assert_eq!(s.len(), 50);
        assert_eq!(s.seen(), 5000);
        // A uniform reservoir keeps about 10% of its samples from the first 500 ids.
        for x in &s.samples {
            early += usize::from(x.id < 500);
        }
        assert!(
            early <= 15,
            "{early} of 50 from the first 10% of the stream"
        );
    }

    #[test]
    fn split_is_deterministic_and_about_50_20_30() {
        let mut n = [0usize; 3];
        for id in 0..10_000 {
            assert_eq!(split_of(id), split_of(id));
            n[split_of(id) as usize] += 1;
        }
        assert!(
            (4700..5300).contains(&n[0])
                && (1750..2250).contains(&n[1])
                && (2700..3300).contains(&n[2]),
            "{n:?}"
        );
    }

    #[test]
    fn tensors_have_store_layout() {
        let mut s = MedialStore::new(10, vec![("l".into(), 2)], 1);
        for id in 0..10 {
            s.push(sample(id));
        }
        let all: Vec<&Sample> = s.samples.iter().collect();
        let (x, t) = s.tensors(0, &all, &Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[10, 2, 4, 4]);
        assert_eq!(t.dims(), &[10, 2]);
        assert_eq!(s.fresh_fraction(), 1.0);
        s.mark_trained();
        assert_eq!(s.fresh_fraction(), 0.0);
    }
}
