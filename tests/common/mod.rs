//! Helpers shared by the integration tests: where the data and the model are, and the rule for
//! missing inputs. A test that needs `../shared/data`, the converted model or the demo sequence
//! is marked `#[ignore = "needs ..."]`, so a plain `cargo test` reports it as ignored with the
//! reason; `scripts/test.sh` (and so CI) runs it with `--include-ignored`, and then a missing
//! input is a failure: nothing passes by skipping.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/data` beside the project.
pub fn data_root() -> PathBuf {
    std::env::var_os("PEDCACHE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/data"))
}

pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns `Some(path)` if it exists, else fails the test: a test that needs an input is marked
/// `#[ignore = "needs ..."]` and only runs when asked to (`--include-ignored`), and then a missing
/// input is an error, not a pass. (`Option` so callers read `let Some(p) = require(..) else`.)
pub fn require(path: &Path, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path.to_path_buf());
    }
    panic!(
        "{what} not found at {} (run scripts/test.sh to prepare it; under CI=true it must be there)",
        path.display()
    );
}

pub fn model_path() -> Option<PathBuf> {
    require(
        &repo().join("models/ssdlite_ped.safetensors"),
        "converted SSDLite model",
    )
}

pub fn load_ssdlite() -> Option<pedcache::detect::ssdlite::SsdLite> {
    let p = model_path()?;
    Some(
        pedcache::detect::ssdlite::SsdLite::load(&p, &candle_core::Device::Cpu)
            .expect("load model"),
    )
}

/// The pedcache binary built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pedcache"))
}

/// A pedcache command run from the repository on 2 threads; arguments follow.
pub fn pedcache() -> std::process::Command {
    let mut c = std::process::Command::new(bin());
    c.current_dir(repo()).args(["--threads", "2"]);
    c
}

/// Fail with the command's stderr unless it exited 0.
pub fn assert_success(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A JSON-lines file (alerts, received messages) as values; an absent file is empty.
pub fn read_jsonl(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
