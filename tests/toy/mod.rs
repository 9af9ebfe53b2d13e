//! A toy staged detector for the node's tests, through the public API only: two stages over a
//! one-channel 4x4 map of the frame's first pixel; "pedestrian" when that pixel is over 127.
//! It can panic mid-frame (a [`POISON`] frame), hold in its first stage until a flag is set,
//! and spend a known time per stage on an injected clock.
#![allow(dead_code)]

use candle_core::{Device, Result, Tensor};
use pedcache::cache::calibration::{CacheableDetector, Region};
use pedcache::detect::{FlopsProfile, FrameDetections, Staged, TeacherTarget};
use pedcache::frame::RgbFrame;
use pedcache::node::{ManualClock, StopFlag};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Value of a frame's pixels that makes the toy detector panic in its second stage.
pub const POISON: u8 = 13;

/// See the module doc.
#[derive(Default)]
pub struct Toy {
    /// Wait in the first stage until the flag is set, telling the sender first.
    pub hold: Option<(StopFlag, mpsc::Sender<()>)>,
    /// Each stage (and the rest of the network) moves this clock by `.1`.
    pub cost: Option<(Arc<ManualClock>, Duration)>,
    /// FLOPs through each stage and in full, when not the default 1, 2 and 3 (a network whose
    /// rest costs more than a cache head, so calibration selects an exit).
    pub flops: Option<(Vec<u64>, u64)>,
}

/// The toy's answer for one frame.
#[derive(Clone, Debug)]
pub struct ToyOut(pub f32);

impl TeacherTarget for ToyOut {
    fn target(&self) -> Vec<f32> {
        vec![1.0 - self.0, self.0]
    }
    fn pedestrian(&self, score_thresh: f32) -> bool {
        self.0 >= score_thresh
    }
}

impl FrameDetections for ToyOut {
    fn frame_boxes(&self, (x, y, w, h): Region, score_thresh: f32) -> Vec<([f32; 4], f32, u32)> {
        if self.0 >= score_thresh {
            vec![(
                [x as f32, y as f32, (x + w) as f32, (y + h) as f32],
                self.0,
                1,
            )]
        } else {
            Vec::new()
        }
    }
    fn pedestrian_label(&self) -> u32 {
        1
    }
}

impl Toy {
    fn spend(&self) {
        if let Some((clock, d)) = &self.cost {
            clock.advance(*d);
        }
    }
}

impl Staged for Toy {
    type Input = Tensor;
    type State = Tensor;
    type Output = ToyOut;

    fn stage_names(&self) -> &[&'static str] {
        &["first", "second"]
    }
    fn start(&self, input: &Tensor) -> Result<Tensor> {
        Ok(input.clone())
    }
    fn run_stage(&self, i: usize, state: Tensor) -> Result<Tensor> {
        if i == 0 {
            if let Some((stop, entered)) = &self.hold {
                let _ = entered.send(());
                while !stop.is_stopped() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        self.spend();
        let v = state.flatten_all()?.to_vec1::<f32>()?;
        if i == 1 && v.iter().any(|&x| x == POISON as f32 / 255.0) {
            panic!("toy detector: poisoned frame");
        }
        Ok(state)
    }
    fn activation<'a>(&self, state: &'a Tensor) -> &'a Tensor {
        state
    }
    fn select(&self, state: &Tensor, keep: &[usize]) -> Result<Tensor> {
        let idx: Vec<u32> = keep.iter().map(|&k| k as u32).collect();
        state.index_select(&Tensor::new(idx.as_slice(), state.device())?, 0)
    }
    fn finish(&self, state: Tensor) -> Result<Vec<ToyOut>> {
        self.spend();
        let b = state.dim(0)?;
        let v = state.flatten_all()?.to_vec1::<f32>()?;
        Ok((0..b)
            .map(|i| ToyOut(if v[i * 16] > 0.5 { 0.9 } else { 0.1 }))
            .collect())
    }
    fn flops_profile(&self, _: &Tensor) -> Result<FlopsProfile> {
        let (through_stage, full) = self.flops.clone().unwrap_or((vec![1, 2], 3));
        Ok(FlopsProfile {
            through_stage,
            full,
        })
    }
}

impl CacheableDetector for Toy {
    fn model_name(&self) -> &'static str {
        "toy"
    }
    fn frame_units(&self, frame: &RgbFrame) -> Result<(Tensor, Vec<Region>)> {
        let v = frame.data[0] as f32 / 255.0;
        Ok((
            Tensor::from_vec(vec![v; 16], (1, 1, 4, 4), &Device::Cpu)?,
            vec![(0, 0, frame.width, frame.height)],
        ))
    }
    fn candidate_stages(&self, _: &FlopsProfile) -> Vec<usize> {
        vec![0]
    }
    fn classes(&self) -> usize {
        2
    }
    fn positive(&self) -> usize {
        1
    }
    fn stage_channels(&self, _: usize) -> usize {
        1
    }
}

/// A small frame whose pixels are all `level`.
pub fn frame(level: u8) -> RgbFrame {
    RgbFrame::new(4, 2, vec![level; 4 * 2 * 3]).unwrap()
}
