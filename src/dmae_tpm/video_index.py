"""A folder of any videos encoded once by a checkpoint's video encoder, cached next to the checkpoint.

The cache file is keyed by the checkpoint (its size and modification time) and the folder; inside it each video
is keyed by its path, size and modification time, so a re-run encodes only what is new or changed and drops what
was deleted. Unreadable videos are listed with the reason, counted and skipped, and remembered as such until the
file changes.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from . import checkpoint
from .data.annotations import VIDEO_EXTENSIONS
from .data.video import FrameSamplingConfig, VideoDecodeError, read_frames, resize_crop
from .features import map_fields

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


class VideoFolderError(ValueError):
    pass


def list_videos(folder: str | Path) -> list[Path]:
    """Every video file (VIDEO_EXTENSIONS, any case) under `folder`, recursively, sorted; an error if none."""
    root = Path(folder)
    if not root.is_dir():
        raise VideoFolderError(f"videos={str(folder)!r} is not a folder: give the folder that holds the videos")
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    if not found:
        raise VideoFolderError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {str(root)!r}: nothing to "
                               "index -- check the path, or convert the videos to one of these containers")
    return found


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass
class VideoIndex:
    """The encoded videos of a folder: names (paths relative to the folder) and the method's video embedding,
    rows in names' order; skipped: name -> why it could not be read."""

    root: Path
    names: list[str]
    embedding: Any
    skipped: dict[str, str] = field(default_factory=dict)
    encoded_now: int = 0  # how many this call encoded (the rest came from the cache)


class _FolderVideos(Dataset):
    """Each file decoded once; a bad one gives ok=False and its error instead of raising."""

    def __init__(self, paths: list[Path], sampling: FrameSamplingConfig, image_size):
        self.paths, self.sampling, self.image_size = paths, sampling, tuple(image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        try:
            frames, mask = read_frames(self.paths[i], self.sampling, resize_crop(self.image_size))
            return {"frames": frames, "frame_mask": mask, "ok": True, "error": ""}
        except VideoDecodeError as err:
            n = self.sampling.max_frames
            return {"frames": torch.zeros(n, 3, *self.image_size, dtype=torch.uint8),
                    "frame_mask": torch.zeros(n, dtype=torch.bool), "ok": False, "error": str(err)}


def cache_path(checkpoint_path: str | Path, folder: Path, sampling: FrameSamplingConfig, image_size) -> Path:
    """<checkpoint>.index-<key>.pt: one cache per (checkpoint, folder, frame sampling)."""
    ckpt = Path(checkpoint_path)
    key = json.dumps({"checkpoint": str(ckpt.resolve()), **_stamp(ckpt), "folder": str(folder.resolve()),
                      "fps": sampling.fps, "max_frames": sampling.max_frames, "image_size": list(image_size)})
    return ckpt.with_name(f"{ckpt.name}.index-{hashlib.sha1(key.encode()).hexdigest()[:12]}.pt")


def _load_cache(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        state = checkpoint.load(path)
    except Exception as err:  # a damaged cache costs a re-encode, never the search
        log.warning("ignoring the unreadable index cache %s (%s): re-encoding", path, err)
        return {}
    return state.get("entries", {}) if state.get("format") == CACHE_FORMAT else {}


def _class_path(obj) -> str:
    return f"{type(obj).__module__}:{type(obj).__qualname__}"


def _rebuild(cls_path: str, rows: list[dict]):
    module, _, name = cls_path.partition(":")
    cls = getattr(importlib.import_module(module), name)
    return map_fields(lambda *xs: torch.cat(xs), *[cls(**r) for r in rows])


@torch.no_grad()
def _encode(model, paths: list[Path], data_cfg, sampling, runtime) -> dict[Path, dict]:
    """{path: {"fields": one-row tensors, "cls"} or {"error"}} for each of `paths`."""
    dataset = _FolderVideos(paths, sampling, model.backbone.image_size)
    loader = DataLoader(dataset, batch_size=data_cfg.eval_batch_size, num_workers=min(data_cfg.num_workers, 4))
    out, seen = {}, 0
    for batch in loader:
        ok = batch["ok"]
        names = paths[seen : seen + len(ok)]
        seen += len(ok)
        for p, good, err in zip(names, ok.tolist(), batch["error"], strict=True):
            if not good:
                out[p] = {"error": err}
        if ok.any():
            frames, mask = batch["frames"][ok].to(runtime.device), batch["frame_mask"][ok].to(runtime.device)
            with runtime.autocast():
                emb = model.embed_video(frames, mask)
            emb = map_fields(lambda x: x.float().cpu() if x.is_floating_point() else x.cpu(), emb)
            for row, p in enumerate(p for p, good in zip(names, ok.tolist(), strict=True) if good):
                out[p] = {"cls": _class_path(emb),
                          "fields": {f.name: getattr(emb, f.name)[row : row + 1].clone() for f in fields(emb)
                                     if getattr(emb, f.name) is not None}}
    return out


def build_index(model, checkpoint_path, folder, data_cfg, max_frames: int, runtime,
                refresh: bool = False) -> VideoIndex:
    """Encode what the cache lacks, save the cache, return the whole folder's index."""
    root = Path(folder)
    paths = list_videos(root)
    sampling = FrameSamplingConfig(fps=data_cfg.fps, max_frames=max_frames)
    cache_file = cache_path(checkpoint_path, root, sampling, model.backbone.image_size)
    cached = {} if refresh else _load_cache(cache_file)
    entries, todo = {}, []
    for p in paths:
        name, stamp = p.relative_to(root).as_posix(), _stamp(p)
        hit = cached.get(name)
        if hit is not None and hit["stamp"] == stamp:
            entries[name] = hit
        else:
            todo.append(p)
    if todo:
        log.info("encoding %d of %d videos under %s (%d from the cache %s)", len(todo), len(paths), root,
                 len(paths) - len(todo), cache_file.name)
        for p, entry in _encode(model, todo, data_cfg, sampling, runtime).items():
            entries[p.relative_to(root).as_posix()] = {"stamp": _stamp(p), **entry}
        checkpoint.save_atomic({"format": CACHE_FORMAT, "entries": entries}, cache_file)
    return _index(root, entries, len(todo))


def _index(root: Path, entries: dict, encoded_now: int) -> VideoIndex:
    good = sorted(n for n, e in entries.items() if "fields" in e)
    skipped = {n: e["error"] for n, e in sorted(entries.items()) if "error" in e}
    if skipped:
        log.warning("skipped %d of %d videos that could not be read:\n  %s", len(skipped), len(entries),
                    "\n  ".join(f"{n}: {why}" for n, why in skipped.items()))
    if not good:
        raise VideoFolderError(f"none of the {len(entries)} videos under {str(root)!r} could be read "
                               f"(first: {next(iter(skipped.values()))})")
    embedding = _rebuild(entries[good[0]]["cls"], [entries[n]["fields"] for n in good])
    return VideoIndex(root, good, embedding, skipped, encoded_now)
