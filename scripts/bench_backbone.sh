#!/usr/bin/env bash
# ResNet50 body (conv1..layer4), side by side in one run: pedcache's conv engine, candle's stock
# conv2d (same binary, `--engine candle`; once with the process settings ours runs under, once
# with glibc's allocator defaults as a plain candle program has them), onnxruntime and PyTorch eager
# (scripts/bench_backbone_peers.py), for each input size and thread count. The engines of one
# (size, threads) point run back to back, so their ratios share the machine's state; with
# ROUNDS > 1 the table quotes the median over rounds of each engine's median.
#
#   scripts/bench_backbone.sh                  # 224x224 and 512x1024, 1 and 2 threads
#   SIZES=512x1024 THREADS=2 ROUNDS=3 scripts/bench_backbone.sh
#
# Env: PEERS_PY (python with torch/torchvision/onnxruntime; default: made by
# scripts/make_peers_venv.sh), OUT (results dir, default target/bench-backbone).
# Writes $OUT/<engine>-<size>-t<threads>-r<round>.json and prints a markdown table (also
# $OUT/table.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SIZES=${SIZES:-"224x224 512x1024"}
THREADS=${THREADS:-"1 2"}
ROUNDS=${ROUNDS:-1}
OUT=${OUT:-target/bench-backbone}
PEERS_PY=${PEERS_PY:-$(scripts/make_peers_venv.sh | tail -1)}
mkdir -p "$OUT"
cargo build --release --quiet
BIN=target/release/pedcache

# Wait (up to 60 s) for a window in which the machine is >= 95% idle, so builds or other jobs
# do not land inside one engine's runs only.
wait_idle() {
    "$PEERS_PY" - <<'EOF'
import sys
sys.argv = ["x"]
sys.path.insert(0, "scripts")
from bench_backbone_peers import wait_idle
wait_idle(60.0)
EOF
}

for r in $(seq 1 "$ROUNDS"); do
    for size in $SIZES; do
        for t in $THREADS; do
            tag="$size-t$t-r$r"
            echo "[bench-backbone] round $r: $size, $t thread(s)" >&2
            wait_idle
            "$BIN" --threads "$t" bench backbone --size "$size" --json "$OUT/ours-$tag.json"
            "$BIN" --threads "$t" bench backbone --size "$size" --engine candle --iters 3 \
                --json "$OUT/candle-$tag.json"
            # Stock candle as a plain candle program runs it: glibc's allocator defaults.
            PEDCACHE_MALLOC=default "$BIN" --threads "$t" bench backbone --size "$size" \
                --engine candle --iters 3 --json "$OUT/candle-default-$tag.json"
            "$PEERS_PY" scripts/bench_backbone_peers.py --threads "$t" --sizes "$size" \
                --wait-idle 0 --retries 0 --json "$OUT/peers-$tag.json" >/dev/null
        done
    done
done

"$PEERS_PY" - "$OUT" "$SIZES" "$THREADS" "$ROUNDS" <<'EOF' | tee "$OUT/table.md"
import json, statistics, sys, os
out, sizes, threads, rounds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), int(sys.argv[4])
def load(p):
    with open(os.path.join(out, p)) as f:
        return json.load(f)
print("| input | threads | pedcache (ours) | candle stock (our allocator setting) | candle stock (glibc defaults) | onnxruntime | PyTorch eager | ours / ORT | candle / ours | candle defaults / ours |")
print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
for size in sizes:
    for t in threads:
        cells = {"ours": [], "candle": [], "candle-default": [], "onnxruntime": [], "pytorch": []}
        for r in range(1, rounds + 1):
            tag = f"{size}-t{t}-r{r}"
            cells["ours"].append(load(f"ours-{tag}.json")["median_ms"])
            cells["candle"].append(load(f"candle-{tag}.json")["median_ms"])
            cells["candle-default"].append(load(f"candle-default-{tag}.json")["median_ms"])
            for e in load(f"peers-{tag}.json")["results"]:
                cells[e["engine"]].append(e["median_ms"])
        m = {k: statistics.median(v) for k, v in cells.items()}
        gflop = load(f"ours-{size}-t{t}-r1.json")["gflop"]
        print(f"| {size} ({gflop:.1f} GFLOP) | {t} | {m['ours']:.1f} ({gflop / m['ours'] * 1e3:.0f} GFLOP/s) "
              f"| {m['candle']:.1f} | {m['candle-default']:.1f} | {m['onnxruntime']:.1f} | {m['pytorch']:.1f} "
              f"| {m['ours'] / m['onnxruntime']:.2f} | {m['candle'] / m['ours']:.2f} "
              f"| {m['candle-default'] / m['ours']:.2f} |")
EOF
