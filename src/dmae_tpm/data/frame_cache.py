"""A frame cache: every video decoded once into the sampled frames at model resolution, so epochs don't re-decode.

Layout of a cache folder (written to ``<dir>.tmp-*`` and renamed into place when complete, so a half-built
cache never looks finished):

* ``frames.u8``: one raw uint8 array of shape ``(V, max_frames, 3, h, w)`` read through ``numpy.memmap``
  (the page cache shares it across DataLoader workers; nothing is unpickled);
* ``meta.json``: format version, the sampling config (fps, max_frames), ``image_size``, the video ids in row
  order, each video's number of real frames (0 = it failed to decode) and the decode error text of failures.

Frames are stored after resize and centre crop, before normalisation, so one cache serves any backbone with the
same input size; the dataset normalises with its backbone's mean / std. A ViT-B/32 MSR-VTT cache (10k videos,
12 frames, 224 px) takes 10k x 12 x 150,528 B = 18 GB.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .video import FrameSamplingConfig, VideoDecodeError, read_frames, resize_crop

log = logging.getLogger(__name__)

FORMAT = 1
META, FRAMES = "meta.json", "frames.u8"


class FrameCacheError(RuntimeError):
    """A cache folder that cannot serve the requested frames; the message says what to rebuild."""


class _DecodeAll(Dataset):
    def __init__(self, paths: Sequence[Path | None], sampling: FrameSamplingConfig, image_size: tuple[int, int]):
        self.paths, self.sampling, self.image_size = list(paths), sampling, image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.paths[i]
        try:
            if path is None:
                raise VideoDecodeError("video file not found under the video root")
            frames, mask = read_frames(path, self.sampling, resize_crop(self.image_size))  # (N, 3, h, w) uint8
            return i, frames, int(mask.sum()), ""
        except VideoDecodeError as err:
            return i, None, 0, str(err)


def _collate(items):
    return items


def build_frame_cache(
    out_dir: str | os.PathLike,
    video_ids: Sequence[str],
    paths: Mapping[str, Path],
    sampling: FrameSamplingConfig,
    image_size: tuple[int, int],
    workers: int = 4,
    replace: bool = False,
) -> dict:
    """Decode every video of `video_ids` (files from `paths`; absent ids count as failures) into `out_dir`.

    Returns a summary: videos, failed, bytes. An existing complete cache with the same settings, ids and video files
    (their sizes and modification times) is kept. One built otherwise is an error, or with `replace` rebuilt: a
    regenerated dataset reuses ids like video0 for other videos, so a cache of the old files would serve wrong frames.
    """
    out_dir = Path(out_dir)
    image_size = (int(image_size[0]), int(image_size[1]))
    sources = source_digest(video_ids, paths)
    if (out_dir / META).exists():
        meta = json.loads((out_dir / META).read_text())
        current = _settings(meta) == _settings(_meta(video_ids, sampling, image_size, []))
        if current and meta.get("sources", sources) == sources:  # caches of before the digest: settings only
            return {"videos": len(video_ids), "failed": meta["num_frames"].count(0), "cached": True}
        if not replace:
            raise FrameCacheError(
                f"{out_dir} holds a frame cache built with other settings, videos or video files; delete it or "
                "choose another data.frame_cache folder"
            )
        log.warning("frame cache %s was built from other settings, videos or files: rebuilding it", out_dir)
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=out_dir.name + ".tmp-"))
    try:
        shape = (len(video_ids), sampling.max_frames, 3, *image_size)
        (tmp / FRAMES).write_bytes(b"")
        store = np.memmap(tmp / FRAMES, dtype=np.uint8, mode="w+", shape=shape) if shape[0] else None
        num_frames, errors = _fill(store, video_ids, paths, sampling, image_size, workers)
        if store is not None:
            store.flush()
            del store
        meta = _meta(video_ids, sampling, image_size, num_frames, errors) | {"sources": sources}
        (tmp / META).write_text(json.dumps(meta))
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    failed = num_frames.count(0)
    if failed:
        log.warning(
            "frame cache %s: %d of %d videos failed to decode (listed in meta.json 'errors')",
            out_dir,
            failed,
            len(video_ids),
        )
    return {"videos": len(video_ids), "failed": failed, "bytes": (out_dir / FRAMES).stat().st_size, "cached": False}


def source_digest(video_ids: Sequence[str], paths: Mapping[str, Path]) -> str:
    """sha256 over each video's file name, size and modification time, in row order: which files a cache holds."""
    sha = hashlib.sha256()
    for v in video_ids:
        path = paths.get(v)
        stat = path.stat() if path is not None and path.is_file() else None
        sha.update(json.dumps([v, None if path is None else path.name,
                               None if stat is None else [stat.st_size, stat.st_mtime_ns]]).encode())
    return sha.hexdigest()


def _fill(store, video_ids, paths, sampling, image_size, workers) -> tuple[list[int], dict[str, str]]:
    dataset = _DecodeAll([paths.get(v) for v in video_ids], sampling, image_size)
    loader = DataLoader(dataset, batch_size=1, num_workers=workers, collate_fn=_collate)
    num_frames, errors = [0] * len(video_ids), {}
    for i, frames, count, error in tqdm((b[0] for b in loader), total=len(dataset), desc="frame cache"):
        if frames is None:
            errors[video_ids[i]] = error
            continue
        store[i] = frames.numpy()
        num_frames[i] = count
    return num_frames, errors


def _meta(video_ids, sampling, image_size, num_frames, errors=None) -> dict:
    return {
        "format": FORMAT,
        "sampling": asdict(sampling),
        "image_size": list(image_size),
        "video_ids": list(video_ids),
        "num_frames": list(num_frames),
        "errors": errors or {},
    }


def _settings(meta: dict) -> tuple:
    return meta["format"], meta["sampling"], list(meta["image_size"]), meta["video_ids"]


class FrameCache:
    """Read side: ``get(video_id)`` -> (frames uint8 (N, 3, h, w), mask (N,)) or None when the id is not cached.

    Opened lazily in each process (DataLoader workers fork after construction; a memmap is not shared state).
    """

    def __init__(self, cache_dir: str | os.PathLike, sampling: FrameSamplingConfig, image_size: tuple[int, int]):
        self.dir = Path(cache_dir)
        meta_path = self.dir / META
        if not meta_path.exists():
            raise FrameCacheError(
                f"{self.dir} is not a finished frame cache (no {META}); build it with "
                "`python scripts/build_frame_cache.py ...` or unset data.frame_cache"
            )
        meta = json.loads(meta_path.read_text())
        wanted = {"format": FORMAT, "sampling": asdict(sampling), "image_size": [int(s) for s in image_size]}
        found = {k: meta.get(k) for k in wanted}
        if found != wanted:
            raise FrameCacheError(
                f"frame cache {self.dir} was built with {found}, but this run needs {wanted}; "
                "rebuild the cache for these settings or unset data.frame_cache"
            )
        self.row = {v: i for i, v in enumerate(meta["video_ids"])}
        self.num_frames = meta["num_frames"]
        self.errors = meta.get("errors", {})
        self.shape = (len(self.row), sampling.max_frames, 3, *wanted["image_size"])
        self._frames = None

    def __getstate__(self):  # an open memmap would pickle as a full copy of frames.u8 (spawned workers)
        state = self.__dict__.copy()
        state["_frames"] = None
        return state

    def __contains__(self, video_id: str) -> bool:
        return video_id in self.row

    def get(self, video_id: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        row = self.row.get(video_id)
        if row is None:
            return None
        count = self.num_frames[row]
        if count == 0:
            raise VideoDecodeError(
                f"video {video_id!r} failed when the frame cache {self.dir} was built: "
                f"{self.errors.get(video_id, 'unknown error')}"
            )
        if self._frames is None:
            # Copy-on-write: a writable view without copying; collate's stack is then the only copy of a clip.
            self._frames = np.memmap(self.dir / FRAMES, dtype=np.uint8, mode="c", shape=self.shape)
        frames = torch.from_numpy(self._frames[row])  # (N, 3, h, w) uint8, a view of the mapped file
        mask = torch.zeros(self.shape[1], dtype=torch.bool)
        mask[:count] = True
        return frames, mask
