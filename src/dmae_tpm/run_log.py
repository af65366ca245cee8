"""Where a run reports: Python logging to ``run_dir/train.log``, JSON lines in ``run_dir/metrics.jsonl``, wandb."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

log = logging.getLogger("dmae_tpm")


def attach_file_log(run_dir: Path, name: str) -> logging.Handler | None:
    """Log to ``run_dir/<name>.log`` unless a handler already writes into run_dir (Hydra's job logging)."""
    root = logging.getLogger()
    run_dir.mkdir(parents=True, exist_ok=True)
    here = run_dir.resolve()
    if any(isinstance(h, logging.FileHandler) and Path(h.baseFilename).parent == here for h in root.handlers):
        return None
    handler = logging.FileHandler(run_dir / f"{name}.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


def detach(handler: logging.Handler | None) -> None:
    if handler is not None:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class RunLog:
    """Rank 0 only: JSONL metrics plus wandb (mode from config; the WANDB_MODE environment variable wins)."""

    def __init__(self, run_dir: Path, enabled: bool, wandb_mode: str, project: str, name: str, config: dict):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.wandb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mode = os.environ.get("WANDB_MODE", wandb_mode)
        if mode != "disabled":
            import wandb

            self.wandb = wandb.init(
                project=project,
                name=name,
                dir=str(run_dir),
                mode=mode,
                config=config,
                resume="allow",
                id=_run_id(Path(run_dir)),
            )

    def write(self, record: dict, step: int) -> None:
        if not self.enabled:
            return
        record = {"step": step, **record}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(_clean(record)) + "\n")
        if self.wandb is not None:
            self.wandb.log(_flatten(record), step=step)

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def _run_id(run_dir: Path) -> str:
    """A wandb run id stored in the run dir, so resumed runs continue the same wandb run."""
    path = run_dir / "wandb_id.txt"
    if path.exists():
        return path.read_text().strip()
    import uuid

    run_id = uuid.uuid4().hex[:12]
    path.write_text(run_id)
    return run_id


def _flatten(record: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)):
            out[f"{prefix}{key}"] = value
    return out
