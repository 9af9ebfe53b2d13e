#!/usr/bin/env bash
# GPU check of the CUDA build, for a machine with an NVIDIA GPU (no Rust toolchain needed):
# 1. parity: `pedcache detect --device cuda` against `--device cpu` on demo frames (same boxes
#    within 1 px, scores within 1e-3; detections within 1e-3 of the score threshold may fall
#    either side of it); exits non-zero when parity fails;
# 2. timing: median per-frame perception time (replay --no-cache --max-speed) on both devices;
# 3. the node on the GPU: `pedcache replay --device cuda` over the demo with the committed
#    calibration (at max speed and at 17 fps) and with --no-cache, and how often the CUDA node
#    answers as the CPU node does;
# 4. (informational) Mask R-CNN: detect parity with the narrow test weights, and R50-FPN
#    timing with stand-in weights, 3 frames.
# Everything (logs, JSONs, summary.txt) goes under $OUT. Takes about a minute on a 16-core
# GPU machine (the two 17 fps replays alone take 2 x LIMIT / 17 s).
#
# usage, from the repository root, with target-cuda/release/pedcache (../shared/tools/cuda/
# build-cuda.sh), models/ssdlite_ped.safetensors and calib/ in place:
#   scripts/gpu_check.sh prepare [N]      # here: the first N (200) demo frames as JPEG (~20 MB,
#                                         # where sim/vtest's PNGs are 0.8 MB each) into
#                                         # target/gpu-frames, to carry to the GPU machine
#   OUT=/tmp/gpu-check scripts/gpu_check.sh
# env: OUT (default target/gpu-check), PEDCACHE_BIN (default target-cuda/release/pedcache),
#      SRC (frames: default sim/vtest when it holds frames, else target/gpu-frames),
#      DEVICE (default cuda; DEVICE=cpu runs the GPU side on the CPU, to test this script on a
#      machine without a GPU), FRAMES (detect frames, 10), LIMIT (replay frames, 200),
#      RCNN (1; 0 skips step 4).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
# Frames of a sequence folder, in order (Cityscapes layout or plain, PNG or JPEG).
list_frames() { find -H "$1" \( -name '*.png' -o -name '*.jpg' \) 2>/dev/null | sort; }
if [[ ${1:-} == prepare ]]; then
    n=${2:-200}
    dst=target/gpu-frames/leftImg8bit_sequence/demo/vtest
    rm -rf target/gpu-frames && mkdir -p "$dst" || exit 2
    mapfile -t pngs < <(list_frames sim/vtest | grep '_leftImg8bit.png$')
    [[ ${#pngs[@]} -gt 0 ]] || { echo "no PNG frames in sim/vtest (run sim/make_demo.sh)"; exit 2; }
    for f in "${pngs[@]:0:$n}"; do
        ffmpeg -loglevel error -y -i "$f" -q:v 3 "$dst/$(basename "$f" .png).jpg" </dev/null || exit 2
    done
    echo "wrote $(list_frames target/gpu-frames | wc -l) JPEG frames ($(du -sh target/gpu-frames | cut -f1)) into target/gpu-frames"
    exit 0
fi
OUT=${OUT:-target/gpu-check}
BIN=${PEDCACHE_BIN:-target-cuda/release/pedcache}
DEV=${DEVICE:-cuda}
FRAMES=${FRAMES:-10}
LIMIT=${LIMIT:-200}
RCNN=${RCNN:-1}
if [[ -z ${SRC:-} ]]; then
    SRC=sim/vtest
    [[ -n $(list_frames sim/vtest | head -1) ]] || SRC=target/gpu-frames
fi
CALIB=calib/ssdlite-ped-vtest
THRESH=0.3
# File tag of the device side: its name, or "dev" when it is the CPU too (DEVICE=cpu).
dv=$DEV
[[ $DEV == cpu ]] && dv=dev
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
status=0
fail() {
    say "FAIL: $*"
    status=1
}
t0=$(date +%s)

say "gpu_check: $(date -u +%FT%TZ) on $(hostname), device $DEV vs cpu, binary $BIN"
for f in "$BIN" models/ssdlite_ped.safetensors "$CALIB/exits.ron" "$SRC"; do
    if [[ ! -e $f ]]; then
        say "FAIL: $f is missing"
        exit 2
    fi
done
command -v nvidia-smi >/dev/null && nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
say "cpu cores: $(nproc)"

# The CUDA build links libcuda (the driver's) and libcublas/libcublasLt/libcurand at load time;
# take those the loader does not find from the Python packages (PyTorch's nvidia-* wheels), else
# from anywhere on the machine (stub libraries excepted).
missing() { ldd "$BIN" 2>/dev/null | awk '/not found/ {print $1}' | sort -u; }
find_lib() {
    local f
    # shellcheck disable=SC2086
    f=$(find $roots -name "$1" 2>/dev/null | head -1)
    [[ -n $f ]] || f=$(timeout 60 find / \( -path /proc -o -path /sys -o -path /dev \) -prune \
        -o -name "$1" -print 2>/dev/null | grep -v /stubs/ | head -1)
    echo "$f"
}
libs=$(missing)
if [[ -n $libs ]]; then
    roots=$(python3 -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
    dirs=""
    for lib in $libs; do
        f=$(find_lib "$lib")
        [[ -n $f && ":$dirs:" != *":$(dirname "$f"):"* ]] && dirs="$dirs:$(dirname "$f")"
    done
    export LD_LIBRARY_PATH="${dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
say "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
ldd "$BIN" >"$OUT/ldd.txt" 2>&1
still=$(missing)
if [[ -n $still ]]; then
    say "FAIL: libraries not found: ${still//$'\n'/ }"
    exit 2
fi
if ! "$BIN" --version >"$OUT/version.txt" 2>&1; then
    say "FAIL: $BIN does not start: $(tail -1 "$OUT/version.txt")"
    exit 2
fi

# Run a command with a time limit, logging its output; returns its status.
run() {
    local name=$1 limit=$2
    shift 2
    echo "+ $*" >"$OUT/$name.log"
    timeout "$limit" "$@" >>"$OUT/$name.log" 2>&1
    local rc=$?
    [[ $rc -ne 0 ]] && say "  $name: exit $rc: $(tail -1 "$OUT/$name.log")"
    return $rc
}
now() { date +%s.%N; }

# --- 1. detect parity -----------------------------------------------------------------------
# parity.py CPU.json DEVICE.json THRESH: every detection scoring >= THRESH + 1e-3 on one side has
# one on the other (same label, box within 1 px, score within 1e-3); prints the max differences.
cat >"$OUT/parity.py" <<'EOF'
import json, sys
ref, dev = (json.load(open(p)) for p in sys.argv[1:3])
thresh = float(sys.argv[3])
BOX, SCORE = 1.0, 1e-3
problems, max_box, max_score, matched, near = [], 0.0, 0.0, 0, 0
max_mask = 0.0  # relative difference of Mask R-CNN mask areas (reported, not judged)
for side in (ref, dev):
    if side.get("errors"):
        problems.append(f"errors: {side['errors']}")
if len(ref["images"]) != len(dev["images"]):
    problems.append(f"{len(ref['images'])} vs {len(dev['images'])} images")
for a, b in zip(ref["images"], dev["images"]):
    if a["path"] != b["path"] or (a["height"], a["width"]) != (b["height"], b["width"]):
        problems.append(f"image mismatch {a['path']} / {b['path']}")
        continue
    used = set()
    for d in a["detections"]:
        best = None
        for j, e in enumerate(b["detections"]):
            if j in used or e["label"] != d["label"]:
                continue
            diff = max(abs(x - y) for x, y in zip(d["box"], e["box"]))
            if best is None or diff < best[0]:
                best = (diff, j)
        if best is not None and best[0] <= BOX and abs(b["detections"][best[1]]["score"] - d["score"]) <= SCORE:
            used.add(best[1])
            matched += 1
            max_box = max(max_box, best[0])
            max_score = max(max_score, abs(b["detections"][best[1]]["score"] - d["score"]))
            ma, mb = d.get("mask_area"), b["detections"][best[1]].get("mask_area")
            if ma is not None and mb is not None:
                max_mask = max(max_mask, abs(ma - mb) / max(ma, mb, 1))
        elif d["score"] < thresh + SCORE:
            near += 1
        else:
            nearest = "none of its label" if best is None else (
                f"nearest: box diff {best[0]:.3g} px, score diff "
                f"{abs(b['detections'][best[1]]['score'] - d['score']):.3g}")
            problems.append(f"{a['path']}: cpu detection {d} has no match on the device ({nearest})")
    for j, e in enumerate(b["detections"]):
        if j in used:
            continue
        if e["score"] < thresh + SCORE:
            near += 1
        else:
            problems.append(f"{a['path']}: device detection {e} has no match on the cpu")
print(f"matched {matched} detections; max box diff {max_box:.3g} px, max score diff {max_score:.3g}; "
      f"{near} unmatched within {SCORE} of the threshold"
      + (f"; max mask area diff {100 * max_mask:.2g}%" if max_mask else ""))
for p in problems:
    print("MISMATCH", p)
sys.exit(1 if problems or matched == 0 else 0)
EOF
# detect_pair NAME THRESH ARGS...: `pedcache detect ARGS` on the CPU and on the device into
# NAME_cpu.json / NAME_<device>.json, then parity.py into NAME_parity.txt; 0 when parity holds.
detect_pair() {
    local name=$1 thresh=$2 side tag d s
    shift 2
    for side in cpu:cpu "$dv:$DEV"; do
        tag=${name}_${side%%:*} d=${side#*:}
        s=$(now)
        run "$tag" 180 "$BIN" detect --device "$d" --score-thresh "$thresh" \
            --json "$OUT/$tag.json" "$@" || return 1
        say "  $tag (--device $d): $(python3 -c "print(f'{$(now) - $s:.2f}')") s wall (process start, model load and first-use costs included)"
    done
    python3 "$OUT/parity.py" "$OUT/${name}_cpu.json" "$OUT/${name}_$dv.json" "$thresh" \
        >"$OUT/${name}_parity.txt" 2>&1
}
mapfile -t frames < <(list_frames "$SRC" | awk -v n="$FRAMES" 'NR % 20 == 1 && c < n {print; c++}')
say "frames: $SRC ($(list_frames "$SRC" | wc -l) frames)"
say ""
say "1. SSDLite detect parity on ${#frames[@]} frames (every 20th), score >= $THRESH"
if [[ ${#frames[@]} == 0 ]]; then
    say "FAIL: no frames in $SRC"
    exit 2
fi
if detect_pair detect $THRESH "${frames[@]}"; then
    say "  parity PASS: $(head -1 "$OUT/detect_parity.txt")"
elif [[ -s $OUT/detect_parity.txt ]]; then
    fail "parity: $(head -1 "$OUT/detect_parity.txt") ($(grep -c MISMATCH "$OUT/detect_parity.txt") mismatches, see detect_parity.txt)"
    grep MISMATCH "$OUT/detect_parity.txt" | head -5 | tee -a "$SUMMARY"
else
    fail "detect did not run on both devices (see detect_*.log)"
fi

# --- 2 and 3. the node: timing and the replay on the device ---------------------------------
# replay NAME DEVICE [args...]: report in $OUT/NAME.json, alerts in $OUT/NAME.jsonl.
replay() {
    local name=$1 d=$2
    shift 2
    run "$name" 240 "$BIN" replay --device "$d" --source "$SRC" --limit "$LIMIT" \
        --report "$OUT/$name.json" --alerts "$OUT/$name.jsonl" "$@"
}
say ""
say "2./3. replay over (up to) $LIMIT frames (report fields: perception p50 = median per frame)"
replay nocache_max_cpu cpu --no-cache --max-speed || fail "replay cpu --no-cache --max-speed"
replay cache_max_cpu cpu --calib $CALIB --max-speed || fail "replay cpu --calib --max-speed"
replay "nocache_max_$dv" "$DEV" --no-cache --max-speed || fail "replay $DEV --no-cache --max-speed"
replay "cache_max_$dv" "$DEV" --calib $CALIB --max-speed || fail "replay $DEV --calib --max-speed"
replay "cache_17fps_$dv" "$DEV" --calib $CALIB --fps 17 || fail "replay $DEV --calib --fps 17"
replay "nocache_17fps_$dv" "$DEV" --no-cache --fps 17 || fail "replay $DEV --no-cache --fps 17"
python3 - "$OUT" "$dv" >"$OUT/replay_table.txt" 2>&1 <<'EOF'
import json, os, sys
out, dv = sys.argv[1:3]
rows = ["nocache_max_cpu", "cache_max_cpu", f"nocache_max_{dv}", f"cache_max_{dv}",
        f"cache_17fps_{dv}", f"nocache_17fps_{dv}"]
print(f"  {'run':<20} {'device':<7} {'frames':>6} {'proc':>5} {'drop':>5} {'miss':>5} "
      f"{'perc p50':>9} {'perc p95':>9} {'lat p50':>8} {'lat p95':>8} {'alert p50':>9} {'hits':>6} {'full':>5} {'wall s':>7}")
for r in rows:
    p = os.path.join(out, r + ".json")
    if not os.path.exists(p):
        print(f"  {r:<20} (no report)")
        continue
    j = json.load(open(p))
    hits = sum(e["hits"] for e in j["exits"])
    print(f"  {r:<20} {j.get('device', '?'):<7} {j['frames']:>6} {j['processed']:>5} {j['dropped']:>5} "
          f"{j['deadline_misses']:>5} {j['stage_ms']['perception_ms']['p50']:>9.2f} "
          f"{j['stage_ms']['perception_ms']['p95']:>9.2f} {j['latency_ms']['p50']:>8.2f} "
          f"{j['latency_ms']['p95']:>8.2f} {j['time_to_alert_ms']['p50']:>9.2f} {hits:>6} "
          f"{j['full_detections']:>5} {j['wall_s']:>7.1f}")
def med(name):
    p = os.path.join(out, name + ".json")
    return json.load(open(p))["stage_ms"]["perception_ms"]["p50"] if os.path.exists(p) else None
for kind in ("nocache", "cache"):
    c, g = med(f"{kind}_max_cpu"), med(f"{kind}_max_{dv}")
    if c and g:
        print(f"  median per frame, {kind:<7}: cpu {c:.2f} ms, {dv} {g:.2f} ms ({c / g:.2f}x)")
# Same answers? Per frame: the exits that alerted, and the full detector's pedestrian count.
def answers(name):
    p = os.path.join(out, name + ".jsonl")
    per = {}
    if not os.path.exists(p):
        return per
    for line in open(p):
        a = json.loads(line)
        f = per.setdefault(a["frame"], {"early": [], "peds": None, "boxes": []})
        if a["type"] == "EarlyAlert":
            f["early"].append((a["exit"], a["class"]))
        elif a["type"] == "Detections":
            f["peds"] = a["pedestrians"]
            f["boxes"] = a["boxes"]
    return per
for kind in ("nocache", "cache"):
    a, b = answers(f"{kind}_max_cpu"), answers(f"{kind}_max_{dv}")
    if not a or not b:
        continue
    frames = sorted(set(a) & set(b))
    same = sum(a[f]["early"] == b[f]["early"] and a[f]["peds"] == b[f]["peds"] for f in frames)
    box = max((max(abs(x - y) for x, y in zip(p, q)) for f in frames
               if len(a[f]["boxes"]) == len(b[f]["boxes"])
               for p, q in zip(a[f]["boxes"], b[f]["boxes"])), default=0.0)
    print(f"  same answers cpu vs {dv}, {kind}, max speed: {same}/{len(frames)} frames "
          f"(same exits and pedestrian counts); max box diff where counts match {box:.3g} px")
EOF
tee -a "$SUMMARY" <"$OUT/replay_table.txt"

# --- 4. Mask R-CNN on the device (informational: not part of the verdict) -------------------
if [[ $RCNN == 1 ]]; then
    say ""
    say "4. Mask R-CNN (informational, not part of the verdict)"
    narrow=tests/fixtures/maskrcnn_tv/narrow_weights.safetensors
    if [[ -s $narrow ]]; then
        say "  detect with the narrow parity-test weights on ${#frames[@]} frames, score >= 0.3:"
        if detect_pair rcnn_narrow 0.3 --model maskrcnn-r50-fpn --weights "$narrow" "${frames[@]}"; then
            say "  rcnn parity PASS: $(head -1 "$OUT/rcnn_narrow_parity.txt")"
        else
            say "  rcnn parity MISMATCH: $(head -1 "$OUT/rcnn_narrow_parity.txt" 2>/dev/null) (see rcnn_narrow_parity.txt / rcnn_narrow_*.log)"
        fi
    fi
    say "  R50-FPN at full width, stand-in weights (no detections; timing only), 3 frames at max speed:"
    for side in cpu:cpu "$dv:$DEV"; do
        name=rcnn_${side%%:*} d=${side#*:}
        if run "$name" 120 "$BIN" replay --device "$d" --model maskrcnn-r50-fpn --standin-weights \
            --source "$SRC" --limit 3 --max-speed --deadline-ms 100000 --score-thresh 0 \
            --report "$OUT/$name.json" --alerts "$OUT/$name.jsonl"; then
            say "  $name (--device $d): $(python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(f\"perception p50 {j['stage_ms']['perception_ms']['p50']:.1f} ms, max {j['stage_ms']['perception_ms']['max']:.1f} ms\")" "$OUT/$name.json")"
        else
            say "  $name: failed (informational)"
        fi
    done
fi

say ""
say "elapsed $(($(date +%s) - t0)) s; $([[ $status == 0 ]] && echo PASS || echo FAIL)"
exit $status
