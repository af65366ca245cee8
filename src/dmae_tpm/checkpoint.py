"""Checkpoints that are never half-written and resume exactly, loadable with ``torch.load(weights_only=True)``.

A checkpoint holds the model, optimiser, scheduler and GradScaler states, epoch and step, every RNG state and
the resolved config, as tensors and plain containers only (numpy's RNG state is converted), so loading never
unpickles arbitrary objects.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

PATTERN = re.compile(r"^step_(\d+)\.pt$")


def save_atomic(obj: dict, path: str | os.PathLike) -> Path:
    """torch.save to a temporary file in the same folder, fsync, then rename over `path`."""
    return _replace_atomically(path, lambda handle: torch.save(obj, handle))


def _replace_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """write(handle) into a temporary file beside `path`, fsync, rename over `path`: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise RuntimeError(
            f"cannot load checkpoint {str(path)!r} ({type(err).__name__}: {err}); the file is "
            "corrupt or not a dmae_tpm checkpoint -- use an earlier step_*.pt"
        ) from err


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step in ``run_dir/checkpoints``."""
    folder = Path(run_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := PATTERN.match(p.name))]
    return max(found)[1] if found else None


def prune(run_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the `keep` newest step checkpoints; keep = 0 keeps every one (0 must never mean "none":
    the checkpoint just written would go, and with it any resume)."""
    if keep <= 0:
        return
    folder = Path(run_dir) / "checkpoints"
    found = sorted((int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := PATTERN.match(p.name)))
    for _, path in found[: max(0, len(found) - keep)]:
        path.unlink(missing_ok=True)


def model_state(checkpoint: dict) -> dict:
    """The model weights of a training checkpoint, or of a file holding only a state_dict."""
    return checkpoint["model"] if "model" in checkpoint and isinstance(checkpoint["model"], dict) else checkpoint


def save_best(run_dir: str | os.PathLike, state: dict, record: dict) -> Path:
    """Write checkpoints/best.pt (weights, config, progress: what dmae-eval needs) and then best.json, the record
    that names its metric, value and step. Each file is replaced atomically; best.json is written second, so it
    never claims a better score than the weights on disk hold."""
    folder = Path(run_dir) / "checkpoints"
    path = save_atomic(state, folder / "best.pt")
    _replace_atomically(folder / "best.json", lambda handle: handle.write(json.dumps(record, indent=1).encode()))
    return path


def read_best(run_dir: str | os.PathLike) -> dict | None:
    """The record of checkpoints/best.pt, or None when the run has none yet."""
    path = Path(run_dir) / "checkpoints" / "best.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RuntimeError(f"{str(path)!r} is unreadable ({err}); delete it (and best.pt) to restart the "
                           "best-checkpoint selection") from err
