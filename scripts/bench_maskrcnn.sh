#!/usr/bin/env bash
# Mask R-CNN ResNet50-FPN latency per part beside PyTorch eager, in one run on this machine, 2
# threads, one 2048x1024 Cityscapes frame: our criterion bench (benches/maskrcnn.rs, hash stand-in
# weights) then torchvision's maskrcnn_resnet50_fpn at random init (scripts/torch_reference.py
# bench), medians per part and the ratio ours/PyTorch, as a markdown table.
# usage: scripts/bench_maskrcnn.sh
# env:   TORCH_PYTHON (default .venv-torch/bin/python, made with scripts/make_torch_venv.sh if
#        missing), TORCH_RUNS (PyTorch runs per threshold after 1 warm-up, default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
frame=../shared/data/cityscapes-seq/leftImg8bit_sequence/train/aachen/aachen_000000_000010_leftImg8bit.jpg
if [ ! -f "$frame" ]; then echo "[bench] $frame not found (shared Cityscapes data): skipping" >&2; exit 0; fi
py=${TORCH_PYTHON:-.venv-torch/bin/python}
if [ ! -x "$py" ]; then py=$(bash scripts/make_torch_venv.sh | tail -1); fi
# the torch script decodes JPEGs with the project's own decoder, so both sides see the same pixels
[ -x target/release/pedcache ] || cargo build --release --bin pedcache
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "[bench] pedcache (criterion)" >&2
rm -f target/criterion/maskrcnn_2t/counts.json
cargo bench --bench maskrcnn -- --noplot >/dev/null
load_mid=$(cut -d' ' -f1-3 /proc/loadavg)
echo "[bench] PyTorch eager" >&2
torch_json=$(mktemp)
trap 'rm -f "$torch_json"' EXIT
"$py" scripts/torch_reference.py bench --threads 2 --runs "${TORCH_RUNS:-5}" --image "$frame" \
    --json "$torch_json" >/dev/null
python3 - "$torch_json" "$load_before" "$load_mid" <<'PY'
import json, sys
tj = json.load(open(sys.argv[1]))
t05, t0 = tj["results"]["box_score_thresh_0.05"], tj["results"]["box_score_thresh_0.0"]
base = "target/criterion/maskrcnn_2t"
counts = json.load(open(f"{base}/counts.json"))
def ours(part):
    est = json.load(open(f"{base}/{part}/new/estimates.json"))
    return est["median"]["point_estimate"] / 1e6
ms = lambda r, k: r["median_s"][k] * 1e3
# the mask row runs on the same threshold on both sides: 0.05, or 0.0 (top 100) if none survive 0.05
mthr = counts["mask_row_score_thresh"]
tm = t05 if mthr == 0.05 else t0
body = ["stem", "layer1", "layer2", "layer3", "layer4"]
rows = [(p, ours(p), ms(t05, p)) for p in ["transform", *body]]
rows.append(("body (stem..layer4, sum)", sum(r[1] for r in rows[1:]), sum(r[2] for r in rows[1:])))
rows += [(p, ours(p), ms(t05, p)) for p in ["fpn", "rpn"]]
rows.append(("roi_box (score_thresh 0.05)", ours("roi_box"), ms(t05, "roi_box")))
rows.append(("roi_box (score_thresh 0.0)", ours("roi_box_thresh0"), ms(t0, "roi_box")))
nm = f"{counts['mask_row_detections']} vs {tm['num_detections']} masks"
rows.append((f"roi_mask (score_thresh {mthr:g}; {nm})", ours("roi_mask"), ms(tm, "roi_masks")))
rows.append((f"paste (roi_mask+paste - roi_mask; {nm})", ours("roi_mask+paste") - ours("roi_mask"),
             ms(tm, "paste_masks")))
rows.append((f"roi_mask+paste (score_thresh {mthr:g}; {nm})", ours("roi_mask+paste"),
             ms(tm, "roi_masks") + ms(tm, "paste_masks")))
n05 = (counts["num_detections_thresh_0.05"], t05["num_detections"])
n0 = (counts["num_detections_thresh_0.0"], t0["num_detections"])
rows.append((f"total (score_thresh 0.05; {n05[0]} vs {n05[1]} masks)", ours("total"), ms(t05, "total")))
rows.append((f"total (score_thresh 0.0; {n0[0]} vs {n0[1]} masks)", ours("total_thresh0"), ms(t0, "total")))
print(f"2048x1024 frame ({tj['image']}), 2 threads; pedcache: criterion median, hash stand-in weights; "
      f"PyTorch {tj['torch']} / torchvision {tj['torchvision']} eager: median of {t05['runs']} runs, random init.")
print(f"detections: pedcache {counts['num_detections_thresh_0.05']} at 0.05, "
      f"{counts['num_detections_thresh_0.0']} at 0.0 (mask row on {counts['mask_row_detections']}); "
      f"PyTorch {t05['num_detections']} at 0.05, {t0['num_detections']} at 0.0 (mask row on {tm['num_detections']})")
after = " ".join(open("/proc/loadavg").read().split()[:3])
print(f"load average (1/5/15 min; 2 of it is this bench's own threads) before: {sys.argv[2]}; "
      f"between the two sides: {sys.argv[3]}; after: {after}")
print()
print("| part | pedcache median (ms) | PyTorch median (ms) | ratio |")
print("|---|--:|--:|--:|")
for name, o, t in rows:
    print(f"| {name} | {o:.1f} | {t:.1f} | {o / t:.2f} |" if t > 0 else f"| {name} | {o:.1f} | {t:.1f} | - |")
PY
