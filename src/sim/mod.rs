//! Sequence sources for the harness: Cityscapes-style folders and plain image folders, ground
//! truth from label maps, and metrics.

pub mod groundtruth;
pub mod metrics;
pub mod replay;
pub mod source;
pub mod video;
