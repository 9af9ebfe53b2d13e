#!/usr/bin/env bash
# Create (or reuse) the Python venv that runs scripts/tf_reference.py: .venv-tf at the repo root with
# tensorflow-cpu, pillow, numpy and safetensors. Idempotent: an existing venv that already imports
# everything is left alone. Prints the venv's python path on stdout (last line).
#
#   scripts/make_tf_venv.sh            # then: "$(scripts/make_tf_venv.sh | tail -1)" scripts/tf_reference.py ...
#
# Env: PYTHON (interpreter used to create the venv, default python3),
#      TF_VENV (venv dir, default .venv-tf), TF_PACKAGES (pip specs, default below).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "[tf-venv] $*" >&2; }

PYTHON=${PYTHON:-python3}
VENV=${TF_VENV:-.venv-tf}
PACKAGES=${TF_PACKAGES:-"tensorflow-cpu pillow numpy safetensors"}
PY="$VENV/bin/python"

check() {
    [[ -x "$PY" ]] && "$PY" - <<'EOF' >/dev/null 2>&1
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy, PIL, safetensors, tensorflow
EOF
}

if check; then
    say "reusing $VENV"
else
    if [[ ! -x "$PY" ]]; then
        say "creating $VENV with $($PYTHON --version 2>&1)"
        "$PYTHON" -m venv "$VENV"
    fi
    say "installing: $PACKAGES"
    "$PY" -m pip install --quiet --upgrade pip >&2
    # shellcheck disable=SC2086
    "$PY" -m pip install --quiet $PACKAGES >&2
    check || { say "ERROR: $VENV still cannot import tensorflow/numpy/PIL/safetensors"; exit 1; }
fi

versions=$("$PY" - 2>/dev/null <<'EOF'
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy, PIL, safetensors, tensorflow as tf
print(f"tensorflow {tf.__version__}, numpy {numpy.__version__}, pillow {PIL.__version__}, safetensors {safetensors.__version__}")
EOF
)
say "$versions"
echo "$(cd "$VENV" && pwd)/bin/python"
