"""Checkpoints that are never half-written and resume exactly, loadable with ``torch.load(weights_only=True)``.

A checkpoint holds the model, optimiser, scheduler and GradScaler states, epoch and step, every RNG state and
the resolved config, as tensors and plain containers only (numpy's RNG state is converted), so loading never
unpickles arbitrary objects.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
log = logging.getLogger(__name__)


def save_atomic(obj: dict, path: str | os.PathLike) -> Path:
    """torch.save to a temporary file in the same folder, fsync, rename over `path`, fsync the folder; then write
    `path`.sha256, the digest of the bytes written, which `load` checks (a flipped byte otherwise loads silently)."""
    path = Path(path)
    digest = _sidecar(path)
    digest.unlink(missing_ok=True)  # a kill before the new digest lands leaves the file unverified, not "corrupt"
    hashed = _replace_atomically(path, lambda handle: torch.save(obj, handle))
    _replace_atomically(digest, lambda handle: handle.write(f"{hashed}  {path.name}\n".encode()))
    return path


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


class _Hashing:
    """A write-only stream that hashes what passes through; it has no seek, so torch.save writes in order."""

    def __init__(self, handle: BinaryIO):
        self.handle, self.sha = handle, hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def _replace_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> str:
    """write(handle) into a temporary file beside `path`, fsync, rename over `path`, fsync the folder (so the
    rename survives a power loss): never a half-written file. Returns the sha256 of the bytes written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            stream = _Hashing(handle)
            write(stream)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, f"cannot write {str(path)!r} ({err.strerror or err}); free space on that disk "
                      "(df -h) or point run_dir elsewhere -- the previous checkpoints are intact") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return stream.sha.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256(path: str | os.PathLike) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            sha.update(block)
    return sha.hexdigest()


class CorruptCheckpointError(RuntimeError):
    """The file cannot be loaded, or its bytes differ from the digest written with it."""


def verify(path: str | os.PathLike, expected: str | None = None) -> bool:
    """Check `path` against `expected` or its .sha256 sidecar; False when there is no digest to check (a file of
    an older version, or one whose writer was killed between the rename and the digest)."""
    path = Path(path)
    if expected is None:
        digest = _sidecar(path)
        if not digest.is_file():
            return False
        expected = (digest.read_text().split() or [""])[0]
    actual = sha256(path)
    if actual != expected:
        raise CorruptCheckpointError(
            f"checkpoint {str(path)!r} does not match its sha256 ({actual[:12]}... on disk, {expected[:12]}... "
            "when written): the file was damaged after it was saved -- use an earlier step_*.pt"
        )
    return True


def load(path: str | os.PathLike, map_location="cpu", expected_sha256: str | None = None) -> dict:
    """torch.load(weights_only=True) after checking the file's digest; CorruptCheckpointError naming the file when
    either fails."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if not verify(path, expected_sha256):
        log.debug("%s has no .sha256 beside it: loaded unverified", path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CorruptCheckpointError(
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


def steps(run_dir: str | os.PathLike) -> list[Path]:
    """The step checkpoints in ``run_dir/checkpoints``, newest first."""
    folder = Path(run_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := PATTERN.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def latest(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step in ``run_dir/checkpoints``."""
    found = steps(run_dir)
    return found[0] if found else None


def load_latest_valid(run_dir: str | os.PathLike) -> tuple[Path, dict] | None:
    """The newest step checkpoint that loads and matches its digest, warning for each newer one that does not
    (a corrupt latest file must not end a run that has an older valid one). None when there are none at all."""
    found, bad = steps(run_dir), []
    for path in found:
        try:
            return path, load(path)
        except CorruptCheckpointError as err:
            log.warning("%s; falling back to the checkpoint before it", err)
            bad.append(path.name)
    if bad:
        raise CorruptCheckpointError(
            f"no step checkpoint in {str(Path(run_dir) / 'checkpoints')!r} loads ({', '.join(bad)}): start the run "
            "afresh under a new name= (or move that folder away)"
        )
    return None


def remove_orphans(run_dir: str | os.PathLike) -> int:
    """Delete the temporary files a killed save left in ``run_dir/checkpoints`` (only safe while holding the run
    folder's lock: no other writer's file is in flight) and digests whose checkpoint is gone."""
    folder, removed = Path(run_dir) / "checkpoints", 0
    for path in folder.glob("*.tmp"):
        path.unlink(missing_ok=True)
        removed += 1
    for path in folder.glob("*.pt.sha256"):
        if not path.with_name(path.name[: -len(".sha256")]).exists():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def prune(run_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the `keep` newest step checkpoints; keep = 0 keeps every one (0 must never mean "none":
    the checkpoint just written would go, and with it any resume)."""
    if keep <= 0:
        return
    for path in steps(run_dir)[keep:]:
        path.unlink(missing_ok=True)
        _sidecar(path).unlink(missing_ok=True)


def model_state(checkpoint: dict) -> dict:
    """The model weights of a training checkpoint, or of a file holding only a state_dict."""
    return checkpoint["model"] if "model" in checkpoint and isinstance(checkpoint["model"], dict) else checkpoint


class ModelMismatchError(RuntimeError):
    """The checkpoint's weights do not fit the model built from the config."""


def load_weights(model: torch.nn.Module, checkpoint: dict, path: str | os.PathLike, hint: str) -> None:
    """model.load_state_dict, or an error naming the checkpoint, the first keys and shapes that differ and the
    model config it was trained with (torch's own error lists every key, often 80 lines, and no file)."""
    saved, own = model_state(checkpoint), model.state_dict()
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shapes = [f"{k} {tuple(saved[k].shape)} in the file, {tuple(v.shape)} in the model"
              for k, v in own.items() if k in saved and tuple(saved[k].shape) != tuple(v.shape)]
    if not (missing or unexpected or shapes):
        model.load_state_dict(saved)
        return
    parts = [f"{label} ({len(keys)}): {'; '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
             for label, keys in (("missing from the file", missing), ("not in the model", unexpected),
                                 ("of another shape", shapes)) if keys]
    trained = (checkpoint.get("config") or {}).get("model") if isinstance(checkpoint.get("config"), dict) else None
    origin = f"; it was trained with model={_model_summary(trained)}" if trained else ""
    raise ModelMismatchError(f"checkpoint {str(path)!r} does not fit the configured model: {' | '.join(parts)}"
                             f"{origin} -- {hint}")


def _model_summary(model_cfg: dict) -> str:
    backbone = model_cfg.get("backbone", {})
    keys = {"backbone.name": backbone.get("name"), "similarity.variant": model_cfg.get("similarity", {}).get("variant"),
            "tpm.enabled": model_cfg.get("tpm", {}).get("enabled"), "max_frames": model_cfg.get("max_frames"),
            "max_words": model_cfg.get("max_words")}
    return "{" + ", ".join(f"{k}: {v}" for k, v in keys.items() if v is not None) + "}"


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
