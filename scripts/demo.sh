#!/usr/bin/env bash
# One command from a clean clone to the demo: installs missing apt packages, fetches and converts
# the default model, makes the demo sequence, builds release, and runs `pedcache demo`.
# Every step skips what is already there. Extra arguments go to `pedcache demo`, e.g.
#
#   scripts/demo.sh --score-thresh 0.4
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "[demo] $*"; }
die() { echo "[demo] ERROR: $*" >&2; exit 1; }

command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs) first"

say "step 1/5: system packages (scripts/deps.sh)"
bash scripts/deps.sh || die "installing system packages failed"
say "step 2/5: default model (models/fetch.sh)"
bash models/fetch.sh || die "getting the default model failed"
say "step 3/5: demo sequence (sim/make_demo.sh)"
bash sim/make_demo.sh || die "making the demo sequence failed"
say "step 4/5: cargo build --release"
cargo build --release || die "cargo build --release failed"
say "step 5/5: pedcache demo $*"
exec "${CARGO_TARGET_DIR:-target}/release/pedcache" demo "$@"
