//! Ops shared by the detectors: fast convolutions, box coding, NMS, image resizing.

pub mod anchors;
pub mod boxes;
pub mod conv;
pub mod interp;
pub mod nms;
pub mod paste;
pub mod pool;
pub mod resize;
pub mod roi_align;
pub mod tv_boxes;
