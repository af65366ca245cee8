#!/usr/bin/env bash
# The GPU section of docs/performance.md: every benchmark that has a GPU form, with --device cuda (bf16
# autocast, torch.cuda.synchronize around the timed calls, torch.cuda.max_memory_allocated for memory), then
# the doc's gpu_* blocks are rewritten from outputs/bench/*_cuda.json. ViT-B/32 with random weights: no download.
#   bash scripts/bench/gpu.sh            # all (tpm_cl, similarity, train_step, scaling)
#   bash scripts/bench/gpu.sh --quick    # smoke run, doc untouched
# On a machine whose Python already has the stack (a lent GPU machine with carried wheels, say), skip the .venv:
#   DMAE_PYTHON=python3 bash scripts/bench/gpu.sh   (src/ goes on PYTHONPATH; no pip install -e needed)
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -n "${DMAE_PYTHON:-}" ]; then
    py=$DMAE_PYTHON
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 WANDB_MODE="${WANDB_MODE:-disabled}"
else
    source scripts/_env.sh
    py=python
fi
"$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$py" scripts/bench/run_all.py --device cuda "$@"
