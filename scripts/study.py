"""Run a seeded study (a YAML file of experiments x seeds) and write its report.

    python scripts/study.py configs/study/paper_tables.yaml            # the full study -> docs/study.md
    python scripts/study.py --quick configs/study/paper_tables.yaml    # 2 seeds, short runs -> docs/study-quick.md
    python scripts/study.py --report-only configs/study/paper_tables.yaml

Runs go to outputs/study/<study>/<experiment>/seed<k>/ one after another; finished ones are skipped, an interrupted
one resumes. See dmae_tpm/study.py for the file format and the statistics.
"""

import argparse
from pathlib import Path

from dmae_tpm import study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--quick", action="store_true", help="the study's quick seeds and overrides")
    ap.add_argument("--report-only", action="store_true", help="do not train; tabulate the finished runs")
    ap.add_argument("--root", type=Path, default=Path("outputs/study"))
    ap.add_argument("--out", type=Path, help="default: docs/study.md (docs/study-quick.md with --quick)")
    args = ap.parse_args()
    spec = study.load_study(args.study)
    if not args.report_only:
        study.run_zero_shot(spec, args.root, args.quick)
        study.run(spec, args.root, args.quick)
    out = args.out or Path("docs") / ("study-quick.md" if args.quick else "study.md")
    text = study.report(spec, args.root, args.quick, out.with_suffix(".png"), study.git_commit())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
