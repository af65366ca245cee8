"""Seeded studies: a YAML list of experiments (config overrides) x seeds, run one after another, aggregated with
intervals that tell an effect from noise (issue 12).

A study file (configs/study/*.yaml)::

    name: paper_tables
    baseline: baseline              # the experiment every difference is taken from, on the same seeds
    seeds: [1, 2, 3]
    overrides: [trainer.eval_every=0]                       # every run
    quick: {seeds: [1, 2], overrides: [trainer.epochs=1]}   # --quick: fewer seeds, shorter runs
    experiments:
      baseline: [loss=baseline]
      full: []
    tables:
      - title: "Table 7: TPM-CL"
        rows:
          - {label: Baseline, experiment: baseline, paper: [48.6, 74.8, 84.4, 2.0, 13.6, 207.8]}

Each run trains with ``run_dir=<root>/<study>/<experiment>/seed<k>`` and is skipped once it has finished (its
``study_run.json`` is written after the training exits cleanly); an interrupted run resumes from its checkpoint.
`aggregate` reads each run's final per-query ranks (``eval_ranks.json``): per experiment the mean and standard
deviation over seeds, and the difference from the baseline on the same seeds, each with a 95% percentile
bootstrap interval that resamples the seeds and the test queries together (one query draw per resample, shared by
all seeds and both experiments: the test set is one sample, the seeds another).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from .metrics import recall_metrics

COLUMNS = ("R@1", "R@5", "R@10", "MdR", "MeanR", "rsum")  # the paper's table columns (text-to-video)
LOWER_IS_BETTER = ("MdR", "MeanR")
RUN_RECORD = "study_run.json"


@dataclass
class Row:
    label: str
    experiment: str
    paper: list[float] | None = None  # the paper's R@1, R@5, R@10, MdR, MeanR, rsum


@dataclass
class Table:
    title: str
    rows: list[Row]


@dataclass
class Study:
    name: str
    baseline: str
    seeds: list[int]
    experiments: dict[str, list[str]]
    tables: list[Table] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    quick_seeds: list[int] | None = None
    quick_overrides: list[str] = field(default_factory=list)
    quick_experiments: list[str] | None = None  # --quick runs only these (the baseline always)
    notes: str = ""  # markdown appended to the report: what the figures were found to show

    def folder(self, quick: bool) -> str:
        """The study's folder under the runs' root: a quick study's runs never mix with the full one's."""
        return f"{self.name}-quick" if quick else self.name

    def chosen(self, quick: bool) -> dict[str, list[str]]:
        """The experiments a (quick) study runs, with their overrides."""
        if not (quick and self.quick_experiments):
            return self.experiments
        keep = {self.baseline, *self.quick_experiments}
        return {e: o for e, o in self.experiments.items() if e in keep}

    def runs(self, quick: bool) -> list[tuple[str, int, list[str]]]:
        """(experiment, seed, overrides) in seed-major order: a study stopped early has every experiment on its
        first seeds, which is what a paired comparison needs."""
        seeds = self.quick_seeds if quick and self.quick_seeds else self.seeds
        extra = self.quick_overrides if quick else []
        return [(e, s, [*self.overrides, *o, *extra]) for s in seeds for e, o in self.chosen(quick).items()]


def load_study(path: str | Path) -> Study:
    """Parse a study file, naming the file and the entry at fault."""
    path = Path(path)
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(data, dict) or not {"name", "baseline", "seeds", "experiments"} <= set(data):
        raise ValueError(f"{path}: a study needs name, baseline, seeds and experiments (see dmae_tpm/study.py)")
    experiments = {str(k): [str(o) for o in (v or [])] for k, v in data["experiments"].items()}
    if data["baseline"] not in experiments:
        raise ValueError(f"{path}: baseline {data['baseline']!r} is not one of the experiments {sorted(experiments)}")
    tables = []
    for t in data.get("tables", []):
        rows = [Row(str(r["label"]), str(r["experiment"]), r.get("paper")) for r in t["rows"]]
        for r in rows:
            if r.experiment not in experiments:
                raise ValueError(f"{path}: table {t['title']!r} row {r.label!r} names no experiment "
                                 f"({r.experiment!r}; known: {sorted(experiments)})")
        tables.append(Table(str(t["title"]), rows))
    quick = data.get("quick") or {}
    unknown = [e for e in quick.get("experiments") or [] if e not in experiments]
    if unknown:
        raise ValueError(f"{path}: quick.experiments names unknown experiments {unknown}")
    return Study(str(data["name"]), str(data["baseline"]), [int(s) for s in data["seeds"]], experiments, tables,
                 [str(o) for o in data.get("overrides", [])], quick.get("seeds"),
                 [str(o) for o in quick.get("overrides", [])], quick.get("experiments"), str(data.get("notes", "")))


# ----- running ------------------------------------------------------------------------------------------------------


def run_dir(root: Path, study: str, experiment: str, seed: int) -> Path:
    return root / study / experiment / f"seed{seed}"


def run(study: Study, root: Path, quick: bool = False, python: str = sys.executable) -> None:
    """Train every (experiment, seed) not finished yet, one after another; each finished one is recorded."""
    name = study.folder(quick)
    for experiment, seed, overrides in study.runs(quick):
        folder = run_dir(root, name, experiment, seed)
        args = [f"run_dir={folder}", f"name={name}_{experiment}_s{seed}", f"seed={seed}",
                "trainer.progress=false", *overrides]
        record = folder / RUN_RECORD
        if record.is_file():
            done = json.loads(record.read_text())
            if done["args"] != args:
                raise ValueError(f"{folder} was trained with other overrides ({done['args']}); delete that folder "
                                 "to train it again with the study's current ones")
            print(f"{experiment} seed {seed}: finished before, skipped", flush=True)
            continue
        print(f"{experiment} seed {seed}: dmae-train {' '.join(args)}", flush=True)
        start = time.time()
        subprocess.run([python, "-m", "dmae_tpm.train", *args], check=True)
        record.write_text(json.dumps({"args": args, "seconds": round(time.time() - start, 1),
                                      "commit": git_commit()}) + "\n")


def git_commit() -> str:
    """The checkout's commit (short), with "+changes" when its code or configs (src, configs, scripts) differ from
    it; "unknown" outside git."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).resolve().parent)

    head = git("rev-parse", "--short", "HEAD")
    if head.returncode:
        return "unknown"
    root = git("rev-parse", "--show-toplevel").stdout.strip()
    dirty = git("-C", root, "diff", "--quiet", "HEAD", "--", "src", "configs", "scripts").returncode
    return head.stdout.strip() + ("+changes" if dirty else "")


def run_zero_shot(study: Study, root: Path, quick: bool = False, python: str = sys.executable) -> Path:
    """The floor: the study's backbone before fine-tuning, on the same test split (skipped when done)."""
    folder = root / study.folder(quick) / "zero_shot"
    out = folder / "zero_shot_results.json"
    if not out.is_file():
        script = Path(__file__).resolve().parents[2] / "scripts" / "zero_shot.py"
        base = study.experiments[study.baseline]
        extra = study.quick_overrides if quick else []
        subprocess.run([python, str(script), f"run_dir={folder}", *study.overrides, *base, *extra], check=True)
    return out


def load_ranks(folder: Path) -> dict[str, np.ndarray]:
    """The final evaluation's per-query ranks of a finished run: {"t2v": (Q,), "v2t": (V,)}."""
    path = folder / "eval_ranks.json"
    if not (folder / RUN_RECORD).is_file() or not path.is_file():
        raise FileNotFoundError(f"{folder}: not a finished study run (no {RUN_RECORD} / eval_ranks.json)")
    data = json.loads(path.read_text())
    return {d: np.asarray(data[d], dtype=np.float64) for d in ("t2v", "v2t")}


# ----- statistics ---------------------------------------------------------------------------------------------------


def metric(ranks: np.ndarray, name: str) -> float:
    """One column of the paper's tables from per-query ranks (1 = best): `metrics.recall_metrics`'s."""
    if name not in COLUMNS:
        raise ValueError(f"unknown metric {name!r}; one of {COLUMNS}")
    return recall_metrics(torch.from_numpy(np.asarray(ranks)).long())[name]


def _per_query(ranks: np.ndarray, name: str) -> np.ndarray:
    """The metric as a mean over queries of a per-query value (every column but MdR is one): (..., Q)."""
    if name == "rsum":
        return 100.0 * ((ranks <= 1).astype(float) + (ranks <= 5) + (ranks <= 10))
    if name.startswith("R@"):
        return 100.0 * (ranks <= int(name[2:])).astype(float)
    if name == "MeanR":
        return ranks.astype(float)
    raise ValueError(f"{name!r} is not a mean over queries: no bootstrap interval")


def resample_counts(rng: np.random.Generator, resamples: int, seeds: int, queries: int):
    """How often each seed and each query is drawn in each resample: (B, S) and (B, Q) multinomial counts."""
    seed_counts = rng.multinomial(seeds, np.full(seeds, 1.0 / seeds), size=resamples)
    query_counts = rng.multinomial(queries, np.full(queries, 1.0 / queries), size=resamples)
    return seed_counts, query_counts


def bootstrap(values: np.ndarray, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean over seeds of the mean over queries of `values` (S, Q), resampling seeds and
    queries with replacement. For a paired difference pass the per-query differences of the two experiments."""
    values = np.asarray(values, dtype=np.float64)
    s, q = values.shape
    seed_counts, query_counts = resample_counts(np.random.default_rng(seed), resamples, s, q)
    stats = np.einsum("bs,sq,bq->b", seed_counts, values, query_counts) / (s * q)  # (B,)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(stats, [tail, 100.0 - tail])
    return float(low), float(high)


@dataclass
class Summary:
    """One experiment's column over seeds: per-seed values, mean, SD, interval; and the same for the difference
    from the baseline (None for the baseline itself and for MdR's interval)."""

    values: list[float]
    mean: float
    sd: float
    interval: tuple[float, float] | None
    diff: float | None = None
    diff_interval: tuple[float, float] | None = None


def summarise(ranks: Sequence[np.ndarray], name: str, base: Sequence[np.ndarray] | None = None,
              resamples: int = 2000) -> Summary:
    """`ranks`: one (Q,) array per seed; `base`: the baseline's on the same seeds, in the same order."""
    values = [metric(r, name) for r in ranks]
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    if name == "MdR":
        interval = None
    else:
        interval = bootstrap(np.stack([_per_query(r, name) for r in ranks]), resamples)
    out = Summary(values, mean, sd, interval)
    if base is not None:
        out.diff = mean - statistics.mean(metric(r, name) for r in base)
        if name != "MdR":
            paired = np.stack([_per_query(r, name) - _per_query(b, name) for r, b in zip(ranks, base, strict=True)])
            out.diff_interval = bootstrap(paired, resamples)
    return out


def aggregate(study: Study, root: Path, quick: bool = False, direction: str = "t2v") -> dict[str, Any]:
    """{experiment: {column: Summary}} over the seeds on which every experiment finished, and those seeds."""
    name = study.folder(quick)
    seeds = sorted({s for _, s, _ in study.runs(quick)})
    chosen = study.chosen(quick)
    finished = [s for s in seeds if all((run_dir(root, name, e, s) / RUN_RECORD).is_file() for e in chosen)]
    if not finished:
        raise FileNotFoundError(f"{root / name}: no seed on which every experiment of the study has finished")
    ranks = {e: [load_ranks(run_dir(root, name, e, s))[direction] for s in finished] for e in chosen}
    base = ranks[study.baseline]
    table = {e: {c: summarise(r, c, None if e == study.baseline else base) for c in COLUMNS}
             for e, r in ranks.items()}
    return {"seeds": finished, "experiments": table}


# ----- the report ---------------------------------------------------------------------------------------------------


def _cell(x: Summary, interval: bool) -> str:
    text = f"{x.mean:.1f} ± {x.sd:.1f}"
    return f"{text} [{x.interval[0]:.1f}, {x.interval[1]:.1f}]" if interval and x.interval else text


def _diff(x: Summary) -> str:
    if x.diff is None:
        return ""
    return f"{x.diff:+.1f} [{x.diff_interval[0]:+.1f}, {x.diff_interval[1]:+.1f}]" if x.diff_interval else ""


def _paper_diff(row: Row, baseline: Row | None, column: int) -> str:
    if row.paper is None or baseline is None or baseline.paper is None or row is baseline:
        return ""
    return f"{row.paper[column] - baseline.paper[column]:+.1f}"


def table_lines(study: Study, table: Table, summary: dict[str, dict[str, Summary]]) -> list[str]:
    """One paper table: our mean ± SD over seeds (95% interval for R@1 and rsum), the paired difference from the
    study's baseline with its interval, and the paper's figures and differences beside them."""
    head = ["Method", *COLUMNS, "R@1 - base", "rsum - base", "paper R@1", "paper rsum", "paper R@1 - base",
            "paper rsum - base"]
    lines = [f"**{table.title}**", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    baseline = next((r for r in table.rows if r.experiment == study.baseline), None)
    for row in table.rows:
        if row.experiment not in summary:  # a quick study runs a few experiments only
            continue
        cols = summary[row.experiment]
        cells = [_cell(cols[c], c in ("R@1", "rsum")) for c in COLUMNS]
        paper = [f"{row.paper[0]:.1f}", f"{row.paper[5]:.1f}"] if row.paper else ["", ""]
        lines.append("| " + " | ".join([row.label, *cells, _diff(cols["R@1"]), _diff(cols["rsum"]), *paper,
                                         _paper_diff(row, baseline, 0), _paper_diff(row, baseline, 5)]) + " |")
    return lines


def plot(study: Study, summary: dict[str, dict[str, Summary]], out: Path, column: str = "R@1") -> bool:
    """A PNG of every experiment's difference from the baseline with its 95% interval; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [e for e in summary if e != study.baseline]
    diffs = [summary[e][column].diff for e in names]
    low = [d - summary[e][column].diff_interval[0] for e, d in zip(names, diffs, strict=True)]
    high = [summary[e][column].diff_interval[1] - d for e, d in zip(names, diffs, strict=True)]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) + 1.4))
    ax.errorbar(diffs, range(len(names)), xerr=[low, high], fmt="o", capsize=3)
    ax.axvline(0.0, color="gray", lw=1)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel(f"t2v {column} minus {study.baseline}, points\n(mean over seeds, 95% bootstrap interval over "
                  "seeds and test queries)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return True


# What each component did in training (methods/dmae_tpm/diagnostics.py, tpm_cl.py; X-MLNet's false-negative
# loss): logged per step, summarised per run.
DIAGNOSTICS = (
    ("diag/hard_negatives_per_caption", "hard neg. / caption"),
    ("diag/hard_same_family_per_caption", "of them same-family"), ("diag/ta_entropy", "TA entropy"),
    ("diag/va_off_diagonal", "VA off-diag."), ("tpm/masked_text_frac", "masked text"),
    ("tpm/masked_video_frac", "masked video"), ("tpm/trpl1", "trpl1"), ("tpm/trpl2", "trpl2"),
    ("tpm/trpl3", "trpl3"), ("tpm/inside_margin1", "in margin 1"), ("tpm/inside_margin2", "in margin 2"),
    ("tpm/inside_margin3", "in margin 3"), ("fn/influential_video_frac", "FN: influential videos"),
    ("fn/influential_text_frac", "FN: influential captions"),
)


def logged_terms(folder: Path) -> dict[str, tuple[float, float]]:
    """Each diagnostic's mean over the first and over the last tenth of a run's logged training steps."""
    path = folder / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    out = {}
    for key, _ in DIAGNOSTICS:
        values = [r[key] for r in records if key in r]
        if values:
            tenth = max(1, len(values) // 10)
            out[key] = (statistics.mean(values[:tenth]), statistics.mean(values[-tenth:]))
    return out


def diagnostics_lines(root: Path, name: str, experiments: Sequence[str], seeds: Sequence[int]) -> list[str]:
    """One row per experiment: each diagnostic's first-tenth -> last-tenth value, averaged over the seeds."""
    head = [label for _, label in DIAGNOSTICS]
    lines = ["| experiment | " + " | ".join(head) + " |", "|" + " --- |" * (len(head) + 1)]
    for e in experiments:
        per_seed = [logged_terms(run_dir(root, name, e, s)) for s in seeds]
        cells = []
        for key, _ in DIAGNOSTICS:
            got = [t[key] for t in per_seed if key in t]
            cells.append(f"{statistics.mean(a for a, _ in got):.2f} → {statistics.mean(b for _, b in got):.2f}"
                         if got else "")
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    return lines


def report(study: Study, root: Path, quick: bool, plot_path: Path | None, commit: str) -> str:
    """docs/study.md: the study's tables, the zero-shot floor, what ran and how long it took."""
    name = study.folder(quick)
    agg = aggregate(study, root, quick)
    summary = agg["experiments"]
    runs = [json.loads((run_dir(root, name, e, s) / RUN_RECORD).read_text())
            for e in summary for s in agg["seeds"]]
    minutes = sum(r.get("seconds", 0.0) for r in runs) / 60.0
    trained = ", ".join(f"`{c}`" for c in sorted({r.get("commit", "unrecorded") for r in runs}))
    lines = [f"# Study `{study.name}`{' (quick)' if quick else ''}", "",
             f"Runs trained at commit {trained}, report written at `{commit}`; seeds {agg['seeds']}, {len(runs)} "
             f"runs, {minutes:.0f} min of training and "
             f"evaluation in all. Text-to-video on the synthetic test split: mean ± SD over seeds, [95% interval]; "
             f"differences are from `{study.baseline}` on the same seeds, with a 95% percentile bootstrap interval "
             f"resampling seeds and test queries together (MdR: no interval). Regenerate: "
             f"`bash scripts/study.sh {'--quick ' if quick else ''}configs/study/{study.name}.yaml`.", ""]
    zero = root / name / "zero_shot" / "zero_shot_results.json"
    if zero.is_file():
        z = json.loads(zero.read_text())["results"]["t2v"]
        ranks = np.asarray(z.get("ranks", []), dtype=np.float64)
        extra = ""
        if len(ranks):
            low, high = bootstrap(_per_query(ranks[None], "R@1"))
            extra = f" [{low:.1f}, {high:.1f}] over queries"
        lines += [f"Zero-shot floor (the pre-trained backbone, mean-pooled frames, no fine-tuning): t2v R@1 "
                  f"{z['R@1']:.1f}{extra}, rsum {z['rsum']:.1f}.", ""]
    for table in study.tables:
        lines += [*table_lines(study, table, summary), ""]
    if plot_path is not None and plot(study, summary, plot_path):
        lines += [f"![t2v R@1 minus {study.baseline}]({plot_path.name})", ""]
    lines += ["**What the components did in training** (first tenth → last tenth of the logged steps, mean over "
              "seeds): Eq. 5's hard negatives per caption in the batch (xi = 0, whatever the loss); Textual "
              "Attention's entropy over log(words) (1 = uniform); the share of Visual Attention's mixing on other "
              "frames; TPM-CL's masked fractions, its three triplet terms and the fraction of pairs still inside "
              "each margin.", "", *diagnostics_lines(root, name, list(summary), agg["seeds"]), ""]
    if study.notes and not quick:  # they describe the full study's figures
        lines += [study.notes.strip(), ""]
    return "\n".join(lines)
