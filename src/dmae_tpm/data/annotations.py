"""Annotation readers for MSR-VTT, MSVD, DiDeMo, ActivityNet Captions and LSMDC in the CLIP4Clip file layouts.

The files are the ones CLIP4Clip, TS2-Net, DRL and X-CLIP users already have (see ``data/README.md`` for where to
get them and where they go). Each reader returns a `RetrievalSplit`: the split's video ids in the order of its list
file, every caption (or, for DiDeMo and ActivityNet, one paragraph per video) and the video of each caption.
How a training epoch samples captions (one per video or all of them) is the Dataset's business, not these readers'.

Protocols (the ones CLIP4Clip evaluates, Sec. 4.1 of the paper):

* MSR-VTT 1k-A: train = the 9k videos of ``MSRVTT_train.9k.csv`` with all their ``MSRVTT_data.json`` sentences,
  test = the 1000 (video, sentence) pairs of ``MSRVTT_JSFUSION_test.csv``; there is no val split, "val" is test.
* MSVD: ``{train,val,test}_list.txt`` (1200 / 100 / 670 videos) with every caption of ``raw-captions.pkl``.
* DiDeMo: video-paragraph retrieval; all descriptions of a video in ``{split}_data.json`` joined into one paragraph.
* ActivityNet Captions: video-paragraph retrieval on ``train.json`` / ``val_1.json``; "val" and "test" are val_1.
* LSMDC (LSMDC16): ``LSMDC16_annos_{training,val}.csv`` and the 1000 clips of
  ``LSMDC16_challenge_1000_publictect.csv`` (test), tab-separated, one sentence per line.

Every problem with a file raises `AnnotationError`, one line: the file, what is wrong, at which entry, what to do.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DATASETS",
    "VIDEO_EXTENSIONS",
    "AnnotationError",
    "RetrievalSplit",
    "canonical_dataset",
    "find_video",
    "read_activitynet",
    "read_didemo",
    "read_lsmdc",
    "read_msrvtt",
    "read_msvd",
    "read_split",
    "video_path_index",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v")
SPLITS = ("train", "val", "test")
_README = "data/README.md"
_MAX_IDS_IN_WARNING = 5


class AnnotationError(ValueError):
    """An annotation file is missing or malformed; the message names the file, the entry and what to do."""


# --------------------------------------------------------------------------------------------------------------------
# The split container
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrievalSplit:
    """The videos and captions of one split of a benchmark.

    dataset: "msrvtt" | "msvd" | "didemo" | "activitynet" | "lsmdc" (or any name, e.g. a synthetic set in MSR-VTT
    format).
    split: "train" | "val" | "test".
    video_ids: unique ids, in the order of the split's list file.
    captions: every caption of the split (for DiDeMo / ActivityNet: one paragraph per video).
    caption_video: for each caption, the index into `video_ids` of its video.

    Validated on construction (ValueError): equal lengths, indices in range, unique ids, no empty caption, and every
    video has at least one caption.
    """

    dataset: str
    split: str
    video_ids: list[str]
    captions: list[str]
    caption_video: list[int]
    _groups: list[list[int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"RetrievalSplit({self.dataset!r}, {self.split!r})"
        if len(self.captions) != len(self.caption_video):
            raise ValueError(
                f"{where}: {len(self.captions)} captions but {len(self.caption_video)} caption_video entries"
            )
        seen: set[str] = set()
        for v, vid in enumerate(self.video_ids):
            if not isinstance(vid, str) or not vid:
                raise ValueError(f"{where}: video_ids[{v}] = {vid!r} is not a non-empty string")
            if vid in seen:
                raise ValueError(f"{where}: video id {vid!r} appears more than once in video_ids (index {v})")
            seen.add(vid)
        groups: list[list[int]] = [[] for _ in self.video_ids]
        for i, (caption, v) in enumerate(zip(self.captions, self.caption_video, strict=True)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < len(self.video_ids):
                raise ValueError(
                    f"{where}: caption_video[{i}] = {v!r} is not a video index in [0, {len(self.video_ids)})"
                )
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(f"{where}: caption {i} (video {self.video_ids[v]!r}) is empty or not a string")
            groups[v].append(i)
        for v, group in enumerate(groups):
            if not group:
                raise ValueError(f"{where}: video {self.video_ids[v]!r} (index {v}) has no caption")
        object.__setattr__(self, "_groups", groups)

    @property
    def num_videos(self) -> int:
        return len(self.video_ids)

    @property
    def num_captions(self) -> int:
        return len(self.captions)

    def captions_of(self, video_index: int) -> list[str]:
        """The captions of video `video_index`, in split order."""
        return [self.captions[i] for i in self._groups[video_index]]

    def captions_by_video(self) -> dict[str, list[str]]:
        """video id -> its captions in split order (the per-video documents of Algorithm 1's TF-IDF)."""
        return {vid: [self.captions[i] for i in group] for vid, group in zip(self.video_ids, self._groups, strict=True)}


# --------------------------------------------------------------------------------------------------------------------
# Small file helpers
# --------------------------------------------------------------------------------------------------------------------


def _check_split(split: str, allowed: Sequence[str] = SPLITS) -> str:
    if split not in allowed:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(allowed)}")
    return split


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise AnnotationError(
            f"{path}: file not found, expected {what}; download it and put it there as described in {_README}"
        )
    return path


def _load_json(path: Path, what: str) -> Any:
    _require(path, what)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise AnnotationError(
            f"{path}: not valid JSON ({e.msg}) at line {e.lineno} column {e.colno}; re-download the file ({_README})"
        ) from e
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text at byte {e.start}; re-download the file ({_README})") from e


def _read_id_list(path: Path, what: str) -> list[str]:
    """Ids of a one-id-per-line text file (stripped, blank lines skipped, duplicates dropped with a warning)."""
    _require(path, what)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text at byte {e.start}; re-download the file ({_README})") from e
    return _dedupe(path, ((f"line {n}", line.strip()) for n, line in enumerate(lines, 1) if line.strip()))


def _listed(items: list[str]) -> str:
    return ", ".join(items[:_MAX_IDS_IN_WARNING]) + (", ..." if len(items) > _MAX_IDS_IN_WARNING else "")


def _dedupe(path: Path, entries: Iterable[tuple[str, str]]) -> list[str]:
    """Ids in first-appearance order; `entries` are (location, id). Duplicates are dropped with a warning."""
    ids: dict[str, None] = {}
    dups: list[str] = []
    for where, vid in entries:
        if vid in ids:
            dups.append(f"{vid!r} ({where})")
        else:
            ids[vid] = None
    if dups:
        log.warning(
            "%s: %d duplicate video id(s) ignored (first occurrence kept): %s",
            path,
            len(dups),
            _listed(dups),
        )
    if not ids:
        raise AnnotationError(f"{path}: lists no video ids at line 1; check that the file is the right one ({_README})")
    return list(ids)


def _warn_dropped(path: Path, dropped: list[str], source: Path) -> None:
    if dropped:
        log.warning(
            "%s: %d listed video id(s) have no annotation in %s and are dropped (as CLIP4Clip does): %s",
            path,
            len(dropped),
            source.name,
            _listed(dropped),
        )


def _paragraph(pieces: Iterable[str]) -> str:
    """Sentences stripped and joined with single spaces (empty ones skipped)."""
    return " ".join(p for p in (s.strip() for s in pieces) if p)


def _build(dataset: str, split: str, video_ids: list[str], per_video: list[list[str]]) -> RetrievalSplit:
    captions = [c for caps in per_video for c in caps]
    caption_video = [v for v, caps in enumerate(per_video) for _ in caps]
    return RetrievalSplit(dataset, split, video_ids, captions, caption_video)


# --------------------------------------------------------------------------------------------------------------------
# MSR-VTT
# --------------------------------------------------------------------------------------------------------------------


def _read_csv(path: Path, columns: Sequence[str], what: str) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV with a header, as (line number, row); AnnotationError if a needed column is missing."""
    _require(path, what)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in columns if c not in header]
            if missing:
                raise AnnotationError(
                    f"{path}: missing column(s) {', '.join(missing)} at line 1 (header is {','.join(header) or 'empty'}"
                    f"); use the CSV from CLIP4Clip's msrvtt_data.zip ({_README})"
                )
            reader.fieldnames = header
            try:
                return [(reader.line_num, row) for row in reader]
            except csv.Error as e:
                raise AnnotationError(
                    f"{path}: malformed CSV ({e}) at line {reader.line_num}; fix that line or re-download the file "
                    f"({_README})"
                ) from e
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text at byte {e.start}; re-download the file ({_README})") from e


def read_msrvtt(
    root: str | os.PathLike[str],
    split: str,
    *,
    train_csv: str = "MSRVTT_train.9k.csv",
    test_csv: str = "MSRVTT_JSFUSION_test.csv",
    data_json: str = "MSRVTT_data.json",
) -> RetrievalSplit:
    """MSR-VTT, 1k-A protocol (CLIP4Clip's ``msrvtt_data.zip``).

    train: the video ids of `train_csv` (column ``video_id``; 9000 in the 9k split), in file order, with every
    sentence of each in `data_json` (``sentences``: caption, video_id, sen_id), grouped by video and ordered by
    sen_id (20 per video, 180,000 in all).
    test: the rows of `test_csv` (columns ``video_id``, ``sentence``; also key, vid_key): 1000 videos with one
    caption each, in file order.
    val: MSR-VTT has no validation split in the 1k-A protocol, so "val" is an alias of "test".

    `root` is the folder with the three files; the file names can be overridden (e.g. ``MSRVTT_train.7k.csv``).
    """
    _check_split(split)
    root = Path(root)
    if split == "train":
        video_ids = _msrvtt_train_ids(root / train_csv)
        per_video = _msrvtt_sentences(root / data_json, video_ids, (root / train_csv).name)
        return _build("msrvtt", split, video_ids, per_video)
    per_video_map = _msrvtt_test_pairs(root / test_csv)  # "val" and "test": the JSFUSION 1k-A test pairs
    video_ids = list(per_video_map)
    return _build("msrvtt", split, video_ids, [per_video_map[v] for v in video_ids])


def _msrvtt_train_ids(csv_path: Path) -> list[str]:
    """The video ids of the training list, in file order."""
    rows = _read_csv(csv_path, ["video_id"], "the MSR-VTT training list (column video_id)")
    entries = []
    for line, row in rows:
        vid = (row.get("video_id") or "").strip()
        if not vid:
            raise AnnotationError(f"{csv_path}: empty video_id at line {line}; fill in or delete that row ({_README})")
        entries.append((f"line {line}", vid))
    if not entries:
        raise AnnotationError(f"{csv_path}: no rows at line 2; use the CSV from msrvtt_data.zip ({_README})")
    return _dedupe(csv_path, entries)


def _msrvtt_sentences(json_path: Path, video_ids: list[str], csv_name: str) -> list[list[str]]:
    """Every caption of each video from MSRVTT_data.json, ordered by sen_id (then file order)."""
    data = _load_json(json_path, "MSR-VTT's MSRVTT_data.json (with a 'sentences' list)")
    sentences = data.get("sentences") if isinstance(data, dict) else None
    if not isinstance(sentences, list):
        raise AnnotationError(
            f"{json_path}: no 'sentences' list at the top level; use MSRVTT_data.json from msrvtt_data.zip "
            f"({_README})"
        )
    wanted = set(video_ids)
    found: dict[str, list[tuple[Any, int, str]]] = {}
    seen: dict[tuple[str, Any], int] = {}
    repeats: list[str] = []
    for i, s in enumerate(sentences):
        if not isinstance(s, dict) or not all(k in s for k in ("caption", "video_id", "sen_id")):
            raise AnnotationError(
                f"{json_path}: sentence entry needs caption, video_id and sen_id at sentences[{i}]; "
                f"re-download the file ({_README})"
            )
        vid = s["video_id"]
        if vid not in wanted:
            continue
        caption = s["caption"]
        if not isinstance(caption, str) or not caption.strip():
            raise AnnotationError(
                f"{json_path}: empty or non-string caption at sentences[{i}] (video {vid}, sen_id {s['sen_id']}); "
                f"fix or delete that entry"
            )
        if (vid, s["sen_id"]) in seen:  # one sentence listed twice would count as two captions of the video
            first = seen[vid, s["sen_id"]]
            repeats.append(f"sen_id {s['sen_id']!r} of {vid} (sentences[{i}], first at sentences[{first}])")
            continue
        seen[vid, s["sen_id"]] = i
        found.setdefault(vid, []).append((s["sen_id"], i, caption.strip()))
    if repeats:
        log.warning("%s: %d duplicate sen_id(s) ignored (first entry kept): %s", json_path, len(repeats),
                    _listed(repeats))
    per_video = []
    for vid in video_ids:
        if vid not in found:
            raise AnnotationError(
                f"{json_path}: no sentence for video {vid} (listed in {csv_name}) at video_id {vid}; "
                f"check that {csv_name} and {json_path.name} belong together ({_README})"
            )
        try:
            ordered = sorted(found[vid], key=lambda t: (t[0], t[1]))
        except TypeError as e:
            raise AnnotationError(
                f"{json_path}: sen_id values of mixed types at video_id {vid}; make them all integers"
            ) from e
        per_video.append([c for _, _, c in ordered])
    return per_video


def _msrvtt_test_pairs(csv_path: Path) -> dict[str, list[str]]:
    """video id -> its captions, in file order, from the 1k-A test CSV."""
    rows = _read_csv(csv_path, ["video_id", "sentence"], "the MSR-VTT 1k-A test pairs (columns video_id, sentence)")
    per_video_map: dict[str, list[str]] = {}
    repeats: list[str] = []
    for line, row in rows:
        vid = (row.get("video_id") or "").strip()
        sentence = (row.get("sentence") or "").strip()
        if not vid:
            raise AnnotationError(f"{csv_path}: empty video_id at line {line}; fill in or delete that row ({_README})")
        if not sentence:
            raise AnnotationError(
                f"{csv_path}: empty sentence at line {line} (video {vid}); fill in or delete that row ({_README})"
            )
        if vid in per_video_map:  # 1k-A is one caption per video: a second row would add a query and skew ranks
            repeats.append(f"{vid!r} (line {line})")
            continue
        per_video_map[vid] = [sentence]
    if repeats:
        log.warning("%s: %d duplicate video id(s) ignored (first row kept; the 1k-A protocol has one caption per "
                    "video): %s", csv_path, len(repeats), _listed(repeats))
    if not per_video_map:
        raise AnnotationError(f"{csv_path}: no rows at line 2; use the CSV from msrvtt_data.zip ({_README})")
    return per_video_map


# --------------------------------------------------------------------------------------------------------------------
# MSVD
# --------------------------------------------------------------------------------------------------------------------


def read_msvd(root: str | os.PathLike[str], split: str) -> RetrievalSplit:
    """MSVD (CLIP4Clip's ``msvd_data.zip``): ``{split}_list.txt`` and ``raw-captions.pkl``.

    The list has one video id per line (1200 / 100 / 670 for train / val / test). ``raw-captions.pkl`` maps each
    video id to its captions, each a list of word tokens; a caption is its tokens joined with single spaces. All
    captions of the listed videos are returned (about 40 per video), grouped by video in list order.

    Security: ``raw-captions.pkl`` is a Python pickle because that is the dataset's official distribution format,
    and loading a pickle can execute arbitrary code. Only load a file you trust (e.g. the one from the CLIP4Clip
    release or the collaborative-experts repository).
    """
    _check_split(split)
    root = Path(root)
    list_path = root / f"{split}_list.txt"
    video_ids = _read_id_list(list_path, f"the MSVD {split} video list (one id per line)")
    pkl_path = _require(root / "raw-captions.pkl", "MSVD's raw-captions.pkl (video id -> list of token lists)")
    try:
        with open(pkl_path, "rb") as f:
            # The official format is a pickle; see the docstring: only load files you trust.
            captions = pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError) as e:
        raise AnnotationError(
            f"{pkl_path}: cannot be unpickled ({type(e).__name__}: {e}) at byte 0; re-download the file ({_README})"
        ) from e
    if not isinstance(captions, dict):
        raise AnnotationError(
            f"{pkl_path}: holds a {type(captions).__name__}, expected a dict video id -> captions at the top level; "
            f"use raw-captions.pkl from msvd_data.zip ({_README})"
        )
    per_video = []
    for vid in video_ids:
        if vid not in captions:
            raise AnnotationError(
                f"{pkl_path}: no captions for video {vid} (listed in {list_path.name}) at key {vid!r}; "
                f"check that the list and the pickle belong together ({_README})"
            )
        caps = captions[vid]
        if not isinstance(caps, (list, tuple)) or not caps:
            raise AnnotationError(
                f"{pkl_path}: expected a non-empty list of captions at key {vid!r}, got {type(caps).__name__}; "
                f"fix that entry or re-download the file ({_README})"
            )
        joined = []
        for j, cap in enumerate(caps):
            if not isinstance(cap, (list, tuple)) or not all(isinstance(t, str) for t in cap):
                raise AnnotationError(
                    f"{pkl_path}: caption is not a list of word strings at key {vid!r} index {j}; "
                    f"fix that caption or re-download the file ({_README})"
                )
            text = " ".join(cap).strip()
            if not text:
                raise AnnotationError(
                    f"{pkl_path}: empty caption at key {vid!r} index {j}; delete that caption or fill it in"
                )
            joined.append(text)
        per_video.append(joined)
    return _build("msvd", split, video_ids, per_video)


# --------------------------------------------------------------------------------------------------------------------
# DiDeMo
# --------------------------------------------------------------------------------------------------------------------


def read_didemo(root: str | os.PathLike[str], split: str) -> RetrievalSplit:
    """DiDeMo, video-paragraph retrieval: ``{split}_list.txt`` and ``{split}_data.json`` (LocalizingMoments).

    The list has one video id per line. Video ids are the original file names *including their extension*
    (e.g. ``12345678@N00_1234567890_abcdef1234.mov``) and, as in CLIP4Clip, the video file is named exactly like the
    id (`find_video` also accepts ``{id}.mp4`` and the id with its extension swapped). The json is a list of moments
    ``{"video", "description", "times", ...}``; all descriptions of a video, in file order and stripped, are joined
    with single spaces into ONE paragraph, so there is one caption per video.

    As CLIP4Clip does, listed videos without any description are dropped (with a warning giving their count and the
    first few ids), and json entries of videos not in the list are ignored.
    """
    _check_split(split)
    root = Path(root)
    list_path = root / f"{split}_list.txt"
    json_path = root / f"{split}_data.json"
    listed = _read_id_list(list_path, f"the DiDeMo {split} video list (one id per line)")
    data = _load_json(json_path, f"the DiDeMo {split} moments (LocalizingMoments {split}_data.json)")
    if not isinstance(data, list):
        raise AnnotationError(
            f"{json_path}: expected a list of moments at the top level, got {type(data).__name__}; "
            f"use {split}_data.json from LocalizingMoments ({_README})"
        )
    wanted = set(listed)
    descriptions: dict[str, list[str]] = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "video" not in entry or "description" not in entry:
            raise AnnotationError(
                f"{json_path}: moment needs 'video' and 'description' at index {i}; re-download the file ({_README})"
            )
        vid, text = entry["video"], entry["description"]
        if not isinstance(vid, str) or not isinstance(text, str):
            raise AnnotationError(
                f"{json_path}: 'video' and 'description' must be strings at index {i}; fix that entry ({_README})"
            )
        if vid in wanted:
            descriptions.setdefault(vid, []).append(text)
    video_ids, per_video, dropped = [], [], []
    for vid in listed:
        paragraph = _paragraph(descriptions.get(vid, ()))
        if paragraph:
            video_ids.append(vid)
            per_video.append([paragraph])
        else:
            dropped.append(vid)
    _warn_dropped(list_path, dropped, json_path)
    if not video_ids:
        raise AnnotationError(
            f"{json_path}: none of the {len(listed)} ids of {list_path.name} has a description at any index; "
            f"check that the list and the json are of the same split ({_README})"
        )
    return _build("didemo", split, video_ids, per_video)


# --------------------------------------------------------------------------------------------------------------------
# ActivityNet Captions
# --------------------------------------------------------------------------------------------------------------------


def read_activitynet(root: str | os.PathLike[str], split: str) -> RetrievalSplit:
    """ActivityNet Captions, video-paragraph retrieval (CLIP4Clip / collaborative-experts files).

    train: ``train.json`` + ``train_ids.json``; "val" and "test": ``val_1.json`` + ``val_ids.json`` (the standard
    paragraph-retrieval protocol evaluates on val_1; there is no public test annotation).

    ``{train,val_1}.json`` map ``v_<youtube id>`` to ``{"duration", "timestamps", "sentences"}``; a video's paragraph
    is its sentences, stripped, joined with single spaces. ``*_ids.json`` is a JSON list of ids, which may be written
    with or without the ``v_`` prefix: the returned `video_ids` use the form of the annotation json's keys
    (``v_...`` for the official files). CLIP4Clip's video files are named without the prefix (``<youtube id>.mp4``);
    `find_video` accepts both. Listed ids without an annotation are dropped with a warning (as CLIP4Clip does).
    """
    _check_split(split)
    root = Path(root)
    stem = "train" if split == "train" else "val"
    ids_path = root / f"{stem}_ids.json"
    json_path = root / ("train.json" if split == "train" else "val_1.json")
    raw_ids = _load_json(ids_path, f"the ActivityNet {stem} id list (a JSON list of video ids)")
    if not isinstance(raw_ids, list):
        raise AnnotationError(
            f"{ids_path}: expected a JSON list of video ids at the top level, got {type(raw_ids).__name__}; "
            f"use {ids_path.name} from collaborative-experts ({_README})"
        )
    for i, vid in enumerate(raw_ids):
        if not isinstance(vid, str) or not vid.strip():
            raise AnnotationError(f"{ids_path}: expected a non-empty string id at index {i}, got {vid!r}; fix it")
    data = _load_json(json_path, f"ActivityNet Captions {json_path.name} (v_<id> -> duration, timestamps, sentences)")
    if not isinstance(data, dict):
        raise AnnotationError(
            f"{json_path}: expected an object mapping video ids to annotations at the top level, got "
            f"{type(data).__name__}; use {json_path.name} from ActivityNet Captions ({_README})"
        )

    def normalise(vid: str) -> str | None:
        if vid in data:
            return vid
        if "v_" + vid in data:
            return "v_" + vid
        if vid.startswith("v_") and vid[2:] in data:
            return vid[2:]
        return None

    entries, dropped = [], []
    for i, vid in enumerate(raw_ids):
        key = normalise(vid.strip())
        if key is None:
            dropped.append(vid)
        else:
            entries.append((f"index {i}", key))
    _warn_dropped(ids_path, dropped, json_path)
    if not entries:
        raise AnnotationError(
            f"{json_path}: none of the {len(raw_ids)} ids of {ids_path.name} is a key at any index; "
            f"check that the id list and the json are of the same split ({_README})"
        )
    video_ids = _dedupe(ids_path, entries)
    per_video = []
    for key in video_ids:
        ann = data[key]
        sentences = ann.get("sentences") if isinstance(ann, dict) else None
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
            raise AnnotationError(
                f"{json_path}: expected a 'sentences' list of strings at key {key!r}; fix that entry or "
                f"re-download the file ({_README})"
            )
        paragraph = _paragraph(sentences)
        if not paragraph:
            raise AnnotationError(
                f"{json_path}: empty paragraph (no non-blank sentence) at key {key!r}; fill in its sentences or "
                f"remove it from {ids_path.name}"
            )
        per_video.append([paragraph])
    return _build("activitynet", split, video_ids, per_video)


# --------------------------------------------------------------------------------------------------------------------
# LSMDC
# --------------------------------------------------------------------------------------------------------------------

_LSMDC_COLUMNS = ("clip_id", "start_aligned", "end_aligned", "start_extracted", "end_extracted", "sentence")


def read_lsmdc(
    root: str | os.PathLike[str],
    split: str,
    *,
    train_csv: str = "LSMDC16_annos_training.csv",
    val_csv: str = "LSMDC16_annos_val.csv",
    test_csv: str = "LSMDC16_challenge_1000_publictect.csv",
) -> RetrievalSplit:
    """LSMDC (LSMDC16, the files CLIP4Clip reads): train `train_csv`, val `val_csv`, test `test_csv`.

    Each file is tab-separated without a header, one line per sentence, six columns: clip_id, start_aligned,
    end_aligned, start_extracted, end_extracted, sentence (only the first and the last are used; blank lines are
    skipped). Video ids are the clip ids in order of first appearance (e.g. ``1004_Juno_00.00.30.212-00.00.33.789``;
    the file is ``<clip id>.avi``, in the original layout inside the movie's folder ``1004_Juno/``).

    train / val: a clip id is not unique there (as CLIP4Clip notes), so every sentence of a clip is one of its
    captions, in file order; a line repeating an earlier line's clip and sentence is dropped with a warning.
    test: the 1000 public test clips, one caption each (the protocol has 1000 queries); a repeated clip id is dropped
    with a warning, the first line kept. The test file name keeps CLIP4Clip's spelling "publictect".
    """
    _check_split(split)
    path = Path(root) / {"train": train_csv, "val": val_csv, "test": test_csv}[split]
    per_clip = _lsmdc_captions(path, _lsmdc_rows(path, split), one_per_clip=split == "test")
    video_ids = list(per_clip)
    return _build("lsmdc", split, video_ids, [per_clip[v] for v in video_ids])


def _lsmdc_rows(path: Path, split: str) -> list[tuple[int, str, str]]:
    """(line number, clip id, sentence) of each non-blank line of an LSMDC16 tab-separated file."""
    _require(path, f"the LSMDC {split} annotations (tab-separated: {', '.join(_LSMDC_COLUMNS)})")
    rows = []
    try:
        with open(path, encoding="utf-8-sig") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    rows.append((n, *_lsmdc_fields(path, n, line)))
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text at byte {e.start}; re-download the file ({_README})") from e
    if not rows:
        raise AnnotationError(
            f"{path}: no annotation lines at line 1; check that the file is the right one ({_README})"
        )
    return rows


def _lsmdc_fields(path: Path, line: int, text: str) -> tuple[str, str]:
    """The clip id and the sentence of line `line`; AnnotationError unless it has six columns and both are set."""
    fields = text.rstrip("\r\n").split("\t")
    if len(fields) > len(_LSMDC_COLUMNS) and not "".join(fields[len(_LSMDC_COLUMNS):]).strip():
        fields = fields[: len(_LSMDC_COLUMNS)]  # trailing tabs, which CLIP4Clip strips off as well
    if len(fields) != len(_LSMDC_COLUMNS):
        raise AnnotationError(
            f"{path}: {len(fields)} tab-separated column(s) at line {line}, expected {len(_LSMDC_COLUMNS)} "
            f"({', '.join(_LSMDC_COLUMNS)}); fix that line or re-download the file ({_README})"
        )
    clip_id, sentence = fields[0].strip(), fields[-1].strip()
    if not clip_id:
        raise AnnotationError(f"{path}: empty clip_id at line {line}; fill in or delete that line ({_README})")
    if not sentence:
        raise AnnotationError(
            f"{path}: empty sentence at line {line} (clip {clip_id}); fill in or delete that line ({_README})"
        )
    return clip_id, sentence


def _lsmdc_captions(path: Path, rows: list[tuple[int, str, str]], *, one_per_clip: bool) -> dict[str, list[str]]:
    """clip id -> its sentences in file order; repeated lines (any repeated clip if `one_per_clip`) dropped."""
    per_clip: dict[str, list[str]] = {}
    repeats: list[str] = []
    for line, clip_id, sentence in rows:
        captions = per_clip.setdefault(clip_id, [])
        if captions and (one_per_clip or sentence in captions):
            repeats.append(f"{clip_id!r} (line {line})")
            continue
        captions.append(sentence)
    if repeats:
        why = "the test protocol has one caption per clip" if one_per_clip else "same clip and sentence as before"
        log.warning("%s: %d repeated line(s) ignored (first kept; %s): %s", path, len(repeats), why,
                    _listed(repeats))
    return per_clip


# --------------------------------------------------------------------------------------------------------------------
# Dispatcher
# --------------------------------------------------------------------------------------------------------------------

_READERS = {
    "msrvtt": read_msrvtt,
    "msvd": read_msvd,
    "didemo": read_didemo,
    "activitynet": read_activitynet,
    "lsmdc": read_lsmdc,
}
DATASETS: tuple[str, ...] = tuple(_READERS)


def canonical_dataset(dataset: str) -> str:
    """``"MSR-VTT"`` / ``"msr_vtt"`` -> ``"msrvtt"``, ``"ActivityNet"`` -> ``"activitynet"``; ValueError otherwise."""
    name = dataset.lower().replace("-", "").replace("_", "")
    if name not in _READERS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(_READERS)}")
    return name


def read_split(dataset: str, annotation_root: str | os.PathLike[str], split: str, **options: Any) -> RetrievalSplit:
    """Read `split` of `dataset` (msrvtt | msvd | didemo | activitynet | lsmdc) from `annotation_root`.

    `options` go to the reader (only two take any: `read_msrvtt` ``train_csv``, ``test_csv``, ``data_json``;
    `read_lsmdc` ``train_csv``, ``val_csv``, ``test_csv``).
    """
    return _READERS[canonical_dataset(dataset)](annotation_root, split, **options)


# --------------------------------------------------------------------------------------------------------------------
# Video files
# --------------------------------------------------------------------------------------------------------------------


def _candidate_names(video_id: str, extensions: Sequence[str]) -> list[str]:
    """File names that can hold `video_id`, most specific first.

    1. the id itself when it already has an extension (DiDeMo: CLIP4Clip names the file exactly like the id);
    2. ``{id}{ext}`` for each extension (MSR-VTT, MSVD, ActivityNet; also ``x.mov.mp4`` for DiDeMo);
    3. with the ``v_`` prefix removed / added (ActivityNet: ``v_abc`` <-> ``abc``), ``{other}{ext}``;
    4. for an id with an extension, that extension swapped (DiDeMo transcoded: ``x.mov`` -> ``x.mp4``).
    """
    names: list[str] = []
    stem, suffix = os.path.splitext(video_id)
    if suffix and stem:
        names.append(video_id)
    names += [video_id + ext for ext in extensions]
    other = video_id[2:] if video_id.startswith("v_") and len(video_id) > 2 else "v_" + video_id
    names += [other + ext for ext in extensions]
    if suffix and stem:
        names += [stem + ext for ext in extensions]
    return list(dict.fromkeys(names))


def _check_root(video_root: str | os.PathLike[str]) -> Path:
    root = Path(video_root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: video folder not found; pass the folder that holds the videos ({_README})")
    return root


def _name_key(name: str) -> str:
    """Index key of a file name: the name with its extension lower-cased (``a.MP4`` is found as ``a.mp4``)."""
    stem, suffix = os.path.splitext(name)
    return stem + suffix.lower()


def find_video(
    video_root: str | os.PathLike[str],
    video_id: str,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    *,
    recursive: bool = True,
) -> Path | None:
    """The file of `video_id` under `video_root`, or None.

    Names tried, in order: the id itself if it has an extension (DiDeMo), ``{id}{ext}``, the id with the ``v_``
    prefix removed or added (ActivityNet) plus ``{ext}``, and for ids with an extension that extension swapped.
    The top level of `video_root` is checked first with a few stats (so a match there wins over one in a
    sub-folder); if nothing is there and `recursive`, the whole tree is searched as `video_path_index` does
    (which also matches extensions case-insensitively, ``x.MP4``). For many ids use `video_path_index`: one walk
    for all of them.
    """
    root = _check_root(video_root)
    for name in _candidate_names(video_id, extensions):
        path = root / name
        if path.is_file():
            return path
    if not recursive:
        return None
    return video_path_index(root, [video_id], extensions).get(video_id)


def video_path_index(
    video_root: str | os.PathLike[str],
    video_ids: Iterable[str],
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
) -> dict[str, Path]:
    """Map each of `video_ids` to its file under `video_root` (searched recursively); ids not found are absent.

    One walk of the folder tree (sorted, so the result is deterministic; symlinked folders are followed once),
    then a dictionary lookup of each id's candidate names (see `find_video`), exact names first, then with the
    extension matched case-insensitively (``x.MP4``). If the same file name occurs in two folders, the first in
    sorted walk order wins (top level before sub-folders).
    """
    root = _check_root(video_root)
    exact: dict[str, Path] = {}
    folded: dict[str, Path] = {}
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            exact.setdefault(name, Path(dirpath) / name)
            folded.setdefault(_name_key(name), Path(dirpath) / name)
    index: dict[str, Path] = {}
    for vid in video_ids:
        names = _candidate_names(vid, extensions)
        path = next((exact[n] for n in names if n in exact), None)
        if path is None:
            path = next((folded[n] for n in names if n in folded), None)
        if path is not None:
            index[vid] = path
    return index
