//! How much CPU learning takes from perception. Perception forks and joins across every core,
//! so a learner thread holding a core while perception is mid-frame stalls the whole frame (on
//! this 2-core machine, even a nice-19 busy loop doubles perception's time): learning yields to
//! perception cooperatively. Its work comes in short chunks (one mini-batch, one detector stage);
//! between two it reaches the pace ([`Pace`]):
//!
//! - perception idle (between frames): learning runs;
//! - perception mid-frame, keeping up with its camera (no frame waiting when it ends one):
//!   learning waits, so it lives on the idle time between frames alone;
//! - perception saturated (a frame already waiting at the end of most frames: max speed,
//!   overload): learning runs on credit, earning `cpu_share` seconds of work per second
//!   perception is busy, so it still makes progress.
//!
//! Perception reports its frames to a [`Gauge`]: whether it is mid-frame, and whether frames
//! were waiting when it ended its recent ones.

use crate::cache::train::Checkpoint;
use candle_core::Result;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest credit saved up (a long frame does not buy a long burst later).
const MAX_CREDIT: f64 = 0.005;
/// Largest debt (after long idle work, learning is not locked out for longer than this).
const MAX_DEBT: f64 = 0.5;
/// How often a paused learner looks again.
const NAP: Duration = Duration::from_millis(1);

/// Lower the calling thread's scheduling priority to `nice` (Linux; elsewhere a no-op): when
/// perception's threads and a learner thread are both runnable, the kernel runs perception's.
/// Perception forks and joins across every core, so one of its workers preempted by learning
/// would hold the whole frame back.
pub fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority only read the calling thread's id and set its nice value.
        unsafe {
            let tid = libc::gettid();
            if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) != 0 {
                log::debug!("learner: could not lower the thread's priority to nice {nice}");
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// What perception tells the learner about its load.
#[derive(Debug, Default)]
pub struct Gauge {
    perceiving: AtomicBool,
    /// Share of recent frames that ended with another one waiting, as f64 bits (running mean).
    backlog: AtomicU64,
}

impl Gauge {
    /// A gauge that reads "idle, keeping up".
    pub fn new() -> Self {
        Self::default()
    }

    /// Perception starts a frame.
    pub fn frame_started(&self) {
        self.perceiving.store(true, Ordering::Relaxed);
    }

    /// Perception ended a frame (however it ended); `backlog`: another frame was waiting.
    pub fn frame_ended(&self, backlog: bool) {
        let old = f64::from_bits(self.backlog.load(Ordering::Relaxed));
        let new = 0.8 * old + 0.2 * f64::from(u8::from(backlog));
        self.backlog.store(new.to_bits(), Ordering::Relaxed);
        self.perceiving.store(false, Ordering::Relaxed);
    }

    /// Whether perception is mid-frame.
    pub fn perceiving(&self) -> bool {
        self.perceiving.load(Ordering::Relaxed)
    }

    /// Whether perception runs frame after frame with the next one already waiting.
    pub fn saturated(&self) -> bool {
        f64::from_bits(self.backlog.load(Ordering::Relaxed)) > 0.5
    }
}

/// The pace of one learner thread (see the module doc); also its cancel check.
pub struct Pace {
    gauge: Arc<Gauge>,
    cancel: Arc<AtomicBool>,
    share: f64,
    credit: Cell<f64>,
    last: Cell<Instant>,
    paused: Cell<Duration>,
}

impl Pace {
    /// `gauge` is perception's; `cancel` gives the work up.
    pub fn new(gauge: Arc<Gauge>, cancel: Arc<AtomicBool>, share: f64) -> Self {
        Self {
            gauge,
            cancel,
            share: share.clamp(0.0, 1.0),
            credit: Cell::new(0.0),
            last: Cell::new(Instant::now()),
            paused: Cell::new(Duration::ZERO),
        }
    }

    /// Begin a new piece of work (after waiting for messages, which is not work): wait as at a
    /// checkpoint first. The work is usually handed over at the end of perception's frame, and
    /// starting it then, on the other core, slowed that frame's last milliseconds (allocation
    /// and page faults in both threads at once): measured on the demo with every hit audited,
    /// perception p95 4.7 ms when audits started at once vs 2.9 ms when they waited.
    pub fn begin(&self) -> Result<()> {
        self.restart();
        self.reached()
    }

    /// Start timing a new piece of work without waiting (a calibration: it reaches its first
    /// checkpoint within a mini-batch, and its start allocates little).
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

    /// Account for the time since the last call: only time while perception is busy counts
    /// (the flag is sampled now; chunks are short).
    fn settle(&self, now: Instant, worked: bool) {
        let dt = now.saturating_duration_since(self.last.get()).as_secs_f64();
        if self.gauge.perceiving() {
            let spent = if worked { dt } else { 0.0 };
            let c = self.credit.get() + self.share * dt - spent;
            self.credit.set(c.clamp(-MAX_DEBT, MAX_CREDIT));
        }
        self.last.set(now);
    }

    /// Whether learning waits now.
    fn must_wait(&self) -> bool {
        self.gauge.perceiving() && (!self.gauge.saturated() || self.credit.get() < 0.0)
    }
}

impl Checkpoint for Pace {
    fn reached(&self) -> Result<()> {
        self.settle(Instant::now(), true);
        let started = Instant::now();
        let mut napped = false;
        while self.must_wait() {
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

    /// A gauge whose perception is mid-frame, saturated or with idle time between frames.
    fn gauge(saturated: bool) -> Arc<Gauge> {
        let g = Arc::new(Gauge::new());
        for _ in 0..10 {
            g.frame_started();
            g.frame_ended(saturated);
        }
        assert_eq!(g.saturated(), saturated);
        g.frame_started();
        g
    }

    fn work_for(pace: &Pace, total: Duration) -> f64 {
        let t0 = Instant::now();
        let mut worked = Duration::ZERO;
        while t0.elapsed() < total {
            let w = Instant::now();
            while w.elapsed() < Duration::from_millis(2) {} // a 2 ms chunk of work
            worked += w.elapsed();
            if pace.reached().is_err() {
                break;
            }
        }
        worked.as_secs_f64() / t0.elapsed().as_secs_f64()
    }

    #[test]
    fn saturated_perception_holds_learning_to_its_share() {
        let pace = Pace::new(gauge(true), Arc::new(AtomicBool::new(false)), 0.25);
        let share = work_for(&pace, Duration::from_millis(400));
        assert!((0.15..0.4).contains(&share), "share {share}");
    }

    #[test]
    fn with_idle_time_learning_waits_for_the_frame_and_runs_between_frames() {
        let g = gauge(false);
        let cancel = Arc::new(AtomicBool::new(false));
        let pace = Pace::new(g.clone(), cancel.clone(), 0.5);
        // Mid-frame: it waits until the frame ends.
        let ender = {
            let g = g.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                g.perceiving.store(false, Ordering::Relaxed);
            })
        };
        let t = Instant::now();
        pace.reached().unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(45),
            "{:?}",
            t.elapsed()
        );
        ender.join().unwrap();
        // Between frames: no pause at all.
        let before = pace.paused();
        for _ in 0..50 {
            pace.reached().unwrap();
        }
        assert_eq!(pace.paused(), before);
    }

    #[test]
    fn cancel_ends_a_paused_learner() {
        let cancel = Arc::new(AtomicBool::new(true));
        let pace = Pace::new(gauge(false), cancel, 0.0);
        assert!(pace.reached().is_err());
    }

    #[test]
    fn the_gauge_turns_saturated_when_frames_keep_waiting_and_back() {
        let g = Gauge::new();
        assert!(!g.saturated());
        for _ in 0..4 {
            g.frame_ended(true);
        }
        assert!(g.saturated(), "four backlogged frames in a row");
        for _ in 0..4 {
            g.frame_ended(false);
        }
        assert!(!g.saturated(), "four frames that kept up");
    }
}
