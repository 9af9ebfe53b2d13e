//! The auditor thread: runs the full detector on frames a hit resolved, off perception's
//! critical path, judges each hit against it, and hands the verdicts and the newly labelled
//! units to the learner (so the store is not made of misses only).

use super::pace::Pace;
use super::taps::full_tapped;
use super::{AuditJob, LabelledUnit, Note, Shared, Verdict};
use crate::cache::calibration::CacheableDetector;
use crate::detect::TeacherTarget;
use crossbeam_channel::{Receiver, Sender};
use std::sync::Arc;

/// What the auditor needs besides its queue.
pub(super) struct Auditor<D> {
    pub det: Arc<D>,
    pub candidates: Vec<usize>,
    pub score_thresh: f32,
    pub pace: Pace,
}

impl<D> Auditor<D>
where
    D: CacheableDetector,
    D::Output: TeacherTarget,
{
    /// Audit every job until the queue closes (or the work is cancelled); results go to the
    /// learner through `notes` (blocking: the learner drains its notes between calibration
    /// steps, and perception never waits on this thread).
    pub fn run(&self, jobs: &Receiver<AuditJob<D::Input>>, notes: &Sender<Note>, shared: &Shared) {
        for job in jobs {
            if self.pace.is_cancelled() {
                return;
            }
            if self.pace.begin().is_err() {
                return; // cancelled
            }
            match self.audit(job) {
                Ok(found) => {
                    shared.lock_stats().audit.frames_audited += 1;
                    for n in found {
                        if notes.send(n).is_err() {
                            return;
                        }
                    }
                }
                Err(e) if !self.pace.is_cancelled() => {
                    shared.lock_stats().error = Some(format!("audit: {e}"));
                }
                Err(_) => return,
            }
        }
    }

    fn audit(&self, job: AuditJob<D::Input>) -> candle_core::Result<Vec<Note>> {
        let pace = &self.pace;
        let t = full_tapped(&*self.det, &job.input, &self.candidates, &|| {
            use crate::cache::train::Checkpoint;
            pace.reached()
        })?;
        let thresh = self.score_thresh;
        let verdicts: Vec<Verdict> = job
            .hits
            .iter()
            .filter_map(|&(u, cached)| {
                t.outputs
                    .get(u)
                    .map(|o| Verdict::of(cached, o.pedestrian(thresh)))
            })
            .collect();
        let mut feats = t.feats;
        let units: Vec<LabelledUnit> = job
            .unlabelled
            .iter()
            .filter_map(|&u| {
                let f = std::mem::take(feats.get_mut(u)?);
                let target = t.outputs.get(u)?.target_at(thresh);
                Some(LabelledUnit {
                    unit: u,
                    feats: f,
                    target,
                })
            })
            .collect();
        Ok(vec![
            Note::Verdicts {
                frame: job.frame,
                version: job.version,
                verdicts,
            },
            Note::Units {
                frame: job.frame,
                units,
                sizes: t.sizes,
                profile: None,
            },
        ])
    }
}
