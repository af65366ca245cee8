"""From a `DataConfig` and the backbone to datasets and DataLoaders (DistributedSampler under DDP)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from .. import distributed
from ..backbone import CLIPDualEncoder
from .annotations import RetrievalSplit, read_split, video_path_index
from .config import DataConfig, TextWeightsConfig  # noqa: F401 (TextWeightsConfig re-exported)
from .dataset import CaptionDataset, PairDataset, TextTable, VideoDataset, VideoSource
from .frame_cache import build_frame_cache
from .text_weights import TextWeightCache
from .video import FrameSamplingConfig, VideoDecodeError

log = logging.getLogger(__name__)


def prepare(cfg: DataConfig, image_size: tuple[int, int], max_frames: int) -> None:
    """Rank 0 generates the synthetic benchmark when configured and absent, and builds the frame cache when
    ``data.frame_cache`` is set, absent and ``data.build_frame_cache`` is true; the other ranks wait."""
    if distributed.rank() == 0:
        if cfg.synthetic is not None:
            from .synthetic import SyntheticConfig, generate

            summary = generate(SyntheticConfig(**cfg.synthetic), cfg.annotations)
            log.info("synthetic benchmark at %s: %s", cfg.annotations, summary)
        if cfg.frame_cache and cfg.build_frame_cache:  # built when absent, rebuilt when its videos changed
            ids = list(dict.fromkeys(v for s in (cfg.train_split, cfg.test_split) for v in read(cfg, s).video_ids))
            sampling = FrameSamplingConfig(fps=cfg.fps, max_frames=max_frames)
            summary = build_frame_cache(cfg.frame_cache, ids, video_path_index(cfg.videos, ids), sampling,
                                        image_size, cfg.num_workers, replace=True)
            log.info("frame cache at %s: %s", cfg.frame_cache, summary)
    distributed.barrier()


def read(cfg: DataConfig, split: str) -> RetrievalSplit:
    return read_split(cfg.format, cfg.annotations, split, **cfg.reader_options)


def text_table(
    cfg: DataConfig, split: RetrievalSplit, backbone: CLIPDualEncoder, max_words: int, queries: bool = False
) -> TextTable:
    """Tokens and Algorithm 1 weights of every caption; rank 0 fills the disk cache first, the others read it.

    queries=True: the captions are evaluation queries. With ``text_weights.eval_idf=train`` (default) each one's
    w_freq then comes from its own words with the IDF of the training split's paragraphs, so it never depends on
    the other captions of its (ground-truth) video; ``video_paragraph`` keeps Algorithm 1 as written on this split.
    """
    tokens = backbone.tokenize(split.captions, context_length=max_words)  # (C, L)
    cache = TextWeightCache(cfg.cache_dir, cfg.text_weights)
    by_video = split.captions_by_video()
    idf_corpus = None
    if queries and cfg.text_weights.eval_idf == "train":
        idf_corpus = read(cfg, cfg.train_split).captions_by_video()
    if distributed.rank() == 0:
        weights = cache.get(by_video, backbone.tokenizer, max_words, idf_corpus)
    distributed.barrier()
    if distributed.rank() != 0:
        weights = cache.get(by_video, backbone.tokenizer, max_words, idf_corpus)
    seen: dict[int, int] = {}
    w_pos, w_freq = [], []
    for v in split.caption_video:
        index = seen.get(v, 0)
        seen[v] = index + 1
        p, q = weights[(split.video_ids[v], index)]
        w_pos.append(p)
        w_freq.append(q)
    return TextTable(tokens, torch.stack(w_pos), torch.stack(w_freq), torch.tensor(split.caption_video))


def video_source(cfg: DataConfig, split: RetrievalSplit, backbone: CLIPDualEncoder, max_frames: int) -> VideoSource:
    paths = video_path_index(cfg.videos, split.video_ids)
    missing = len(split.video_ids) - len(paths)
    if missing:
        log.warning(
            "%s/%s: %d of %d videos have no file under %s (scripts/check_dataset.py lists them)",
            cfg.name,
            split.split,
            missing,
            len(split.video_ids),
            cfg.videos,
        )
    sampling = FrameSamplingConfig(fps=cfg.fps, max_frames=max_frames)
    return VideoSource(paths, sampling, backbone.image_size, cfg.frame_cache)


def video_families(cfg: DataConfig, video_ids: list[str]) -> torch.Tensor | None:
    """The synthetic benchmark's family of each video (long (V,)), for the diagnostics' count of hard negatives
    that are near-duplicates; None for other data."""
    from .synthetic import META_NAME

    path = Path(cfg.annotations) / META_NAME
    if not path.is_file():
        return None
    family = {v["video_id"]: v["family"] for v in json.loads(path.read_text(encoding="utf-8"))["videos"]}
    names = {f: i for i, f in enumerate(dict.fromkeys(family.values()))}
    return torch.tensor([names[family[v]] if v in family else -1 for v in video_ids])


def train_dataset(
    cfg: DataConfig, backbone: CLIPDualEncoder, max_words: int, max_frames: int, seed: int
) -> PairDataset:
    split = read(cfg, cfg.train_split)
    return PairDataset(
        text_table(cfg, split, backbone, max_words),
        split.video_ids,
        video_source(cfg, split, backbone, max_frames),
        cfg.caption_sampling,
        seed,
    )


def eval_datasets(
    cfg: DataConfig, backbone: CLIPDualEncoder, max_words: int, max_frames: int
) -> tuple[RetrievalSplit, CaptionDataset, VideoDataset]:
    split = read(cfg, cfg.test_split)
    source = video_source(cfg, split, backbone, max_frames)
    check_test_videos(cfg, split, source)  # before the text weights and any training: fail in seconds
    captions = CaptionDataset(text_table(cfg, split, backbone, max_words, queries=True))
    videos = VideoDataset(split.video_ids, source, cfg.eval_skip_bad_videos)
    return split, captions, videos


def unusable_videos(split: RetrievalSplit, source: VideoSource) -> dict[str, str]:
    """video id -> why it cannot be read, for the test videos neither the frame cache nor a readable, non-empty file
    provides. Cheap (no decoding): a file that is there but does not decode still fails, or is skipped, later."""
    bad = {}
    for vid in split.video_ids:
        if source.cache is not None and vid in source.cache:
            continue
        path = source.paths.get(vid)
        if path is None:
            bad[vid] = "no file"
        elif not os.access(path, os.R_OK):
            bad[vid] = f"{path} is not readable (permissions: chmod a+r)"
        elif os.path.getsize(path) == 0:
            bad[vid] = f"{path} is empty (re-download it)"
    return bad


def check_test_videos(cfg: DataConfig, split: RetrievalSplit, source: VideoSource) -> None:
    """A test video that is missing would fail the evaluation at the end of a long run, or with
    data.eval_skip_bad_videos=true silently shrink the benchmark: refuse at start-up, or warn what will be dropped."""
    bad = unusable_videos(split, source)
    if not bad:
        return
    listed = "; ".join(f"{vid}: {why}" for vid, why in list(bad.items())[:5]) + ("; ..." if len(bad) > 5 else "")
    what = f"{cfg.name}/{split.split}: {len(bad)} of {split.num_videos} test videos cannot be read under {cfg.videos}"
    if cfg.eval_skip_bad_videos:
        log.warning("%s (%s); data.eval_skip_bad_videos=true drops them and their captions from every evaluation, "
                    "so the figures are not the full protocol", what, listed)
        return
    raise VideoDecodeError(
        f"{what} ({listed}). Fetch them (scripts/check_dataset.py lists all), point data.videos at the right folder, "
        f"or set data.eval_skip_bad_videos=true to evaluate without them (reported in the results)"
    )


def per_rank_batch(cfg: DataConfig, world: int) -> int:
    if cfg.batch_size % world:
        raise ValueError(
            f"data.batch_size={cfg.batch_size} (the global batch) must be divisible by the number of "
            f"processes ({world})"
        )
    return cfg.batch_size // world


class _Resume(torch.utils.data.Sampler):
    """The sampler's epoch order without its first `skip` indices: a resumed run continues mid-epoch exactly."""

    def __init__(self, sampler: DistributedSampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        return iter(list(self.sampler)[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 63-bit seed for one epoch of one run, a hash of (seed, epoch, stream): distinct pairs never share an order
    (as seed + epoch would), and the same pair always gives the same one (exact resume)."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def train_loader(
    cfg: DataConfig, dataset: PairDataset, world: int, rank: int, seed: int, epoch: int = 0, skip_batches: int = 0
) -> DataLoader:
    """One epoch of training batches. Every rank gets the same number of full batches (drop_last), so the
    gathered global batch is exact; the order depends only on (seed, epoch), so resuming reproduces it."""
    # DistributedSampler shuffles with seed + epoch: seed 1's epoch 1 would replay seed 2's epoch 0. One seed per
    # (seed, epoch) pair instead, and set_epoch left at 0.
    sampler = DistributedSampler(
        dataset, num_replicas=world, rank=rank, shuffle=True, seed=epoch_seed(seed, epoch), drop_last=True
    )
    dataset.set_epoch(epoch)
    batch = per_rank_batch(cfg, world)
    if len(sampler) < batch:
        raise ValueError(
            f"{cfg.name}: {len(dataset)} training pairs cannot fill one global batch of "
            f"{cfg.batch_size}; lower data.batch_size"
        )
    # A private generator: creating the iterator must not consume the global RNG (exact resume).
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch, stream=1))
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=_Resume(sampler, skip_batches * batch),
        num_workers=cfg.num_workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),
        generator=generator,
    )


def steps_per_epoch(cfg: DataConfig, dataset: PairDataset, world: int) -> int:
    per_rank = len(dataset) // world  # DistributedSampler(drop_last=True)
    return per_rank // per_rank_batch(cfg, world)


def eval_loader(cfg: DataConfig, dataset, world: int, rank: int) -> DataLoader:
    """A contiguous shard per rank, no padding duplicates: the evaluator concatenates shards in rank order."""
    n = len(dataset)
    lo, hi = n * rank // world, n * (rank + 1) // world
    shard = torch.utils.data.Subset(dataset, range(lo, hi))
    return DataLoader(
        shard,
        batch_size=cfg.eval_batch_size,
        shuffle=False,
        num_workers=cfg.num_workers,
        pin_memory=torch.cuda.is_available(),
    )


def eval_loaders(cfg: DataConfig, captions, videos, world: int, rank: int) -> dict[str, DataLoader]:
    """The evaluator's two loaders: captions and videos are encoded separately, each video decoded once."""
    return {"captions": eval_loader(cfg, captions, world, rank), "videos": eval_loader(cfg, videos, world, rank)}
