//! The replay harness: only what replaying recorded drives adds to the node (`crate::node`) —
//! sequence sources (Cityscapes layout, image folders, videos, ROS 2 MCAP recordings), ground truth from label maps,
//! the harness planner, metrics, the replay driver and its report.

pub mod evaluate;
pub mod groundtruth;
pub mod mcap;
pub mod metrics;
pub mod planner;
pub mod replay;
pub mod report;
pub mod scenario;
pub mod source;
pub mod timeline;
pub mod video;
