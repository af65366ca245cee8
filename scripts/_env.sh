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

# Torch threads for the CPU jobs: the cores not busy now (a one-second sample of /proc/stat), at least 1;
# scripts/free_cores.py says why and what was measured. OMP_NUM_THREADS, when set, wins.
free_cores() {
    python3 scripts/free_cores.py
}
