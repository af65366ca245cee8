"""Check a benchmark on disk: annotations readable, every listed video present and (optionally) decodable.

Command line (``scripts/check_dataset.py``, or ``python -m dmae_tpm.data.check``)::

    python scripts/check_dataset.py --dataset msrvtt --annotations data/msrvtt --videos data/msrvtt/videos [--decode]

Exit status 0 when every listed video of every checked split is found (and, with ``--decode``, opens with decord,
has frames and its last frame decodes, which catches truncated downloads); 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dmae_tpm.data.annotations import (
    DATASETS,
    VIDEO_EXTENSIONS,
    AnnotationError,
    canonical_dataset,
    read_split,
    video_path_index,
)

__all__ = ["DEFAULT_SPLITS", "CheckReport", "SplitCheck", "check_dataset", "decode_check", "main"]

# Splits checked by default. MSR-VTT's "val" and ActivityNet's "test" are aliases (of test and val) and are skipped.
DEFAULT_SPLITS: dict[str, tuple[str, ...]] = {
    "msrvtt": ("train", "test"),
    "msvd": ("train", "val", "test"),
    "didemo": ("train", "val", "test"),
    "activitynet": ("train", "val"),
    "lsmdc": ("train", "val", "test"),
}


@dataclass
class SplitCheck:
    """Result of one split.

    num_listed: videos of the split (after the reader's own filtering, e.g. DiDeMo ids without descriptions).
    num_captions: captions (or paragraphs) of the split.
    num_found: listed videos with a file under the video folder.
    missing: ids without a file (the first `max_report`); num_missing: all of them.
    unreadable: (id, path, error) of found files that failed to decode (first `max_report`; only with decode);
    num_unreadable: all of them.
    annotation_error: the AnnotationError text if the split's annotations could not be read (then all else is 0).
    """

    split: str
    num_listed: int = 0
    num_captions: int = 0
    num_found: int = 0
    num_missing: int = 0
    missing: list[str] = field(default_factory=list)
    decoded: bool = False
    num_unreadable: int = 0
    unreadable: list[tuple[str, str, str]] = field(default_factory=list)
    annotation_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.annotation_error is None and self.num_missing == 0 and self.num_unreadable == 0


@dataclass
class CheckReport:
    """Per-split results of `check_dataset`; `ok` when every split is."""

    dataset: str
    annotation_root: Path
    video_root: Path
    splits: list[SplitCheck]
    decoded: bool = False
    video_root_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.video_root_error is None and all(s.ok for s in self.splits)


def decode_check(path: str | os.PathLike[str]) -> str | None:
    """None if decord opens `path`, finds frames and decodes the last one; otherwise the error, one line."""
    import decord  # lazy: only needed with --decode

    try:
        reader = decord.VideoReader(os.fspath(path), ctx=decord.cpu(0), num_threads=1)
        n = len(reader)
        if n <= 0:
            return "no frames"
        reader[n - 1]
        del reader
    except Exception as e:  # decord raises its own DECORDError, RuntimeError, ... per broken file
        text = " ".join(str(e).split()) or "no message"
        if len(text) > 300:
            text = text[:297] + "..."
        return f"{type(e).__name__}: {text}"
    return None


def check_dataset(
    dataset: str,
    annotation_root: str | os.PathLike[str],
    video_root: str | os.PathLike[str],
    splits: Sequence[str] | None = None,
    decode: bool = False,
    max_report: int = 20,
    *,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    progress: bool = True,
) -> CheckReport:
    """Read the annotations of `splits` (default: `DEFAULT_SPLITS`), find every listed video, optionally decode it.

    The video folder is walked once for all splits. With `decode`, each distinct found file is opened once with
    decord (``VideoReader(path, ctx=cpu(0), num_threads=1)``), its length checked and its last frame decoded;
    exceptions are caught per file and reported, never raised. A tqdm bar shows the decoding progress.
    """
    name = canonical_dataset(dataset)
    annotation_root = Path(annotation_root)
    video_root = Path(video_root)
    split_names = list(splits) if splits else list(DEFAULT_SPLITS[name])
    checks: list[SplitCheck] = []
    read: dict[str, list[str]] = {}
    for split in split_names:
        check = SplitCheck(split)
        checks.append(check)
        try:
            data = read_split(name, annotation_root, split)
        except AnnotationError as e:
            check.annotation_error = str(e)
            continue
        check.num_listed, check.num_captions = data.num_videos, data.num_captions
        read[split] = data.video_ids

    report = CheckReport(name, annotation_root, video_root, checks, decoded=decode)
    all_ids = list(dict.fromkeys(v for ids in read.values() for v in ids))
    index = {}
    if not video_root.is_dir():
        report.video_root_error = f"{video_root}: video folder not found; pass the folder that holds the videos"
    elif all_ids:
        index = video_path_index(video_root, all_ids, extensions)

    errors: dict[Path, str | None] = {}
    if decode and index:
        from tqdm import tqdm

        paths = list(dict.fromkeys(index.values()))
        for path in tqdm(paths, desc=f"decoding {name}", unit="video", disable=not progress, file=sys.stderr):
            errors[path] = decode_check(path)

    for check in checks:
        if check.split not in read:
            continue
        check.decoded = decode
        for vid in read[check.split]:
            path = index.get(vid)
            if path is None:
                check.num_missing += 1
                if len(check.missing) < max_report:
                    check.missing.append(vid)
                continue
            check.num_found += 1
            error = errors.get(path)
            if error is not None:
                check.num_unreadable += 1
                if len(check.unreadable) < max_report:
                    check.unreadable.append((vid, str(path), error))
    return report


def _shown(listed: int, total: int) -> str:
    return "all" if listed >= total else f"first {listed} of {total}"


def format_report(report: CheckReport) -> str:
    """The human-readable report that `main` prints."""
    lines = [f"Dataset {report.dataset}: annotations {report.annotation_root}, videos {report.video_root}"]
    if report.video_root_error:
        lines.append(f"  ERROR: {report.video_root_error}")
    for s in report.splits:
        if s.annotation_error is not None:
            lines.append(f"[{s.split}] ERROR reading annotations: {s.annotation_error}")
            continue
        status = "ok" if s.ok else "PROBLEMS"
        decoded = f", {s.num_unreadable} unreadable" if s.decoded else " (not decoded; add --decode to test files)"
        lines.append(
            f"[{s.split}] {status}: {s.num_listed} videos listed, {s.num_captions} captions; "
            f"{s.num_found} found, {s.num_missing} missing{decoded}"
        )
        if s.num_missing:
            lines.append(f"  missing ({_shown(len(s.missing), s.num_missing)}): {', '.join(s.missing)}")
        if s.num_unreadable:
            lines.append(f"  unreadable ({_shown(len(s.unreadable), s.num_unreadable)}):")
            lines.extend(f"    {vid} ({path}): {error}" for vid, path, error in s.unreadable)
    if report.ok:
        lines.append("OK: every listed video was found" + (" and decodes." if report.decoded else "."))
    else:
        lines.append("FAILED: fix the problems above (file layout and sources: data/README.md).")
    return "\n".join(lines)


def _parse_splits(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    return [s for v in values for s in v.split(",") if s]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0: all found and readable, 1: otherwise)."""
    parser = argparse.ArgumentParser(
        prog="check_dataset.py",
        description="Check that a benchmark's annotations read and that every listed video is present "
        "(and, with --decode, decodable). Layouts: data/README.md.",
    )
    parser.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    parser.add_argument("--annotations", required=True, type=Path, help="folder with the annotation files")
    parser.add_argument("--videos", required=True, type=Path, help="folder with the videos (searched recursively)")
    parser.add_argument(
        "--splits",
        nargs="+",
        help="splits to check, space- or comma-separated (default: msrvtt train test; msvd/didemo/lsmdc train val "
        "test; activitynet train val)",
    )
    parser.add_argument("--decode", action="store_true", help="open every found video with decord (slow)")
    parser.add_argument("--max-report", type=int, default=20, help="list at most this many ids per problem")
    args = parser.parse_args(argv)
    try:
        dataset = canonical_dataset(args.dataset)
    except ValueError as e:
        parser.error(str(e))
    splits = _parse_splits(args.splits)
    for split in splits or []:
        if split not in ("train", "val", "test"):
            parser.error(f"unknown split {split!r}; expected train, val or test")
    report = check_dataset(
        dataset, args.annotations, args.videos, splits=splits, decode=args.decode, max_report=args.max_report
    )
    print(format_report(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
