"""``dmae-curves RUN_DIR``: a run's training curves as one PNG (the trainer draws it at the end of every run).

Four panels over optimisation steps, from metrics.jsonl alone: the loss terms, each parameter group's learning
rate, throughput (clips/s), and every evaluation's R@1 (both directions) with rsum on a second axis.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .run_records import RunFolderError, evaluations, read_records, run_name

log = logging.getLogger(__name__)

Series = dict[str, tuple[list[int], list[float]]]


def _add(series: Series, name: str, step: int, value) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        steps, values = series.setdefault(name, ([], []))
        steps.append(step)
        values.append(float(value))


def curve_series(records: list[dict]) -> dict[str, Series]:
    """{panel: {curve: (steps, values)}}: what each panel draws, exactly as metrics.jsonl holds it."""
    panels: dict[str, Series] = {"loss": {}, "lr": {}, "throughput": {}, "recall": {}, "rsum": {}}
    for r in records:
        step = r["step"]
        for key, value in r.items():
            if key == "loss" or key.startswith("loss_"):
                _add(panels["loss"], key, step, value)
        for group, lr in (r.get("lr") or {}).items():
            _add(panels["lr"], group, step, lr)
        _add(panels["throughput"], "clips_per_s", step, r.get("clips_per_s"))
    for r in evaluations(records):
        result = r["eval"]
        for direction in ("t2v", "v2t"):
            _add(panels["recall"], f"{direction} R@1", r["step"], result.get(direction, {}).get("R@1"))
        _add(panels["rsum"], "rsum (t2v + v2t)", r["step"], result.get("rsum_total"))
    return panels


def _draw(ax, series: Series, title: str, ylabel: str, log_y: bool = False) -> None:
    for name, (steps, values) in series.items():
        ax.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=name)
    if log_y and any(v > 0 for _, values in series.values() for v in values):
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7, loc="best")
    else:
        ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes)


def plot_curves(run_dir: str | Path, out: str | Path | None = None, dpi: int = 100) -> Path:
    """Draw run_dir/metrics.jsonl into `out` (default run_dir/curves.png, 12 x 8 inches at `dpi`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = read_records(run_dir)
    panels = curve_series(records)
    fig = Figure(figsize=(12, 8), dpi=dpi)
    FigureCanvasAgg(fig)
    (a, b), (c, d) = fig.subplots(2, 2)
    _draw(a, panels["loss"], "loss terms", "loss")
    _draw(b, panels["lr"], "learning rate per parameter group", "lr", log_y=True)
    _draw(c, panels["throughput"], "throughput", "clips / s")
    _draw(d, panels["recall"], "evaluations", "R@1 (%)")
    if panels["rsum"]:
        twin = d.twinx()
        for name, (steps, values) in panels["rsum"].items():
            twin.plot(steps, values, color="tab:gray", linestyle="--", marker="s", markersize=3, label=name)
        twin.set_ylabel("rsum")
        twin.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{run_name(run_dir)}: {len(records)} records of metrics.jsonl")
    fig.tight_layout()
    out = Path(out) if out is not None else Path(run_dir) / "curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp)
    tmp.replace(out)  # a viewer never opens half a file
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dmae-curves", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders dmae-train wrote (metrics.jsonl)")
    parser.add_argument("--out", help="PNG path (one run only; default RUN_DIR/curves.png)")
    args = parser.parse_args(argv)
    if args.out and len(args.run_dirs) > 1:
        parser.error("--out takes one RUN_DIR")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    for run_dir in args.run_dirs:
        try:
            print(plot_curves(run_dir, args.out))
        except RunFolderError as err:
            parser.exit(2, f"dmae-curves: {err}\n")


if __name__ == "__main__":
    main()
