//! pedcache: early pedestrian alerts from cache exits on a frozen detector.
//!
//! Layout (see `README.md` and the project's DESIGN; arrows point one way, cli -> sim -> node ->
//! cache -> detect -> ops):
//! - [`node`]: the perception node a vehicle program embeds (frame sources, the perception task,
//!   the node that wires them to planners, the retrainer). Start here to use the library.
//! - [`sim`]: replaying recorded drives through the node (sequences, ground truth, reports).
//! - [`cache`]: the caching method (exits, calibration, the cache-enabled forward).
//! - [`detect`]: the detectors as staged candle models, their ops, and the registry that loads
//!   them by name; [`convert`] turns upstream weight files into safetensors; [`frame`] decodes
//!   images with errors that name the file; [`fsio`] bounds reads and makes writes crash-safe.
//! - `cli`: the `pedcache` commands (flags and printing only).

pub mod cache;
pub mod cli;
pub mod convert;
pub mod detect;
pub mod error;
pub mod frame;
pub mod fsio;
pub mod node;
pub mod runtime;
pub mod sim;

pub use error::{Error, Result};
