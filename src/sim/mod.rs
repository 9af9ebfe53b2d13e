//! Sequence sources for the harness: Cityscapes-style folders and plain image folders.

pub mod source;
