"""Train a few configurations on several seeds and compare them with paired intervals.

    python scripts/seed_study.py --seeds 1 2 3 --ref A \
        --run A="experiment=demo_baseline" --run B="" --run C="model.similarity.variant=official" \
        --out docs/studies/readings.md

Each (label, seed) trains as `dmae-train name=study_<label>_s<seed> seed=<seed> trainer.eval_every=0 <overrides>`,
one after the other (a finished run is not trained again). Same-seed runs share the initial weights of the modules
they have in common and the data order, so differences are paired by seed: the table gives each configuration's
mean +- SD over seeds and its mean difference from --ref with a 95% t-interval over the seeds (few seeds give wide
intervals: that is the point of showing them). It also reports what TPM-CL logged during training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

METRICS = (("t2v", "R@1"), ("t2v", "rsum"), ("v2t", "R@1"), ("v2t", "rsum"))
TPM_TERMS = ("tpm/masked_text_frac", "tpm/masked_video_frac", "tpm/top_text_weight", "tpm/kept_text_weight",
             "tpm/trpl1", "tpm/trpl2", "tpm/trpl3", "loss_contrastive", "loss_tpm")
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # df -> t


def run_dir(label: str, seed: int) -> Path:
    return Path("outputs") / f"study_{label}_s{seed}"


def records(label: str, seed: int) -> list[dict]:
    path = run_dir(label, seed) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def final_eval(label: str, seed: int) -> dict | None:
    evals = [r for r in records(label, seed) if "eval" in r]
    return evals[-1]["eval"] if evals else None


def train(label: str, seed: int, overrides: str) -> None:
    if final_eval(label, seed) is not None:
        print(f"{label} seed {seed}: done before, not trained again", flush=True)
        return
    args = [f"name=study_{label}_s{seed}", f"seed={seed}", "trainer.eval_every=0", "trainer.progress=false",
            *overrides.split()]
    print(f"{label} seed {seed}: dmae-train {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "dmae_tpm.train", *args], check=True)


def mean_sd(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.1f} +- {statistics.stdev(xs):.1f}" if len(xs) > 1 else f"{xs[0]:.1f}"


def paired(xs: list[float], ref: list[float]) -> str:
    d = [x - r for x, r in zip(xs, ref, strict=True)]
    if len(d) < 2:
        return f"{d[0]:+.1f}"
    m, half = statistics.mean(d), T975.get(len(d) - 1, 1.96) * statistics.stdev(d) / len(d) ** 0.5
    return f"{m:+.1f} [{m - half:+.1f}, {m + half:+.1f}]"


def value(result: dict, direction: str, key: str) -> float:
    return float(result[direction][key])


def results_table(runs: dict[str, str], seeds: list[int], ref: str) -> list[str]:
    head = " | ".join(f"{d} {k}" for d, k in METRICS)
    lines = [f"| run | overrides | {head} | " + " | ".join(f"{d} {k} - {ref}" for d, k in METRICS) + " |",
             "| --- | --- |" + " --- |" * (2 * len(METRICS))]
    ref_results = [final_eval(ref, s) for s in seeds]
    for label, overrides in runs.items():
        res = [final_eval(label, s) for s in seeds]
        cells = [mean_sd([value(r, d, k) for r in res]) for d, k in METRICS]
        diffs = ["" if label == ref else paired([value(r, d, k) for r in res], [value(r, d, k) for r in ref_results])
                 for d, k in METRICS]
        lines.append(f"| {label} | `{overrides or '(demo defaults)'}` | " + " | ".join(cells + diffs) + " |")
    return lines


def at_step(recs: list[dict], step: int, key: str) -> float | None:
    """The logged value of `key` at the first training record at or after `step`."""
    for r in recs:
        if r.get("step", -1) >= step and key in r:
            return float(r[key])
    return None


def tpm_table(runs: dict[str, str], seeds: list[int], steps: tuple[int, ...]) -> list[str]:
    lines = ["| run | term | " + " | ".join(f"step {s}" for s in steps) + " |",
             "| --- | --- |" + " --- |" * len(steps)]
    for label in runs:
        recs = {s: records(label, s) for s in seeds}
        has_tpm = any("tpm/trpl3" in r for rs in recs.values() for r in rs)
        last = max(r.get("step", 0) for rs in recs.values() for r in rs if "loss" in r)
        for key in TPM_TERMS if has_tpm else ("loss_contrastive",):
            cells = []
            for step in (*steps[:-1], last):
                vals = [v for s in seeds if (v := at_step(recs[s], step, key)) is not None]
                cells.append(" / ".join(f"{v:.2f}" for v in vals) if vals else "-")
            lines.append(f"| {label} | `{key}` | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, help='LABEL="hydra overrides" (may be empty)')
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--ref", help="label the differences are taken from (default: the first --run)")
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 100, -1], help="training steps for the TPM table")
    ap.add_argument("--out", type=Path, help="write the tables (markdown) here too")
    ap.add_argument("--report-only", action="store_true", help="do not train, only tabulate finished runs")
    args = ap.parse_args()
    runs = dict(spec.split("=", 1) if "=" in spec else (spec, "") for spec in args.run)
    ref = args.ref or next(iter(runs))
    if not args.report_only:
        for seed in args.seeds:  # seed-major: an interrupted study still has every configuration on the first seeds
            for label, overrides in runs.items():
                train(label, seed, overrides)
    seeds = [s for s in args.seeds if all(final_eval(label, s) for label in runs)]
    lines = [f"Seeds {seeds}; final evaluation; mean +- SD over seeds; difference from {ref}: mean [95% t-interval]"
             " over the same-seed pairs.", "", *results_table(runs, seeds, ref), "",
             "Training terms (one value per seed, at the first logged step at or after each):", "",
             *tpm_table(runs, seeds, tuple(args.steps))]
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
