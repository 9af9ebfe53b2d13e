#!/usr/bin/env bash
# Make the demo sequence: OpenCV's sample video vtest.avi (people walking; from the Debian
# package opencv-doc) decoded into a Cityscapes-style folder of PNG frames:
#
#   sim/vtest/leftImg8bit_sequence/demo/vtest/vtest_000000_FFFFFF_leftImg8bit.png
#
# 795 frames, 768x576, RGB24, numbered from 000000, no scaling. Skips when all frames are there.
# The source video can be given with VTEST_AVI=/path/to/vtest.avi[.gz].
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "[demo-seq] $*"; }
die() { echo "[demo-seq] ERROR: $*" >&2; exit 1; }

FRAMES=795
WIDTH=768
HEIGHT=576
ROOT=sim/vtest
DEST=$ROOT/leftImg8bit_sequence/demo/vtest
PATTERN=vtest_000000_%06d_leftImg8bit.png # ffmpeg's image2 pattern
DOC_DIR=/usr/share/doc/opencv-doc/examples/data

frame_name() { printf 'vtest_000000_%06d_leftImg8bit.png' "$1"; }
count_frames() { # DIR -> number of frame files in it
    find "$1" -maxdepth 1 -name 'vtest_000000_[0-9][0-9][0-9][0-9][0-9][0-9]_leftImg8bit.png' 2>/dev/null | wc -l
}
complete() { # DIR -> 0 if it holds exactly frames 000000..000794
    [[ -d $1 ]] || return 1
    [[ $(count_frames "$1") -eq $FRAMES ]] || return 1
    [[ -s $1/$(frame_name 0) && -s $1/$(frame_name $((FRAMES - 1))) ]]
}

if complete "$DEST"; then
    say "$DEST has all $FRAMES frames: skipping"
    exit 0
fi

command -v ffmpeg >/dev/null 2>&1 || die "ffmpeg not found: run scripts/deps.sh"

mkdir -p "$ROOT"
work=$(mktemp -d "$ROOT/.make_demo.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- find vtest.avi (plain or gzip'd) ----------------------------------------------------------
src=${VTEST_AVI:-}
if [[ -z $src ]]; then
    for c in "$DOC_DIR/vtest.avi" "$DOC_DIR/vtest.avi.gz"; do
        [[ -f $c ]] && { src=$c; break; }
    done
fi
if [[ -z $src ]] && command -v dpkg >/dev/null 2>&1; then
    # Another opencv-doc version may keep it elsewhere.
    while IFS= read -r c; do
        [[ -f $c ]] && { src=$c; break; }
    done < <(dpkg -L opencv-doc 2>/dev/null | grep -E '/vtest\.avi(\.gz)?$' || true)
fi
if [[ -z $src ]] && command -v apt-get >/dev/null 2>&1; then
    # Installed, but dpkg may have been told not to unpack /usr/share/doc (minimal images):
    # take the file straight from the package archive.
    say "vtest.avi not on disk: extracting it from the opencv-doc .deb"
    (cd "$work" && apt-get download opencv-doc >/dev/null 2>&1) \
        || die "vtest.avi not found and 'apt-get download opencv-doc' failed: run scripts/deps.sh"
    mkdir -p "$work/deb"
    dpkg-deb -x "$work"/opencv-doc_*.deb "$work/deb" \
        || die "could not unpack the opencv-doc package"
    src=$(find "$work/deb" \( -name vtest.avi -o -name vtest.avi.gz \) -print -quit)
fi
[[ -n $src && -f $src ]] \
    || die "vtest.avi not found (looked in $DOC_DIR and 'dpkg -L opencv-doc'): run scripts/deps.sh or set VTEST_AVI"

if [[ $src == *.gz ]]; then
    say "unpacking $src"
    gunzip -c "$src" >"$work/vtest.avi" || die "could not gunzip $src"
    src=$work/vtest.avi
fi

# --- decode ------------------------------------------------------------------------------------------
say "decoding $src -> $DEST ($FRAMES PNG frames, takes ~1 min)"
mkdir -p "$work/frames"
ffmpeg -nostdin -hide_banner -loglevel error -i "$src" -map 0:v:0 -fps_mode passthrough \
    -pix_fmt rgb24 -start_number 0 -f image2 "$work/frames/$PATTERN" \
    || die "ffmpeg failed to decode $src"

n=$(count_frames "$work/frames")
[[ $n -eq $FRAMES ]] || die "ffmpeg wrote $n frames, expected $FRAMES (is $src the OpenCV sample vtest.avi?)"
complete "$work/frames" || die "decoded frames are not numbered 000000..$(printf %06d $((FRAMES - 1)))"
if command -v ffprobe >/dev/null 2>&1; then
    geom=$(ffprobe -v error -select_streams v:0 -show_entries stream=width,height,pix_fmt \
        -of csv=p=0 "$work/frames/$(frame_name 0)")
    [[ $geom == "$WIDTH,$HEIGHT,rgb24" ]] \
        || die "first frame is $geom, expected $WIDTH,$HEIGHT,rgb24"
fi

rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$work/frames" "$DEST"
say "wrote $FRAMES frames to $DEST"
