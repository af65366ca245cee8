#!/usr/bin/env bash
# The lent GPU machine's software rehearsed here on CPU, before any device time is spent: its Python (3.12), its
# torch (2.11.0, /work/.library/device/KINDS.md) with packages its image holds, and the wheels of
# scripts/gpu_wheels.sh installed as gpu_check.sh installs them (--target, on PYTHONPATH, the project itself not
# installed). Then `gpu_check.sh --dry-run` and the default suite under pytest-xdist, as the check runs it there.
#   bash scripts/gpu_rehearsal.sh     # PYTHON312=/path/to/python3.12 if it is not on PATH (pyenv has one here)
# First run ~3 minutes of set-up in REHEARSAL_VENV (default /tmp/dmae_device_py312), then ~5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${REHEARSAL_VENV:-/tmp/dmae_device_py312}
[ -x "$venv/bin/python" ] || "${PYTHON312:-python3.12}" -m venv "$venv"
# the stack's needs that the device image already has (KINDS.md's list), at PyPI's current versions
"$venv/bin/pip" install -q torch==2.11.0 torchvision==0.26.0 numpy scikit-learn matplotlib tqdm pytest pytest-xdist \
    typer click requests jinja2 setuptools packaging httpx regex huggingface-hub safetensors timm pillow pyyaml
[ -d .whl/a ] && [ -d .whl/b ] || bash scripts/gpu_wheels.sh
export DMAE_PYTHON="$venv/bin/python" GPU_SITE="$venv/site" OUT="${OUT:-outputs/gpu_rehearsal}"
rm -rf "$GPU_SITE"
bash scripts/gpu_check.sh --install-only  # the check's own install of the wheels, into GPU_SITE
PYTHONPATH="$GPU_SITE" bash scripts/gpu_check.sh --dry-run
HF_HUB_OFFLINE=1 WANDB_MODE=disabled OMP_NUM_THREADS=1 PYTHONPATH="$PWD/src:$GPU_SITE" \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider -n 2
