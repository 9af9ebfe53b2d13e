#!/usr/bin/env bash
# The node's per-frame path on the shared Cityscapes snippets (sim/cityscapes.ron: 90 frames of
# 2048x1024 JPEG, SSDLite in 2 tiles, no exits): RUNS replays at max speed (frames/s, perception
# and source decode p50) and RUNS at the camera rate, 17 fps (latency p50/p95/p99, deadline
# misses), alternating, with presence vs ground truth for each. Prints a markdown table.
#
#   scripts/bench_node_path.sh            # 3 + 3 replays, ~30 s on an idle 2-core machine
#
# Environment: RUNS (3), BIN (target/release/pedcache), OUT (target/bench-node-path).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${RUNS:-3}
bin=${BIN:-target/release/pedcache}
out=${OUT:-target/bench-node-path}
[[ -x $bin ]] || { echo "error: $bin not built (cargo build --release)" >&2; exit 1; }
[[ -d ../shared/data/cityscapes-seq ]] || { echo "error: ../shared/data/cityscapes-seq not found" >&2; exit 1; }
mkdir -p "$out"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for i in $(seq 1 "$runs"); do
    "$bin" replay --config sim/cityscapes.ron --no-cache --max-speed --report "$out/max-speed-$i.json" > "$out/max-speed-$i.log" 2>&1
    "$bin" replay --config sim/cityscapes.ron --no-cache --report "$out/17fps-$i.json" > "$out/17fps-$i.log" 2>&1
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 - "$out" "$runs" <<'EOF'
import json, sys
out, runs = sys.argv[1], int(sys.argv[2])
def presence(r):
    c = r["presence"]["vs_ground_truth"]
    return f"tp {c['tp']} fp {c['fp']} fn {c['fn']} tn {c['tn']}"
print("| run | max speed: frames/s | perception p50 ms | decode p50 ms | 17 fps: processed/dropped | misses | latency p50/p95/p99 ms | presence vs ground truth (max speed; 17 fps) |")
print("|--:|--:|--:|--:|--:|--:|--:|---|")
for i in range(1, runs + 1):
    m = json.load(open(f"{out}/max-speed-{i}.json"))
    c = json.load(open(f"{out}/17fps-{i}.json"))
    s, l = m["stage_ms"], c["latency_ms"]
    print(f"| {i} | {m['processed'] / m['wall_s']:.1f} | {s['perception_ms']['p50']:.1f} | "
          f"{s['source_decode_ms']['p50']:.1f} | {c['processed']}/{c['dropped']} | {c['deadline_misses']} | "
          f"{l['p50']:.1f} / {l['p95']:.1f} / {l['p99']:.1f} | {presence(m)}; {presence(c)} |")
EOF
