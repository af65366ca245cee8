"""scripts/free_cores.py, which sets the demo's and the study's torch threads: the cores not busy now."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "free_cores.py"


def _free(seconds: str = "0.5") -> int:
    return int(subprocess.run([sys.executable, str(SCRIPT), seconds], capture_output=True, text=True, check=True,
                              timeout=60).stdout)


def test_free_cores_is_between_one_and_the_core_count():
    assert 1 <= _free() <= (os.cpu_count() or 1)


def test_a_process_started_just_before_counts_at_once():
    """The 1-minute load average missed a process started a second before; the sample does not."""
    n = os.cpu_count() or 1
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        free = _free("1.0")
    finally:
        busy.kill()
        busy.wait()
    assert free <= max(1, n - 1)
