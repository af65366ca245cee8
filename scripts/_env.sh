# Sourced by the scripts: creates and activates .venv with the pinned stack, offline-safe settings.
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
stamp=.venv/.installed-$(cat pyproject.toml constraints/ci.txt | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
    python -m pip install -q --upgrade pip >/dev/null
    python -m pip install -q -c constraints/ci.txt -e '.[dev]'
    rm -f .venv/.installed-* && touch "$stamp"
fi
export HF_HUB_OFFLINE=1
export WANDB_MODE="${WANDB_MODE:-disabled}"

# Torch threads for the CPU jobs: the cores not already busy (the 1-minute load average), at least 1. Measured on
# a 2-core VM, 20 demo steps: idle, 2 threads ran 1.4x the clips/s of 1; beside one busy process, 2 threads ran
# 2.5x slower than 1 (the two threads wait on each other). OMP_NUM_THREADS, when set, wins.
free_cores() {
    # +0.75: the load average trails a job that just ended by a minute; a process still running counts as ~1
    python3 -c 'import math, os; n = os.cpu_count() or 1; print(max(1, min(n, math.floor(n - os.getloadavg()[0] + 0.75))))'
}
