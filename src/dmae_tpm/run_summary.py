"""The end of a run in one place: final and best metrics, chance level, wall and CPU time, where best.pt is and
how to evaluate it. Printed once by rank 0 and written as run_dir/summary.json."""

from __future__ import annotations

import json
from pathlib import Path


def run_summary(run_dir: Path, final: dict | None, best: dict | None, step: int, wall_s: float, cpu_s: float) -> dict:
    """final: the last evaluation's results; best: checkpoints/best.json's record (or None)."""
    videos = (final or {}).get("videos")
    best_pt = run_dir / "checkpoints" / "best.pt"
    chosen = best_pt if best is not None and best_pt.exists() else None
    return {
        "step": step,
        "final": _figures(final),
        "best": None if best is None else {"metric": best["metric"], "value": best["value"], "step": best["step"],
                                           **_figures(best["results"])},
        "chance_r1": None if not videos else 100.0 / videos,  # one right video among `videos`, in %
        "wall_s": round(wall_s, 1),
        "cpu_s": round(cpu_s, 1),  # this process (rank 0 with its threads), not its DataLoader workers
        "best_pt": None if chosen is None else str(chosen),
        "evaluate": f"dmae-eval checkpoint={chosen}" if chosen is not None else None,
    }


def _figures(result: dict | None) -> dict:
    if not result:
        return {}
    return {f"{d}.{k}": result[d][k] for d in ("t2v", "v2t") for k in ("R@1", "R@5", "R@10", "MdR") if d in result} | {
        "rsum_total": result.get("rsum_total")}


def format_summary(s: dict) -> str:
    def line(figs: dict) -> str:
        return (f"t2v R@1 {figs.get('t2v.R@1', float('nan')):.1f}  v2t R@1 {figs.get('v2t.R@1', float('nan')):.1f}"
                f"  rsum {figs.get('rsum_total') or float('nan'):.1f}")

    lines = [f"run finished at step {s['step']}: {s['wall_s'] / 60:.1f} min wall, {s['cpu_s'] / 60:.1f} min CPU "
             "(this process)"]
    if s["final"]:
        chance = f" (chance R@1 {s['chance_r1']:.2g})" if s["chance_r1"] else ""
        lines.append(f"  final: {line(s['final'])}{chance}")
    if s["best"]:
        b = s["best"]
        lines.append(f"  best {b['metric']} = {b['value']:.1f} at step {b['step']}: {line(b)}")
    if s["evaluate"]:
        lines.append(f"  best.pt: {s['best_pt']}\n  evaluate it: {s['evaluate']}")
    return "\n".join(lines)


def write_summary(run_dir: Path, s: dict) -> Path:
    path = run_dir / "summary.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(s, indent=2) + "\n")
    tmp.replace(path)
    return path
