#!/usr/bin/env bash
# Every GPU figure isoflop reports, in one bounded run on a bare GPU machine: benchmarks/gpu.py's
# steps (its options pass through, e.g. --deadline-s 540 or --steps trainer sweep).
#
# It uses the machine's python3 and its CUDA PyTorch, and the project from its source roots: no
# install, no network. What the machine's Python lacks (pydantic, diffusers, torch-fidelity, ...)
# comes from wheels in .whl/, fetched beforehand where pip works by scripts/gpu-wheels.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/isoflop-site .whl/*.whl
    export PYTHONPATH=/tmp/isoflop-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/operator:$PWD/trainer:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
"$py" - <<'PY'
import torch
print(f"gpu.sh: torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}")
PY
exec "$py" -m benchmarks.gpu "$@"
