"""check_dataset / scripts/check_dataset.py on tiny fixtures with real (PyAV-written) mp4 files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from dmae_tpm.data.check import check_dataset, decode_check, main

av = pytest.importorskip("av")


def _encode_mp4(path: Path, *, faststart: bool = False) -> bytes:
    """8 frames, 32x32, libx264 yuv420p; returns the file's bytes."""
    options = {"movflags": "faststart"} if faststart else {}
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(8):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path.read_bytes()


@pytest.fixture(scope="module")
def mp4s(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("mp4")
    return {"plain": _encode_mp4(d / "plain.mp4"), "faststart": _encode_mp4(d / "fs.mp4", faststart=True)}


def write_msvd(root: Path, train: list[str], test: list[str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "raw-captions.pkl", "wb") as f:
        pickle.dump({vid: [["a", "caption", "of", vid], ["another", "one"]] for vid in train + test}, f)
    (root / "train_list.txt").write_text("\n".join(train) + "\n")
    (root / "val_list.txt").write_text(train[0] + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")


def test_decode_check(tmp_path, mp4s):
    good = tmp_path / "good.mp4"
    good.write_bytes(mp4s["plain"])
    assert decode_check(good) is None
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(mp4s["plain"][: int(0.4 * len(mp4s["plain"]))])
    assert decode_check(truncated)
    # moov atom at the front: opens, but the last frame is gone; decoding it catches the truncation
    tail_cut = tmp_path / "tail_cut.mp4"
    tail_cut.write_bytes(mp4s["faststart"][: int(0.5 * len(mp4s["faststart"]))])
    assert decode_check(tail_cut)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    error = decode_check(empty)
    assert error and "\n" not in error


def test_all_present_and_readable(tmp_path, mp4s, capsys):
    write_msvd(tmp_path / "ann", ["a_1_2", "b_3_4"], ["c_5_6"])
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    (videos / "a_1_2.mp4").write_bytes(mp4s["plain"])
    (videos / "b_3_4.avi").write_bytes(mp4s["plain"])  # content and extension needn't agree for decord
    (videos / "sub" / "c_5_6.mp4").write_bytes(mp4s["plain"])

    report = check_dataset("msvd", tmp_path / "ann", videos, decode=True, progress=False)
    assert report.ok
    assert [(s.split, s.num_listed, s.num_captions, s.num_found) for s in report.splits] == [
        ("train", 2, 4, 2),
        ("val", 1, 2, 1),
        ("test", 1, 2, 1),
    ]

    code = main(["--dataset", "msvd", "--annotations", str(tmp_path / "ann"), "--videos", str(videos), "--decode"])
    out = capsys.readouterr()
    assert code == 0
    assert "[train] ok: 2 videos listed, 4 captions; 2 found, 0 missing, 0 unreadable" in out.out
    assert "OK: every listed video was found and decodes." in out.out
    assert "decoding msvd" in out.err  # the tqdm bar


def test_missing_and_unreadable(tmp_path, mp4s, capsys):
    ids = ["good_0_1", "trunc_0_1", "empty_0_1", "gone_0_1", "gone_0_2", "gone_0_3"]
    write_msvd(tmp_path / "ann", ids, ["good_0_1"])
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "good_0_1.mp4").write_bytes(mp4s["plain"])
    (videos / "trunc_0_1.mp4").write_bytes(mp4s["plain"][: int(0.4 * len(mp4s["plain"]))])
    (videos / "empty_0_1.mp4").write_bytes(b"")

    # without --decode only the missing files count
    argv = ["--dataset", "msvd", "--annotations", str(tmp_path / "ann"), "--videos", str(videos)]
    assert main([*argv, "--splits", "train,test", "--max-report", "2"]) == 1
    out = capsys.readouterr().out
    assert "[train] PROBLEMS: 6 videos listed, 12 captions; 3 found, 3 missing (not decoded" in out
    assert "missing (first 2 of 3): gone_0_1, gone_0_2" in out
    assert "[test] ok:" in out and "[val]" not in out
    assert "FAILED" in out

    report = check_dataset("msvd", tmp_path / "ann", videos, splits=["train"], decode=True, progress=False)
    (train,) = report.splits
    assert not report.ok
    assert (train.num_found, train.num_missing, train.num_unreadable) == (3, 3, 2)
    assert train.missing == ["gone_0_1", "gone_0_2", "gone_0_3"]
    assert [(vid, Path(p).name) for vid, p, _ in train.unreadable] == [
        ("trunc_0_1", "trunc_0_1.mp4"),
        ("empty_0_1", "empty_0_1.mp4"),
    ]
    assert all(error for _, _, error in train.unreadable)

    assert main([*argv, "--splits", "train", "--decode"]) == 1
    out = capsys.readouterr().out
    assert "3 found, 3 missing, 2 unreadable" in out
    assert "unreadable (all):" in out and "trunc_0_1 (" in out and "empty_0_1 (" in out


def test_annotation_error_and_missing_video_root(tmp_path, capsys):
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "train.json").write_text(json.dumps({"v_AAA": {"sentences": ["x"]}}))
    (ann / "train_ids.json").write_text(json.dumps(["AAA"]))
    code = main(["--dataset", "ActivityNet", "--annotations", str(ann), "--videos", str(tmp_path / "no_videos")])
    out = capsys.readouterr().out
    assert code == 1
    assert "video folder not found" in out
    assert "[train] PROBLEMS: 1 videos listed, 1 captions; 0 found, 1 missing" in out
    assert "missing (all): v_AAA" in out
    assert "[val] ERROR reading annotations:" in out and "val_ids.json: file not found" in out


def test_activitynet_clip4clip_file_names(tmp_path, mp4s):
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "val_1.json").write_text(json.dumps({"v_AAA": {"sentences": ["x"]}, "v_BBB": {"sentences": ["y"]}}))
    (ann / "val_ids.json").write_text(json.dumps(["v_AAA", "v_BBB"]))
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "AAA.mp4").write_bytes(mp4s["plain"])
    (videos / "v_BBB.mp4").write_bytes(mp4s["plain"])
    report = check_dataset("activitynet", ann, videos, splits=["val", "test"], decode=True, progress=False)
    assert report.ok and [s.num_found for s in report.splits] == [2, 2]


def test_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        main(["--dataset", "kinetics", "--annotations", str(tmp_path), "--videos", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["--dataset", "msvd", "--annotations", str(tmp_path), "--videos", str(tmp_path), "--splits", "dev"])


def test_script_runs(tmp_path, mp4s):
    import subprocess
    import sys

    write_msvd(tmp_path / "ann", ["a_1_2"], ["a_1_2"])
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "a_1_2.mp4").write_bytes(mp4s["plain"])
    script = Path(__file__).resolve().parents[1] / "scripts" / "check_dataset.py"
    argv = [sys.executable, str(script), "--dataset", "msvd", "--annotations", str(tmp_path / "ann")]
    done = subprocess.run([*argv, "--videos", str(tmp_path / "videos")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: every listed video was found." in done.stdout
    done = subprocess.run([*argv, "--videos", str(tmp_path / "ann")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "missing (all): a_1_2" in done.stdout
