"""dmae-search: a folder's ranking equals the evaluator's on the same videos, the index cache is reused and
invalidated, unreadable videos are listed and skipped, the contact sheet and Fig. 5 are real images."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny_bench import overrides, untrained_checkpoint
from matplotlib.image import imread

from dmae_tpm import runtime as rt
from dmae_tpm.data import loaders
from dmae_tpm.evaluate import encode_captions, encode_videos, load_model, similarity_chunked
from dmae_tpm.figures import DPI, sheet_size
from dmae_tpm.search import main, run
from dmae_tpm.tool_args import compose
from dmae_tpm.video_index import VideoFolderError, list_videos


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench") / "synthetic"
    cfg = compose(overrides(root))
    loaders.prepare(cfg.data, (32, 32), 4)  # generates the tiny benchmark (the image size only matters to caches)
    return root


@pytest.fixture(scope="module")
def ckpt(bench, tmp_path_factory):
    return untrained_checkpoint(tmp_path_factory.mktemp("ckpt") / "step.pt", bench)


def _test_folder(bench: Path, folder: Path) -> list[str]:
    """The test split's videos linked into `folder`; its captions."""
    split = loaders.read(compose(overrides(bench)).data, "test")
    folder.mkdir()
    for vid in split.video_ids:
        os.symlink(bench / "videos" / f"{vid}.mp4", folder / f"{vid}.mp4")
    return split.captions


def _evaluator_sim(bench: Path, ckpt: Path):
    """The evaluator's (C, V) test matrix for the checkpoint, and the test video ids."""
    cfg = compose(overrides(bench))
    model, mc = load_model(cfg, torch.device("cpu"), str(ckpt))
    split, captions, videos = loaders.eval_datasets(cfg.data, model.backbone, mc.max_words, mc.max_frames)
    ld = loaders.eval_loaders(cfg.data, captions, videos, 1, 0)
    runtime = rt.Runtime(torch.device("cpu"), 0, 1, 0, None)
    text = encode_captions(model, ld["captions"], runtime.device, runtime.autocast, torch.float32)
    video, _ = encode_videos(model, ld["videos"], runtime.device, runtime.autocast, torch.float32)
    return similarity_chunked(model, text, video, 256, 256), split.video_ids


def _args(ckpt, bench, *extra):
    return [f"checkpoint={ckpt}", *extra, *overrides(bench)]


def _check_png(path: Path, height: int, width: int) -> None:
    image = imread(path)[..., :3]
    assert image.shape[:2] == (height, width)
    assert image.std() > 0.1 and len(np.unique(image.reshape(-1, 3), axis=0)) > 100  # not a blank canvas


def test_top1_equals_the_evaluators_and_the_sheet_is_a_real_image(bench, ckpt, tmp_path):
    captions = _test_folder(bench, tmp_path / "videos")
    out = tmp_path / "sheet.png"
    got = run(_args(ckpt, bench, f"videos={tmp_path / 'videos'}", *[f"query={c}" for c in captions],
                    "top_k=2", "frames=3", f"out={out}"))
    sim, video_ids = _evaluator_sim(bench, ckpt)
    column = {f"{v}.mp4": j for j, v in enumerate(video_ids)}
    for c, row in enumerate(got["sim"]):
        top1 = got["names"][int(row.argmax())]
        assert sim[c, column[top1]] == pytest.approx(float(sim[c].max()), abs=1e-5)  # the evaluator's top-1
        torch.testing.assert_close(row, sim[c, [column[n] for n in got["names"]]], atol=1e-5, rtol=0)
    w, h = sheet_size([(c, [[None]] * 2) for c in captions], 3)
    _check_png(out, round(h * DPI), round(w * DPI))


def test_cache_is_reused_and_invalidated_when_a_video_changes(bench, ckpt, tmp_path):
    _test_folder(bench, tmp_path / "v")
    args = _args(ckpt, bench, f"videos={tmp_path / 'v'}", "query=a red ball", f"out={tmp_path / 's.png'}")
    first = run(args)
    assert first["encoded_now"] == len(first["names"])
    again = run(args)
    assert again["encoded_now"] == 0
    torch.testing.assert_close(again["sim"], first["sim"])  # the cached embeddings score the same
    a, b = sorted((tmp_path / "v").iterdir())[:2]
    a.unlink()
    shutil.copy(b.resolve(), a)  # a different video under a's name: size / mtime change
    b.unlink()  # and one deleted
    changed = run(args)
    assert changed["encoded_now"] == 1 and b.name not in changed["names"] and a.name in changed["names"]
    col = changed["names"].index(a.name)
    assert changed["sim"][0, col] == pytest.approx(float(first["sim"][0, first["names"].index(b.name)]), abs=1e-5)


def test_unreadable_videos_are_listed_counted_and_skipped(bench, ckpt, tmp_path, caplog):
    folder = tmp_path / "v"
    folder.mkdir()
    good = sorted((bench / "videos").glob("*.mp4"))[:3]
    for p in good:
        os.symlink(p, folder / p.name)
    (folder / "broken.mp4").write_bytes(b"not a video")
    (folder / "notes.txt").write_text("ignored: not a video container")
    got = run(_args(ckpt, bench, f"videos={folder}", "query=a ball", f"out={tmp_path / 's.png'}"))
    assert list(got["skipped"]) == ["broken.mp4"] and "broken.mp4" in got["skipped"]["broken.mp4"]
    assert sorted(got["names"]) == sorted(p.name for p in good)
    assert "skipped 1 of 4 videos" in caplog.text


def test_clear_errors(bench, ckpt, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoFolderError, match="no video files"):
        list_videos(empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.mp4").write_bytes(b"junk")
    other = untrained_checkpoint(tmp_path / "other.pt", bench, "model.max_frames=6")
    state = torch.load(other, weights_only=False)
    state["config"] = torch.load(ckpt, weights_only=False)["config"]  # weights of one config, config of another
    torch.save(state, tmp_path / "mixed.pt")
    for argv, why in (
        (_args(ckpt, bench, f"videos={empty}", "query=a"), "no video files"),
        (_args(ckpt, bench, f"videos={bad}", "query=a"), "none of the 1 videos"),
        (_args(ckpt, bench, f"videos={tmp_path / 'missing'}", "query=a"), "is not a folder"),
        (_args(ckpt, bench, f"videos={bad}"), "at least one query"),
        (_args(tmp_path / "mixed.pt", bench, f"videos={bad}", "query=a"), "does not fit the configured model"),
        (["videos=x", "query=a"], "needs checkpoint=PATH"),
    ):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2 and why in capsys.readouterr().err


def test_fig5_two_checkpoints_on_the_test_split(bench, ckpt, tmp_path, capsys):
    other = untrained_checkpoint(tmp_path / "b.pt", bench, seed=1)
    out = tmp_path / "fig5.png"
    got = run(_args(ckpt, bench, f"other={other}", "entry=0", "entry=2", "frames=2", f"out={out}"))
    sim, _ = _evaluator_sim(bench, ckpt)
    torch.testing.assert_close(got["sim_a"], sim[[0, 2]], atol=1e-5, rtol=0)  # model A: the evaluator's rows
    assert not torch.allclose(got["sim_a"], got["sim_b"])
    w, h = sheet_size([("", [[None] * 3] * 2)] * 2, 2)
    _check_png(out, round(h * DPI), round(w * DPI))
    assert "ground truth" in capsys.readouterr().out
