//! The caching mechanism against brute force: K(S) subset choice vs actually running the
//! cache-enabled model with every subset; batch shrinking vs per-item runs on the real SSDLite.

mod common;

use candle_core::{Device, Result, Tensor};
use pedcache::cache::enabled::{CacheEnabled, Exit, Resolution};
use pedcache::cache::head::{CacheHead, HeadArch};
use pedcache::cache::select::{best_subset, k_score, ExitRecord};
use pedcache::cache::ExitOn;
use pedcache::detect::{FlopsProfile, Staged};

/// A stand-in detector whose stage activations are given tensors (recorded data) and whose
/// output is the item index: lets the real cache-enabled forward run on recorded activations.
struct Recorded {
    acts: Vec<Tensor>, // per stage: [N, C, 4, 4]
    profile: FlopsProfile,
}

#[derive(Clone)]
struct RecState {
    stage: Option<usize>,
    items: Vec<u32>,
    act: Tensor,
}

impl Staged for Recorded {
    type Input = usize;
    type State = RecState;
    type Output = u32;
    fn stage_names(&self) -> &[&'static str] {
        &["s0", "s1", "s2", "s3"][..self.acts.len()]
    }
    fn start(&self, n: &usize) -> Result<RecState> {
        Ok(RecState {
            stage: None,
            items: (0..*n as u32).collect(),
            act: Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu)?,
        })
    }
    fn run_stage(&self, i: usize, s: RecState) -> Result<RecState> {
        assert_eq!(s.stage.map_or(0, |k| k + 1), i, "stages run in order");
        let idx = Tensor::new(s.items.as_slice(), &Device::Cpu)?;
        Ok(RecState {
            stage: Some(i),
            act: self.acts[i].index_select(&idx, 0)?,
            items: s.items,
        })
    }
    fn activation<'a>(&self, s: &'a RecState) -> &'a Tensor {
        &s.act
    }
    fn select(&self, s: &RecState, keep: &[usize]) -> Result<RecState> {
        let idx = Tensor::new(
            keep.iter()
                .map(|&k| k as u32)
                .collect::<Vec<_>>()
                .as_slice(),
            &Device::Cpu,
        )?;
        Ok(RecState {
            stage: s.stage,
            items: keep.iter().map(|&k| s.items[k]).collect(),
            act: s.act.index_select(&idx, 0)?,
        })
    }
    fn finish(&self, s: RecState) -> Result<Vec<u32>> {
        Ok(s.items)
    }
    fn flops_profile(&self, _: &usize) -> Result<FlopsProfile> {
        Ok(self.profile.clone())
    }
}

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32) / (1u64 << 24) as f32
}

#[test]
fn k_score_choice_equals_brute_force_over_real_cache_enabled_runs() {
    let n = 120;
    let mut seed = 42u64;
    let stages = 4;
    let acts: Vec<Tensor> = (0..stages)
        .map(|_| {
            let v: Vec<f32> = (0..n * 8 * 16)
                .map(|_| lcg(&mut seed) * 4.0 - 2.0)
                .collect();
            Tensor::from_vec(v, (n, 8, 4, 4), &Device::Cpu).unwrap()
        })
        .collect();
    let profile = FlopsProfile {
        through_stage: vec![100, 300, 600, 800],
        full: 1000,
    };
    let det = Recorded {
        acts: acts.clone(),
        profile: profile.clone(),
    };
    for policy in [ExitOn::Any, ExitOn::Pedestrian] {
        // Random heads on each stage, thresholds that give a mix of hits and misses.
        let exits: Vec<Exit> = (0..stages)
            .map(|s| {
                let arch = HeadArch {
                    grid: 2,
                    convs: vec![],
                    linears: vec![],
                    classes: 2,
                };
                let head = CacheHead::new(arch, 8, 7 + s as u64, &Device::Cpu).unwrap();
                Exit {
                    stage: s,
                    layer: format!("s{s}"),
                    head,
                    temperature: 0.3,
                    theta: 0.55 + 0.1 * s as f32,
                    c1: 5 + 3 * s as u64,
                }
            })
            .collect();
        // Recorded predictions on the same data, the way calibration records them.
        let records: Vec<ExitRecord> = exits
            .iter()
            .map(|e| ExitRecord {
                preds: e.predict(&acts[e.stage]).unwrap(),
                theta: e.theta,
                c1: e.c1,
                c2: profile.after(e.stage),
            })
            .collect();
        let hits_any: usize = records
            .iter()
            .map(|r| {
                r.preds
                    .iter()
                    .filter(|p| p.hits(r.theta, policy, 1))
                    .count()
            })
            .sum();
        assert!(
            hits_any > 10 && hits_any < 4 * n - 10,
            "test needs a mix of hits and misses, got {hits_any}"
        );
        let mut best_real: Option<(u64, Vec<usize>)> = None;
        for mask in 0u32..(1 << stages) {
            let subset: Vec<usize> = (0..stages).filter(|i| mask & (1 << i) != 0).collect();
            let ce = CacheEnabled {
                detector: &det,
                exits: subset.iter().map(|&i| exits[i].clone()).collect(),
                policy,
                positive: 1,
            };
            // Each item its own group: per-item decisions, as in the paper.
            let groups: Vec<usize> = (0..n).collect();
            let out = ce.forward(&n, &groups, &mut |_, _, _| {}).unwrap();
            let spent: u64 = out.flops.iter().sum();
            // Items that went through keep their identity across the shrinking batch.
            for (i, r) in out.items.iter().enumerate() {
                if let Resolution::Full(id) = r {
                    assert_eq!(*id as usize, i);
                }
            }
            let k = k_score(&records, &subset, policy, 1).k;
            assert_eq!(
                (profile.full * n as u64) as i128 - spent as i128,
                k,
                "{policy:?} subset {subset:?}"
            );
            if best_real
                .as_ref()
                .is_none_or(|(b, s)| spent < *b || (spent == *b && subset.len() < s.len()))
            {
                best_real = Some((spent, subset));
            }
        }
        let (chosen, _) = best_subset(&records, policy, 1);
        let (real_flops, real_subset) = best_real.unwrap();
        let chosen_flops =
            (profile.full * n as u64) as i128 - k_score(&records, &chosen, policy, 1).k;
        assert_eq!(
            chosen_flops, real_flops as i128,
            "{policy:?}: K chose {chosen:?}, brute force {real_subset:?}"
        );
    }
}

#[test]
#[ignore = "needs ../shared/data and models/ssdlite_ped.safetensors (scripts/test.sh)"]
fn batch_shrinking_equals_per_item_runs_on_ssdlite() {
    let Some(model) = common::load_ssdlite() else {
        return;
    };
    let Some(dir) = common::require(
        &common::data_root().join("cityscapes-seq/leftImg8bit_sequence/train/aachen"),
        "Cityscapes",
    ) else {
        return;
    };
    let mut frames = pedcache::sim::source::list_frames(&dir).unwrap();
    frames.truncate(2);
    let plan = pedcache::detect::ssdlite::tiles::plan(
        2048,
        1024,
        pedcache::detect::ssdlite::TileMode::Auto,
    )
    .expect("2:1 tiles");
    let mut batch = Vec::new();
    for f in &frames {
        let frame = pedcache::frame::load_rgb(f).unwrap();
        batch.push(model.preprocess(&frame, &plan).unwrap());
    }
    let input = Tensor::cat(&batch, 0).unwrap(); // 4 tiles
                                                 // Exits with thresholds low enough that some tiles hit and others go on.
    let mut exits = Vec::new();
    for (k, stage) in [1usize, 3].iter().enumerate() {
        let c = [16, 24, 32, 64][*stage];
        let head = CacheHead::new(
            HeadArch {
                grid: 1,
                convs: vec![],
                linears: vec![],
                classes: 2,
            },
            c,
            11 + k as u64,
            &Device::Cpu,
        )
        .unwrap();
        exits.push(Exit {
            stage: *stage,
            layer: format!("l{stage}"),
            head,
            temperature: 1.0,
            theta: 0.0,
            c1: 1,
        });
    }
    // Pick per-exit thresholds between the tiles' confidences so the batch really shrinks.
    let mut st = model.start(&input).unwrap();
    for s in 0..=3 {
        st = model.run_stage(s, st).unwrap();
        for e in exits.iter_mut().filter(|e| e.stage == s) {
            let mut conf: Vec<f32> = e
                .predict(model.activation(&st))
                .unwrap()
                .iter()
                .map(|p| p.confidence)
                .collect();
            conf.sort_by(f32::total_cmp);
            e.theta = (conf[1] + conf[2]) / 2.0;
        }
    }
    let ce = CacheEnabled {
        detector: &model,
        exits,
        policy: ExitOn::Any,
        positive: 1,
    };
    let groups: Vec<usize> = (0..4).collect();
    let together = ce.forward(&input, &groups, &mut |_, _, _| {}).unwrap();
    let mut full_items = 0;
    for i in 0..4 {
        let one = input.narrow(0, i, 1).unwrap();
        let alone = ce.forward(&one, &[0], &mut |_, _, _| {}).unwrap();
        assert_eq!(alone.items[0], together.items[i], "tile {i}");
        assert_eq!(alone.flops[0], together.flops[i], "tile {i} flops");
        full_items += usize::from(matches!(alone.items[0], Resolution::Full(_)));
    }
    assert!(
        full_items > 0 && full_items < 4,
        "the batch must really shrink ({full_items} of 4 went through)"
    );
}
