"""The figures an evaluation reports, by name, and which way each is better. Torch-free, so a config's
trainer.best_metric is checked before torch loads; re-exported by `metrics`."""

from __future__ import annotations

COLUMNS = ("R@1", "R@5", "R@10", "MdR", "MeanR", "rsum")
LOWER_IS_BETTER = ("MdR", "MeanR")


def check_metric_name(key: str) -> None:
    """A figure of an evaluation result: ``rsum_total`` or ``<t2v|v2t>.<R@1|R@5|R@10|rsum|MdR|MeanR>``."""
    direction, _, name = key.partition(".")
    if key == "rsum_total" or (direction in ("t2v", "v2t") and name in COLUMNS):
        return
    raise ValueError(f"unknown metric {key!r}: use rsum_total or <t2v|v2t>.<{'|'.join(COLUMNS)}>, e.g. t2v.R@1")


def metric_score(results: dict, key: str) -> tuple[float, float]:
    """(value, score) of the figure `key` names; score is the value signed so that larger is better."""
    check_metric_name(key)
    direction, _, name = key.partition(".")
    value = float(results[key] if key == "rsum_total" else results[direction][name])
    return value, (-value if name in LOWER_IS_BETTER else value)
