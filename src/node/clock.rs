//! Time and stopping, the two things every wait in the node depends on.
//!
//! - [`StopFlag`]: one per run, shared by every thread. Set by the embedding program (or a signal
//!   handler), or by the node itself when a stage fails; every wait in the node checks it, so a
//!   set flag ends the run promptly whatever state each thread is in.
//! - [`Clock`]: where the node reads the time (capture stamps, latencies, deadlines). The node runs
//!   on [`SystemClock`]; tests inject a [`ManualClock`] to check timing logic without measuring.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Longest a waiting thread sleeps before it looks at the stop flag again (sleeps are also cut
/// short by [`StopFlag::stop`]).
pub const POLL: Duration = Duration::from_millis(20);

#[derive(Default)]
struct StopInner {
    set: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

/// A cloneable "stop now" flag. Cloning shares it.
#[derive(Clone, Default)]
pub struct StopFlag(Arc<StopInner>);

impl StopFlag {
    /// A flag not yet set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask everything that holds this flag to stop (idempotent; safe from a signal handler
    /// thread such as `ctrlc`'s).
    pub fn stop(&self) {
        self.0.set.store(true, Ordering::SeqCst);
        let _guard = self.0.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.0.wake.notify_all();
    }

    /// Whether [`Self::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.0.set.load(Ordering::SeqCst)
    }

    /// Sleep for `d`, or less if the flag is set meanwhile. Returns `false` when stopped.
    pub fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now().checked_add(d);
        let mut guard = self.0.lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.is_stopped() {
                return false;
            }
            let now = Instant::now();
            let left = match until {
                Some(u) if u > now => u - now,
                Some(_) => return true,
                None => POLL,
            };
            guard = self
                .0
                .wake
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl std::fmt::Debug for StopFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StopFlag").field(&self.is_stopped()).finish()
    }
}

/// Where the node reads the time.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Instant;

    /// Wait until `t`, or until `stop` is set. Returns `false` when stopped.
    fn sleep_until(&self, t: Instant, stop: &StopFlag) -> bool;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, t: Instant, stop: &StopFlag) -> bool {
        stop.sleep(t.saturating_duration_since(Instant::now()))
    }
}

/// A clock that only moves when told to: [`Self::advance`], or a [`Clock::sleep_until`] (which
/// jumps to the instant instead of waiting). For tests of timing logic.
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    offset_ns: AtomicU64,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock standing at the moment it was made.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            offset_ns: AtomicU64::new(0),
        }
    }

    /// Move the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.offset_ns.fetch_add(ns, Ordering::SeqCst);
    }

    /// Time since the clock was made.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.offset_ns.load(Ordering::SeqCst))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + self.elapsed()
    }

    fn sleep_until(&self, t: Instant, stop: &StopFlag) -> bool {
        let target =
            u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        self.offset_ns.fetch_max(target, Ordering::SeqCst);
        !stop.is_stopped()
    }
}

/// Milliseconds in a duration, as the reports write them.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new();
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_millis(5));
        assert_eq!(c.now() - t0, Duration::from_millis(5));
        let stop = StopFlag::new();
        assert!(c.sleep_until(t0 + Duration::from_millis(50), &stop));
        assert_eq!(c.now() - t0, Duration::from_millis(50));
        // Sleeping until the past does not move it back.
        assert!(c.sleep_until(t0, &stop));
        assert_eq!(c.now() - t0, Duration::from_millis(50));
        stop.stop();
        assert!(!c.sleep_until(t0 + Duration::from_secs(1), &stop));
    }

    #[test]
    fn a_stopped_flag_ends_a_sleep_at_once() {
        let stop = StopFlag::new();
        let s2 = stop.clone();
        let sleeper = std::thread::spawn(move || s2.sleep(Duration::from_secs(3600)));
        stop.stop();
        // A wedged sleep would hang this join; the test harness's timeout is the guard.
        assert!(!sleeper.join().unwrap());
        assert!(!stop.sleep(Duration::ZERO));
    }
}

/// Node instants as wall-clock time for other processes and files: `Instant`s have no epoch, so
/// one reading of both clocks maps any instant onto the system clock.
#[derive(Clone, Copy, Debug)]
pub struct UnixTime {
    instant: Instant,
    system: std::time::SystemTime,
}

impl UnixTime {
    /// Anchored now.
    pub fn anchor() -> Self {
        Self {
            instant: Instant::now(),
            system: std::time::SystemTime::now(),
        }
    }

    /// `t` in ns since the Unix epoch (0 before it).
    pub fn ns(&self, t: Instant) -> u64 {
        let at = if t >= self.instant {
            self.system + (t - self.instant)
        } else {
            self.system - (self.instant - t)
        };
        unix_ns(at)
    }
}

/// A system time in ns since the Unix epoch (0 before it).
pub fn unix_ns(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}
