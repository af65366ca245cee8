#!/usr/bin/env bash
# The GPU section of docs/performance.md: every benchmark that has a GPU form, with --device cuda (bf16
# autocast, torch.cuda.synchronize around the timed calls, torch.cuda.max_memory_allocated for memory), then
# the doc's gpu_* blocks are rewritten from outputs/bench/*_cuda.json. ViT-B/32 with random weights: no download.
#   bash scripts/bench/gpu.sh            # all (tpm_cl, similarity, train_step, scaling)
#   bash scripts/bench/gpu.sh --quick    # smoke run, doc untouched
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/_env.sh
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python scripts/bench/run_all.py --device cuda "$@"
