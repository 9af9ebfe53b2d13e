//! Ops shared by the detectors: fast convolutions, box coding, NMS, image resizing.

pub mod boxes;
pub mod conv;
pub mod nms;
pub mod resize;
