#!/usr/bin/env bash
# The default test suite under another torch release, in a throw-away venv; the project's other pins are kept.
#   bash scripts/torch_compat.sh 2.3.1 0.18.1 "numpy<2"   # the floor pyproject.toml states (torch < 2.4: NumPy 1)
#   bash scripts/torch_compat.sh 2.11.0 0.26.0            # the release on the lent GPU machines
# Extra arguments are more requirements for both installs. About 2 minutes of set-up (PyPI's CUDA builds, ~5 GB
# under COMPAT_VENV, default /tmp/dmae_torch_<version>), then the suite (~3 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bash scripts/torch_compat.sh TORCH_VERSION TORCHVISION_VERSION [REQUIREMENT...]"; exit 2; }
torch=$1 vision=$2
shift 2
venv=${COMPAT_VENV:-/tmp/dmae_torch_$torch}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
grep -v '^torch' constraints/ci.txt >"$venv/constraints.txt"
"$venv/bin/pip" install -q "torch==$torch" "torchvision==$vision" "$@"
"$venv/bin/pip" install -q -c "$venv/constraints.txt" -e '.[dev]' "$@"
"$venv/bin/python" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
HF_HUB_OFFLINE=1 WANDB_MODE="${WANDB_MODE:-disabled}" "$venv/bin/python" -m pytest -q -p no:cacheprovider
