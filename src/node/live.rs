//! The exits perception uses: one set, replaced whole between frames by a background learner.
//! Perception loads the `Arc` once per frame, so a frame never sees two sets, and every alert
//! names the version of the set that produced it.

use crate::cache::enabled::Exit;
use std::sync::{Arc, RwLock};

/// A set of exits and the calibration version it came from.
#[derive(Clone, Debug, Default)]
pub struct LiveSet {
    /// The version in a learn dir (`v0003` is 3); `None` for a calibration folder of its own.
    pub version: Option<u32>,
    /// The selected exits, in network order (empty: full detection on every frame).
    pub exits: Vec<Exit>,
}

/// The exits perception uses, replaced whole between frames.
pub struct LiveExits {
    current: RwLock<Arc<LiveSet>>,
}

impl LiveExits {
    /// A live set that starts as `set`.
    pub fn new(set: LiveSet) -> Self {
        Self {
            current: RwLock::new(Arc::new(set)),
        }
    }

    /// The current set (perception: once per frame).
    pub fn load(&self) -> Arc<LiveSet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replace the set; frames already running keep the one they loaded.
    pub fn replace(&self, set: LiveSet) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
    }
}
