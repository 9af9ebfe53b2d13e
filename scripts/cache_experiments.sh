#!/usr/bin/env bash
# The caching-engine acceptance runs, reproducible: demo sequence (calibrate on the first 60%,
# evaluate on the last 40%) and the Cityscapes snippets (online split: frames 0-17 of each
# sequence -> 18-29; cross-sequence: two sequences -> the third), both exit policies,
# tolerance 0.02. Writes calibrations under target/cache-experiments/ and prints a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/pedcache
out=target/cache-experiments
mkdir -p "$out"
city=../shared/data/cityscapes-seq/leftImg8bit_sequence
T=${THREADS:-2}
summ() { python3 - "$1" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
d = r["presence"]["vs_detector"]; g = r["presence"].get("vs_ground_truth")
dis = d["fp"] + d["fn"]
print(f"| {sys.argv[1]} | {r['policy']} | {r['frames']} | {100*r['flops_cut']:.1f}% | {100*r['latency_cut']:.1f}% | "
      f"{dis} (fp {d['fp']}, fn {d['fn']}) | {r['detector_empty_frames']} / {r['agreement_on_empty']} | "
      + (f"tp {g['tp']} fp {g['fp']} fn {g['fn']} tn {g['tn']}" if g else "-") + " | "
      + ", ".join(f"{e['layer']} {e['hits']}" for e in r["exits"]) + " |")
PY
}
echo "| run | policy | frames | FLOPs cut | latency cut | frames disagreeing with detector | detector-empty frames / agreed | cached vs GT | hits per exit |"
echo "|---|---|--:|--:|--:|---|---|---|---|"
for pol in pedestrian any; do
  $bin --threads $T calibrate --model ssdlite-ped --source sim/vtest --part 0..0.6 --exit-on $pol --out $out/vtest-$pol >/dev/null 2>&1
  $bin --threads $T evaluate --calib $out/vtest-$pol --source sim/vtest --part 0.6..1 --json $out/vtest-$pol.json >/dev/null 2>&1
  summ "demo 60/40" $out/vtest-$pol.json
  $bin --threads $T calibrate --model ssdlite-ped --source $city --seq-frames 0..18 --exit-on $pol --out $out/city-online-$pol >/dev/null 2>&1
  $bin --threads $T evaluate --calib $out/city-online-$pol --source $city --seq-frames 18..30 --json $out/city-online-$pol.json >/dev/null 2>&1
  summ "Cityscapes online 0-17 -> 18-29" $out/city-online-$pol.json
  for held in aachen_000000 aachen_000002 aachen_000005; do
    $bin --threads $T calibrate --model ssdlite-ped --source $city --not-seq $held --exit-on $pol --out $out/city-x-$held-$pol >/dev/null 2>&1
    $bin --threads $T evaluate --calib $out/city-x-$held-$pol --source $city --seq $held --json $out/city-x-$held-$pol.json >/dev/null 2>&1
    summ "Cityscapes cross, held out $held" $out/city-x-$held-$pol.json
  done
done
