#!/usr/bin/env bash
# Perception latency with learning on vs off, side by side in one run (issue: learning on the
# drive). First the node learns the demo drive from nothing at max speed (calib: auto) into a
# learn dir; then PAIRS alternating pairs replay the demo at its camera rate (17 fps, LIMIT
# frames) with that learn dir's latest version:
#   off: --calib DIR             (the same exits, no learning, no audits)
#   on:  --calib auto --learn-dir COPY   (learning goes on from that version: audits of hits,
#                                         recalibrations on the learner's own threads)
# and prints each pair's perception p95 (capture-independent: perception start -> done) and
# end-to-end latency p95, then the median ratio on/off. Reports go to $OUT (default
# target/bench-learning).
#
#   scripts/bench_learning.sh            # 5 pairs of 300 frames (~4 min on 2 cores)
#   PAIRS=3 LIMIT=200 scripts/bench_learning.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PAIRS=${PAIRS:-5}
LIMIT=${LIMIT:-300}
OUT=${OUT:-target/bench-learning}
BIN=target/release/pedcache
[[ -x $BIN ]] || cargo build --release
[[ -f models/ssdlite_ped.safetensors && -d sim/vtest ]] ||
    { echo "bench_learning: run scripts/demo.sh first (model and demo sequence)" >&2; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT"

echo "[bench-learning] learning the demo drive from nothing (max speed) into $OUT/learned"
$BIN replay --config sim/demo.ron --calib auto --learn-dir "$OUT/learned" --max-speed \
    --report "$OUT/learn.json" > "$OUT/learn.log" 2>&1
ls "$OUT/learned" | grep -q '^v[0-9]' ||
    { echo "bench_learning: no version adopted (see $OUT/learn.log)" >&2; exit 1; }

for i in $(seq 1 "$PAIRS"); do
    echo "[bench-learning] pair $i/$PAIRS: off"
    $BIN replay --config sim/demo.ron --calib "$OUT/learned" --limit "$LIMIT" \
        --report "$OUT/off_$i.json" > "$OUT/off_$i.log" 2>&1
    rm -rf "$OUT/on_$i" && cp -r "$OUT/learned" "$OUT/on_$i"
    echo "[bench-learning] pair $i/$PAIRS: on"
    $BIN replay --config sim/demo.ron --calib auto --learn-dir "$OUT/on_$i" --limit "$LIMIT" \
        --report "$OUT/on_$i.json" > "$OUT/on_$i.log" 2>&1
done

python3 - "$OUT" "$PAIRS" <<'EOF'
import json, statistics, sys
out, pairs = sys.argv[1], int(sys.argv[2])
rows, ratios, e2e = [], [], []
for i in range(1, pairs + 1):
    off = json.load(open(f"{out}/off_{i}.json"))
    on = json.load(open(f"{out}/on_{i}.json"))
    p_off, p_on = off["stage_ms"]["perception_ms"]["p95"], on["stage_ms"]["perception_ms"]["p95"]
    l_off, l_on = off["latency_ms"]["p95"], on["latency_ms"]["p95"]
    audit = on.get("audit") or {}
    learn = on.get("learning") or {}
    ratios.append(p_on / p_off)
    e2e.append(l_on / l_off)
    rows.append(f"| {i} | {p_off:.1f} | {p_on:.1f} | {p_on / p_off:.3f} | {l_off:.1f} | {l_on:.1f} "
                f"| {audit.get('hits_audited', 0)} | {learn.get('calibrations', 0)} "
                f"| {len(learn.get('versions', []))} | {on['dropped']} |")
print("| pair | perception p95 off (ms) | on (ms) | on/off | latency p95 off | on | hits audited (on) | calibrations (on) | adopted (on) | dropped (on) |")
print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
print("\n".join(rows))
print(f"median perception p95 on/off: {statistics.median(ratios):.3f}; "
      f"median latency p95 on/off: {statistics.median(e2e):.3f}")
EOF
