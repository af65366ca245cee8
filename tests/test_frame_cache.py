"""Tests for dmae_tpm.data.frame_cache: build / read round trip, failures, settings checks, atomic build, CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _media import write_gradient_video, write_msrvtt_annotations

from dmae_tpm.data import frame_cache as fc
from dmae_tpm.data import frame_cache_cli
from dmae_tpm.data.dataset import VideoSource
from dmae_tpm.data.frame_cache import FrameCache, FrameCacheError, build_frame_cache
from dmae_tpm.data.video import FrameSamplingConfig, VideoDecodeError, read_frames, resize_crop

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("av") is None or importlib.util.find_spec("decord") is None,
    reason="writing/decoding test videos needs PyAV (av) and decord",
)

SIZE = (32, 32)
SAMPLING = FrameSamplingConfig(fps=1.0, max_frames=4)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """Three good videos (2, 3 and 4 sampled frames at 1 fps) and one corrupt file."""
    root = tmp_path_factory.mktemp("videos")
    paths = {f"video{k}": write_gradient_video(root / f"video{k}.mp4", n, seed=k) for k, n in enumerate((20, 30, 40))}
    corrupt = root / "video3.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    paths["video3"] = corrupt
    return paths


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, videos) -> Path:
    """A cache of video0..2 plus 'gone' (no file: recorded as a failure)."""
    out = tmp_path_factory.mktemp("fc") / "cache"
    ids = ["video0", "video1", "video2", "gone"]
    paths = {v: videos[v] for v in ids[:3]}
    summary = build_frame_cache(out, ids, paths, SAMPLING, SIZE, workers=0)
    assert summary["videos"] == 4 and summary["failed"] == 1 and summary["cached"] is False
    assert summary["bytes"] == 4 * SAMPLING.max_frames * 3 * SIZE[0] * SIZE[1]
    return out


# ---------------------------------------------------------------- round trip


def test_round_trip_matches_decoding(cache_dir, videos):
    cache = FrameCache(cache_dir, SAMPLING, SIZE)
    assert "video0" in cache and "gone" in cache and "video3" not in cache
    for vid, real in (("video0", 2), ("video1", 3), ("video2", 4)):
        got = cache.get(vid)
        assert got is not None
        frames, mask = got
        want_frames, want_mask = read_frames(videos[vid], SAMPLING, resize_crop(SIZE))
        assert frames.dtype == torch.uint8 and frames.shape == (4, 3, *SIZE)
        assert torch.equal(frames, want_frames)
        assert torch.equal(mask, want_mask)
        assert mask.tolist() == [True] * real + [False] * (4 - real)
        assert not frames[real:].any()


def test_video_source_same_with_and_without_cache(cache_dir, videos):
    paths = {v: videos[v] for v in ("video0", "video1", "video2")}
    plain = VideoSource(paths, SAMPLING, SIZE)
    cached = VideoSource(paths, SAMPLING, SIZE, cache_dir=str(cache_dir))
    assert cached.cache is not None and plain.cache is None
    for vid in paths:
        a_frames, a_mask = plain(vid)
        b_frames, b_mask = cached(vid)
        assert a_frames.dtype == torch.uint8 and a_frames.shape == (4, 3, *SIZE)
        assert torch.equal(a_frames, b_frames) and torch.equal(a_mask, b_mask)
        n = int(a_mask.sum())
        assert n < 4 or vid == "video2"
        assert torch.all(a_frames[n:] == 0) and torch.all(b_frames[n:] == 0)  # padding exactly zero
        assert a_frames[:n].abs().sum() > 0


def test_failed_video_raises_with_original_error(cache_dir):
    cache = FrameCache(cache_dir, SAMPLING, SIZE)
    with pytest.raises(VideoDecodeError) as info:
        cache.get("gone")
    message = str(info.value)
    assert "'gone'" in message and str(cache_dir) in message
    assert "not found under the video root" in message  # the text recorded at build time
    meta = json.loads((cache_dir / fc.META).read_text())
    assert meta["num_frames"] == [2, 3, 4, 0] and set(meta["errors"]) == {"gone"}


def test_failed_decode_error_text_is_recorded(tmp_path, videos):
    out = tmp_path / "cache"
    build_frame_cache(out, ["video3"], {"video3": videos["video3"]}, SAMPLING, SIZE, workers=0)
    with pytest.raises(VideoDecodeError) as info:
        FrameCache(out, SAMPLING, SIZE).get("video3")
    assert "'video3'" in str(info.value) and str(videos["video3"]) in str(info.value)
    assert "cannot open video" in str(info.value)


def test_uncached_id_returns_none_and_source_falls_back(cache_dir, videos):
    cache = FrameCache(cache_dir, SAMPLING, SIZE)
    assert cache.get("video_extra") is None
    extra = write_gradient_video(cache_dir.parent / "extra" / "video_extra.mp4", 25, seed=5)
    paths = {"video0": videos["video0"], "video_extra": extra}
    source = VideoSource(paths, SAMPLING, SIZE, cache_dir=str(cache_dir))
    frames, mask = source("video_extra")
    want, want_mask = VideoSource(paths, SAMPLING, SIZE)("video_extra")
    assert torch.equal(frames, want) and torch.equal(mask, want_mask) and int(mask.sum()) == 3
    with pytest.raises(VideoDecodeError, match="no video file for id 'nowhere'"):
        source("nowhere")


# ---------------------------------------------------------------- settings and folder checks


@pytest.mark.parametrize(
    "sampling, size",
    [
        (FrameSamplingConfig(fps=1.0, max_frames=5), SIZE),
        (SAMPLING, (24, 24)),
        (FrameSamplingConfig(fps=2.0, max_frames=4), SIZE),
    ],
    ids=["max_frames", "image_size", "fps"],
)
def test_mismatched_settings_raise(cache_dir, sampling, size):
    with pytest.raises(FrameCacheError, match="rebuild"):
        FrameCache(cache_dir, sampling, size)
    with pytest.raises(FrameCacheError, match="rebuild"):
        VideoSource({}, sampling, size, cache_dir=str(cache_dir))


def test_folder_without_meta_raises(tmp_path):
    with pytest.raises(FrameCacheError, match="not a finished frame cache"):
        FrameCache(tmp_path, SAMPLING, SIZE)
    with pytest.raises(FrameCacheError, match="not a finished frame cache"):
        FrameCache(tmp_path / "absent", SAMPLING, SIZE)


def test_leftover_tmp_folder_is_not_a_cache(tmp_path, videos):
    out = tmp_path / "cache"
    leftover = tmp_path / "cache.tmp-abc123"
    leftover.mkdir()
    (leftover / fc.FRAMES).write_bytes(b"\0" * 16)  # half-written, no meta.json
    with pytest.raises(FrameCacheError):
        FrameCache(leftover, SAMPLING, SIZE)
    with pytest.raises(FrameCacheError):
        FrameCache(out, SAMPLING, SIZE)
    # a later build is not confused by the leftover
    summary = build_frame_cache(out, ["video0"], {"video0": videos["video0"]}, SAMPLING, SIZE, workers=0)
    assert summary["cached"] is False and (out / fc.META).is_file()
    assert FrameCache(out, SAMPLING, SIZE).get("video0") is not None


def test_interrupted_build_leaves_nothing(tmp_path, videos, monkeypatch):
    out = tmp_path / "cache"
    real_fill = fc._fill

    def failing_fill(store, video_ids, paths, sampling, image_size, workers):
        real_fill(store, video_ids[:1], paths, sampling, image_size, workers)  # some frames written, then ...
        raise KeyboardInterrupt

    monkeypatch.setattr(fc, "_fill", failing_fill)
    with pytest.raises(KeyboardInterrupt):
        build_frame_cache(out, ["video0", "video1"], videos, SAMPLING, SIZE, workers=0)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no cache.tmp-* left either
    with pytest.raises(FrameCacheError):
        FrameCache(out, SAMPLING, SIZE)


def test_rebuild_same_settings_is_cached_other_settings_raise(cache_dir, videos, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("a complete cache must not be decoded again")

    monkeypatch.setattr(fc, "_fill", no_decoding)
    monkeypatch.setattr(fc, "read_frames", no_decoding)
    ids = ["video0", "video1", "video2", "gone"]
    summary = build_frame_cache(cache_dir, ids, videos, SAMPLING, SIZE, workers=0)
    assert summary == {"videos": 4, "failed": 1, "cached": True}
    with pytest.raises(FrameCacheError, match="other settings"):
        build_frame_cache(cache_dir, ids, videos, FrameSamplingConfig(fps=1.0, max_frames=6), SIZE, workers=0)
    with pytest.raises(FrameCacheError, match="other settings"):
        build_frame_cache(cache_dir, ids, videos, SAMPLING, (16, 16), workers=0)
    with pytest.raises(FrameCacheError, match="other settings"):
        build_frame_cache(cache_dir, ids[:3], videos, SAMPLING, SIZE, workers=0)


def test_a_cache_of_replaced_video_files_is_refused_or_rebuilt(tmp_path):
    """Issue 12: a regenerated dataset reuses ids (video0 is another video), and a cache built from the old files
    kept serving their frames. The cache records each file's size and mtime and is rebuilt when they changed."""
    path = write_gradient_video(tmp_path / "v" / "video0.mp4", 20, seed=0)
    out = tmp_path / "cache"
    build_frame_cache(out, ["video0"], {"video0": path}, SAMPLING, SIZE, workers=0)
    old = FrameCache(out, SAMPLING, SIZE).get("video0")[0].clone()
    write_gradient_video(path, 30, seed=5)  # the same id, another video
    with pytest.raises(FrameCacheError, match="video files"):
        build_frame_cache(out, ["video0"], {"video0": path}, SAMPLING, SIZE, workers=0)
    summary = build_frame_cache(out, ["video0"], {"video0": path}, SAMPLING, SIZE, workers=0, replace=True)
    assert summary["cached"] is False
    new = FrameCache(out, SAMPLING, SIZE).get("video0")
    assert new[1].sum() == 3 and not torch.equal(new[0], old)
    frames, _ = read_frames(path, SAMPLING, resize_crop(SIZE))
    assert torch.equal(new[0], frames)


# ---------------------------------------------------------------- CLI


def test_cli_builds_usable_cache(tmp_path, videos, capsys):
    video_root = tmp_path / "videos"
    video_root.mkdir()
    for vid in ("video0", "video1", "video2"):
        (video_root / f"{vid}.mp4").symlink_to(videos[vid])
    ann = write_msrvtt_annotations(
        tmp_path / "ann",
        train={"video0": ["a dog runs", "a dog plays"], "video1": ["a cat sleeps"]},
        test={"video2": "a bird flies", "video9": "a missing video"},
    )
    out = tmp_path / "cache"
    paths_args = ["--annotations", str(ann), "--videos", str(video_root), "--out", str(out)]
    sizes = "--image-size 32 --max-frames 4 --fps 1 --workers 0".split()
    rc = frame_cache_cli.main(["--dataset", "msrvtt", *paths_args, *sizes])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["videos"] == 4 and summary["failed"] == 1 and summary["cached"] is False
    meta = json.loads((out / fc.META).read_text())
    assert meta["video_ids"] == ["video0", "video1", "video2", "video9"]
    source = VideoSource({}, SAMPLING, SIZE, cache_dir=str(out))  # no files: everything from the cache
    paths = {v: videos[v] for v in ("video0", "video1", "video2")}
    for vid in paths:
        frames, mask = source(vid)
        want, want_mask = VideoSource(paths, SAMPLING, SIZE)(vid)
        assert torch.equal(frames, want) and torch.equal(mask, want_mask)
    with pytest.raises(VideoDecodeError, match="video9"):
        source("video9")


def test_pickled_cache_does_not_carry_the_frames(cache_dir, videos):
    """Spawned DataLoader workers get the dataset pickled: an opened memmap must not travel as a copy."""
    import pickle

    paths = {v: videos[v] for v in ("video0", "video1", "video2")}
    source = VideoSource(paths, SAMPLING, SIZE, cache_dir=str(cache_dir))
    first = source("video1")  # opens the memmap in this process
    assert source.cache._frames is not None
    payload = pickle.dumps(source)
    assert len(payload) < cache_dir.joinpath(fc.FRAMES).stat().st_size
    clone = pickle.loads(payload)
    assert clone.cache._frames is None
    second = clone("video1")
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
