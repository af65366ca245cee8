"""Datasets for training (caption-video pairs) and evaluation (captions and videos encoded separately).

Training survives bad videos: a missing / corrupt / truncated / empty video is logged with its path, counted
(``n_failed`` in the sample, summed by the trainer, which stops past ``data.max_bad_fraction``) and replaced by
another pair. Evaluation does not: a test video that cannot be read raises, because dropping it would silently
change the metric, unless the user sets ``data.eval_skip_bad_videos=true`` (then it is dropped and reported).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .frame_cache import FrameCache
from .video import FrameSamplingConfig, VideoDecodeError, read_frames, resize_crop

log = logging.getLogger(__name__)

MAX_REPLACEMENTS = 20


class VideoSource:
    """video id -> uint8 frames (N, 3, h, w), resized and cropped, zero padding, and mask (N,); from the frame
    cache when it has the id. Normalisation happens on the model's device (`CLIPDualEncoder.normalize`), so
    workers, collate and the host-to-device copy move a quarter of the bytes of float frames."""

    def __init__(
        self,
        paths: Mapping[str, Path],
        sampling: FrameSamplingConfig,
        image_size: tuple[int, int],
        cache_dir: str | None = None,
    ):
        self.paths, self.sampling, self.image_size = dict(paths), sampling, tuple(image_size)
        self.cache = FrameCache(cache_dir, sampling, self.image_size) if cache_dir else None
        self._crop = resize_crop(self.image_size)

    def __getstate__(self):  # closures don't pickle (spawned workers); rebuild them on the other side
        state = self.__dict__.copy()
        del state["_crop"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._crop = resize_crop(self.image_size)

    def describe(self, video_id: str) -> str:
        path = self.paths.get(video_id)
        return str(path) if path is not None else f"<video {video_id!r}: no file found>"

    def __call__(self, video_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self.cache.get(video_id) if self.cache is not None else None
        if cached is None:
            path = self.paths.get(video_id)
            if path is None:
                raise VideoDecodeError(
                    f"no video file for id {video_id!r} under the video root; run "
                    "scripts/check_dataset.py to list what is missing"
                )
            cached = read_frames(path, self.sampling, self._crop)  # (N, 3, h, w) uint8, (N,)
        return cached  # (N, 3, h, w) uint8, (N,)


@dataclass
class TextTable:
    """Every caption of a split, tokenised once: tokens (C, L), Algorithm 1 weights (C, L), video index (C,)."""

    tokens: torch.Tensor
    w_pos: torch.Tensor
    w_freq: torch.Tensor
    caption_video: torch.Tensor

    def item(self, c: int) -> dict[str, torch.Tensor]:
        return {
            "tokens": self.tokens[c],
            "w_pos": self.w_pos[c],
            "w_freq": self.w_freq[c],
            "video_index": self.caption_video[c],
            "caption_index": torch.tensor(c),
        }


class PairDataset(Dataset):
    """Training pairs. ``caption_sampling``: ``all`` -- every caption is a sample (CLIP4Clip's MSR-VTT 9k
    training); ``one_per_video`` -- one sample per video per epoch with a caption drawn anew each epoch
    (call `set_epoch`)."""

    def __init__(
        self,
        text: TextTable,
        video_ids: Sequence[str],
        videos: VideoSource,
        caption_sampling: str = "all",
        seed: int = 0,
    ):
        if caption_sampling not in ("all", "one_per_video"):
            raise ValueError(f"data.caption_sampling must be 'all' or 'one_per_video', got {caption_sampling!r}")
        self.text, self.video_ids, self.videos = text, list(video_ids), videos
        self.caption_sampling, self.seed, self.epoch = caption_sampling, seed, 0
        by_video: list[list[int]] = [[] for _ in self.video_ids]
        for c, v in enumerate(text.caption_video.tolist()):
            by_video[v].append(c)
        self.captions_of = by_video

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.text.tokens) if self.caption_sampling == "all" else len(self.video_ids)

    def _caption(self, i: int) -> int:
        if self.caption_sampling == "all":
            return i
        options = self.captions_of[i]
        return options[np.random.default_rng((self.seed, self.epoch, i)).integers(len(options))]

    def _replacement(self, i: int, attempt: int) -> int:
        return int(np.random.default_rng((self.seed, self.epoch, i, attempt)).integers(len(self)))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        failed = 0
        for attempt in range(MAX_REPLACEMENTS + 1):
            # Replacements are a deterministic function of (seed, epoch, i): resumed runs see the same data.
            j = i if attempt == 0 else self._replacement(i, attempt)
            c = self._caption(j)
            video_id = self.video_ids[int(self.text.caption_video[c])]
            try:
                frames, mask = self.videos(video_id)
            except VideoDecodeError as err:
                failed += 1
                log.warning("skipping video %s (replaced by another pair): %s", self.videos.describe(video_id), err)
                continue
            return {**self.text.item(c), "frames": frames, "frame_mask": mask, "n_failed": torch.tensor(failed)}
        raise VideoDecodeError(
            f"{MAX_REPLACEMENTS + 1} videos in a row failed to decode around sample {i}; the "
            "video folder is probably wrong or unreadable -- run scripts/check_dataset.py"
        )


class CaptionDataset(Dataset):
    """Evaluation captions (no video decoding)."""

    def __init__(self, text: TextTable):
        self.text = text

    def __len__(self) -> int:
        return len(self.text.tokens)

    def __getitem__(self, c: int) -> dict[str, torch.Tensor]:
        return self.text.item(c)


class VideoDataset(Dataset):
    """Evaluation videos, each decoded once. A bad video raises unless ``skip_bad`` (then ``ok`` is False)."""

    def __init__(self, video_ids: Sequence[str], videos: VideoSource, skip_bad: bool = False):
        self.video_ids, self.videos, self.skip_bad = list(video_ids), videos, skip_bad

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getitem__(self, v: int) -> dict[str, torch.Tensor]:
        video_id = self.video_ids[v]
        try:
            frames, mask = self.videos(video_id)
            ok = True
        except VideoDecodeError as err:
            if not self.skip_bad:
                raise VideoDecodeError(
                    f"test video {self.videos.describe(video_id)} cannot be read, and skipping it "
                    f"would change the metric: {err} -- fix the file, or set "
                    "data.eval_skip_bad_videos=true to drop it (reported in the results)"
                ) from err
            log.warning("evaluation: dropping unreadable video %s: %s", self.videos.describe(video_id), err)
            n, size = self.videos.sampling.max_frames, self.videos.image_size
            frames, mask, ok = torch.zeros(n, 3, *size, dtype=torch.uint8), torch.zeros(n, dtype=torch.bool), False
        return {"frames": frames, "frame_mask": mask, "video_index": torch.tensor(v), "ok": torch.tensor(ok)}
