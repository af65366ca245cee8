"""Tests for dmae_tpm.data.synthetic: the generated benchmark's files, content, captions and caching."""

from __future__ import annotations

import csv
import json
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from dmae_tpm.data import synthetic as S
from dmae_tpm.data.synthetic import (
    COLOURS,
    META_NAME,
    SyntheticConfig,
    caption_matches,
    generate,
    object_masks,
    read_meta,
    render_caption,
    render_video,
)

pytest.importorskip("av")
decord = pytest.importorskip("decord")

ANNOTATIONS = {
    "msrvtt": ("MSRVTT_data.json", "MSRVTT_train.9k.csv", "MSRVTT_JSFUSION_test.csv", META_NAME),
    "msvd": ("raw-captions.pkl", "train_list.txt", "val_list.txt", "test_list.txt", META_NAME),
}
KEYS = ("colour", "shape", "motion", "size")


@pytest.fixture(scope="module")
def msrvtt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "msrvtt"
    generate(SyntheticConfig.preset("tiny"), out)
    return out


@pytest.fixture(scope="module")
def msvd(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "msvd"
    generate(SyntheticConfig.preset("tiny", format="msvd"), out)
    return out


def _reader(path: Path):
    return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)


def _split(meta: dict, split: str) -> list[dict]:
    return [v for v in meta["videos"] if v["split"] == split]


# ----- files -----------------------------------------------------------------------------------------------------


def test_msrvtt_annotation_files(msrvtt):
    meta = read_meta(msrvtt)
    train, test = _split(meta, "train"), _split(meta, "test")
    assert len(train) == 9 and len(test) == 6 and meta["counts"]["videos"] == {"train": 9, "test": 6}
    data = json.loads((msrvtt / "MSRVTT_data.json").read_text())
    ids = [v["video_id"] for v in data["videos"]]
    assert ids == [f"video{n}" for n in range(15)]
    assert all(set(s) == {"caption", "video_id", "sen_id"} for s in data["sentences"])
    assert [s["sen_id"] for s in data["sentences"]] == list(range(len(data["sentences"])))
    per_video = {i: [s["caption"] for s in data["sentences"] if s["video_id"] == i] for i in ids}
    assert all(len(per_video[v["video_id"]]) == 3 for v in train)
    with open(msrvtt / "MSRVTT_train.9k.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["video_id"] for r in rows] == [v["video_id"] for v in train]
    with open(msrvtt / "MSRVTT_JSFUSION_test.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["key", "vid_key", "video_id", "sentence"]
        rows = list(reader)
    assert [r["video_id"] for r in rows] == [v["video_id"] for v in test]
    for n, (r, v) in enumerate(zip(rows, test, strict=True)):
        assert r["key"] == f"ret{n}" and r["vid_key"] == "msr" + v["video_id"][5:]
        assert r["sentence"] == v["captions"][0]["text"] == per_video[v["video_id"]][0]
        assert len(v["captions"]) == 1
    assert sorted(p.name for p in (msrvtt / "videos").iterdir()) == sorted(f"{i}.mp4" for i in ids)
    assert not list(msrvtt.parent.glob("msrvtt.tmp-*"))


def test_msvd_annotation_files(msvd):
    meta = read_meta(msvd)
    raw = pickle.loads((msvd / "raw-captions.pkl").read_bytes())
    lists = {s: (msvd / f"{s}_list.txt").read_text().split() for s in ("train", "val", "test")}
    assert [len(lists[s]) for s in ("train", "val", "test")] == [9, 3, 6]
    assert set(lists["train"]).isdisjoint(lists["val"]) and set(lists["train"]).isdisjoint(lists["test"])
    assert set(lists["val"]).isdisjoint(lists["test"])
    assert set(raw) == {v["video_id"] for v in meta["videos"]} == set().union(*lists.values())
    for caps in raw.values():
        assert len(caps) == 3  # several captions per video in every split (multi-caption evaluation)
        for tokens in caps:
            assert isinstance(tokens, list) and tokens and all(t.isalnum() and t == t.lower() for t in tokens)
    for v in meta["videos"]:
        assert [S.caption_tokens(c["text"]) for c in v["captions"]] == raw[v["video_id"]]
    # every val/test caption is uniquely correct within its split
    for split in ("val", "test"):
        videos = _split(meta, split)
        for v in videos:
            for c in v["captions"]:
                assert [u["video_id"] for u in videos if caption_matches(c["struct"], u)] == [v["video_id"]]


def test_videos_decode_with_expected_frames(msrvtt):
    meta = read_meta(msrvtt)
    for v in meta["videos"]:
        reader = _reader(msrvtt / "videos" / f"{v['video_id']}.mp4")
        assert len(reader) == v["num_frames"] == sum(e["num_frames"] for e in v["events"]) == 8
        assert reader.get_avg_fps() == pytest.approx(4.0)
        assert reader[0].shape == (64, 64, 3)


def test_deterministic(msrvtt, tmp_path):
    again = tmp_path / "again"
    generate(SyntheticConfig.preset("tiny"), again)
    for name in ANNOTATIONS["msrvtt"]:
        assert (again / name).read_bytes() == (msrvtt / name).read_bytes(), name
    for vid in ("video0", "video7", "video14"):
        a, b = _reader(msrvtt / "videos" / f"{vid}.mp4"), _reader(again / "videos" / f"{vid}.mp4")
        np.testing.assert_array_equal(a[0].asnumpy(), b[0].asnumpy())
        np.testing.assert_array_equal(a.get_batch([7]).asnumpy(), b.get_batch([7]).asnumpy())
    other = tmp_path / "seed1"
    generate(SyntheticConfig.preset("tiny", seed=1), other)
    assert (other / "MSRVTT_data.json").read_bytes() != (msrvtt / "MSRVTT_data.json").read_bytes()


# ----- content -----------------------------------------------------------------------------------------------------


def test_frames_show_the_described_colour_in_the_object_region(msrvtt):
    cfg = SyntheticConfig.preset("tiny")
    meta = read_meta(msrvtt)
    checked = 0
    for v in meta["videos"][:6]:
        decoded = _reader(msrvtt / "videos" / f"{v['video_id']}.mp4").get_batch(list(range(v["num_frames"])))
        decoded = decoded.asnumpy().astype(np.float64)
        rendered = render_video(v, cfg).astype(np.float64)
        assert np.abs(decoded - rendered).mean() < 6.0  # the codec keeps the picture
        masks = object_masks(v, cfg)
        for e in v["events"]:
            t = e["start_frame"]
            inner = masks[t].copy()  # erode by 2 px: chroma subsampling blurs the edges
            for _ in range(2):
                inner[1:-1, 1:-1] &= inner[:-2, 1:-1] & inner[2:, 1:-1] & inner[1:-1, :-2] & inner[1:-1, 2:]
                inner[[0, -1], :] = False
                inner[:, [0, -1]] = False
            if inner.sum() < 4:  # a thin cross / bar at its smallest: too few interior pixels
                continue
            mean = decoded[t][inner].mean(axis=0)
            assert np.abs(mean - np.array(COLOURS[e["colour"]])).max() < 25, (v["video_id"], e["colour"], mean)
            outside = decoded[t][~masks[t]].mean(axis=0)
            assert np.abs(outside - np.array(COLOURS[e["colour"]])).max() > 40
            checked += 1
    assert checked >= 6


def test_hard_negatives_in_every_test_family(msrvtt):
    meta = read_meta(msrvtt)
    test = _split(meta, "test")

    def one_difference(a: dict, b: dict) -> bool:
        ea = [tuple(e[k] for k in KEYS) for e in a["events"]]
        eb = [tuple(e[k] for k in KEYS) for e in b["events"]]
        if a["background"] != b["background"]:
            return ea == eb
        if len(ea) != len(eb):
            return False
        differing = [i for i in range(len(ea)) if ea[i] != eb[i]]
        if len(differing) == 1:  # one attribute of one event, or one event replaced
            return True
        i, j = differing if len(differing) == 2 else (0, 0)
        return j == i + 1 and ea[i] == eb[j] and ea[j] == eb[i]  # two adjacent events swapped

    for v in test:
        family = [u for u in test if u["family"] == v["family"] and u is not v]
        assert len(family) == 2
        assert any(one_difference(v, u) for u in family), v["video_id"]
        assert all(S.differences(v, u) for u in family)  # never the same describable content
    for v in meta["videos"]:
        assert (v["mutation"] is None) == (v["member"] == 0)
        if v["mutation"] is not None:
            base = next(u for u in meta["videos"] if u["family"] == v["family"] and u["member"] == 0)
            assert one_difference(v, base)
    # test families are fresh: no test video has the content of a train video
    train_content = {S._signature(v) for v in _split(meta, "train")}
    assert not any(S._signature(v) in train_content for v in test)


def test_test_captions_are_uniquely_correct(msrvtt):
    meta = read_meta(msrvtt)
    test = _split(meta, "test")
    for v in test:
        (caption,) = v["captions"]
        assert [u["video_id"] for u in test if caption_matches(caption["struct"], u)] == [v["video_id"]]


def test_train_captions_are_true_and_partial_ones_exist(msrvtt):
    meta = read_meta(msrvtt)
    train = _split(meta, "train")
    partial = 0
    for v in train:
        assert len({c["text"] for c in v["captions"]}) == len(v["captions"])
        for c in v["captions"]:
            assert caption_matches(c["struct"], v)
            assert c["text"] == c["text"].lower() and not c["text"].endswith(".")
            words = set(S.caption_tokens(c["text"]))
            for m in c["struct"]["events"]:  # the stated colours are in the text (a synonym for purple)
                if m["colour"]:
                    assert words & set(S._COLOUR_WORDS[m["colour"]]), c["text"]
            if c["struct"]["background"]:
                assert words & set(S._BACKGROUND_WORDS[c["struct"]["background"]]) and "background" in words
            if c["detail"] == "partial":
                assert len(c["struct"]["events"]) < len(v["events"])
                partial += 1
            else:
                assert len(c["struct"]["events"]) == len(v["events"])
    assert partial > 0
    assert meta["counts"]["partial_captions"]["train"] == partial


def test_caption_matches_semantics():
    def ev(colour, shape, motion, size=None):
        return {"colour": colour, "shape": shape, "motion": motion, "size": size}

    video = {"background": "black", "events": [ev("red", "circle", "left", "big"), ev("blue", "square", "grows")]}

    def cap(*mentions, ordered=True, background=None, num_events=None):
        return {"events": list(mentions), "ordered": ordered, "background": background, "num_events": num_events}

    def m(colour=None, shape=None, motion=None, size=None):
        return ev(colour, shape, motion, size)

    assert caption_matches(cap(m("red", "circle", "left")), video)
    assert caption_matches(cap(m(shape="square")), video)
    assert caption_matches(cap(m("red", size="big")), video)
    assert not caption_matches(cap(m("red", size="small")), video)
    assert not caption_matches(cap(m("red", "square")), video)  # attributes bind to one event
    assert caption_matches(cap(m("red"), m("blue")), video)
    assert not caption_matches(cap(m("blue"), m("red")), video)  # wrong order
    assert caption_matches(cap(m("blue"), m("red"), ordered=False), video)
    assert not caption_matches(cap(m("red"), m("red"), ordered=False), video)  # one-to-one
    assert caption_matches(cap(m("red"), background="black", num_events=2), video)
    assert not caption_matches(cap(m("red"), background="gray"), video)
    assert not caption_matches(cap(m("red"), num_events=3), video)
    three = {"background": "black", "events": [*video["events"][:1], ev("white", "bar", "up"), video["events"][1]]}
    assert caption_matches(cap(m("red"), m("blue")), three)  # a subsequence, not necessarily adjacent


def test_render_caption_is_deterministic_and_reads_naturally():
    struct = {
        "events": [
            {"colour": "red", "shape": "circle", "motion": "left", "size": None},
            {"colour": "blue", "shape": None, "motion": "grows", "size": None},
        ],
        "ordered": True,
        "background": "gray",
        "num_events": None,
    }
    texts = [render_caption(struct, random.Random(s)) for s in range(40)]
    assert texts == [render_caption(struct, random.Random(s)) for s in range(40)]
    assert len(set(texts)) > 10
    for t in texts:
        assert "red" in t and "blue" in t and ("gray" in t or "grey" in t) and "  " not in t


# ----- caching and atomic output -----------------------------------------------------------------------------------


def test_cache_and_regeneration(tmp_path):
    out = tmp_path / "ds"
    cfg = SyntheticConfig.preset("tiny", num_train_families=1, num_test_families=1)
    first = generate(cfg, out)
    assert first["cached"] is False and first["videos"] == {"train": 3, "test": 3}
    stamp = (out / META_NAME).stat().st_mtime_ns
    second = generate(SyntheticConfig.preset("tiny", num_train_families=1, num_test_families=1, workers=3), out)
    assert second["cached"] is True and (out / META_NAME).stat().st_mtime_ns == stamp
    timing = ("cached", "seconds", "seconds_by_stage")
    assert {k: v for k, v in second.items() if k not in timing} == {k: v for k, v in first.items() if k not in timing}
    changed = generate(SyntheticConfig.preset("tiny", num_train_families=2, num_test_families=1), out)
    assert changed["cached"] is False and changed["videos"]["train"] == 6
    assert read_meta(out)["config"]["num_train_families"] == 2
    assert len(list((out / "videos").iterdir())) == 9
    (out / "videos" / "video0.mp4").unlink()  # a damaged dataset is rebuilt
    assert generate(SyntheticConfig.preset("tiny", num_train_families=2, num_test_families=1), out)["cached"] is False
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no tmp / old folders left


def test_half_written_dataset_is_not_taken_as_finished(tmp_path, monkeypatch):
    cfg = SyntheticConfig.preset("tiny", num_train_families=1, num_test_families=1)
    out = tmp_path / "ds"
    # a leftover tmp folder of a killed run, even with a meta file, is not the dataset
    generate(cfg, tmp_path / "full")
    shutil.copytree(tmp_path / "full", tmp_path / "ds.tmp-abcd1234")
    assert generate(cfg, out)["cached"] is False
    shutil.rmtree(out)

    # a crash mid-way leaves no out_dir and no tmp folder behind
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(S, "_write_annotations", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(cfg, out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds.tmp-abcd1234", "full"]
    monkeypatch.undo()
    assert generate(cfg, out)["cached"] is False and (out / META_NAME).is_file()

    # a folder without meta is not overwritten (it may not be ours)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        generate(cfg, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


# ----- config and command line -------------------------------------------------------------------------------------


def test_config_validation():
    with pytest.raises(ValueError, match="format"):
        SyntheticConfig(format="didemo")
    with pytest.raises(ValueError, match="events_per_video"):
        SyntheticConfig(events_per_video=(3, 2))
    with pytest.raises(ValueError, match="num_colours"):
        SyntheticConfig(num_colours=99)
    with pytest.raises(ValueError, match="mutations"):
        SyntheticConfig(mutations=("texture",))
    with pytest.raises(ValueError, match="p_full_caption"):
        SyntheticConfig(p_full_caption=1.5)
    assert SyntheticConfig(events_per_video=[1, 2]).events_per_video == (1, 2)
    assert SyntheticConfig().resolved_captions_per_video == 5
    assert SyntheticConfig(format="msvd").resolved_captions_per_video == 8
    assert "workers" not in SyntheticConfig().identity()


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--size", "tiny", "--format", "msvd", "--seed", "3"]
    argv += ["--set", "events_per_video=1,2", "--set", "p_distractor=1.0", "--set", "captions_per_video=2"]
    assert S.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "msvd" and summary["seed"] == 3 and summary["cached"] is False
    meta = read_meta(out)
    assert meta["config"]["events_per_video"] == [1, 2] and meta["config"]["captions_per_video"] == 2
    assert all(v["distractor"] is not None for v in meta["videos"])
    assert {len(v["events"]) for v in meta["videos"]} <= {1, 2}
    with pytest.raises(SystemExit):
        S.main(["--out", str(out), "--set", "no_such_knob=1"])
