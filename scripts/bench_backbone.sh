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
#   SIZES=512x1024 THREADS=2 ROUNDS=5 KERNELS="avx2 fallback" CANDLE=0 scripts/bench_backbone.sh
#
# KERNELS: extra conv kernel paths (PEDCACHE_KERNELS values) timed in each round right after
# the default one (second table: each path's median and its ratio to the default path).
# CANDLE=0 skips the two stock-candle runs (the slowest part of a round).
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
KERNELS=${KERNELS:-}
CANDLE=${CANDLE:-1}
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
            for k in $KERNELS; do
                PEDCACHE_KERNELS=$k "$BIN" --threads "$t" bench backbone --size "$size" \
                    --json "$OUT/ours-$k-$tag.json"
            done
            if [[ $CANDLE == 1 ]]; then
                "$BIN" --threads "$t" bench backbone --size "$size" --engine candle --iters 3 \
                    --json "$OUT/candle-$tag.json"
                # Stock candle as a plain candle program runs it: glibc's allocator defaults.
                PEDCACHE_MALLOC=default "$BIN" --threads "$t" bench backbone --size "$size" \
                    --engine candle --iters 3 --json "$OUT/candle-default-$tag.json"
            fi
            "$PEERS_PY" scripts/bench_backbone_peers.py --threads "$t" --sizes "$size" \
                --wait-idle 0 --retries 0 --json "$OUT/peers-$tag.json" >/dev/null
        done
    done
done

"$PEERS_PY" - "$OUT" "$SIZES" "$THREADS" "$ROUNDS" "$KERNELS" <<'EOF' | tee "$OUT/table.md"
import json, statistics, sys, os
out, sizes, threads, rounds = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), int(sys.argv[4])
kernels = sys.argv[5].split()
def load(p):
    p = os.path.join(out, p)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)
def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else float("nan")
print("| input | threads | pedcache (ours) | candle stock (our allocator setting) | candle stock (glibc defaults) | onnxruntime | PyTorch eager | ours / ORT | median of per-round ours / ORT | candle / ours | candle defaults / ours |")
print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
for size in sizes:
    for t in threads:
        cells = {"ours": [], "candle": [], "candle-default": [], "onnxruntime": [], "pytorch": []}
        ratios = []
        for r in range(1, rounds + 1):
            tag = f"{size}-t{t}-r{r}"
            for k in ["ours", "candle", "candle-default"]:
                j = load(f"{k}-{tag}.json")
                cells[k].append(j["median_ms"] if j else None)
            for e in load(f"peers-{tag}.json")["results"]:
                cells[e["engine"]].append(e["median_ms"])
            ratios.append(cells["ours"][-1] / cells["onnxruntime"][-1])
        m = {k: med(v) for k, v in cells.items()}
        first = load(f"ours-{size}-t{t}-r1.json")
        gflop, kern = first["gflop"], first.get("kernels", "?")
        print(f"| {size} ({gflop:.1f} GFLOP) | {t} | {m['ours']:.1f} ({kern}, {gflop / m['ours'] * 1e3:.0f} GFLOP/s) "
              f"| {m['candle']:.1f} | {m['candle-default']:.1f} | {m['onnxruntime']:.1f} | {m['pytorch']:.1f} "
              f"| {m['ours'] / m['onnxruntime']:.2f} | {statistics.median(ratios):.2f} | {m['candle'] / m['ours']:.2f} "
              f"| {m['candle-default'] / m['ours']:.2f} |")
if kernels:
    print()
    print("| input | threads | default path (ms) | " + " | ".join(f"{k} (ms, / default)" for k in kernels) + " |")
    print("|---|--:|--:|" + "--:|" * len(kernels))
    for size in sizes:
        for t in threads:
            tags = [f"{size}-t{t}-r{r}" for r in range(1, rounds + 1)]
            base = med([load(f"ours-{tag}.json")["median_ms"] for tag in tags])
            row = f"| {size} | {t} | {base:.1f} |"
            for k in kernels:
                v = med([load(f"ours-{k}-{tag}.json")["median_ms"] for tag in tags])
                row += f" {v:.1f} ({v / base:.2f}) |"
            print(row)
EOF
