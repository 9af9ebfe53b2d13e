#!/usr/bin/env bash
# SSDLite latency beside TensorFlow, in one run on this machine: our criterion bench
# (benches/ssdlite.rs) then the original frozen graph in TensorFlow (scripts/tf_reference.py
# bench), medians for 1 and 2 threads, and the ratio ours/TF.
# usage: scripts/bench_ssdlite.sh        env: TF_PYTHON (default .venv-tf/bin/python, made if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
bash models/fetch.sh
py=${TF_PYTHON:-.venv-tf/bin/python}
if [ ! -x "$py" ]; then bash scripts/make_tf_venv.sh; py=.venv-tf/bin/python; fi
echo "[bench] pedcache (criterion)"
cargo bench --bench ssdlite -- --noplot >/dev/null
echo "[bench] TensorFlow"
tf_json=$(mktemp)
frame=../shared/data/cityscapes-seq/leftImg8bit_sequence/train/aachen/aachen_000005_000020_leftImg8bit.jpg
extra=(); [ -f "$frame" ] && extra=(--frame "$frame")
"$py" scripts/tf_reference.py bench --pb models/cache/frozen_inference_graph.pb --threads 1 2 --json "$tf_json" "${extra[@]}" >/dev/null
python3 - "$tf_json" <<'PY'
import json, sys
tf = {r["threads"]: r for r in json.load(open(sys.argv[1]))["results"]}
def ours(t, case):
    est = json.load(open(f"target/criterion/ssdlite_{t}t/{case}/new/estimates.json"))
    return est["median"]["point_estimate"] / 1e6
print("| threads | input | pedcache median (ms) | TensorFlow median (ms) | ratio |")
print("|--:|---|--:|--:|--:|")
for t in (1, 2):
    for case, key, label in (("300x300", "forward_300_ms", "300x300 forward"),
                             ("2048x1024_2tiles", "frame_2tiles_batch_ms", "2048x1024, 2 tiles")):
        o, f = ours(t, case), tf[t][key]
        print(f"| {t} | {label} | {o:.1f} | {f:.1f} | {o / f:.2f} |")
PY
rm -f "$tf_json"
