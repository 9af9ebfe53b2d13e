//! How the node notices a failing stage: every thread runs its body through [`Supervisor::run`],
//! which turns an `Err` or a panic into [`crate::Error::Stage`], keeps the first one, and sets the
//! run's stop flag so that every other thread winds down.

use super::clock::StopFlag;
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Shared by the node's threads for one run.
#[derive(Clone, Default)]
pub struct Supervisor(Arc<Inner>);

#[derive(Default)]
struct Inner {
    stop: StopFlag,
    failure: Mutex<Option<crate::Error>>,
    /// Set once the node stops waiting for stragglers: a send that would block gives up.
    abandon: AtomicBool,
}

impl Supervisor {
    /// A supervisor whose run stops when `stop` is set.
    pub fn new(stop: StopFlag) -> Self {
        Self(Arc::new(Inner {
            stop,
            ..Inner::default()
        }))
    }

    pub fn stop_flag(&self) -> &StopFlag {
        &self.0.stop
    }

    pub fn is_stopped(&self) -> bool {
        self.0.stop.is_stopped()
    }

    /// Record that `stage` failed (the first failure wins) and stop the run.
    pub fn fail(&self, stage: &'static str, cause: impl std::fmt::Display) {
        let mut f = self.0.failure.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            log::debug!("{stage} stage failed: {cause}");
            *f = Some(crate::Error::Stage {
                stage,
                cause: cause.to_string(),
            });
        }
        drop(f);
        self.0.stop.stop();
    }

    /// Whether a stage has failed.
    pub fn failed(&self) -> bool {
        self.0
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The first failure, taken out.
    pub fn take_failure(&self) -> Option<crate::Error> {
        self.0
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    pub fn abandon(&self) {
        self.0.abandon.store(true, Ordering::SeqCst);
    }

    pub fn abandoned(&self) -> bool {
        self.0.abandon.load(Ordering::SeqCst)
    }

    /// Run a stage's body: an `Err` or a panic is recorded as that stage's failure. Returns the
    /// body's value when it succeeded.
    pub fn run<R>(
        &self,
        stage: &'static str,
        body: impl FnOnce() -> crate::Result<R>,
    ) -> Option<R> {
        match catch_unwind(AssertUnwindSafe(body)) {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                self.fail(stage, e.one_line());
                None
            }
            Err(payload) => {
                self.fail(stage, format!("panicked: {}", panic_message(&*payload)));
                None
            }
        }
    }
}

/// Where a background thread (the retrainer, the learner) leaves the panic that ended it, for
/// its handle's `check` to turn into that stage's failure.
#[derive(Debug, Default)]
pub struct FailureSlot(Mutex<Option<String>>);

impl FailureSlot {
    /// Record the thread's panic, as `{what}: {message}` (`what`: e.g. "panicked").
    pub fn panicked(&self, what: &str, payload: &(dyn Any + Send)) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(format!("{what}: {}", panic_message(payload)));
    }

    /// `Err` ([`crate::Error::Stage`], `stage`) once a panic is recorded.
    pub fn check(&self, stage: &'static str) -> crate::Result<()> {
        match &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(cause) => Err(crate::Error::Stage {
                stage,
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// The text a panic was raised with.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_failure_wins_and_stops_the_run() {
        let stop = StopFlag::new();
        let s = Supervisor::new(stop.clone());
        assert_eq!(s.run("source", || Ok(3)), Some(3));
        assert!(!stop.is_stopped());
        let r: Option<()> = s.run("perception", || std::panic::panic_any("boom".to_string()));
        assert!(r.is_none());
        assert!(stop.is_stopped());
        let r: Option<()> = s.run("planner", || Err(crate::err!("later")));
        assert!(r.is_none());
        let e = s.take_failure().unwrap();
        assert_eq!(e.one_line(), "perception stage failed: panicked: boom");
        assert!(matches!(
            e,
            crate::Error::Stage {
                stage: "perception",
                ..
            }
        ));
    }
}
