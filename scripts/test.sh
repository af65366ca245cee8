#!/usr/bin/env bash
# Sets up .venv (first run only: a few minutes) and runs the default test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow` or `-k negnce`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
# torch threads as the demo picks them: beside a busy process, 2 threads ran 2.2-2.5x slower than 1 (README)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(free_cores)}"
python -m pytest -q "$@"
