#!/usr/bin/env bash
# Create (or reuse) the Python venv that runs scripts/torch_reference.py: .venv-torch at the repo root
# with torch, torchvision, safetensors, numpy and pillow. Idempotent: an existing venv that already
# imports everything at the pinned versions is left alone. Prints the venv's python path on stdout
# (last line).
#
#   scripts/make_torch_venv.sh        # then: "$(scripts/make_torch_venv.sh | tail -1)" scripts/torch_reference.py ...
#
# Env: PYTHON (interpreter used to create the venv, default python3),
#      TORCH_VENV (venv dir, default .venv-torch),
#      TORCH_PACKAGES (pip specs, default below; the fixtures in tests/fixtures/maskrcnn_tv were
#      made with exactly these versions).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "[torch-venv] $*" >&2; }

PYTHON=${PYTHON:-python3}
VENV=${TORCH_VENV:-.venv-torch}
TORCH_VERSION=${TORCH_VERSION:-2.14.1}
TORCHVISION_VERSION=${TORCHVISION_VERSION:-0.29.1}
PACKAGES=${TORCH_PACKAGES:-"torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION safetensors numpy pillow"}
PY="$VENV/bin/python"

check() {
    [[ -x "$PY" ]] && TV="$TORCH_VERSION" TVV="$TORCHVISION_VERSION" "$PY" - <<'EOF' >/dev/null 2>&1
import os, sys
import numpy, PIL, safetensors, torch, torchvision
want = (os.environ["TV"], os.environ["TVV"])
have = (torch.__version__.split("+")[0], torchvision.__version__.split("+")[0])
sys.exit(0 if have == want or os.environ.get("TORCH_PACKAGES") else 1)
EOF
}

if check; then
    say "reusing $VENV"
else
    if [[ ! -x "$PY" ]]; then
        say "creating $VENV with $($PYTHON --version 2>&1)"
        "$PYTHON" -m venv "$VENV"
    fi
    say "installing: $PACKAGES (torch wheel is large; a few minutes)"
    "$PY" -m pip install --quiet --upgrade pip >&2
    # shellcheck disable=SC2086
    "$PY" -m pip install --quiet $PACKAGES >&2
    check || { say "ERROR: $VENV still cannot import torch/torchvision/numpy/PIL/safetensors at the pinned versions"; exit 1; }
fi

versions=$("$PY" - 2>/dev/null <<'EOF'
import numpy, PIL, safetensors, torch, torchvision
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, numpy {numpy.__version__}, "
      f"pillow {PIL.__version__}, safetensors {safetensors.__version__}")
EOF
)
say "$versions"
echo "$(cd "$VENV" && pwd)/bin/python"
