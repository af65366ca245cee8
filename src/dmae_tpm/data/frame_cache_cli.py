"""``dmae-frame-cache``: its command line, read before torch loads (``--help`` and a wrong flag answer at once);
the cache itself is `frame_cache.build_frame_cache`."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dmae-frame-cache",
        description="Decode the videos of some splits once; point data.frame_cache at the output.",
    )
    p.add_argument("--dataset", required=True, help="annotation format: msrvtt | msvd | didemo | activitynet | lsmdc")
    p.add_argument("--annotations", required=True, help="folder with the annotation files")
    p.add_argument("--videos", required=True, help="folder with the video files")
    p.add_argument("--splits", nargs="+", default=["train", "test"])
    p.add_argument("--out", required=True, help="cache folder to create")
    p.add_argument("--image-size", type=int, default=224, help="the backbone's input size (224 for ViT-B)")
    p.add_argument("--max-frames", type=int, default=12, help="model.max_frames (12 MSR-VTT/MSVD, 64 others)")
    p.add_argument("--fps", type=float, default=1.0)
    p.add_argument("--workers", type=int, default=4)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .annotations import read_split, video_path_index
    from .config import FrameSamplingConfig
    from .frame_cache import build_frame_cache

    splits = (read_split(args.dataset, args.annotations, split).video_ids for split in args.splits)
    ids = list(dict.fromkeys(v for split_ids in splits for v in split_ids))
    summary = build_frame_cache(
        args.out,
        ids,
        video_path_index(args.videos, ids),
        FrameSamplingConfig(args.fps, args.max_frames),
        (args.image_size, args.image_size),
        args.workers,
    )
    print(json.dumps(summary))
    return 0
