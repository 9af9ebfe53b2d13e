#!/usr/bin/env bash
# Zenoh publishing, side by side (issue 14): PAIRS alternating pairs of demo replays at the camera
# rate (sim/demo.ron, FRAMES frames, 17 fps), publishing off vs on (`--publish zenoh=...` with a
# `pedcache listen` process on loopback). Prints, per pair, perception p95 off/on and their ratio,
# alerts published/received, and the listener's publish -> receive latency (p50/p99, ms), then
# the medians. Loopback only.
#
#   scripts/bench_zenoh.sh          # 5 pairs of 300 frames, ~3.5 minutes
#
# Environment: PAIRS (5), FRAMES (300), BIN (target/release/pedcache), OUT (target/bench-zenoh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
pairs=${PAIRS:-5}
frames=${FRAMES:-300}
bin=${BIN:-target/release/pedcache}
out=${OUT:-target/bench-zenoh}
[[ -x $bin ]] || { echo "error: $bin not built (cargo build --release)" >&2; exit 1; }
mkdir -p "$out"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ep="tcp/127.0.0.1:$port"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for i in $(seq 1 "$pairs"); do
    "$bin" replay --config sim/demo.ron --limit "$frames" --report "$out/off-$i.json" > /dev/null 2>&1
    "$bin" listen --connect "$ep" --idle 3 --jsonl "$out/received-$i.jsonl" > /dev/null 2> "$out/listen-$i.log" &
    listener=$!
    "$bin" replay --config sim/demo.ron --limit "$frames" --publish "zenoh=$ep" --publish-wait-ms 10000 \
        --report "$out/on-$i.json" --alerts "$out/alerts-$i.jsonl" > /dev/null 2>&1
    wait "$listener"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 - "$out" "$pairs" <<'PY'
import json, statistics, sys
out, pairs = sys.argv[1], int(sys.argv[2])
def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]
rows = []
print("| pair | perception p95 off / on ms (on/off) | alerts sent / received | publish->receive p50 / p99 / max ms | capture->received p50 / p99 ms |")
print("|--:|--:|--:|--:|--:|")
for i in range(1, pairs + 1):
    off = json.load(open(f"{out}/off-{i}.json"))["stage_ms"]["perception_ms"]["p95"]
    on = json.load(open(f"{out}/on-{i}.json"))["stage_ms"]["perception_ms"]["p95"]
    sent = sum(1 for _ in open(f"{out}/alerts-{i}.jsonl"))
    got = [json.loads(l) for l in open(f"{out}/received-{i}.jsonl")]
    t = [g["transport_ms"] for g in got]
    e = [g["end_to_end_ms"] for g in got if g.get("end_to_end_ms") is not None]
    rows.append((on / off, pct(t, 0.99)))
    print(f"| {i} | {off:.2f} / {on:.2f} ({on / off:.3f}) | {sent} / {len(got)} | "
          f"{pct(t, .5):.3f} / {pct(t, .99):.3f} / {max(t):.3f} | {pct(e, .5):.2f} / {pct(e, .99):.2f} |")
print(f"\nmedian on/off perception p95: {statistics.median(r[0] for r in rows):.3f}; "
      f"median publish->receive p99: {statistics.median(r[1] for r in rows):.3f} ms")
PY
