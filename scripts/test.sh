#!/usr/bin/env bash
# Run the whole test suite: the same preparation as scripts/demo.sh (apt packages, default model,
# demo sequence: the tests read the demo frames and the converted model), then
# `cargo test --release`. Extra arguments go to cargo test, e.g.
#
#   scripts/test.sh ssdlite            # only tests whose name contains "ssdlite"
#   scripts/test.sh -- --nocapture
#
# Tests that need the shared data read ../shared/data (beside the clone); when it is missing they
# print a skip, and under CI=true they fail.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "[test] $*"; }
die() { echo "[test] ERROR: $*" >&2; exit 1; }

command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs) first"

say "step 1/4: system packages (scripts/deps.sh)"
bash scripts/deps.sh || die "installing system packages failed"
say "step 2/4: default model (models/fetch.sh)"
bash models/fetch.sh || die "getting the default model failed"
say "step 3/4: demo sequence (sim/make_demo.sh)"
bash sim/make_demo.sh || die "making the demo sequence failed"

if [[ -d ../shared/data ]]; then
    say "shared test data: $(cd ../shared/data && pwd)"
elif [[ ${CI:-} == true ]]; then
    say "shared test data: ../shared/data is MISSING (CI=true: tests that need it will fail)"
else
    say "shared test data: ../shared/data is missing (tests that need it will skip)"
fi

say "step 4/4: cargo test --release $*"
status=0
cargo test --release "$@" || status=$?
if ((status != 0)); then
    die "cargo test --release failed (exit $status)"
fi
say "all tests passed"
