"""LSMDC (LSMDC16, CLIP4Clip layout): the reader on tiny tab-separated fixtures, its config and the dataset checker."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dmae_tpm.data.annotations import AnnotationError, find_video, read_lsmdc, read_split, video_path_index
from dmae_tpm.data.check import check_dataset, format_report

JUNO = "1004_Juno_00.00.30.212-00.00.33.789"
JUNO_2 = "1004_Juno_00.00.34.001-00.00.36.500"
BEAUTY = "0001_American_Beauty_00.00.51.926-00.00.54.129"
BEAUTY_2 = "0001_American_Beauty_00.01.02.000-00.01.04.250"
ZOMBIE = "1012_Zombieland_00.02.10.100-00.02.12.900"


def line(clip_id: str, sentence: str) -> str:
    """One LSMDC16 line: clip id, four times, sentence, tab-separated."""
    times = clip_id.rsplit("_", 1)[1].replace("-", "\t")
    return f"{clip_id}\t{times}\t{times}\t{sentence}"


def write_lsmdc(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    train = [
        line(JUNO, "SOMEONE walks into the store."),
        line(BEAUTY, "SOMEONE looks at the roses."),
        "",  # blank lines are skipped
        line(JUNO, "  She picks up a test.  "),  # a clip id is not unique: a second caption of the clip
        line(JUNO, "SOMEONE walks into the store."),  # the same clip and sentence again: dropped
    ]
    (root / "LSMDC16_annos_training.csv").write_text("\n".join(train) + "\n")
    (root / "LSMDC16_annos_val.csv").write_text(line(JUNO_2, "He frowns.") + "\n")
    test = [line(ZOMBIE, "A car drives away."), line(BEAUTY_2, "SOMEONE smiles."), line(ZOMBIE, "Another one.")]
    (root / "LSMDC16_challenge_1000_publictect.csv").write_text("\r\n".join(test) + "\r\n")
    return root


def test_three_splits(tmp_path, caplog):
    root = write_lsmdc(tmp_path)
    with caplog.at_level(logging.WARNING, logger="dmae_tpm.data.annotations"):
        train = read_lsmdc(root, "train")
    assert (train.dataset, train.split) == ("lsmdc", "train")
    assert train.video_ids == [JUNO, BEAUTY]
    assert train.captions == ["SOMEONE walks into the store.", "She picks up a test.", "SOMEONE looks at the roses."]
    assert train.caption_video == [0, 0, 1]
    assert "LSMDC16_annos_training.csv: 1 repeated line(s)" in caplog.text and f"'{JUNO}' (line 5)" in caplog.text

    val = read_lsmdc(root, "val")
    assert (val.video_ids, val.captions) == ([JUNO_2], ["He frowns."])

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dmae_tpm.data.annotations"):
        test = read_lsmdc(root, "test")
    assert test.video_ids == [ZOMBIE, BEAUTY_2]
    assert test.captions == ["A car drives away.", "SOMEONE smiles."]  # one caption per test clip, the first kept
    assert test.caption_video == [0, 1]
    assert "publictect.csv: 1 repeated line(s)" in caplog.text and f"'{ZOMBIE}' (line 3)" in caplog.text


def test_registry_and_file_name_options(tmp_path):
    root = write_lsmdc(tmp_path)
    assert read_split("LSMDC", root, "train").video_ids == [JUNO, BEAUTY]
    assert read_split("lsmdc", root, "test").num_videos == 2
    (root / "LSMDC16_challenge_1000_publictest.csv").write_text(line(JUNO, "Renamed.") + "\n")
    s = read_split("lsmdc", root, "test", test_csv="LSMDC16_challenge_1000_publictest.csv")
    assert (s.video_ids, s.captions) == ([JUNO], ["Renamed."])


def test_trailing_tabs_are_tolerated(tmp_path):
    root = write_lsmdc(tmp_path)
    (root / "LSMDC16_annos_val.csv").write_text(line(JUNO_2, "He frowns.") + "\t \n")
    assert read_lsmdc(root, "val").captions == ["He frowns."]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (f"{line(JUNO, 'ok')}\n{JUNO}\t1\t2\t3\tfive columns\n", ["5 tab-separated column(s) at line 2", "sentence"]),
        (f"{line(JUNO, 'ok')}\n{line(BEAUTY, 'a')}\tb\n", ["7 tab-separated column(s) at line 2"]),
        (f"{line(JUNO, 'ok')}\n\n{line(BEAUTY, '  ')}\n", ["empty sentence at line 3", BEAUTY]),
        (" \t1\t2\t3\t4\tno clip\n", ["empty clip_id at line 1"]),
        ("\n\n", ["no annotation lines"]),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, content, expected):
    root = write_lsmdc(tmp_path)
    (root / "LSMDC16_annos_val.csv").write_text(content)
    with pytest.raises(AnnotationError) as e:
        read_lsmdc(root, "val")
    assert "LSMDC16_annos_val.csv" in str(e.value) and "\n" not in str(e.value)
    for text in expected:
        assert text in str(e.value)


def test_missing_file_and_bad_encoding(tmp_path):
    root = write_lsmdc(tmp_path)
    (root / "LSMDC16_challenge_1000_publictect.csv").unlink()
    with pytest.raises(AnnotationError, match=r"publictect\.csv: file not found.*data/README\.md"):
        read_lsmdc(root, "test")
    (root / "LSMDC16_annos_val.csv").write_bytes(line(JUNO, "caf\xe9").encode("latin-1"))
    with pytest.raises(AnnotationError, match=r"LSMDC16_annos_val\.csv: not UTF-8 text"):
        read_lsmdc(root, "val")


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_videos_in_movie_folders_are_found(tmp_path):
    videos = tmp_path / "videos"
    juno = touch(videos / "1004_Juno" / f"{JUNO}.avi")
    beauty = touch(videos / "0001_American_Beauty" / f"{BEAUTY}.mp4")
    touch(videos / "1004_Juno" / "1004_Juno_00.00.30.212-00.00.33.avi")  # the id with its ".789" taken for a suffix
    assert video_path_index(videos, [JUNO, BEAUTY, ZOMBIE]) == {JUNO: juno, BEAUTY: beauty}
    assert find_video(videos, JUNO) == juno
    assert find_video(videos, JUNO, recursive=False) is None


def test_config_composes():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from dmae_tpm.config import to_run_config

    GlobalHydra.instance().clear()
    configs = (Path(__file__).resolve().parents[1] / "configs").as_posix()
    with initialize_config_dir(config_dir=configs, version_base="1.3"):
        run = to_run_config(compose("config", overrides=["data=lsmdc", "model=vitb32", "loss=baseline"]))
    data, m = run.data, run.model
    assert (data.name, data.format, data.train_split, data.test_split) == ("lsmdc", "lsmdc", "train", "test")
    assert data.annotations.endswith("/lsmdc") and data.videos.endswith("/lsmdc/videos")
    assert data.synthetic is None
    assert (m.max_words, m.max_frames, data.batch_size, m.temporal.input) == (32, 12, 128, "v_tokens")
    assert m.max_frames <= m.temporal.max_frames


def test_checker_on_a_tiny_root(tmp_path):
    ann = write_lsmdc(tmp_path / "ann")
    videos = tmp_path / "videos"
    for clip_id in (JUNO, BEAUTY, JUNO_2, ZOMBIE):
        touch(videos / clip_id.split("_00.")[0] / f"{clip_id}.avi")
    report = check_dataset("lsmdc", ann, videos, progress=False)
    assert [(s.split, s.num_listed, s.num_captions, s.num_found, s.missing) for s in report.splits] == [
        ("train", 2, 3, 2, []),
        ("val", 1, 1, 1, []),
        ("test", 2, 2, 1, [BEAUTY_2]),
    ]
    assert not report.ok
    text = format_report(report)
    assert "[test] PROBLEMS: 2 videos listed, 2 captions; 1 found, 1 missing" in text
    assert f"missing (all): {BEAUTY_2}" in text
    touch(videos / f"{BEAUTY_2}.avi")  # a flat folder works as well
    assert check_dataset("lsmdc", ann, videos, progress=False).ok
