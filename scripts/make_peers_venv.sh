#!/usr/bin/env bash
# Create (or reuse) the Python venv that runs scripts/bench_backbone_peers.py: .venv-peers at the repo
# root with torch, torchvision, onnxruntime, onnx and numpy. Idempotent: an existing venv that already
# imports everything at the pinned torch/torchvision versions is left alone. Prints the venv's python
# path on stdout (last line).
#
#   scripts/make_peers_venv.sh     # then: "$(scripts/make_peers_venv.sh | tail -1)" scripts/bench_backbone_peers.py ...
#
# The ONNX export uses the legacy TorchScript exporter (dynamo=False), which needs only `onnx`;
# onnxscript is installed too so the script's dynamo fallback works if the legacy exporter is gone.
#
# Env: PYTHON (interpreter used to create the venv, default python3),
#      PEERS_VENV (venv dir, default .venv-peers),
#      TORCH_VERSION / TORCHVISION_VERSION (pins, default 2.14.1 / 0.29.1),
#      TORCH_INDEX_URL (optional, e.g. https://download.pytorch.org/whl/cpu for CPU-only wheels),
#      PEERS_PACKAGES (extra pip specs, default below).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "[peers-venv] $*" >&2; }

PYTHON=${PYTHON:-python3}
VENV=${PEERS_VENV:-.venv-peers}
TORCH_VERSION=${TORCH_VERSION:-2.14.1}
TORCHVISION_VERSION=${TORCHVISION_VERSION:-0.29.1}
EXTRA=${PEERS_PACKAGES:-"onnxruntime onnx onnxscript numpy"}
PY="$VENV/bin/python"

check() {
    [[ -x "$PY" ]] && TV="$TORCH_VERSION" TVV="$TORCHVISION_VERSION" "$PY" - <<'PYEOF' >/dev/null 2>&1
import os, sys
import numpy, onnx, onnxruntime, torch, torchvision
want = (os.environ["TV"], os.environ["TVV"])
have = (torch.__version__.split("+")[0], torchvision.__version__.split("+")[0])
sys.exit(0 if have == want else 1)
PYEOF
}

if check; then
    say "reusing $VENV"
else
    if [[ ! -x "$PY" ]]; then
        say "creating $VENV with $($PYTHON --version 2>&1)"
        "$PYTHON" -m venv "$VENV"
    fi
    "$PY" -m pip install --quiet --upgrade pip >&2
    idx=()
    [[ -n "${TORCH_INDEX_URL:-}" ]] && idx=(--index-url "$TORCH_INDEX_URL")
    say "installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION (large wheel; a few minutes)"
    "$PY" -m pip install --quiet "${idx[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" >&2
    say "installing: $EXTRA"
    # shellcheck disable=SC2086
    "$PY" -m pip install --quiet $EXTRA >&2
    check || { say "ERROR: $VENV still cannot import torch/torchvision (pinned)/onnxruntime/onnx/numpy"; exit 1; }
fi

versions=$("$PY" - 2>/dev/null <<'PYEOF'
import numpy, onnx, onnxruntime, torch, torchvision
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, onnxruntime {onnxruntime.__version__}, "
      f"onnx {onnx.__version__}, numpy {numpy.__version__}")
PYEOF
)
say "$versions"
echo "$(cd "$VENV" && pwd)/bin/python"
