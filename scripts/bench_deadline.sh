#!/usr/bin/env bash
# benches/deadline.md: the node against its per-frame deadline at the camera rate, from
# `pedcache replay` runs, for each detector, with and without cache exits.
#
#   scripts/bench_deadline.sh                 # the full runs (a few minutes on an idle 2-core machine)
#   scripts/bench_deadline.sh --limit 10      # smoke test: 10 frames per replay, tiny calibration
#
# Rows:
# - SSDLite on the demo sequence (sim/vtest): no exits, and the committed calibration
#   calib/ssdlite-ped-vtest.
# - SSDLite on ../shared/data/cityscapes-seq (3 snippets x 30 frames, ground truth from gtFine_pseudo):
#   no exits and the demo calibration (a different scene) on all frames; then the online split the
#   design recommends (calibrate on the drive the node runs on): a Cityscapes calibration from
#   frames 0-17 of each snippet, written to target/deadline/ (not committed), replayed on frames
#   18-29 with and without its exits.
# - Mask R-CNN R50-FPN on the Cityscapes frames: torchvision's COCO weights when present
#   ($MASKRCNN_WEIGHTS or models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth); otherwise the
#   deterministic stand-in weights (`replay --standin-weights`): real compute, meaningless
#   detections, so the row is latency only and labelled as such. No Mask R-CNN calibration exists,
#   so its rows run without exits.
#
# Environment: THREADS (2), FPS (17), DEADLINE_MS (100), POLICY (exit), OUT (benches/deadline.md),
# SKIP_BUILD=1 (use the existing release binary), CARGO_TARGET_DIR (where the binary is).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

limit=0
while (($#)); do
    case $1 in
        --limit) limit=${2:?--limit needs a number}; shift 2 ;;
        -h|--help) sed -n 2,25p "$0"; exit 0 ;;
        *) echo "bench_deadline: unknown argument $1" >&2; exit 2 ;;
    esac
done

T=${THREADS:-2}
FPS=${FPS:-17}
DEADLINE=${DEADLINE_MS:-100}
POLICY=${POLICY:-exit}
OUT=${OUT:-benches/deadline.md}
work=target/deadline
bin=${CARGO_TARGET_DIR:-target}/release/pedcache
city=../shared/data/cityscapes-seq/leftImg8bit_sequence
demo=sim/vtest
mkdir -p "$work"

say() { echo "[deadline] $*" >&2; }
die() { echo "[deadline] ERROR: $*" >&2; exit 1; }

if [[ ${SKIP_BUILD:-} != 1 ]]; then
    say "cargo build --release"
    cargo build --release >&2 || die "cargo build --release failed"
fi
[[ -x $bin ]] || die "$bin not found (build with cargo build --release)"
[[ -f models/ssdlite_ped.safetensors ]] || die "models/ssdlite_ped.safetensors missing (run models/fetch.sh)"
[[ -d $demo ]] || die "$demo missing (run sim/make_demo.sh)"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
commands=()
rows=()
notes=()
limit_args=()
((limit > 0)) && limit_args=(--limit "$limit")

# replay NAME BASELINE DESCRIPTION ARGS...: one replay at the camera rate; its report becomes a
# table row. BASELINE (a no-exits run on the same frames, or -) is what "presence vs detector" is
# measured against: per frame processed in both runs, this run's answer (any pedestrian alert) vs
# the full detector's answer in the baseline's alert stream.
replay() {
    local name=$1 baseline=$2 what=$3
    shift 3
    local cmd=("$bin" --threads "$T" replay --fps "$FPS" --deadline-ms "$DEADLINE" --policy "$POLICY"
        "${limit_args[@]}" "$@" --report "$work/$name.json" --alerts "$work/$name.jsonl")
    say "$name: ${cmd[*]}"
    commands+=("${cmd[*]}")
    "${cmd[@]}" >"$work/$name.log" 2>&1 || die "$name failed: $(tail -1 "$work/$name.log")"
    rows+=("$(python3 - "$what" "$work/$name" "$work/$baseline" <<'PY'
import json, os, sys
what, run, base = sys.argv[1:4]
r = json.load(open(run + ".json"))
lat, tta = r["latency_ms"], r["time_to_alert_ms"]
pct = lambda p: f"{p['p50']:.0f} / {p['p95']:.0f} / {p['p99']:.0f}" if p["count"] else "-"
exits = ", ".join(f"{e['layer']} {e['hits']}" for e in r["exits"]) or "none"

def answers(path):
    """Per processed frame: did the node say 'pedestrian'?"""
    out = {}
    for line in open(path):
        a = json.loads(line)
        if a["type"] == "EarlyAlert":
            out[a["frame"]] = out.get(a["frame"], False) or a["pedestrian"]
        elif a["type"] == "Detections":
            out[a["frame"]] = out.get(a["frame"], False) or a["pedestrians"] > 0
    return out

def conf(c, n=None):
    if not c:
        return "-"
    rec = c["tp"] / max(c["tp"] + c["fn"], 1)
    on = f" on {n}" if n is not None else ""
    return f"tp {c['tp']} fp {c['fp']} fn {c['fn']} tn {c['tn']} (recall {rec:.2f}){on}"

gt = r["presence"]["vs_ground_truth"]
gt_cell = conf(gt, r["presence"]["frames_with_ground_truth"]) if gt else "-"
if r["weights"].startswith("stand-in"):
    gt_cell = "n/a (stand-in weights)"
det_cell = "-"
if os.path.exists(base + ".jsonl"):
    mine, full = answers(run + ".jsonl"), answers(base + ".jsonl")
    c = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    both = sorted(set(mine) & set(full))
    for f in both:
        c[{(True, True): "tp", (True, False): "fp", (False, True): "fn", (False, False): "tn"}[(mine[f], full[f])]] += 1
    det_cell = conf(c, len(both))
print(f"| {what} | {r['frames']} | {r['processed']} | {r['dropped']} | {r['deadline_misses']} "
      f"| {pct(lat)} | {pct(tta)} | {exits} | {r['mean_flops_per_frame'] / 1e6:.0f} "
      f"| {gt_cell} | {det_cell} |")
PY
)")
}

# --- SSDLite, demo sequence -------------------------------------------------------------------
replay ssd-demo-full - "SSDLite, demo sequence, no exits" --source "$demo" --no-cache
replay ssd-demo-exits ssd-demo-full "SSDLite, demo sequence, exits calib/ssdlite-ped-vtest" --source "$demo" \
    --calib calib/ssdlite-ped-vtest

# --- SSDLite, Cityscapes --------------------------------------------------------------------
if [[ -d $city ]]; then
    replay ssd-city-full - "SSDLite, Cityscapes (3 snippets), no exits" --source "$city" --no-cache
    replay ssd-city-demo-exits ssd-city-full "SSDLite, Cityscapes (3 snippets), demo exits (other scene)" \
        --source "$city" --calib calib/ssdlite-ped-vtest
    # The online split: calibrate on frames 0-17 of each snippet, replay frames 18-29.
    cal_frames=0..18
    ((limit > 0)) && cal_frames=0..8 # smoke test: a tiny calibration, just to exercise the path
    calib_dir=$work/calib-cityscapes-$cal_frames
    cmd=("$bin" --threads "$T" calibrate --model ssdlite-ped --source "$city" --seq-frames "$cal_frames"
        --out "$calib_dir")
    say "calibrate: ${cmd[*]}"
    commands+=("${cmd[*]}")
    if "${cmd[@]}" >"$work/calibrate-cityscapes.log" 2>&1; then
        selected=$(python3 -c "
import re, sys
t = open(sys.argv[1]).read()
print(len(re.findall(r'selected: true', t)))" "$calib_dir/exits.ron")
        notes+=("Cityscapes calibration ($calib_dir, frames $cal_frames of each snippet): $selected exit(s) selected; see $calib_dir/report.json.")
        replay ssd-city-online-full - "SSDLite, Cityscapes frames 18-29, no exits" --source "$city" \
            --seq-frames 18..30 --no-cache
        replay ssd-city-online-exits ssd-city-online-full "SSDLite, Cityscapes frames 18-29, exits calibrated on frames $cal_frames" \
            --source "$city" --seq-frames 18..30 --calib "$calib_dir"
    else
        notes+=("Cityscapes calibration failed: $(tail -1 "$work/calibrate-cityscapes.log"); no online-split rows.")
    fi
else
    notes+=("$city not found: no Cityscapes rows.")
fi

# --- Mask R-CNN -----------------------------------------------------------------------------
rcnn_weights=${MASKRCNN_WEIGHTS:-models/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth}
if [[ -d $city ]]; then
    if [[ -f $rcnn_weights ]]; then
        replay rcnn-city-full - "Mask R-CNN ($(basename "$rcnn_weights")), Cityscapes, no exits" \
            --model maskrcnn-r50-fpn --weights "$rcnn_weights" --source "$city" --no-cache
    else
        replay rcnn-city-standin - "Mask R-CNN, **stand-in weights** (latency only), Cityscapes, no exits" \
            --model maskrcnn-r50-fpn --standin-weights --source "$city"
        notes+=("Mask R-CNN: torchvision's COCO weights not found at $rcnn_weights (see models/maskrcnn_r50_fpn.md); the row uses deterministic stand-in weights: the compute is the real network's, the detections (and so the presence figures, and the detection-dependent RoI/mask time) mean nothing.")
    fi
fi

# --- The page ---------------------------------------------------------------------------------
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
{
    echo "# The node against its deadline"
    echo
    echo "Produced by \`scripts/bench_deadline.sh${limit_args[*]:+ ${limit_args[*]}}\` on $(date -u +%F) (UTC), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' + local changes')."
    echo "Machine: ${cpu:-unknown CPU}, $(nproc) cores, $(free -g 2>/dev/null | awk '/^Mem:/{print $2}') GiB; compute threads: $T;"
    echo "load average before the runs: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)."
    ((limit > 0)) && echo && echo "**Smoke run: $limit frames per replay and a tiny calibration — not figures to quote.**"
    echo
    echo "Every replay: camera rate $FPS fps (a frame every $(python3 -c "print(f'{1000/$FPS:.1f}')") ms), deadline $DEADLINE ms"
    echo "(capture -> last alert of the frame), hit policy \`$POLICY\`, queue 2 (the oldest pending frame is"
    echo "dropped when perception is behind). Latency = capture -> perception done, over processed frames;"
    echo "time to alert = capture -> first pedestrian alert at the planner, over frames with one; both ms,"
    echo "p50 / p95 / p99. Presence: the node's pedestrian answer per frame (any pedestrian alert) against"
    echo "ground truth (gtFine_pseudo label maps, >= 2000 person pixels, over processed frames with a label"
    echo "map), and, for runs with exits, against the full detector's answer in the no-exits run of the same"
    echo "frames (over frames both runs processed; at the camera rate each run drops its own frames)."
    echo
    echo "| run | frames | processed | dropped | deadline misses | latency p50/p95/p99 | time to alert p50/p95/p99 | exit hits | MFLOP/frame | presence vs ground truth | presence vs detector |"
    echo "|---|--:|--:|--:|--:|--:|--:|---|--:|---|---|"
    printf '%s\n' "${rows[@]}"
    echo
    if ((${#notes[@]})); then
        echo "Notes:"
        printf -- '- %s\n' "${notes[@]}"
        echo
    fi
    echo "Commands (reports and logs in \`$work/\`):"
    echo
    echo '```sh'
    printf '%s\n' "${commands[@]}"
    echo '```'
} >"$OUT.partial"
mv "$OUT.partial" "$OUT"
say "wrote $OUT"
