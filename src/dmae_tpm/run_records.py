"""Reading a run folder back: the records of metrics.jsonl, its evaluations and the run's name.

Shared by the training curves (`curves`) and the run comparison (`compare`), which read what the trainer wrote
(`run_log.RunLog`) and nothing else, so they work on finished, crashed and running runs alike.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


class RunFolderError(ValueError):
    pass


def metrics_path(run_dir: str | Path) -> Path:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise RunFolderError(f"{str(run_dir)!r} has no metrics.jsonl: give the folder dmae-train wrote (its run_dir, "
                             "e.g. outputs/demo), not a checkpoint or its checkpoints/ folder")
    return path


def read_records(run_dir: str | Path) -> list[dict]:
    """metrics.jsonl's records in file order. A line that is not a JSON object (the partial last line of a killed
    run) is skipped, counted and logged: the rest of the run stays readable."""
    path = metrics_path(run_dir)
    records, bad = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
        else:
            bad.append(number)
    if bad:
        log.warning("%s: skipped %d unreadable line(s) (%s)", path, len(bad), ", ".join(map(str, bad[:5])))
    return records


def evaluations(records: list[dict]) -> list[dict]:
    """The evaluation records, {"step", "epoch", "eval": results}, in step order; a resumed run that evaluated a
    step twice keeps the later one."""
    by_step = {r["step"]: r for r in records if isinstance(r.get("eval"), dict)}
    return [by_step[s] for s in sorted(by_step)]


def run_name(run_dir: str | Path) -> str:
    """The config's `name` when the run kept Hydra's .hydra/config.yaml, else the folder's name."""
    config = Path(run_dir) / ".hydra" / "config.yaml"
    if config.is_file():
        from omegaconf import OmegaConf

        name = OmegaConf.load(config).get("name")
        if name and name != "default":
            return f"{name} ({Path(run_dir).name})" if Path(run_dir).name != name else str(name)
    return Path(run_dir).resolve().name
