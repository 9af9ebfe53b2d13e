#!/usr/bin/env bash
# Perception time with learning on vs off, side by side in one run (issue: learning on the
# drive). First the node learns the demo drive from nothing at max speed (calib: auto) into a
# learn dir. Then PAIRS alternating pairs of two kinds replay the demo at its camera rate
# (17 fps, LIMIT frames):
#   with exits    off: --calib DIR (that learn dir's latest version; no learning, no audits)
#                 on:  --calib auto --learn-dir COPY (learning goes on from that version:
#                      audits of hits, recalibrations, withdrawal when audits disagree)
#   from nothing  off: --no-cache
#                 on:  --calib auto --learn-dir EMPTY
# Each row gives perception p95 (picked up -> done) over all frames and per path: frames the
# exits resolved whole, and frames where the full detector ran. Learning changes which path
# frames take (a withdrawn or newly adopted set), so the same-path ratios are what learning's
# share of the CPU costs perception; the all-frames ratio also holds its decisions.
# Reports go to $OUT (default target/bench-learning).
#
#   scripts/bench_learning.sh            # 5 pairs of each kind, 300 frames (~13 min on 2 cores)
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

run() { # name, replay arguments...
    local name=$1
    shift
    $BIN replay --config sim/demo.ron --limit "$LIMIT" "$@" --report "$OUT/$name.json" \
        > "$OUT/$name.log" 2>&1
}

for i in $(seq 1 "$PAIRS"); do
    echo "[bench-learning] pair $i/$PAIRS with exits: off, on"
    run "exits_off_$i" --calib "$OUT/learned"
    rm -rf "$OUT/exits_on_$i" && cp -r "$OUT/learned" "$OUT/exits_on_$i"
    run "exits_on_$i" --calib auto --learn-dir "$OUT/exits_on_$i"
    echo "[bench-learning] pair $i/$PAIRS from nothing: off, on"
    run "none_off_$i" --no-cache
    rm -rf "$OUT/none_on_$i"
    run "none_on_$i" --calib auto --learn-dir "$OUT/none_on_$i"
done

python3 - "$OUT" "$PAIRS" <<'EOF'
import json, statistics, sys
out, pairs = sys.argv[1], int(sys.argv[2])
PATHS = [("all frames", "perception_ms"), ("exits only", "perception_exits_only_ms"),
         ("with full", "perception_with_full_ms")]

def p95(r, key):
    p = r["stage_ms"][key]
    return p["p95"] if p["count"] else None

for kind, title in [("exits", "with exits"), ("none", "from nothing")]:
    ratios = {k: [] for _, k in PATHS}
    print(f"\n{title}: perception p95 ms, off / on (on/off)")
    print("| pair | " + " | ".join(n for n, _ in PATHS)
          + " | frames exits/full (on) | hits audited | calibrations | adopted | withdrawals"
          + " | dropped |")
    print("|---|" + "--:|" * (len(PATHS) + 6))
    for i in range(1, pairs + 1):
        off = json.load(open(f"{out}/{kind}_off_{i}.json"))
        on = json.load(open(f"{out}/{kind}_on_{i}.json"))
        cells = []
        for _, k in PATHS:
            a, b = p95(off, k), p95(on, k)
            if a is None or b is None:
                cells.append("-")
                continue
            cells.append(f"{a:.1f} / {b:.1f} ({b / a:.2f})")
            ratios[k].append(b / a)
        learn, audit, st = on.get("learning") or {}, on.get("audit") or {}, on["stage_ms"]
        print(f"| {i} | " + " | ".join(cells)
              + f" | {st['perception_exits_only_ms']['count']}"
              + f"/{st['perception_with_full_ms']['count']}"
              + f" | {audit.get('hits_audited', 0)} | {learn.get('calibrations', 0)}"
              + f" | {len(learn.get('versions', []))} | {learn.get('withdrawals', 0)}"
              + f" | {on['dropped']} |")
    print("median on/off: " + "; ".join(
        f"{n} {statistics.median(ratios[k]):.3f} ({len(ratios[k])} pairs)"
        for n, k in PATHS if ratios[k]))
EOF
