#!/usr/bin/env bash
# Sets up .venv (first run only: a few minutes) and runs the default test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow` or `-k negnce`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_env.sh
python -m pytest -q "$@"
