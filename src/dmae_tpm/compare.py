"""``dmae-compare RUN_DIR...``: runs side by side in the layout of the paper's Table 1, printed and written as
Markdown. For each run: its final evaluation and its best one by ``--metric`` (the step it came from named)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .metric_names import COLUMNS, check_metric_name, metric_score
from .run_records import RunFolderError, evaluations, read_records, run_name

TABLE_COLUMNS = ("R@1", "R@5", "R@10", "MdR", "MeanR")


def run_rows(run_dir: str | Path, metric: str = "t2v.R@1") -> list[dict]:
    """[final, best] rows of one run: {"run", "which", "step", "results"}; one row when they are one evaluation."""
    evals = evaluations(read_records(run_dir))
    if not evals:
        raise RunFolderError(f"{str(run_dir)!r}: metrics.jsonl holds no evaluation yet (the trainer evaluates at "
                             "the end of each trainer.eval_every epochs and of the run)")
    name = run_name(run_dir)
    final = evals[-1]
    best = max(evals, key=lambda r: metric_score(r["eval"], metric)[1])  # the first of equals: max keeps it
    rows = [{"run": name, "which": "final", "step": final["step"], "results": final["eval"]}]
    if best is not final:
        rows.append({"run": name, "which": f"best {metric}", "step": best["step"], "results": best["eval"]})
    return rows


def _cell(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown_table(rows: list[dict]) -> str:
    """| Run | which | step | t2v R@1 R@5 R@10 MdR MeanR | v2t ... | rsum |, one decimal as in the paper."""
    head = ["Run", "eval", "step"] + [f"t2v {c}" for c in TABLE_COLUMNS] + [f"v2t {c}" for c in TABLE_COLUMNS]
    head.append("rsum")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (2 * len(TABLE_COLUMNS) + 1)]
    for row in rows:
        r = row["results"]
        cells = [row["run"], row["which"], str(row["step"])]
        for direction in ("t2v", "v2t"):
            cells += [_cell(r.get(direction, {}).get(c)) for c in TABLE_COLUMNS]
        cells.append(_cell(r.get("rsum_total")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dmae-compare", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--metric", default="t2v.R@1", help=f"picks each run's best evaluation: rsum_total or "
                        f"<t2v|v2t>.<{'|'.join(COLUMNS)}> (default t2v.R@1)")
    parser.add_argument("--out", default="outputs/compare.md", help="Markdown written (default outputs/compare.md)")
    args = parser.parse_args(argv)
    try:
        check_metric_name(args.metric)
        rows = [row for run_dir in args.run_dirs for row in run_rows(run_dir, args.metric)]
    except (RunFolderError, ValueError) as err:
        parser.exit(2, f"dmae-compare: {err}\n")
    table = markdown_table(rows)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
