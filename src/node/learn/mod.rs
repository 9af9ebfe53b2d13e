//! Learning on the drive (paper 3.5-3.7): the node starts from nothing (`calib: auto`), fills a
//! medial store from its own frames, runs the complete automated calibration (head search,
//! temperatures, thresholds X/2^n, subset) in the background, and swaps each adopted exit set in
//! between frames; it recalibrates when a fifth of the store is new and when audited hits show
//! the live set has drifted (then the set is withdrawn until a recalibration passes).
//!
//! - Perception sends the units the full detector labelled (misses), each with its pooled input
//!   at every candidate layer and the teacher's target at the node's score threshold.
//! - Audits: perception sends a share of the frames a hit resolved (and every one while it would
//!   otherwise idle); the learner runs the full detector on them on its own threads, compares,
//!   and stores the audited units too, so the store is not made of misses only.
//! - Adoption: a candidate replaces the live set only if it is better on the store's held-out
//!   units (the retrainer's rule, [`crate::node::retrain::adopt`]); it is written as the next
//!   version of the learn dir ([`versions`]) before it goes live, so every alert's version is
//!   on disk.
//! - Resources: the learner runs on its own rayon pool (`threads`), and its work pauses for
//!   perception beyond `cpu_share` of a core ([`pace`]). Offering never blocks perception: what
//!   does not fit its queues is dropped and counted.
//!
//! Lifecycle: [`Learner::spawn`], [`Learner::offer_units`] / [`Learner::offer_audit`] /
//! [`Learner::verdicts`] per frame, [`Learner::check`] for a failure, [`Learner::stop`].

mod auditor;
pub mod pace;
mod settings;
pub mod taps;
pub mod versions;
mod worker;

use crate::cache::calibration::ModelFacts;
use crate::cache::ExitOn;
use crate::detect::{FlopsProfile, Staged};
use crate::node::clock::{StopFlag, POLL};
use crate::node::live::LiveExits;
use crate::node::supervise::FailureSlot;
use candle_core::Device;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use serde::Serialize;
pub use settings::LearnSettings;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
pub use versions::{Provenance, Trigger};

/// Frames per bin of the audit figures (the report's timeline uses the same bins).
pub const BIN_FRAMES: usize = 50;

/// What the learner is told about the detector and where it writes.
#[derive(Clone, Debug)]
pub struct LearnSetup {
    /// The detector's names and classes.
    pub facts: ModelFacts,
    /// Candidate stages (network order): the store's layers.
    pub candidates: Vec<usize>,
    /// Channels of each candidate stage.
    pub channels: Vec<usize>,
    /// Where versions are written.
    pub learn_dir: PathBuf,
    /// Which answers may exit early.
    pub policy: ExitOn,
    /// The score the node alerts on (the teacher's presence decision).
    pub score_thresh: f32,
    /// Where the detector runs (adopted heads go there).
    pub device: Device,
    /// How it learns.
    pub settings: LearnSettings,
}

/// A unit the full detector labelled: its id, pooled input per candidate layer, teacher target.
#[derive(Clone, Debug)]
pub struct LabelledUnit {
    /// The unit's index in its frame.
    pub unit: usize,
    /// Its pooled input at each candidate layer.
    pub feats: Vec<Vec<f32>>,
    /// The teacher's distribution at the node's score threshold.
    pub target: Vec<f32>,
}

/// A hit judged against the full detector on its unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The cache's pedestrian answer equals the full detector's.
    pub agree: bool,
    /// The full detector saw a pedestrian the cache said was not there.
    pub missed_pedestrian: bool,
}

impl Verdict {
    /// The verdict on a cache answer `cached` given the full detector's `full`.
    pub fn of(cached: bool, full: bool) -> Self {
        Self {
            agree: cached == full,
            missed_pedestrian: full && !cached,
        }
    }
}

/// A frame a hit resolved, to be audited on the learner's threads.
pub struct AuditJob<I> {
    /// The frame's index in its source.
    pub frame: usize,
    /// The live version that answered it.
    pub version: Option<u32>,
    /// The frame's detector input (its units as one batch).
    pub input: I,
    /// Per unit a hit answered: (unit, pedestrian answer).
    pub hits: Vec<(usize, bool)>,
    /// Units the full detector has not labelled yet (they enter the store).
    pub unlabelled: Vec<usize>,
}

/// What perception tells the learner besides audits.
enum Note {
    Units {
        frame: usize,
        units: Vec<LabelledUnit>,
        sizes: Vec<(usize, usize)>,
        profile: Option<FlopsProfile>,
    },
    Verdicts {
        frame: usize,
        version: Option<u32>,
        verdicts: Vec<Verdict>,
    },
}

/// One adopted version, as the report lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VersionRecord {
    /// Its number (`vNNNN` in the learn dir).
    pub version: u32,
    /// The latest frame the learner had seen when the set went live.
    pub frame: usize,
    /// Why its calibration ran.
    pub trigger: Trigger,
    /// Held-out units it was judged on.
    pub val_units: usize,
    /// Its answers there that differ from the teacher's.
    pub val_errors: usize,
}

/// Audits over a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AuditStats {
    /// Hits judged against the full detector.
    pub hits_audited: usize,
    /// Of those, pedestrian answers that differ from the full detector's.
    pub disagreements: usize,
    /// Of those, pedestrians the full detector saw and the cache said were not there.
    pub missed_pedestrians: usize,
    /// Frames audited (on the learner's threads or by perception itself).
    pub frames_audited: usize,
    /// Sampled audits not sent because the learner's queue was full.
    pub skipped: usize,
}

/// What the learner did over a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LearnStats {
    /// The frame the learner had reached when the first set went live.
    pub first_adoption_frame: Option<usize>,
    /// Every version adopted, in order.
    pub versions: Vec<VersionRecord>,
    /// Calibrations run, and candidates not adopted (not better on held-out units).
    pub calibrations: usize,
    /// Candidates not adopted.
    pub rejected: usize,
    /// Why the latest one was not, as one line.
    pub last_rejection: Option<String>,
    /// Times the live set was withdrawn for its audited accuracy.
    pub withdrawals: usize,
    /// Units taken into the store, and units dropped because the learner was behind.
    pub units: usize,
    /// Units perception could not hand over (the learner's queue was full).
    pub units_dropped: usize,
    /// What the audits found.
    pub audit: AuditStats,
    /// Per bin of [`BIN_FRAMES`] frames (frame / 50): (hits audited, agreeing).
    pub audit_bins: BTreeMap<usize, (usize, usize)>,
    /// Time the learner spent paused for perception, s.
    pub paused_s: f64,
    /// Longest calibration, s.
    pub max_calibration_s: f64,
    /// A calibration or write that failed (the live set stays), as one line.
    pub error: Option<String>,
}

/// What the thread shares with its handle.
#[derive(Default)]
struct Shared {
    stats: Mutex<LearnStats>,
    failure: FailureSlot,
    /// Stop starting work; finish what is queued.
    stopping: AtomicBool,
    /// The frame perception is on.
    perception_frame: AtomicUsize,
}

impl Shared {
    fn lock_stats(&self) -> std::sync::MutexGuard<'_, LearnStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle on the learner thread.
pub struct Learner<D: Staged> {
    notes: Option<Sender<Note>>,
    audits: Option<Sender<AuditJob<D::Input>>>,
    done: Receiver<()>,
    audit_done: Receiver<()>,
    shared: Arc<Shared>,
    gauge: Arc<pace::Gauge>,
    cancel: Arc<AtomicBool>,
    units_dropped: usize,
    skipped: usize,
}

impl<D> Learner<D>
where
    D: crate::cache::calibration::CacheableDetector + Send + Sync + 'static,
    D::Input: Send + 'static,
    D::Output: crate::detect::TeacherTarget,
{
    /// Start the learner for `live` (which it replaces whole when it adopts a set); versions
    /// are numbered from `after + 1`.
    pub fn spawn(
        det: Arc<D>,
        live: Arc<LiveExits>,
        setup: LearnSetup,
        after: u32,
    ) -> crate::Result<Self> {
        setup
            .settings
            .validate()
            .map_err(|e| crate::err!("learning: {e}"))?;
        let (notes_tx, notes_rx) = bounded::<Note>(1024);
        // Each audit holds a frame's input batch: keep few.
        let (audits_tx, audits_rx) = bounded::<AuditJob<D::Input>>(4);
        let (done_tx, done) = bounded::<()>(0);
        let (audit_done_tx, audit_done) = bounded::<()>(0);
        let shared = Arc::new(Shared::default());
        let gauge = Arc::new(pace::Gauge::new());
        let cancel = Arc::new(AtomicBool::new(false));
        let nice = setup.settings.nice;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(setup.settings.threads)
            .thread_name(|i| format!("learner-{i}"))
            .start_handler(move |_| pace::lower_priority(nice))
            .build()
            .map_err(|e| crate::err!("starting the learner's thread pool: {e}"))?;
        let auditor = auditor::Auditor {
            det: det.clone(),
            candidates: setup.candidates.clone(),
            score_thresh: setup.score_thresh,
            pace: pace::Pace::new(gauge.clone(), cancel.clone(), setup.settings.cpu_share),
        };
        // The auditor has a pool of its own, so an audit never waits for a calibration.
        let audit_pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "auditor-pool".into())
            .start_handler(move |_| pace::lower_priority(nice))
            .build()
            .map_err(|e| crate::err!("starting the auditor's thread pool: {e}"))?;
        let (sh, to_learner) = (shared.clone(), notes_tx.clone());
        std::thread::Builder::new()
            .name("auditor".into())
            .spawn(move || {
                let _done = audit_done_tx;
                let sh2 = sh.clone();
                let r = catch_unwind(AssertUnwindSafe(|| {
                    audit_pool.install(move || auditor.run(&audits_rx, &to_learner, &sh2))
                }));
                if let Err(p) = r {
                    sh.failure.panicked("auditor panicked", &*p);
                }
            })
            .map_err(|e| crate::err!("starting the auditor thread: {e}"))?;
        let (sh, busy, stop) = (shared.clone(), gauge.clone(), cancel.clone());
        std::thread::Builder::new()
            .name("learner".into())
            .spawn(move || {
                let _done = done_tx;
                let r = catch_unwind(AssertUnwindSafe(|| {
                    pool.install(|| {
                        let pace = pace::Pace::new(busy, stop, setup.settings.cpu_share);
                        let mut w = worker::Worker::new(live, setup, after, &sh, pace);
                        w.run(&notes_rx);
                    })
                }));
                if let Err(p) = r {
                    sh.failure.panicked("panicked", &*p);
                }
            })
            .map_err(|e| crate::err!("starting the learner thread: {e}"))?;
        Ok(Self {
            notes: Some(notes_tx),
            audits: Some(audits_tx),
            done,
            audit_done,
            shared,
            gauge,
            cancel,
            units_dropped: 0,
            skipped: 0,
        })
    }
}

impl<D: Staged> Learner<D> {
    /// Where perception reports its frames (the learner's pace reads it).
    pub fn gauge(&self) -> Arc<pace::Gauge> {
        self.gauge.clone()
    }

    /// Perception is on `frame` now.
    pub fn at_frame(&self, frame: usize) {
        self.shared.perception_frame.store(frame, Ordering::Relaxed);
    }

    /// Units of `frame` the full detector labelled. Never blocks.
    pub fn offer_units(
        &mut self,
        frame: usize,
        units: Vec<LabelledUnit>,
        sizes: Vec<(usize, usize)>,
        profile: FlopsProfile,
    ) {
        if units.is_empty() {
            return;
        }
        let profile = Some(profile);
        let n = units.len();
        let Some(tx) = &self.notes else { return };
        let note = Note::Units {
            frame,
            units,
            sizes,
            profile,
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(note) {
            self.units_dropped += n;
        }
    }

    /// Hits perception judged itself against the full detector. Never blocks.
    pub fn verdicts(&mut self, frame: usize, version: Option<u32>, verdicts: Vec<Verdict>) {
        if let Some(tx) = &self.notes {
            let _ = tx.try_send(Note::Verdicts {
                frame,
                version,
                verdicts,
            });
        }
    }

    /// Whether an audit would be taken now (the learner's audit queue is empty).
    pub fn audit_idle(&self) -> bool {
        self.audits.as_ref().is_some_and(|tx| tx.is_empty())
    }

    /// Queue an audit; `sampled` ones that do not fit are counted as skipped. Never blocks.
    pub fn offer_audit(&mut self, job: AuditJob<D::Input>, sampled: bool) -> bool {
        let Some(tx) = &self.audits else { return false };
        match tx.try_send(job) {
            Ok(()) => true,
            Err(_) => {
                self.skipped += usize::from(sampled);
                false
            }
        }
    }

    /// `Err` ([`crate::Error::Stage`], stage `learner`) once the thread has failed.
    pub fn check(&self) -> crate::Result<()> {
        self.shared.failure.check("learner")
    }

    /// A copy of what the learner has done so far.
    pub fn stats(&self) -> LearnStats {
        let mut s = self
            .shared
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        s.units_dropped += self.units_dropped;
        s.audit.skipped = self.skipped;
        s
    }

    /// Close the queues; the thread finishes what is queued and the calibration it is in (it
    /// starts no new one). When `cancel` is or becomes set, its work is cancelled and it is
    /// waited for at most `grace` (then left behind).
    pub fn stop(mut self, cancel: &StopFlag, grace: Duration) -> crate::Result<LearnStats> {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.gauge.frame_ended(false);
        self.notes = None;
        self.audits = None;
        let mut cancelled_at: Option<Instant> = None;
        let mut auditing = true;
        loop {
            let done = if auditing {
                &self.audit_done
            } else {
                &self.done
            };
            match done.recv_timeout(POLL) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) if auditing => auditing = false,
                Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    if cancel.is_stopped() {
                        self.cancel.store(true, Ordering::SeqCst);
                        let t = *cancelled_at.get_or_insert_with(Instant::now);
                        if t.elapsed() >= grace {
                            log::warn!("the learner did not stop within {grace:?}: left behind");
                            break;
                        }
                    }
                }
            }
        }
        self.check()?;
        Ok(self.stats())
    }
}
