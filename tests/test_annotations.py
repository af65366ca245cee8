"""Annotation readers on tiny fixtures written in each benchmark's real file format (CLIP4Clip layouts)."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import pytest

from dmae_tpm.data.annotations import (
    AnnotationError,
    RetrievalSplit,
    find_video,
    read_activitynet,
    read_didemo,
    read_msrvtt,
    read_msvd,
    read_split,
    video_path_index,
)

# --------------------------------------------------------------------------------------------------------------------
# Fixture writers
# --------------------------------------------------------------------------------------------------------------------


def write_msrvtt(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "MSRVTT_train.9k.csv").write_text("video_id\nvideo2\nvideo0\n")
    sentences = [
        # Deliberately out of order: the reader orders by (train csv order, sen_id).
        {"caption": "a man sings", "video_id": "video0", "sen_id": 5},
        {"caption": " a dog runs ", "video_id": "video2", "sen_id": 9},
        {"caption": "someone plays guitar", "video_id": "video0", "sen_id": 1},
        {"caption": "a test video caption", "video_id": "video9", "sen_id": 3},  # not a train video
        {"caption": "the dog is fast", "video_id": "video2", "sen_id": 2},
    ]
    (root / "MSRVTT_data.json").write_text(json.dumps({"info": {}, "videos": [], "sentences": sentences}))
    (root / "MSRVTT_JSFUSION_test.csv").write_text(
        'key,vid_key,video_id,sentence\nret0,msr9,video9,a woman cooks pasta\nret1,msr7,video7,"a cat, sleeping"\n'
    )
    return root


def write_msvd(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    captions = {
        "-4wsuPCjDBc_5_15": [["a", "squirrel", "is", "eating"], ["a", "squirrel", "eats", "a", "nut"]],
        "abc_1_2": [["a", "man", "is", "cooking"]],
        "zzz_0_9": [["unused", "video"]],
    }
    with open(root / "raw-captions.pkl", "wb") as f:
        pickle.dump(captions, f)
    (root / "train_list.txt").write_text("abc_1_2\n-4wsuPCjDBc_5_15\n\n")
    (root / "val_list.txt").write_text("zzz_0_9\n")
    (root / "test_list.txt").write_text("-4wsuPCjDBc_5_15\n")
    return root


def write_didemo(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "test_list.txt").write_text("v1@N00_1_a.mov\nv2@N00_2_b.mp4\nv3@N00_3_c.avi\n")
    moments = [
        {"video": "v2@N00_2_b.mp4", "description": " the dog jumps ", "times": [[0, 0], [0, 1]]},
        {"video": "v1@N00_1_a.mov", "description": "a girl waves.", "times": [[1, 1]]},
        {"video": "other.mp4", "description": "not listed", "times": [[0, 0]]},
        {"video": "v1@N00_1_a.mov", "description": "  camera pans left", "times": [[2, 3]]},
    ]
    (root / "test_data.json").write_text(json.dumps(moments))
    return root


def write_activitynet(root: Path, *, val_ids: list[str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    train = {
        "v_AAA": {"duration": 10.0, "timestamps": [[0, 5], [5, 10]], "sentences": ["A man runs.", " He stops. "]},
        "v_BBB": {"duration": 4.2, "timestamps": [[0, 4]], "sentences": ["Kids play."]},
    }
    val = {
        "v_CCC": {"duration": 8.0, "timestamps": [[0, 8]], "sentences": ["A cat sleeps.", " It wakes up."]},
        "v_DDD": {"duration": 3.0, "timestamps": [[0, 3]], "sentences": ["Rain falls."]},
    }
    (root / "train.json").write_text(json.dumps(train))
    (root / "val_1.json").write_text(json.dumps(val))
    (root / "train_ids.json").write_text(json.dumps(["v_BBB", "v_AAA"]))
    (root / "val_ids.json").write_text(json.dumps(val_ids if val_ids is not None else ["DDD", "v_CCC"]))
    return root


# --------------------------------------------------------------------------------------------------------------------
# RetrievalSplit
# --------------------------------------------------------------------------------------------------------------------


def test_retrieval_split_groups_and_validates():
    s = RetrievalSplit("x", "train", ["a", "b"], ["a1", "b1", "a2"], [0, 1, 0])
    assert (s.num_videos, s.num_captions) == (2, 3)
    assert s.captions_of(0) == ["a1", "a2"] and s.captions_of(1) == ["b1"]
    assert s.captions_by_video() == {"a": ["a1", "a2"], "b": ["b1"]}
    with pytest.raises(ValueError, match="caption_video"):
        RetrievalSplit("x", "train", ["a"], ["a1", "a2"], [0])
    with pytest.raises(ValueError, match="not a video index"):
        RetrievalSplit("x", "train", ["a"], ["a1"], [1])
    with pytest.raises(ValueError, match="has no caption"):
        RetrievalSplit("x", "train", ["a", "b"], ["a1"], [0])
    with pytest.raises(ValueError, match="empty"):
        RetrievalSplit("x", "train", ["a"], ["  "], [0])
    with pytest.raises(ValueError, match="more than once"):
        RetrievalSplit("x", "train", ["a", "a"], ["a1", "a2"], [0, 1])


# --------------------------------------------------------------------------------------------------------------------
# MSR-VTT
# --------------------------------------------------------------------------------------------------------------------


def test_msrvtt_train_and_test(tmp_path):
    root = write_msrvtt(tmp_path)
    train = read_msrvtt(root, "train")
    assert train.dataset == "msrvtt" and train.split == "train"
    assert train.video_ids == ["video2", "video0"]
    assert train.captions == ["the dog is fast", "a dog runs", "someone plays guitar", "a man sings"]
    assert train.caption_video == [0, 0, 1, 1]
    test = read_msrvtt(root, "test")
    assert test.video_ids == ["video9", "video7"]
    assert test.captions == ["a woman cooks pasta", "a cat, sleeping"]
    assert test.caption_video == [0, 1]
    val = read_split("MSR-VTT", root, "val")
    assert (val.split, val.video_ids, val.captions) == ("val", test.video_ids, test.captions)


def test_msrvtt_duplicate_test_rows_are_dropped_with_warning(tmp_path, caplog):
    # 1k-A is one caption per video: 7 rows over 6 videos must give 6 queries, not a 7th that shifts every rank.
    root = write_msrvtt(tmp_path)
    rows = [f"ret{i},msr{i},video{i},caption {i}" for i in range(6)] + ["ret6,msr3,video3,a second caption"]
    (root / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\n" + "\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="dmae_tpm.data.annotations"):
        test = read_msrvtt(root, "test")
    assert test.num_videos == 6 and test.num_captions == 6
    assert test.captions_of(3) == ["caption 3"]  # the first row is kept
    assert "MSRVTT_JSFUSION_test.csv" in caplog.text and "'video3' (line 8)" in caplog.text


def test_msrvtt_duplicate_sentence_ids_are_dropped_with_warning(tmp_path, caplog):
    root = write_msrvtt(tmp_path)
    data = json.loads((root / "MSRVTT_data.json").read_text())
    data["sentences"].append({"caption": "a man sings", "video_id": "video0", "sen_id": 5})  # listed twice
    (root / "MSRVTT_data.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="dmae_tpm.data.annotations"):
        train = read_msrvtt(root, "train")
    assert train.captions == ["the dog is fast", "a dog runs", "someone plays guitar", "a man sings"]
    assert "sen_id 5 of video0 (sentences[5], first at sentences[0])" in caplog.text


def test_msrvtt_custom_file_names(tmp_path):
    root = write_msrvtt(tmp_path)
    (root / "MSRVTT_train.7k.csv").write_text("video_id\nvideo0\n")
    s = read_split("msrvtt", root, "train", train_csv="MSRVTT_train.7k.csv")
    assert s.video_ids == ["video0"] and s.num_captions == 2


@pytest.mark.parametrize(
    ("file", "content", "split", "expected"),
    [
        ("MSRVTT_train.9k.csv", "vid\nvideo0\n", "train", ["MSRVTT_train.9k.csv", "video_id", "line 1"]),
        ("MSRVTT_train.9k.csv", "video_id\nvideo0\nvideo5\n", "train", ["MSRVTT_data.json", "video5"]),
        ("MSRVTT_train.9k.csv", 'video_id\nvideo0\n""\n', "train", ["MSRVTT_train.9k.csv", "line 3"]),
        ("MSRVTT_JSFUSION_test.csv", "key,vid_key,video_id\nret0,msr9,video9\n", "test", ["sentence", "line 1"]),
        (
            "MSRVTT_JSFUSION_test.csv",
            "key,vid_key,video_id,sentence\nret0,msr9,video9,ok\nret1,msr7,video7,\n",
            "test",
            ["MSRVTT_JSFUSION_test.csv", "line 3", "video7"],
        ),
        ("MSRVTT_data.json", '{"videos": []}', "train", ["MSRVTT_data.json", "sentences"]),
        ("MSRVTT_data.json", '{"sentences": [{"caption": "x"}]}', "train", ["MSRVTT_data.json", "sentences[0]"]),
        ("MSRVTT_data.json", '{"sentences": [', "train", ["MSRVTT_data.json", "line 1"]),
        (
            "MSRVTT_data.json",
            '{"sentences": [{"caption": "", "video_id": "video0", "sen_id": 4}]}',
            "train",
            ["MSRVTT_data.json", "sentences[0]", "video0"],
        ),
    ],
)
def test_msrvtt_malformed(tmp_path, file, content, split, expected):
    root = write_msrvtt(tmp_path)
    (root / file).write_text(content)
    with pytest.raises(AnnotationError) as e:
        read_msrvtt(root, split)
    for text in expected:
        assert text in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_file_points_to_readme(tmp_path):
    root = write_msrvtt(tmp_path)
    (root / "MSRVTT_data.json").unlink()
    with pytest.raises(AnnotationError, match=r"MSRVTT_data\.json: file not found.*data/README\.md"):
        read_msrvtt(root, "train")
    with pytest.raises(AnnotationError, match=r"train_ids\.json: file not found.*data/README\.md"):
        read_activitynet(tmp_path / "nowhere", "train")


def test_unknown_dataset_and_split(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        read_split("kinetics", tmp_path, "train")
    with pytest.raises(ValueError, match="unknown split"):
        read_split("msvd", tmp_path, "dev")


# --------------------------------------------------------------------------------------------------------------------
# MSVD
# --------------------------------------------------------------------------------------------------------------------


def test_msvd_joins_tokens(tmp_path):
    root = write_msvd(tmp_path)
    train = read_msvd(root, "train")
    assert train.video_ids == ["abc_1_2", "-4wsuPCjDBc_5_15"]
    assert train.captions == ["a man is cooking", "a squirrel is eating", "a squirrel eats a nut"]
    assert train.caption_video == [0, 1, 1]
    assert read_split("msvd", root, "val").captions == ["unused video"]
    assert read_split("msvd", root, "test").captions_by_video() == {
        "-4wsuPCjDBc_5_15": ["a squirrel is eating", "a squirrel eats a nut"]
    }


@pytest.mark.parametrize(
    ("captions", "expected"),
    [
        ({"abc_1_2": [["a"]]}, ["raw-captions.pkl", "-4wsuPCjDBc_5_15"]),
        ({"abc_1_2": [["ok"]], "-4wsuPCjDBc_5_15": [["fine"], "a string caption"]}, ["-4wsuPCjDBc_5_15", "index 1"]),
        ({"abc_1_2": [["ok"], ["a", 3]], "-4wsuPCjDBc_5_15": [["x"]]}, ["'abc_1_2'", "index 1"]),
        ({"abc_1_2": [["ok"], []], "-4wsuPCjDBc_5_15": [["x"]]}, ["empty caption", "'abc_1_2'", "index 1"]),
        ({"abc_1_2": [], "-4wsuPCjDBc_5_15": [["x"]]}, ["raw-captions.pkl", "'abc_1_2'"]),
        (["not", "a", "dict"], ["raw-captions.pkl", "dict"]),
    ],
)
def test_msvd_malformed(tmp_path, captions, expected):
    root = write_msvd(tmp_path)
    with open(root / "raw-captions.pkl", "wb") as f:
        pickle.dump(captions, f)
    with pytest.raises(AnnotationError) as e:
        read_msvd(root, "train")
    for text in expected:
        assert text in str(e.value)


def test_msvd_corrupt_pickle_and_empty_list(tmp_path):
    root = write_msvd(tmp_path)
    (root / "val_list.txt").write_text("\n\n")
    with pytest.raises(AnnotationError, match=r"val_list\.txt: lists no video ids"):
        read_msvd(root, "val")
    (root / "raw-captions.pkl").write_bytes(b"\x80\x04garbage")
    with pytest.raises(AnnotationError, match=r"raw-captions\.pkl: cannot be unpickled"):
        read_msvd(root, "train")


def test_duplicate_list_ids_are_dropped_with_warning(tmp_path, caplog):
    root = write_msvd(tmp_path)
    (root / "train_list.txt").write_text("abc_1_2\n-4wsuPCjDBc_5_15\nabc_1_2\n")
    with caplog.at_level(logging.WARNING, logger="dmae_tpm.data.annotations"):
        s = read_msvd(root, "train")
    assert s.video_ids == ["abc_1_2", "-4wsuPCjDBc_5_15"]
    assert "duplicate" in caplog.text and "line 3" in caplog.text


# --------------------------------------------------------------------------------------------------------------------
# DiDeMo
# --------------------------------------------------------------------------------------------------------------------


def test_didemo_paragraphs_and_dropped_ids(tmp_path, caplog):
    root = write_didemo(tmp_path)
    with caplog.at_level(logging.WARNING, logger="dmae_tpm.data.annotations"):
        s = read_split("didemo", root, "test")
    assert s.video_ids == ["v1@N00_1_a.mov", "v2@N00_2_b.mp4"]
    assert s.captions == ["a girl waves. camera pans left", "the dog jumps"]
    assert s.caption_video == [0, 1]
    assert "1 listed video id(s)" in caplog.text and "v3@N00_3_c.avi" in caplog.text


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"video": "v1@N00_1_a.mov"}', ["test_data.json", "list of moments"]),
        ('[{"video": "v1@N00_1_a.mov", "description": "x"}, {"video": "v2@N00_2_b.mp4"}]', ["index 1"]),
        ('[{"video": "v1@N00_1_a.mov", "description": 5}]', ["test_data.json", "index 0"]),
        ('[{"video": "unlisted.mp4", "description": "x"}]', ["test_data.json", "none of the 3 ids"]),
    ],
)
def test_didemo_malformed(tmp_path, content, expected):
    root = write_didemo(tmp_path)
    (root / "test_data.json").write_text(content)
    with pytest.raises(AnnotationError) as e:
        read_didemo(root, "test")
    for text in expected:
        assert text in str(e.value)


# --------------------------------------------------------------------------------------------------------------------
# ActivityNet
# --------------------------------------------------------------------------------------------------------------------


def test_activitynet_paragraphs_and_v_prefix(tmp_path, caplog):
    root = write_activitynet(tmp_path)
    train = read_activitynet(root, "train")
    assert train.video_ids == ["v_BBB", "v_AAA"]
    assert train.captions == ["Kids play.", "A man runs. He stops."]
    assert train.caption_video == [0, 1]
    val = read_split("activitynet", root, "val")
    assert val.video_ids == ["v_DDD", "v_CCC"]  # "DDD" in val_ids.json normalised to the json's key form
    assert val.captions == ["Rain falls.", "A cat sleeps. It wakes up."]
    test = read_split("activitynet", root, "test")
    assert (test.split, test.video_ids, test.captions) == ("test", val.video_ids, val.captions)


def test_activitynet_keys_without_prefix_and_dropped_ids(tmp_path, caplog):
    root = write_activitynet(tmp_path, val_ids=["v_EEE", "v_CCC", "CCC"])
    val = {"CCC": {"duration": 1.0, "timestamps": [[0, 1]], "sentences": ["One."]}}
    (root / "val_1.json").write_text(json.dumps(val))
    with caplog.at_level(logging.WARNING, logger="dmae_tpm.data.annotations"):
        s = read_activitynet(root, "val")
    assert s.video_ids == ["CCC"] and s.captions == ["One."]
    assert "v_EEE" in caplog.text and "duplicate" in caplog.text


@pytest.mark.parametrize(
    ("file", "content", "expected"),
    [
        ("train_ids.json", '{"v_AAA": 1}', ["train_ids.json", "JSON list"]),
        ("train_ids.json", '["v_AAA", 7]', ["train_ids.json", "index 1"]),
        ("train.json", '["v_AAA"]', ["train.json", "object mapping"]),
        ("train.json", '{"v_AAA": {"sentences": "A man runs."}, "v_BBB": {"sentences": ["x"]}}', ["'v_AAA'"]),
        ("train.json", '{"v_AAA": {"sentences": [" "]}, "v_BBB": {"sentences": ["x"]}}', ["empty paragraph", "v_AAA"]),
        ("train.json", '{"v_ZZZ": {"sentences": ["x"]}}', ["train.json", "none of the 2 ids"]),
    ],
)
def test_activitynet_malformed(tmp_path, file, content, expected):
    root = write_activitynet(tmp_path)
    (root / file).write_text(content)
    with pytest.raises(AnnotationError) as e:
        read_activitynet(root, "train")
    for text in expected:
        assert text in str(e.value)


# --------------------------------------------------------------------------------------------------------------------
# Video files
# --------------------------------------------------------------------------------------------------------------------


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_find_video_naming_variants(tmp_path):
    v = tmp_path / "videos"
    files = {
        "video7": touch(v / "video7.mp4"),  # MSR-VTT / MSVD: {id}.mp4
        "clip_webm": touch(v / "clip_webm.webm"),  # {id}.webm
        "v_AAA": touch(v / "AAA.mp4"),  # ActivityNet, CLIP4Clip naming: without v_
        "BBB": touch(v / "v_BBB.mkv"),  # ActivityNet id without v_, file with it
        "v1@N00_1_a.mov": touch(v / "v1@N00_1_a.mov"),  # DiDeMo: file named exactly as the id
        "v2@N00_2_b.avi": touch(v / "v2@N00_2_b.avi.mp4"),  # DiDeMo transcoded, extension appended
        "v3@N00_3_c.3gp": touch(v / "v3@N00_3_c.mp4"),  # DiDeMo transcoded, extension swapped
        "deep": touch(v / "sub" / "dir" / "deep.avi"),  # nested folders
        "UPPER": touch(v / "UPPER.MP4"),  # upper-case extension (recursive index only)
    }
    touch(v / "video7")  # a bare file without extension never matches
    ids = [*files, "absent", "v_absent"]
    index = video_path_index(v, ids)
    assert index == files
    for vid, path in files.items():
        assert find_video(v, vid) == path, vid
    assert find_video(v, "absent") is None
    assert find_video(v, "deep", recursive=False) is None
    assert find_video(v, "video7", extensions=(".webm",)) is None
    assert video_path_index(v, ["video7"], extensions=(".avi",)) == {}


def test_find_video_prefers_exact_and_first_extension(tmp_path):
    v = tmp_path / "videos"
    exact = touch(v / "x@N00.mov")
    touch(v / "x@N00.mov.mp4")
    mp4 = touch(v / "a.mp4")
    touch(v / "a.webm")
    touch(v / "AAA.mp4")
    pref = touch(v / "v_AAA.mp4")
    assert find_video(v, "x@N00.mov") == exact
    assert find_video(v, "a") == mp4 == video_path_index(v, ["a"])["a"]
    assert find_video(v, "v_AAA") == pref == video_path_index(v, ["v_AAA"])["v_AAA"]


def test_video_root_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="video folder not found"):
        video_path_index(tmp_path / "nope", ["a"])
    with pytest.raises(FileNotFoundError, match="video folder not found"):
        find_video(tmp_path / "nope", "a")
