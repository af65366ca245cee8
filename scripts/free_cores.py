"""Prints the number of torch threads a CPU job should take: the cores not busy now, at least 1.

"Now" is a one-second sample of /proc/stat (the share of time the cores were not idle), not the 1-minute load
average the scripts used first: that average trails by about a minute, so a process started just before the job
was missed (2 threads beside it then ran the demo 2.2x slower than 1 thread on an idle machine) and a job that
had just ended still counted. Without /proc/stat (macOS), the load average is the fallback.
Measured on the 2-core VM (README): idle, 2 threads are 1.4x faster than 1; beside one busy process, 2 threads
are 2.2-2.5x slower than 1, since the two threads wait on each other.
"""

from __future__ import annotations

import math
import os
import sys
import time


def _cpu_times() -> tuple[int, int]:
    """(all jiffies, idle + iowait jiffies) summed over the cores, from /proc/stat's first line."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    return sum(values), values[3] + values[4]


def busy_cores(seconds: float = 1.0) -> float:
    """Cores' worth of work other processes did over the sample (this one sleeps through it)."""
    n = os.cpu_count() or 1
    try:
        total0, idle0 = _cpu_times()
        time.sleep(seconds)
        total1, idle1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0]
    return n * (1.0 - (idle1 - idle0) / max(1, total1 - total0))


def free_cores(seconds: float = 1.0) -> int:
    n = os.cpu_count() or 1
    return max(1, min(n, math.floor(n - busy_cores(seconds) + 0.5)))  # a process using half a core leaves it


if __name__ == "__main__":
    print(free_cores(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0))
