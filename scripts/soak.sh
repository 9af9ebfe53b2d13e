#!/usr/bin/env bash
# Soak test of the node (issue 11.4): a long replay of the demo sequence, looped, as fast as
# perception goes, with background retraining on; samples the process's resident memory, open
# file descriptors and threads from /proc over time.
#
#   scripts/soak.sh [FRAMES] [OUT_DIR]        # defaults: 10000 frames, target/soak
#
# The demo sequence (sim/vtest, 795 frames; sim/make_demo.sh makes it) is passed to `replay` as
# many times as FRAMES needs (sources are repeatable) and cut at FRAMES with --limit. Progress is
# read off the alert stream (every frame's alerts carry its index). At the end it prints, and
# writes to OUT_DIR/summary.txt:
#   - resident memory, fds and threads over the first 1,000 frames vs the last 1,000, and whether
#     the last grew at most 10% over the first (mean RSS; max fds and threads);
#   - mean latency of the first and last 1,000 frames (from the alerts);
#   - whether every frame is accounted for: processed + dropped + bad = frames = FRAMES;
#   - whether the retrainer ran at least one round.
# Exits non-zero if the replay fails or a check does not hold. Samples: OUT_DIR/samples.tsv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FRAMES=${1:-10000}
OUT=${2:-target/soak}
INTERVAL=${SOAK_INTERVAL:-0.5}
# alert_then_continue runs the full detector after a hit only while the deadline leaves time;
# a generous deadline keeps it running on every frame, so the retrainer always has samples (on a
# busy machine a 100 ms deadline can starve it and the soak would not exercise retraining).
DEADLINE_MS=${SOAK_DEADLINE_MS:-2000}
# A node that runs for days keeps the records of its latest frames only (the report's counts
# still cover every frame); 0 keeps all, which grows memory by a few hundred bytes a frame.
KEEP_RECORDS=${SOAK_KEEP_RECORDS:-1000}
BIN=target/release/pedcache
DEMO=sim/vtest
CALIB=calib/ssdlite-ped-vtest

say() { echo "[soak] $*"; }
die() { echo "[soak] ERROR: $*" >&2; exit 1; }

[[ -x $BIN ]] || { say "building $BIN"; cargo build --release; }
[[ -d $DEMO ]] || die "$DEMO missing (run sim/make_demo.sh)"
[[ -s models/ssdlite_ped.safetensors ]] || die "models/ssdlite_ped.safetensors missing (run models/fetch.sh)"
per_loop=$(find "$DEMO" -name '*_leftImg8bit.png' | wc -l)
((per_loop > 0)) || die "no frames under $DEMO"
loops=$(((FRAMES + per_loop - 1) / per_loop))
sources=()
for ((i = 0; i < loops; i++)); do sources+=(--source "$DEMO"); done

mkdir -p "$OUT"
rm -f "$OUT"/{alerts.jsonl,report.json,samples.tsv,summary.txt,replay.log}
say "$FRAMES frames: $DEMO ($per_loop frames) x $loops, max speed, retraining on, policy alert_then_continue"
start=$(date +%s.%N)
"$BIN" replay --model ssdlite-ped "${sources[@]}" --limit "$FRAMES" --max-speed \
    --retrain --policy alert_then_continue --calib "$CALIB" --deadline-ms "$DEADLINE_MS" \
    --keep-records "$KEEP_RECORDS" \
    --report "$OUT/report.json" --alerts "$OUT/alerts.jsonl" >"$OUT/replay.log" 2>&1 &
pid=$!

printf 't_s\tframe\trss_kb\tfds\tthreads\n' >"$OUT/samples.tsv"
while kill -0 "$pid" 2>/dev/null; do
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
    threads=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
    fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l || true)
    # The newest complete alert line names the frame perception has reached.
    frame=$(tail -c 8192 "$OUT/alerts.jsonl" 2>/dev/null | grep -o '"frame":[0-9]*' | tail -n 1 | cut -d: -f2 || true)
    now=$(date +%s.%N)
    if [[ -n $rss && -n $threads ]]; then
        printf '%.2f\t%s\t%s\t%s\t%s\n' "$(echo "$now - $start" | bc)" "${frame:--1}" "$rss" "$fds" "$threads" >>"$OUT/samples.tsv"
    fi
    sleep "$INTERVAL"
done
status=0
wait "$pid" || status=$?
end=$(date +%s.%N)
((status == 0)) || { tail -n 5 "$OUT/replay.log" >&2; die "replay exited with status $status"; }

python3 - "$OUT" "$FRAMES" "$(echo "$end - $start" | bc)" <<'EOF' | tee "$OUT/summary.txt"
import json, sys
out, frames, wall = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rows = []
with open(f"{out}/samples.tsv") as f:
    next(f)
    for line in f:
        t, fr, rss, fds, th = line.split()
        rows.append((float(t), int(fr), int(rss), int(fds), int(th)))
first = [r for r in rows if 0 <= r[1] < 1000]
last = [r for r in rows if r[1] >= frames - 1000]
rep = json.load(open(f"{out}/report.json"))
lat = {}
with open(f"{out}/alerts.jsonl") as f:
    for line in f:
        a = json.loads(line)
        if "latency_ms" in a and "frame" in a:
            lat.setdefault(a["frame"], a["latency_ms"])
def mean(v):
    return sum(v) / len(v) if v else float("nan")
ok = True
print(f"wall time {wall:.0f} s for {rep['frames']} frames ({rep['frames'] / wall:.1f} frames/s); "
      f"{len(rows)} samples every ~{rows[1][0] - rows[0][0] if len(rows) > 1 else 0:.1f} s")
if not first or not last:
    print("too few samples in the first or last 1,000 frames to compare")
    ok = False
else:
    for name, k, agg in [("resident memory (KiB, mean)", 2, mean), ("open fds (max)", 3, max), ("threads (max)", 4, max)]:
        a, b = agg([r[k] for r in first]), agg([r[k] for r in last])
        # Flat means no growth: the last 1,000 frames at most 10% above the first (fewer fds
        # at the end, e.g. start-up files closed, is not a leak).
        within = b <= 1.10 * a
        ok &= within
        print(f"{name}: first 1,000 frames {a:.0f}, last 1,000 {b:.0f} ({100 * (b - a) / a:+.1f}%): "
              f"{'flat (growth within 10%)' if within else 'GROWS more than 10%'}")
    print(f"peak resident memory {max(r[2] for r in rows)} KiB; fds {min(r[3] for r in rows)}..{max(r[3] for r in rows)}; "
          f"threads {min(r[4] for r in rows)}..{max(r[4] for r in rows)}")
la = [v for k, v in lat.items() if k < 1000]
lb = [v for k, v in lat.items() if k >= frames - 1000]
print(f"mean latency: first 1,000 frames {mean(la):.1f} ms, last 1,000 {mean(lb):.1f} ms")
acc = rep["processed"] + rep["dropped"] + rep["bad_frames"]
counted = acc == rep["frames"] == frames
ok &= counted
print(f"frames {rep['frames']} (asked {frames}): processed {rep['processed']} + dropped {rep['dropped']} + "
      f"bad {rep['bad_frames']} = {acc}: {'every frame accounted for' if counted else 'NOT accounted for'}")
r = rep.get("retrain") or {}
retrained = rep["retrains"] > 0
ok &= retrained
print(f"retraining: {rep['retrains']} rounds, swaps {r.get('swaps')}, samples {r.get('samples')}; "
      f"exits hits {[(e.get('layer'), e.get('hits')) for e in rep['exits']]}; status {rep['status']}"
      f"{'' if retrained else ' -- NOT exercised (no round)'}")
print("SOAK PASSED" if ok else "SOAK FAILED")
sys.exit(0 if ok else 1)
EOF
