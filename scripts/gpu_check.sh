#!/usr/bin/env bash
# Predicted vs measured CUDA peak memory (rlhfkit.memopt) on any CUDA machine, in under 5 minutes.
# Needs only this repository and a Python with torch + transformers (+ pydantic, pyyaml, numpy,
# tokenizers, vadersentiment as the engine imports them); downloads nothing.
# Usage: scripts/gpu_check.sh [extra args for scripts/gpu_check.py]   (OUT=dir, PYTHON=python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python3 || command -v python)}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONWARNINGS=ignore
OUT="${OUT:-profiles}"
"$PY" -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__, '| cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
"$PY" - <<'PYEOF' || { echo "gpu_check: missing Python packages above; install them (or put them on PYTHONPATH) and rerun" >&2; exit 2; }
import importlib, sys
missing = [m for m in ("torch", "transformers", "tokenizers", "pydantic", "yaml", "numpy") if importlib.util.find_spec(m) is None]
if missing:
    print("missing:", ", ".join(missing), file=sys.stderr)
    sys.exit(1)
PYEOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
timeout 60 "$PY" scripts/cuda_overhead_probe.py || true  # what the model's CUDA overhead constant is made of
exec timeout 290 "$PY" scripts/gpu_check.py --out "$OUT" "$@"
