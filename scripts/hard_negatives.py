"""How many hard negatives the synthetic benchmark's training batches hold (issue 12 section 6).

    python scripts/hard_negatives.py --data data/synthetic --batch 32 [--runs outputs/study/paper_tables/*/seed1]

By construction: the same-family pairs (videos one mutation apart) of random batches drawn as the trainer draws them
(every caption once per epoch, shuffled; pairs of one video are masked by data.mask_same_video and not counted).
As trained: Eq. 5's hard negatives (xi = 0) that each run logged per step (diag/hard_negatives_per_caption), in
its first and last tenth of training. Prints a markdown table.
"""

import argparse
import statistics
from pathlib import Path

import numpy as np

from dmae_tpm.data.synthetic import read_meta
from dmae_tpm.study import logged_terms


def family_pairs(data: Path, batch: int, batches: int, seed: int = 0) -> dict[str, float]:
    """Mean per batch of distinct-video pairs, and of those in one family, over random caption batches."""
    train = [v for v in read_meta(data)["videos"] if v["split"] == "train"]
    families = {f: i for i, f in enumerate(dict.fromkeys(v["family"] for v in train))}
    family = np.array([families[v["family"]] for v in train for _ in v["captions"]])  # (captions,)
    video = np.array([i for i, v in enumerate(train) for _ in v["captions"]])
    rng = np.random.default_rng(seed)
    same_family, other = [], []
    for _ in range(batches):
        pick = rng.choice(len(video), size=batch, replace=False)
        f, v = family[pick], video[pick]
        distinct = np.triu(v[:, None] != v[None, :], 1)
        same_family.append(int((distinct & (f[:, None] == f[None, :])).sum()))
        other.append(int(distinct.sum()))
    return {"pairs": statistics.mean(other), "same_family_pairs": statistics.mean(same_family),
            "same_family_per_caption": 2 * statistics.mean(same_family) / batch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/synthetic"))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=2000)
    ap.add_argument("--runs", type=Path, nargs="*", default=[])
    args = ap.parse_args()
    f = family_pairs(args.data, args.batch, args.batches)
    print(f"Random batches of {args.batch} captions ({args.batches} drawn): {f['pairs']:.0f} distinct-video pairs, "
          f"{f['same_family_pairs']:.2f} of them same-family ({f['same_family_per_caption']:.3f} per caption).")
    if args.runs:
        print("\n| run | Eq. 5 hard negatives per caption, first tenth | last tenth |\n| --- | --- | --- |")
        for run in args.runs:
            got = logged_terms(run).get("diag/hard_negatives_per_caption")
            if got:
                print(f"| {run} | {got[0]:.2f} | {got[1]:.2f} |")


if __name__ == "__main__":
    main()
