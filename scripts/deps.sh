#!/usr/bin/env bash
# Install the Debian packages pedcache's scripts and tests need; skip what is already there.
#
#   scripts/deps.sh [EXTRA_PACKAGE...]
#
# Always checked: ffmpeg (decodes the demo video), opencv-doc (ships the demo video vtest.avi),
# electric-fence (libefence.so: the guard-page allocator the memory-safety runs preload, see
# benches/README.md), and a C toolchain for linking (gcc + libc6-dev, only when `cc` is missing).
# `apt-get update` runs only when something is missing; sudo is used only when not root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "[deps] $*"; }
die() { echo "[deps] ERROR: $*" >&2; exit 1; }

wanted=(ffmpeg opencv-doc electric-fence "$@")
command -v cc >/dev/null 2>&1 || wanted+=(gcc libc6-dev)

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for p in "${wanted[@]}"; do
    installed "$p" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
    say "apt packages present: ${wanted[*]}"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 \
    || die "missing packages (${missing[*]}) and no apt-get here: install them by hand"
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 \
        || die "missing packages (${missing[*]}): not root and no sudo; install them as root"
    sudo_cmd=(sudo)
fi

log=$(mktemp "${TMPDIR:-/tmp}/pedcache-apt.XXXXXX")
trap 'rm -f "$log"' EXIT
run_apt() {
    if ! "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "apt-get $* failed (last lines above)"
    fi
}

say "apt-get update (missing: ${missing[*]})"
run_apt update -q
say "apt-get install ${missing[*]}"
run_apt install -y -q --no-install-recommends "${missing[@]}"
for p in "${missing[@]}"; do
    installed "$p" || die "package $p still not installed after apt-get install"
done
say "installed: ${missing[*]}"
