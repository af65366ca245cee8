"""Run every benchmark of scripts/bench and rewrite the tables of docs/performance.md between their markers.

    python scripts/bench/run_all.py                 # all topics on the CPU (the doc's CPU sections)
    python scripts/bench/run_all.py --device cuda   # the GPU section (scripts/bench/gpu.sh)
    python scripts/bench/run_all.py --quick         # smoke run of every script; the doc is left alone
    python scripts/bench/run_all.py --render-only   # re-render the doc from outputs/bench/*.json
    python scripts/bench/run_all.py --only tpm_cl similarity

Each script runs in its own process (so one's memory does not weigh on the next) and writes
outputs/bench/<topic>[_cuda].json; only the text between `<!-- bench:NAME:begin -->` and `<!-- bench:NAME:end -->`
in the doc is replaced, the prose around it is kept.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common as C  # noqa: E402

TOPICS = ["tpm_cl", "similarity", "train_step", "data", "scaling", "xmlnet"]
# data.py measures the CPU-side pipeline. The figures first (training clips/s, memory and MFU, then the
# evaluation similarity), so a GPU run cut short by scripts/gpu_check.sh's deadline still brings them back.
GPU_TOPICS = ["train_step", "similarity", "tpm_cl", "scaling", "xmlnet"]
DOC = C.ROOT / "docs" / "performance.md"


def replace_block(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        print(f"  (docs/performance.md has no {begin} marker; {name} not rendered)")
        return text
    return pattern.sub(lambda _: f"{begin}\n{body.strip()}\n{end}", text)


def load_json(topic: str, cuda: bool) -> dict | None:
    path = C.OUT_DIR / f"{topic}{'_cuda' if cuda else ''}.json"
    return json.loads(path.read_text()) if path.exists() else None


def machine_block(results: dict, cuda: bool, wall: dict | None, load: dict | None = None) -> str:
    machines = [d["machine"] for d in results.values() if d]
    if not machines:
        return "not measured (no GPU lent to this session)" if cuda else "not measured yet"
    m = machines[0]
    lines = [
        f"- measured: {', '.join(sorted({x['date'] for x in machines}))} (git {m.get('git_commit', '?')})",
        f"- CPU: {C.describe_cpu(m)}, RAM {m['ram_gib']} GiB" + ("" if cuda else " — a shared 2-core VM"),
        f"- GPU: {m['gpu'] or 'none'}",
        f"- torch {m['torch']}, open_clip {m['open_clip']}, Python {m['python']}",
        "- 1-minute load average when each script started: "
        + ", ".join(f"{t} {d['machine'].get('load_avg_1m_at_start')}" for t, d in results.items() if d),
    ]
    if load:
        lines.append(
            "- 1-minute load average sampled every 5 s while each script ran, max (this job alone on 2 cores is "
            "about 2; more means another process shared the CPU): "
            + ", ".join(f"{t} {v['max']:.2f}" for t, v in load.items() if v.get("max") is not None)
        )
    if wall:
        total = sum(wall.values())
        lines.append(
            f"- run_all.py wall time: {total / 60:.1f} min ("
            + ", ".join(f"{t} {s / 60:.1f}" for t, s in wall.items())
            + " min)"
        )
    return "\n".join(lines)


def render_doc(cuda: bool, wall: dict | None = None, load: dict | None = None) -> None:
    if not DOC.exists():
        sys.exit(f"{DOC} is missing")
    text = DOC.read_text()
    topics = GPU_TOPICS if cuda else TOPICS
    results = {t: load_json(t, cuda) for t in topics}
    if wall is None:
        old = load_json("run_all", cuda)
        wall = old.get("wall_s") if old else None
        load = old.get("load") if old else None
    prefix = "gpu_" if cuda else ""
    missing = [t for t, d in results.items() if d is None]
    if missing and any(results.values()) and not cuda:
        # A partial set of results (a fresh clone, `--only`): the sections without one keep what the doc says,
        # and so does the machine block, which describes the run that measured them; each section's own
        # "measured" line says where its figures came from.
        print(f"  no results for {', '.join(missing)}: their sections and the machine block are left as they are")
        results = {t: d for t, d in results.items() if d is not None}
    else:
        text = replace_block(text, f"{prefix}machine", machine_block(results, cuda, wall, load))
    for topic, data in results.items():
        if data is None and not cuda:
            body = f"not measured yet: `python scripts/bench/{topic}.py`"
        elif data is None and any(results.values()):  # the GPU run ended first (gpu_check.sh's deadline, say)
            body = f"not measured: the GPU run ended before this benchmark; `bash scripts/bench/gpu.sh --only {topic}`"
        elif data is None:
            body = "not measured (no GPU lent to this session): run `bash scripts/bench/gpu.sh`"
        else:
            body = importlib.import_module(topic).render(data)
        text = replace_block(text, prefix + topic, body)
    DOC.write_text(text)
    print(f"rewrote {DOC}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--only", nargs="+", choices=TOPICS)
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args()
    cuda = args.device == "cuda"
    if args.render_only:
        render_doc(cuda)
        return 0
    topics = [t for t in (args.only or (GPU_TOPICS if cuda else TOPICS)) if not cuda or t in GPU_TOPICS]
    wall, load, failed = {}, {}, []
    for topic in topics:
        cmd = [sys.executable, str(HERE / f"{topic}.py"), "--device", args.device] + (["--quick"] if args.quick else [])
        print(f"=== {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=C.ROOT)
        loads = []
        while proc.poll() is None:  # the 1-minute load average while it runs: ~2 is this job alone on 2 cores
            loads.append(os.getloadavg()[0])
            time.sleep(5)
        rc = proc.returncode
        wall[topic] = time.perf_counter() - t0
        load[topic] = {"max": max(loads, default=None), "mean": sum(loads) / len(loads) if loads else None}
        print(f"=== {topic}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {wall[topic]:.0f} s", flush=True)
        if rc:
            failed.append(topic)
    print("wall time: " + ", ".join(f"{t} {s:.0f} s" for t, s in wall.items()) + f"; total {sum(wall.values()):.0f} s")
    if not args.quick:
        old = load_json("run_all", cuda) or {}
        merged = {**old.get("wall_s", {}), **wall} if args.only else wall
        merged_load = {**old.get("load", {}), **load} if args.only else load
        C.write_json(C.OUT_DIR / f"run_all{'_cuda' if cuda else ''}.json", {"wall_s": merged, "load": merged_load})
        render_doc(cuda, merged, merged_load)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
