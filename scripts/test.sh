#!/usr/bin/env bash
# Run the whole test suite: the same preparation as scripts/demo.sh (apt packages, default model,
# demo sequence: the tests read the demo frames and the converted model), then
# `cargo test --release`. Extra arguments go to cargo test, e.g.
#
#   scripts/test.sh ssdlite            # only tests whose name contains "ssdlite"
#   scripts/test.sh -- --nocapture
#
# Tests that need the shared data read ../shared/data (beside the clone); they are marked ignored
# and run here with --include-ignored (under CI=true always, so a missing input fails them).
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

# Tests that need the prepared model, the demo sequence or ../shared/data are marked
# #[ignore = "needs ..."]; they run here (--include-ignored), where a missing input fails them.
# Without ../shared/data outside CI they stay ignored and cargo lists them with their reason.
args=("$@")
if [[ " ${args[*]} " == *" --include-ignored "* ]]; then
    :
elif [[ -d ../shared/data || ${CI:-} == true ]]; then
    if [[ " ${args[*]} " == *" -- "* ]]; then args+=(--include-ignored); else args+=(-- --include-ignored); fi
else
    say "../shared/data missing: tests that need it are reported as ignored"
fi
say "step 4/4: cargo test --release ${args[*]}"
status=0
cargo test --release "${args[@]}" || status=$?
if ((status != 0)); then
    die "cargo test --release failed (exit $status)"
fi
say "all tests passed"
