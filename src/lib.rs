//! pedcache: early pedestrian alerts from cache exits on a frozen detector.
//!
//! Layout (see `README.md` and the project's DESIGN): `detect/` holds the detectors as staged
//! candle models and their shared ops, `convert/` turns upstream weight files into safetensors,
//! `frame` decodes images with errors that name the file, `cli/` implements the commands.

pub mod cache;
pub mod cli;
pub mod convert;
pub mod detect;
pub mod error;
pub mod frame;
pub mod node;
pub mod runtime;
pub mod sim;

pub use error::{Error, Result};
