//! How much CPU learning takes from perception. The learner's work comes in short chunks (one
//! mini-batch, one detector stage); between two it reaches the pace. While perception is idle
//! (between frames) learning runs freely; while perception is mid-frame, learning runs only on
//! credit: it earns `cpu_share` seconds of work per second of wall time and spends the time it
//! works. At camera rate the idle time between frames pays for learning, so it stays out of
//! perception's way; at full load learning still gets `cpu_share` of a core and makes progress.

use crate::cache::train::Checkpoint;
use candle_core::Result;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest credit saved up (a longer idle spell does not buy a longer burst later).
const MAX_CREDIT: f64 = 0.05;
/// Largest debt (after long idle work, learning is not locked out for longer than this).
const MAX_DEBT: f64 = 0.5;
/// How often a paused learner looks again.
const NAP: Duration = Duration::from_millis(1);

/// The pace of one learner thread (see the module doc); also its cancel check.
pub struct Pace {
    perceiving: Arc<AtomicBool>,
    cancel: Arc<AtomicBool>,
    share: f64,
    credit: Cell<f64>,
    last: Cell<Instant>,
    paused: Cell<Duration>,
}

impl Pace {
    /// `perceiving` is set while perception is mid-frame; `cancel` gives the work up.
    pub fn new(perceiving: Arc<AtomicBool>, cancel: Arc<AtomicBool>, share: f64) -> Self {
        Self {
            perceiving,
            cancel,
            share: share.clamp(0.0, 1.0),
            credit: Cell::new(0.0),
            last: Cell::new(Instant::now()),
            paused: Cell::new(Duration::ZERO),
        }
    }

    /// Start timing a new piece of work (after waiting for messages, which is not work).
    pub fn restart(&self) {
        self.last.set(Instant::now());
    }

    /// Whether the work is to be given up.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Total time spent paused for perception.
    pub fn paused(&self) -> Duration {
        self.paused.get()
    }

    fn settle(&self, now: Instant, worked: bool) {
        let dt = now.saturating_duration_since(self.last.get()).as_secs_f64();
        let spent = if worked { dt } else { 0.0 };
        let c = self.credit.get() + self.share * dt - spent;
        self.credit.set(c.clamp(-MAX_DEBT, MAX_CREDIT));
        self.last.set(now);
    }
}

impl Checkpoint for Pace {
    fn reached(&self) -> Result<()> {
        self.settle(Instant::now(), true);
        let started = Instant::now();
        let mut napped = false;
        while self.perceiving.load(Ordering::Relaxed) && self.credit.get() < 0.0 {
            if self.cancel.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(NAP);
            napped = true;
            self.settle(Instant::now(), false);
        }
        if napped {
            self.paused.set(self.paused.get() + started.elapsed());
        }
        if self.cancel.load(Ordering::Relaxed) {
            candle_core::bail!("learning cancelled");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_perception_holds_learning_to_its_share() {
        let perceiving = Arc::new(AtomicBool::new(true));
        let pace = Pace::new(perceiving.clone(), Arc::new(AtomicBool::new(false)), 0.25);
        let t0 = Instant::now();
        let mut worked = Duration::ZERO;
        while t0.elapsed() < Duration::from_millis(400) {
            let w = Instant::now();
            while w.elapsed() < Duration::from_millis(2) {} // a 2 ms chunk of work
            worked += w.elapsed();
            pace.reached().unwrap();
        }
        let share = worked.as_secs_f64() / t0.elapsed().as_secs_f64();
        assert!((0.15..0.4).contains(&share), "share {share}");
        // Idle perception: no pause at all.
        perceiving.store(false, Ordering::Relaxed);
        let before = pace.paused();
        for _ in 0..50 {
            pace.reached().unwrap();
        }
        assert_eq!(pace.paused(), before);
    }

    #[test]
    fn cancel_ends_a_paused_learner() {
        let cancel = Arc::new(AtomicBool::new(true));
        let pace = Pace::new(Arc::new(AtomicBool::new(true)), cancel, 0.0);
        assert!(pace.reached().is_err());
    }
}
