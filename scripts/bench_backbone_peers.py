#!/usr/bin/env python3
"""Peer timings for the CPU conv-engine benchmark: the torchvision ResNet50 body
(conv1+bn1+relu+maxpool, layer1..layer4 -- everything before avgpool/fc) at batch 1, timed in
onnxruntime (CPUExecutionProvider, ORT_ENABLE_ALL, BN folded by ORT) and PyTorch eager
(inference_mode, nothing folded).

    python scripts/bench_backbone_peers.py --threads 1 2 --sizes 224x224 512x1024 --json OUT.json

Python: a venv with torch==2.14.1 torchvision==0.29.1 onnxruntime onnx, e.g. the one made by
scripts/make_peers_venv.sh (".venv-peers/bin/python").

Per (size, threads, engine): 2 warm-up runs, then the median wall time of --iters runs (default 20
at <= 224x224-sized inputs, 7 above). GFLOP of the body is counted analytically from the module
(2 * Cout * Cin/groups * kh * kw * Hout * Wout per Conv2d, Hout/Wout from forward hooks; BN, ReLU,
maxpool and the residual adds are not counted).
"""
import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
import torchvision


def parse_size(s):
    h, w = s.lower().split("x")
    return int(h), int(w)


class Body(nn.Module):
    """ResNet50 up to (and including) layer4."""

    def __init__(self, m):
        super().__init__()
        self.stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = m.layer1, m.layer2, m.layer3, m.layer4

    def forward(self, x):
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


def build_body():
    torch.manual_seed(0)
    m = torchvision.models.resnet50(weights=None)
    # Default init leaves BN at mean 0 / var 1 / gamma 1 / beta 0 (and zero-inits nothing else here);
    # give BN non-trivial deterministic statistics so folding actually changes the conv weights.
    g = torch.Generator().manual_seed(1)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            mod.weight.data.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            mod.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return Body(m).eval()


def conv_gflop(body, h, w):
    total = [0]

    def hook(mod, inp, out):
        _, cout, ho, wo = out.shape
        kh, kw = mod.kernel_size
        total[0] += 2 * cout * (mod.in_channels // mod.groups) * kh * kw * ho * wo

    hs = [m.register_forward_hook(hook) for m in body.modules() if isinstance(m, nn.Conv2d)]
    with torch.inference_mode():
        out = body(torch.zeros(1, 3, h, w))
    for hd in hs:
        hd.remove()
    return total[0] / 1e9, tuple(out.shape)


def _sys_busy_s():
    """System-wide non-idle CPU seconds so far (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_idle(max_wait_s, need=0.95, window_s=2.0):
    """Wait (up to max_wait_s) until the machine was >= `need` idle over one window. Returns the
    seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait_s:
        b0, w0 = _sys_busy_s(), time.perf_counter()
        if b0 is None:
            break
        time.sleep(window_s)
        busy = (_sys_busy_s() - b0) / ((time.perf_counter() - w0) * (os.cpu_count() or 1))
        if 1.0 - busy >= need:
            break
    return time.perf_counter() - t0


def time_runs(fn, iters, warmup=2):
    """Median/min wall ms of `iters` runs after `warmup`, plus how busy the rest of the machine was
    meanwhile: `other_cpu` = CPU used by other processes / (wall * ncpu), 0 = machine otherwise idle,
    and `own_cpu` = this process's CPU seconds / wall seconds (~threads actually running)."""
    for _ in range(warmup):
        fn()
    ts = []
    b0, c0, w0 = _sys_busy_s(), time.process_time(), time.perf_counter()
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    b1, c1, w1 = _sys_busy_s(), time.process_time(), time.perf_counter()
    wall, own = w1 - w0, c1 - c0
    other = None if b0 is None else max(0.0, (b1 - b0) - own) / (wall * (os.cpu_count() or 1))
    return statistics.median(ts) * 1e3, min(ts) * 1e3, other, own / wall


def export_onnx(body, h, w, path):
    x = torch.randn(1, 3, h, w)
    kw = dict(input_names=["input"], output_names=["features"], opset_version=17)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*|__main__")
    try:
        # Legacy TorchScript exporter: static shapes, no onnxscript dependency.
        torch.onnx.export(body, (x,), path, dynamo=False, do_constant_folding=True, **kw)
        return "torchscript"
    except Exception as e:  # legacy exporter removed/broken: fall back to the dynamo exporter
        print(f"[peers] legacy ONNX export failed ({type(e).__name__}: {e}); trying dynamo=True",
              file=sys.stderr)
        torch.onnx.export(body, (x,), path, dynamo=True, external_data=False, **kw)
        return "dynamo"


def write_json(path, gflop, results, loadavg_start, exporters, checks, ort, partial):
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "torch_mkldnn": torch.backends.mkldnn.is_available(),
        "onnx_exporter": exporters,
        "cpu": platform.processor() or platform.machine(),
        "nproc": os.cpu_count(),
    }
    try:
        import onnx
        versions["onnx"] = onnx.__version__
    except ImportError:
        pass
    out = {"gflop": gflop, "results": results, "loadavg": list(os.getloadavg()),
           "loadavg_start": loadavg_start, "versions": versions}
    if checks:
        out["checks"] = checks
    if partial:
        out["partial"] = True
    if path:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=2)
        os.replace(tmp, path)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--sizes", nargs="+", default=["224x224", "512x1024"])
    ap.add_argument("--iters", type=int, default=None,
                    help="timed runs per point (default 20 for <=224x224-sized inputs, 7 otherwise)")
    ap.add_argument("--engines", nargs="+", default=["onnxruntime", "pytorch"],
                    choices=["onnxruntime", "pytorch"])
    ap.add_argument("--json", default=None, help="write results JSON here")
    ap.add_argument("--max-other-cpu", type=float, default=0.15,
                    help="retry a point whose other-process CPU share exceeded this (shared machines)")
    ap.add_argument("--retries", type=int, default=2,
                    help="extra attempts per point when --max-other-cpu is exceeded; the attempt "
                         "with the least other-process CPU is kept")
    ap.add_argument("--wait-idle", type=float, default=60.0,
                    help="before each attempt wait up to this many seconds for an idle machine (0: don't)")
    ap.add_argument("--check", action="store_true",
                    help="compare onnxruntime and PyTorch outputs once per size (max abs/rel diff)")
    args = ap.parse_args()

    import onnxruntime as ort

    torch.set_num_interop_threads(1)
    body = build_body()
    loadavg_start = list(os.getloadavg())

    gflop, results, exporters, checks = {}, [], {}, {}
    tmpdir = tempfile.mkdtemp(prefix="bench_backbone_peers_")
    for size in args.sizes:
        h, w = parse_size(size)
        iters = args.iters or (20 if h * w <= 224 * 224 else 7)
        gf, out_shape = conv_gflop(body, h, w)
        gflop[size] = gf
        print(f"[peers] {size}: body conv GFLOP {gf:.3f}, output {out_shape}, iters {iters}", file=sys.stderr)

        x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(2))
        xn = x.numpy()

        sess_by_t = {}
        if "onnxruntime" in args.engines:
            path = os.path.join(tmpdir, f"resnet50_body_{h}x{w}.onnx")
            exporters[size] = export_onnx(body, h, w, path)
            for t in args.threads:
                so = ort.SessionOptions()
                so.intra_op_num_threads = t
                so.inter_op_num_threads = 1
                so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                sess_by_t[t] = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

        if args.check and "onnxruntime" in args.engines:
            torch.set_num_threads(max(args.threads))
            with torch.inference_mode():
                ref = body(x).numpy()
            got = sess_by_t[max(args.threads)].run(None, {"input": xn})[0]
            d = float(np.abs(got - ref).max())
            checks[size] = {"max_abs_diff": d, "max_abs_ref": float(np.abs(ref).max())}
            print(f"[peers] {size}: ort vs torch max|diff| {d:.3g} (max|ref| {np.abs(ref).max():.3g})",
                  file=sys.stderr)

        for t in args.threads:
            for eng in args.engines:
                if eng == "pytorch":
                    torch.set_num_threads(t)

                    def fn():
                        with torch.inference_mode():
                            body(x)
                else:
                    sess = sess_by_t[t]

                    def fn():
                        sess.run(None, {"input": xn})
                r = None
                for attempt in range(1 + max(0, args.retries)):
                    waited = wait_idle(args.wait_idle) if args.wait_idle > 0 else 0.0
                    la = os.getloadavg()[0]
                    med, best, other, own = time_runs(fn, iters)
                    cand = {"engine": eng, "threads": t, "size": size, "median_ms": med, "min_ms": best,
                            "iters": iters, "gflops_per_s": gf / (med / 1e3), "loadavg1_before": la,
                            "other_cpu": other, "own_cpu": own, "attempt": attempt,
                            "waited_idle_s": round(waited, 1)}
                    if r is None or (other is not None and other < r["other_cpu"]):
                        r = cand
                    if other is None or other <= args.max_other_cpu:
                        break
                    more = "; retrying" if attempt < args.retries else "; keeping the least contended attempt"
                    print(f"[peers] {size} t={t} {eng}: other processes used {other:.2f} of the CPU "
                          f"(median {med:.1f} ms){more}", file=sys.stderr)
                r["attempts"] = attempt + 1
                results.append(r)
                # Rewritten after every point so an interrupted run keeps what it measured.
                write_json(args.json, gflop, results, loadavg_start, exporters, checks, ort, partial=True)
                oc = "?" if r["other_cpu"] is None else f"{r['other_cpu']:.2f}"
                print(f"[peers] {size} t={t} {eng:11s} median {r['median_ms']:9.1f} ms  "
                      f"min {r['min_ms']:9.1f} ms  {r['gflops_per_s']:6.1f} GFLOP/s  "
                      f"(load1 {r['loadavg1_before']:.2f}, other-cpu {oc}, own-cpu {r['own_cpu']:.2f}, "
                      f"attempt {r['attempt'] + 1}/{r['attempts']})", file=sys.stderr)

    out = write_json(args.json, gflop, results, loadavg_start, exporters, checks, ort, partial=False)
    loadavg_end = out["loadavg"]
    if args.json:
        print(f"[peers] wrote {args.json}", file=sys.stderr)

    print("| size | GFLOP | threads | engine | median ms | min ms | GFLOP/s | other-cpu |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for r in results:
        oc = "?" if r["other_cpu"] is None else f"{r['other_cpu']:.2f}"
        print(f"| {r['size']} | {gflop[r['size']]:.2f} | {r['threads']} | {r['engine']} | "
              f"{r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['gflops_per_s']:.1f} | {oc} |")
    print("\nother-cpu: share of the machine's CPU used by other processes while timing (0 = idle).")
    print(f"\nloadavg start {', '.join(f'{v:.2f}' for v in loadavg_start)}; "
          f"end {', '.join(f'{v:.2f}' for v in loadavg_end)}")


if __name__ == "__main__":
    main()
