"""Shared helpers of the benchmarks in scripts/bench: arguments, machine description, timing, peak memory, JSON.

Timing: wall clock (time.perf_counter) around the measured call, after `warmup` untimed calls, with
torch.cuda.synchronize before reading the clock on CUDA; the figure reported is the median of `repeats`.

Peak memory:
* CUDA: torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus what was allocated before
  the call: the peak of tensor memory the call itself added (caching-allocator blocks, not driver overhead).
* CPU: torch has no peak counter for CPU tensors, so one extra run of the call goes under torch.profiler with
  profile_memory=True; every tensor allocation and free during the call is an event with its byte count, and
  the peak is the maximum of their running sum (time order). This is the peak of live tensor bytes the call
  added on top of what existed before it -- the CPU analogue of the CUDA figure, exact to the allocation, and
  not blurred by the process RSS or the glibc heap. The profiled run is never timed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / "outputs" / "bench"


# ----- arguments ----------------------------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="seconds-long smoke run with small sizes (not for the doc)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: bf16 autocast, synchronised")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per figure (median reported)")
    p.add_argument("--out", type=Path, default=None, help="JSON file of the results (default outputs/bench/...)")
    return p


def device_of(args) -> torch.device:
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is visible to torch")
    return torch.device(args.device)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (as the trainer's precision=auto does); full fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compute_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


# ----- machine ------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# /proc/cpuinfo flag -> label, in the order shown: the instruction sets that decide fp32 / bf16 matmul speed on a CPU
CPU_FLAGS = {
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX512-VNNI",
    "avx512_bf16": "AVX512-BF16",
    "avx512_fp16": "AVX512-FP16",
    "amx_tile": "AMX",
    "amx_bf16": "AMX-BF16",
}
# the ones a reader checks for: stated as absent when missing
KEY_CPU_FLAGS = ("AVX2", "AVX-512", "AVX512-BF16", "AMX")


def cpu_flags() -> list[str] | None:
    """Labels of the CPU_FLAGS that /proc/cpuinfo lists for the first CPU (None where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [label for flag, label in CPU_FLAGS.items() if flag in have]
    except OSError:
        pass
    return None


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    import open_clip

    info = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gib": _ram_gib(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "python": platform.python_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": cpu_flags(),
    }
    with contextlib.suppress(OSError):
        info["load_avg_1m_at_start"] = round(os.getloadavg()[0], 2)
    with contextlib.suppress(Exception):
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    return info


def describe_cpu(m: dict[str, Any]) -> str:
    """'AMD EPYC, 2 cores; AVX2, FMA (no AVX-512, AVX512-BF16, AMX); torch kernels AVX2, torch threads 2'."""
    flags = m.get("cpu_flags")
    if flags is None:
        isa = "CPU flags not recorded"
    else:
        missing = [f for f in KEY_CPU_FLAGS if f not in flags]
        isa = (", ".join(flags) or "none of AVX2 / AVX-512 / AMX") + (f" (no {', '.join(missing)})" if missing else "")
    return (
        f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores; {isa}; torch kernels {m.get('cpu_capability') or '?'}, "
        f"torch threads {m.get('torch_threads', '?')}"
    )


def machine_line(data: dict[str, Any]) -> str:
    """The first line of every rendered section: when, at which commit and on what machine its figures were taken."""
    m = data.get("machine", {})
    gpu = m.get("gpu")
    ram = f", RAM {m['ram_gib']} GiB" if m.get("ram_gib") else ""
    return (
        f"*Measured {m.get('date', '?')} (git {m.get('git_commit', '?')}) on {describe_cpu(m)}{ram}; "
        f"GPU {gpu or 'none'}"
        + (f" (run on {data['device']})" if gpu and str(data.get("device", "")).startswith("cuda") else "")
        + f"; torch {m.get('torch', '?')}"
        + (" — `--quick` sizes, not for the doc" if data.get("quick") else "")
        + ".*\n"
    )


# ----- timing and memory -------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `repeats` timed calls of fn (after `warmup` untimed ones)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def _walk(node, out: list) -> None:
    from torch._C._profiler import _EventType

    if node.tag == _EventType.Allocation:
        out.append((node.start_time_ns, node.extra_fields.alloc_size))
    for child in node.children:
        _walk(child, out)


def cpu_peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak of live tensor bytes that fn adds (allocation events of torch.profiler, running sum)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    allocs: list[tuple[int, int]] = []
    for root in prof.profiler.kineto_results.experimental_event_tree():
        _walk(root, allocs)
    allocs.sort(key=lambda a: a[0])
    cur = peak = 0
    for _, size in allocs:
        cur += size
        peak = max(peak, cur)
    return int(peak)


def peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    return cpu_peak_bytes(fn)


def saved_tensor_bytes(fn: Callable[[], Any]) -> int:
    """Bytes of the distinct storages autograd saves for backward while fn runs (its activation memory)."""
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor):
        with contextlib.suppress(Exception):
            s = t.untyped_storage()
            seen[(t.device.type, s.data_ptr())] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return int(sum(seen.values()))


def mib(n: float | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


# ----- output ------------------------------------------------------------------------------------------------


def result(topic: str, quick: bool, device, repeats: int, **fields: Any) -> dict[str, Any]:
    """A benchmark's JSON record: what ran, where, how often, then its own `fields`."""
    return {
        "topic": topic,
        "quick": quick,
        "device": str(device),
        "machine": machine_info(),
        "repeats": repeats,
        **fields,
    }


def default_out(topic: str, args) -> Path:
    if args.out is not None:
        return args.out
    suffix = ("_quick" if args.quick else "") + ("_cuda" if args.device == "cuda" else "")
    return OUT_DIR / f"{topic}{suffix}.json"


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
    print(f"wrote {path}")
    return path


def fmt(x: Any) -> str:
    """A table cell: floats to about three significant digits, None as a dash."""
    if x is None:
        return "–"
    if isinstance(x, float):
        if x == 0:
            return "0"
        if abs(x) >= 100:
            return f"{x:,.0f}"
        if abs(x) >= 10:
            return f"{x:.1f}"
        if abs(x) >= 0.01:
            return f"{x:.3g}"
        return f"{x:.2e}"
    return str(x)


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(fmt(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def bar_line(met: bool, text: str) -> str:
    return f"**bar: {'met' if met else 'missed'}** — {text}"
