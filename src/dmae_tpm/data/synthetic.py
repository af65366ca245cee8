"""The embedded default benchmark: a synthetic text-video retrieval dataset with hard negatives by design.

A video is a sequence of events on a plain background; an event is one coloured shape performing one motion
(moves left / right / up / down, grows, shrinks, stays still) for 2-3 seconds. Videos come in *families*: a
base video and members that each differ from the base in exactly one thing (one attribute of one event, one
whole event, the order of two events, or the background), so every caption has hard negatives among its
family. Captions come from a small English grammar with synonyms and function words, at varying detail:
full (every event) or partial (one or two events only: hard positives that match only part of the frames).
Every evaluation caption is checked with `caption_matches` against every other video of its split and made
more detailed until it matches its own video only, so the ceiling is 100% R@1.

`generate(cfg, out_dir)` writes the dataset in MSR-VTT layout (``MSRVTT_data.json``, ``MSRVTT_train.9k.csv``,
``MSRVTT_JSFUSION_test.csv``) or MSVD layout (``raw-captions.pkl``, ``{train,val,test}_list.txt``), H.264 mp4s
under ``videos/`` and ``synthetic_meta.json`` (config, per-video structured content, captions with their
structure); the meta file is written last and the folder is renamed into place, so a dataset is complete iff
its meta file exists. Everything is a deterministic function of the config (``workers`` aside). The grammar,
knobs and layout are documented in ``data/SYNTHETIC.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import csv
import dataclasses
import io
import json
import logging
import os
import pickle
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "FORMAT_VERSION",
    "META_NAME",
    "MOTIONS",
    "MUTATIONS",
    "PRESETS",
    "SHAPES",
    "SIZES",
    "SyntheticConfig",
    "caption_matches",
    "caption_tokens",
    "differences",
    "generate",
    "main",
    "object_masks",
    "read_meta",
    "render_caption",
    "render_video",
]

FORMAT_VERSION = 1
META_NAME = "synthetic_meta.json"

# ----- vocabulary of the visual world ---------------------------------------------------------------------------
# Saturated, mutually distant colours (they survive yuv420p chroma subsampling and a 2x downscale). The first
# `num_colours` / `num_backgrounds` / `num_shapes` / `num_motions` entries are used.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 190, 50),
    "blue": (40, 80, 240),
    "yellow": (240, 220, 30),
    "white": (240, 240, 240),
    "purple": (150, 50, 210),
    "orange": (250, 140, 20),
    "cyan": (20, 210, 220),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (15, 15, 15),
    "gray": (110, 110, 110),
    "brown": (95, 60, 30),
    "navy": (20, 25, 85),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "bar", "diamond")
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "grows", "shrinks", "still")
SIZES: tuple[str, ...] = ("small", "big")
MUTATIONS: tuple[str, ...] = ("colour", "shape", "motion", "size", "event", "order", "background")
_SIZE_MOTIONS = ("grows", "shrinks")  # motions whose size is given by the motion (event size is None)

# Geometry, as fractions of the frame side: object extent for small / big objects, start -> end extent of
# grows (shrinks reversed), travel of the moves, lanes across the travel direction.
_EXTENT = {"small": 0.30, "big": 0.44}
_GROW = (0.22, 0.50)
_TRAVEL = (0.75, 0.25)
_LANES = (0.3, 0.5, 0.7)

# ----- vocabulary of the captions -------------------------------------------------------------------------------
_COLOUR_WORDS = {c: (c,) for c in COLOURS} | {"purple": ("purple", "violet")}
_BACKGROUND_WORDS = {"black": ("black",), "gray": ("gray", "grey"), "brown": ("brown",), "navy": ("navy",)}
_SHAPE_WORDS = {
    "circle": ("circle", "disc", "round shape"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "cross": ("cross", "plus sign"),
    "bar": ("bar", "stripe"),
    "diamond": ("diamond", "rhombus"),
}
_GENERIC_NOUNS = ("object", "shape", "thing")
_SIZE_WORDS = {"small": ("small", "little"), "big": ("big", "large")}
# (finite verb phrase, gerund phrase) per motion; None = the motion is not described.
_MOTION_WORDS: dict[str | None, tuple[tuple[str, str], ...]] = {
    "left": (
        ("moves left", "moving left"),
        ("moves to the left", "moving to the left"),
        ("slides to the left", "sliding to the left"),
        ("goes left", "going left"),
    ),
    "right": (
        ("moves right", "moving right"),
        ("moves to the right", "moving to the right"),
        ("slides to the right", "sliding to the right"),
        ("goes right", "going right"),
    ),
    "up": (
        ("moves up", "moving up"),
        ("rises", "rising"),
        ("slides upward", "sliding upward"),
        ("goes up", "going up"),
    ),
    "down": (
        ("moves down", "moving down"),
        ("falls", "falling"),
        ("slides downward", "sliding downward"),
        ("drops down", "dropping down"),
    ),
    "grows": (("grows", "growing"), ("gets bigger", "getting bigger"), ("expands", "expanding")),
    "shrinks": (("shrinks", "shrinking"), ("gets smaller", "getting smaller"), ("contracts", "contracting")),
    "still": (
        ("stays still", "staying still"),
        ("does not move", "not moving"),
        ("remains in place", "remaining in place"),
    ),
    None: (("appears", "appearing"), ("shows up", "showing up"), ("is shown", "being shown")),
}
_FILLERS = ("in this video", "in this clip,", "the video shows that", "here", "we can see that", "in the animation,")
_COUNT_PREFIXES = (
    "{n} things happen one after another:",
    "there are {n} events:",
    "the clip has {n} parts:",
    "{n} objects appear in turn:",
)
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_SPLIT_CODES = {"train": 1, "val": 2, "test": 3}


# ----- config ---------------------------------------------------------------------------------------------------


def _default_workers() -> int:
    return min(4, os.cpu_count() or 1)


@dataclass
class SyntheticConfig:
    """All knobs of the generator (every field has a default; see data/SYNTHETIC.md for their effect).

    Sizes: ``num_*_families`` families of ``family_size`` videos per split (val: MSVD only). Videos have
    ``events_per_video`` (inclusive range, drawn per family) events of ``event_seconds`` (inclusive range, whole
    seconds, drawn per event) at ``fps`` frames per second, ``frame_size`` x ``frame_size`` pixels.
    Captions: ``captions_per_video`` per train video (None: 5 for MSR-VTT, 8 for MSVD; also the number per
    val/test video for MSVD, while MSR-VTT test videos get one). A train caption is full (mentions every event)
    with probability ``p_full_caption``, else partial (one or two events); in partial captions each of colour,
    shape and motion of a mention is left out with probability ``p_drop_attribute`` (at least one is kept).
    ``p_size_word`` / ``p_background_word`` / ``p_count_words``: the size adjective / the background / the
    number of events is stated; ``p_unordered``: a multi-event caption states no order; ``p_filler``: a filler
    prefix ("in this video", ...). Evaluation captions start full with probability ``test_detail`` (else from
    one event, attributes possibly dropped) and get detail added until they match their own video only.
    ``max_caption_words``: captions longer than this (words + punctuation) are re-worded (same content) if
    possible. World: the first ``num_colours`` / ``num_shapes`` / ``num_motions`` / ``num_backgrounds`` of
    COLOURS / SHAPES / MOTIONS / BACKGROUNDS; ``mutations``: the kinds of family differences. Nuisances:
    ``p_distractor`` (a small static undescribed object), ``noise`` (uniform per-pixel noise amplitude, 0-255
    scale), ``position_jitter`` (pixels, per frame). Encoding: ``crf`` of libx264 (preset ultrafast).
    ``workers``: processes rendering/encoding videos (does not change the output).
    """

    seed: int = 0
    format: str = "msrvtt"
    num_train_families: int = 300
    num_val_families: int = 10
    num_test_families: int = 200  # 1,000 test videos, as MSR-VTT 1k-A: R@1 SE ~1.3 points, not 2.3
    family_size: int = 5
    events_per_video: tuple[int, int] = (2, 3)
    event_seconds: tuple[int, int] = (2, 3)
    fps: int = 4
    frame_size: int = 64
    captions_per_video: int | None = None
    p_full_caption: float = 0.4
    p_drop_attribute: float = 0.2
    p_size_word: float = 0.3
    p_background_word: float = 0.3
    p_count_words: float = 0.15
    p_unordered: float = 0.15
    p_filler: float = 0.4
    test_detail: float = 0.25
    max_caption_words: int = 29
    num_colours: int = 6
    num_shapes: int = 5
    num_motions: int = 7
    num_backgrounds: int = 3
    mutations: tuple[str, ...] = MUTATIONS
    p_distractor: float = 0.2
    noise: int = 3
    position_jitter: int = 1
    crf: int = 23
    workers: int = field(default_factory=_default_workers)

    def __post_init__(self) -> None:
        for name in ("events_per_video", "event_seconds", "mutations"):
            value = getattr(self, name)
            if isinstance(value, Sequence) and not isinstance(value, (str, tuple)):  # list, OmegaConf ListConfig
                setattr(self, name, tuple(value))
        if self.format not in ("msrvtt", "msvd"):
            raise ValueError(f"SyntheticConfig.format must be 'msrvtt' or 'msvd', got {self.format!r}")
        ints = {
            "seed": 0,
            "num_train_families": 1,
            "num_val_families": 0,
            "num_test_families": 1,
            "family_size": 1,
            "fps": 1,
            "frame_size": 16,
            "max_caption_words": 8,
            "num_colours": 2,
            "num_shapes": 2,
            "num_motions": 2,
            "num_backgrounds": 1,
            "noise": 0,
            "position_jitter": 0,
            "crf": 0,
            "workers": 1,
        }
        for name, low in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"SyntheticConfig.{name} must be an int >= {low}, got {value!r}")
        for name, pool in (
            ("num_colours", COLOURS),
            ("num_shapes", SHAPES),
            ("num_motions", MOTIONS),
            ("num_backgrounds", BACKGROUNDS),
        ):
            if getattr(self, name) > len(pool):
                raise ValueError(f"SyntheticConfig.{name} must be <= {len(pool)}, got {getattr(self, name)}")
        if self.crf > 51 or self.noise > 64:
            raise ValueError(f"SyntheticConfig: crf must be <= 51 and noise <= 64, got {self.crf}, {self.noise}")
        for name, low in (("events_per_video", 1), ("event_seconds", 1)):
            value = getattr(self, name)
            if (
                not isinstance(value, tuple)
                or len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
                or not low <= value[0] <= value[1]
            ):
                raise ValueError(
                    f"SyntheticConfig.{name} must be (min, max) ints with {low} <= min <= max, got {value!r}"
                )
        if self.events_per_video[1] > min(self.num_colours * self.num_shapes, 10):
            raise ValueError("SyntheticConfig.events_per_video max exceeds the distinct (colour, shape) objects")
        if self.captions_per_video is not None and (
            isinstance(self.captions_per_video, bool)
            or not isinstance(self.captions_per_video, int)
            or self.captions_per_video < 1
        ):
            raise ValueError(
                f"SyntheticConfig.captions_per_video must be None or an int >= 1, got {self.captions_per_video!r}"
            )
        for f in dataclasses.fields(self):
            if f.name.startswith("p_") or f.name == "test_detail":
                value = getattr(self, f.name)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                    raise ValueError(f"SyntheticConfig.{f.name} must be a probability in [0, 1], got {value!r}")
        bad = [m for m in self.mutations if m not in MUTATIONS]
        if bad or not self.mutations:
            raise ValueError(
                f"SyntheticConfig.mutations must be a non-empty subset of {MUTATIONS}, got {self.mutations!r}"
            )

    @property
    def resolved_captions_per_video(self) -> int:
        if self.captions_per_video is not None:
            return self.captions_per_video
        return 5 if self.format == "msrvtt" else 8

    @classmethod
    def preset(cls, name: str = "default", **overrides: Any) -> SyntheticConfig:
        """The named size preset (``PRESETS``) with `overrides` applied."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def identity(self) -> dict[str, Any]:
        """The fields that determine the output (all but ``workers``), JSON-normalised; stored in the meta file."""
        data = dataclasses.asdict(self)
        data.pop("workers")
        return json.loads(json.dumps(data))


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # For tests: 9 train, 3 val, 6 test videos of 2 one-second events; runs in well under a second, in-process.
    "tiny": {
        "num_train_families": 3,
        "num_val_families": 1,
        "num_test_families": 2,
        "family_size": 3,
        "events_per_video": (2, 2),
        "event_seconds": (1, 1),
        "captions_per_video": 3,
        "workers": 1,
    },
}


# ----- structured content ---------------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _geometry(rng: np.random.Generator, motion: str, size: str | None) -> dict[str, float]:
    """Start/end centre (x, y) and extent s of an event's object, as fractions of the frame side."""
    lane = float(_pick(rng, _LANES)) + float(rng.uniform(-0.04, 0.04))
    extent = _EXTENT.get(size or "", 0.0)
    if motion in ("left", "right", "up", "down"):
        a, b = _TRAVEL if motion in ("left", "up") else _TRAVEL[::-1]
        if motion in ("left", "right"):
            g = {"x0": a, "x1": b, "y0": lane, "y1": lane}
        else:
            g = {"x0": lane, "x1": lane, "y0": a, "y1": b}
        g |= {"s0": extent, "s1": extent}
    elif motion == "still":
        x, y = (float(v) for v in rng.uniform(0.3, 0.7, size=2))
        g = {"x0": x, "x1": x, "y0": y, "y1": y, "s0": extent, "s1": extent}
    else:
        x, y = (float(v) for v in rng.uniform(0.4, 0.6, size=2))
        s0, s1 = _GROW if motion == "grows" else _GROW[::-1]
        g = {"x0": x, "x1": x, "y0": y, "y1": y, "s0": s0, "s1": s1}
    return {k: round(v, 4) for k, v in g.items()}


class _World:
    """The parts of the palettes a config uses, and samplers of events / backgrounds / mutations."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        self.cfg = cfg
        self.colours = list(COLOURS)[: cfg.num_colours]
        self.shapes = list(SHAPES[: cfg.num_shapes])
        self.motions = list(MOTIONS[: cfg.num_motions])
        self.backgrounds = list(BACKGROUNDS)[: cfg.num_backgrounds]

    def event(self, rng: np.random.Generator, taken: set[tuple[str, str]], seconds: int | None = None) -> dict:
        while True:
            colour, shape = _pick(rng, self.colours), _pick(rng, self.shapes)
            if (colour, shape) not in taken:
                break
        motion = _pick(rng, self.motions)
        return self._finish(rng, {"colour": colour, "shape": shape, "motion": motion}, seconds)

    def _finish(self, rng: np.random.Generator, e: dict, seconds: int | None, size: str | None = None) -> dict:
        if e["motion"] in _SIZE_MOTIONS:
            size = None
        elif size is None:
            size = _pick(rng, SIZES)
        lo, hi = self.cfg.event_seconds
        seconds = int(rng.integers(lo, hi + 1)) if seconds is None else seconds
        return {
            "colour": e["colour"],
            "shape": e["shape"],
            "motion": e["motion"],
            "size": size,
            "seconds": seconds,
            **_geometry(rng, e["motion"], size),
        }

    def base(self, rng: np.random.Generator) -> dict:
        lo, hi = self.cfg.events_per_video
        num_events = int(rng.integers(lo, hi + 1))
        events: list[dict] = []
        for _ in range(num_events):
            events.append(self.event(rng, {(e["colour"], e["shape"]) for e in events}))
        return {"background": _pick(rng, self.backgrounds), "events": events}

    def applicable(self, video: dict) -> list[str]:
        """The mutation kinds (of cfg.mutations) that can change `video`."""
        events = video["events"]
        ok = {
            "colour": len(self.colours) > 1,
            "shape": len(self.shapes) > 1,
            "motion": len(self.motions) > 1,
            "size": any(e["size"] is not None for e in events),
            "event": True,
            "order": len(events) > 1,
            "background": len(self.backgrounds) > 1,
        }
        return [k for k in self.cfg.mutations if ok[k]]

    def mutate(self, rng: np.random.Generator, base: dict, kind: str) -> tuple[dict, dict] | None:
        """A copy of `base` differing in one thing of `kind`, and the mutation record; None if that failed."""
        video = copy.deepcopy(base)
        events = video["events"]
        if kind == "background":
            video["background"] = _pick(rng, [b for b in self.backgrounds if b != base["background"]])
            return video, {"kind": kind, "event": None}
        if kind == "order":
            i = int(rng.integers(len(events) - 1))
            events[i], events[i + 1] = events[i + 1], events[i]
            return video, {"kind": kind, "event": i}
        candidates = [i for i, e in enumerate(events) if kind != "size" or e["size"] is not None]
        i = _pick(rng, candidates)
        old = events[i]
        taken = {(e["colour"], e["shape"]) for j, e in enumerate(events) if j != i}
        if kind == "event":
            for _ in range(100):
                new = self.event(rng, taken, seconds=old["seconds"])
                if sum(new[a] != old[a] for a in ("colour", "shape", "motion")) >= 2:
                    break
            else:
                return None
        elif kind in ("colour", "shape"):
            if kind == "colour":
                choices = [c for c in self.colours if c != old["colour"] and (c, old["shape"]) not in taken]
            else:
                choices = [s for s in self.shapes if s != old["shape"] and (old["colour"], s) not in taken]
            if not choices:
                return None
            new = dict(old)
            new[kind] = _pick(rng, choices)
        elif kind == "motion":
            motion = _pick(rng, [m for m in self.motions if m != old["motion"]])
            size = old["size"] if motion not in _SIZE_MOTIONS else None
            new = self._finish(rng, {**old, "motion": motion}, old["seconds"], size)
        else:  # size
            size = "big" if old["size"] == "small" else "small"
            new = {**old, "size": size}
            new |= {"s0": _EXTENT[size], "s1": _EXTENT[size]}
        events[i] = new
        return video, {"kind": kind, "event": i}


def _signature(video: dict) -> str:
    """The describable content of a video: background and (colour, shape, motion, size) of its events in order."""
    return json.dumps(
        [video["background"], [[e[a] for a in ("colour", "shape", "motion", "size")] for e in video["events"]]]
    )


def differences(a: dict, b: dict) -> list[str]:
    """The describable differences between videos `a` and `b` (meta entries), as short strings.

    One string per differing background, per differing attribute of an event at the same position, ``"order"``
    when the events are the same but in another order, ``"count"`` when the numbers of events differ.
    """
    out = ["background"] if a["background"] != b["background"] else []
    ea, eb = a["events"], b["events"]
    if len(ea) != len(eb):
        return [*out, "count"]
    keys = ("colour", "shape", "motion", "size")
    ta = [tuple(e[k] for k in keys) for e in ea]
    tb = [tuple(e[k] for k in keys) for e in eb]
    if ta != tb and sorted(ta, key=str) == sorted(tb, key=str):
        return [*out, "order"]
    for i, (x, y) in enumerate(zip(ta, tb, strict=True)):
        out += [f"event{i}.{k}" for k, u, v in zip(keys, x, y, strict=True) if u != v]
    return out


# ----- caption structures and the matcher ------------------------------------------------------------------------


_ATTRIBUTES = ("colour", "shape", "motion", "size")


def _mention_matches(m: dict, e: dict) -> bool:
    for a in _ATTRIBUTES:
        value = m.get(a)
        if value is not None and value != e[a]:
            return False
    return True


def caption_matches(caption: dict, video: dict) -> bool:
    """Whether the caption structure `caption` is true of the video structure `video`.

    `caption`: ``{"events": [mention, ...], "ordered": bool, "background": str | None, "num_events": int | None}``
    with mentions ``{"colour", "shape", "motion", "size"}`` (None: not stated), listed in the temporal order the
    caption asserts when ``ordered``. `video`: a meta entry (``background``, ``events``). The caption is true iff
    the stated background and number of events agree and the mentions map one-to-one onto events that have
    every stated attribute -- order-preserving (a subsequence, not necessarily contiguous) when ``ordered``.
    """
    if caption.get("background") is not None and caption["background"] != video["background"]:
        return False
    events = video["events"]
    if caption.get("num_events") is not None and caption["num_events"] != len(events):
        return False
    mentions = caption["events"]
    if len(mentions) > len(events):
        return False
    if len(mentions) == 1:
        return any(_mention_matches(mentions[0], e) for e in events)
    if caption.get("ordered", False):
        i = 0  # greedy leftmost matching is exact for subsequences with per-element predicates
        for m in mentions:
            while i < len(events) and not _mention_matches(m, events[i]):
                i += 1
            if i == len(events):
                return False
            i += 1
        return True
    # unordered: a one-to-one assignment (bipartite matching by augmenting paths; mentions are few)
    owner: dict[int, int] = {}

    def assign(j: int, seen: set[int]) -> bool:
        for i, e in enumerate(events):
            if i not in seen and _mention_matches(mentions[j], e):
                seen.add(i)
                if i not in owner or assign(owner[i], seen):
                    owner[i] = j
                    return True
        return False

    return all(assign(j, set()) for j in range(len(mentions)))


def _mention(e: dict, keep: Sequence[str] = ("colour", "shape", "motion")) -> dict:
    return {a: (e[a] if a in keep else None) for a in ("colour", "shape", "motion", "size")}


def _sample_struct(rng: random.Random, cfg: SyntheticConfig, video: dict, full: bool) -> tuple[dict, list[int]]:
    """A caption structure for `video` and the indices of the events it mentions."""
    events = video["events"]
    if full or len(events) == 1:
        idx = list(range(len(events)))
    else:
        k = rng.randint(1, min(2, len(events) - 1))
        idx = sorted(rng.sample(range(len(events)), k))
    mentions = []
    for i in idx:
        keep = ["colour", "shape", "motion"]
        if not full:
            keep = [a for a in keep if rng.random() >= cfg.p_drop_attribute] or [rng.choice(keep)]
        m = _mention(events[i], keep)
        if events[i]["size"] is not None and rng.random() < cfg.p_size_word:
            m["size"] = events[i]["size"]
        mentions.append(m)
    struct = {
        "events": mentions,
        "ordered": len(mentions) > 1 and rng.random() >= cfg.p_unordered,
        "background": video["background"] if rng.random() < cfg.p_background_word else None,
        "num_events": len(events) if full and len(events) > 1 and rng.random() < cfg.p_count_words else None,
    }
    return struct, idx


def _refinements(struct: dict, idx: list[int], video: dict) -> list[tuple]:
    out: list[tuple] = []
    for j, (m, i) in enumerate(zip(struct["events"], idx, strict=True)):
        out += [
            ("attr", j, a)
            for a in ("colour", "shape", "motion", "size")
            if m[a] is None and video["events"][i][a] is not None
        ]
    out += [("event", i) for i in range(len(video["events"])) if i not in idx]
    if len(struct["events"]) > 1 and not struct["ordered"]:
        out.append(("ordered",))
    if struct["background"] is None:
        out.append(("background",))
    if struct["num_events"] is None and len(video["events"]) > 1:
        out.append(("count",))
    return out


def _refine(struct: dict, idx: list[int], video: dict, step: tuple) -> tuple[dict, list[int]]:
    struct, idx = copy.deepcopy(struct), list(idx)
    if step[0] == "attr":
        _, j, a = step
        struct["events"][j][a] = video["events"][idx[j]][a]
    elif step[0] == "event":
        i = step[1]
        pos = sum(1 for k in idx if k < i)
        idx.insert(pos, i)
        struct["events"].insert(pos, _mention(video["events"][i]))
        if len(idx) == 2:
            struct["ordered"] = True
    elif step[0] == "ordered":
        struct["ordered"] = True
    elif step[0] == "background":
        struct["background"] = video["background"]
    else:
        struct["num_events"] = len(video["events"])
    return struct, idx


def _unique_struct(
    rng: random.Random, cfg: SyntheticConfig, video: dict, pool: Sequence[dict], avoid: set[str]
) -> dict:
    """A caption structure true of `video` and of no other video in `pool` (detail added until unique)."""
    for _attempt in range(20):
        struct, idx = _sample_struct(rng, cfg, video, full=rng.random() < cfg.test_detail)
        others = [v for v in pool if v is not video and caption_matches(struct, v)]
        while others:
            steps = _refinements(struct, idx, video)
            if not steps:
                raise RuntimeError(
                    f"video {video['video_id']} has the same describable content as {others[0]['video_id']}"
                )
            scored = []
            for step in steps:
                s, i = _refine(struct, idx, video, step)
                scored.append((s, i, [v for v in others if caption_matches(s, v)]))
            reducing = [t for t in scored if len(t[2]) < len(others)]
            struct, idx, others = rng.choice(reducing or scored)
        key = json.dumps(struct, sort_keys=True)
        if key not in avoid:
            break
    avoid.add(key)
    return struct


# ----- caption text ---------------------------------------------------------------------------------------------


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(rng: random.Random, m: dict) -> str:
    size = rng.choice(_SIZE_WORDS[m["size"]]) if m.get("size") else None
    colour = rng.choice(_COLOUR_WORDS[m["colour"]]) if m.get("colour") else None
    shape = rng.choice(_SHAPE_WORDS[m["shape"]]) if m.get("shape") else None
    if not (size or colour or shape):
        return rng.choice(("something", "an object", "a shape"))
    noun = shape or rng.choice(_GENERIC_NOUNS)
    if colour and shape and not size and rng.random() < 0.15:
        return f"{_article(noun)} {noun} that is {colour}"
    words = [w for w in (size, colour) if w] + [noun]
    return f"{_article(words[0])} {' '.join(words)}"


def _clause(rng: random.Random, m: dict, simple: bool = False) -> str:
    """A finite clause stating mention `m`; `simple`: only the subject-verb forms (for after/before clauses)."""
    np_ = _noun_phrase(rng, m)
    verb, gerund = rng.choice(_MOTION_WORDS[m.get("motion")])
    u = rng.random()
    form = (u >= 0.75) if simple else sum(u >= c for c in (0.4, 0.55, 0.75, 0.85))
    return (
        f"{np_} {verb}",
        f"{np_} is {gerund}",
        f"there is {np_} that {verb}",
        f"{np_} can be seen {gerund}",
        f"we see {np_} {gerund}",
    )[int(form)]


def _ordered_text(rng: random.Random, mentions: list[dict]) -> str:
    if len(mentions) == 2:
        style = rng.randrange(8)
        if style < 5:
            a, b = (_clause(rng, m) for m in mentions)
            return (
                f"{a}, then {b}",
                f"{a} and then {b}",
                f"first {a}, and after that {b}",
                f"{a}; afterwards {b}",
                f"at first {a}, later {b}",
            )[style]
        a, b = (_clause(rng, m, simple=True) for m in mentions)
        return (f"after {a}, {b}", f"{b} after {a}", f"{a} before {b}")[style - 5]
    clauses = [_clause(rng, m) for m in mentions]
    first, *middle, last = clauses
    style = rng.randrange(3)
    if style == 0:
        return "first " + ", then ".join([first, *middle]) + f", and finally {last}"
    if style == 1:
        return ", then ".join(clauses)
    return f"{first}, " + ", ".join(f"after that {c}" for c in middle) + f", and at the end {last}"


def _unordered_text(rng: random.Random, mentions: list[dict]) -> str:
    if rng.random() < 0.5:
        parts = []
        for m in mentions:
            parts.append(f"{_noun_phrase(rng, m)} {rng.choice(_MOTION_WORDS[m.get('motion')])[1]}")
        head = rng.choice(("the video shows", "we see", "there is"))
        return f"{head} " + ", ".join(parts[:-1]) + f" and {parts[-1]}"
    clauses = [_clause(rng, m) for m in mentions]
    return ", ".join(clauses[:-1]) + f", and also {clauses[-1]}"


def render_caption(struct: dict, rng: random.Random, filler_prob: float = 0.4) -> str:
    """One English sentence (lowercase, no final period) stating exactly the caption structure `struct`."""
    mentions = struct["events"]
    if len(mentions) == 1:
        body = _clause(rng, mentions[0])
    elif struct["ordered"]:
        body = _ordered_text(rng, mentions)
    else:
        body = _unordered_text(rng, mentions)
    if struct.get("num_events"):
        body = rng.choice(_COUNT_PREFIXES).format(n=_NUMBER_WORDS[struct["num_events"]]) + " " + body
    if struct.get("background"):
        bg = rng.choice(_BACKGROUND_WORDS[struct["background"]])
        if rng.random() < 0.5 or struct.get("num_events"):
            body = f"{rng.choice(('on', 'against'))} a {bg} background, {body}"
        else:
            body = f"{body}{rng.choice((' on', ' against', ', all on'))} a {bg} background"
    if rng.random() < filler_prob and not struct.get("num_events") and not body.startswith("we see"):
        body = f"{rng.choice(_FILLERS)} {body}"
    return " ".join(body.split()).lower()


def caption_tokens(text: str) -> list[str]:
    """Lowercase word tokens of a caption, punctuation dropped (the MSVD raw-captions.pkl form)."""
    return re.findall(r"[a-z0-9]+", text.lower())


def _length(text: str) -> int:
    """Words + punctuation marks: within 1-2 of the CLIP BPE token count for this grammar's vocabulary."""
    return len(re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text))


def _compact_caption(struct: dict) -> str:
    """The shortest rendering of `struct` (shortest synonyms, no filler, ", then"), for long content."""

    def short(options: Sequence[str]) -> str:
        return min(options, key=_length)

    clauses = []
    for m in struct["events"]:
        words = [short(table[m[a]]) for a, table in (("size", _SIZE_WORDS), ("colour", _COLOUR_WORDS)) if m.get(a)]
        if m.get("shape") or words:
            words.append(short(_SHAPE_WORDS[m["shape"]]) if m.get("shape") else short(_GENERIC_NOUNS))
            subject = f"{_article(words[0])} {' '.join(words)}"
        else:
            subject = "something"
        clauses.append(f"{subject} {min(_MOTION_WORDS[m.get('motion')], key=lambda p: _length(p[0]))[0]}")
    body = (", then " if struct["ordered"] else " and ").join(clauses)
    if struct.get("num_events"):
        body = f"{_NUMBER_WORDS[struct['num_events']]} events: {body}"
    if struct.get("background"):
        body = f"on a {short(_BACKGROUND_WORDS[struct['background']])} background, {body}"
    return body


def _caption(rng: random.Random, cfg: SyntheticConfig, struct: dict, detail: str, avoid: set[str]) -> dict:
    """A rendering of `struct` of at most cfg.max_caption_words units, not yet used for this video if possible.

    Random renderings are tried first; if none fits, the compact rendering is used when it is shorter.
    """
    tries = []
    for _ in range(12):
        text = render_caption(struct, rng, cfg.p_filler)
        if _length(text) <= cfg.max_caption_words and text not in avoid:
            break
        tries.append(text)
    else:
        text = min([*tries, _compact_caption(struct)], key=lambda t: (t in avoid, _length(t)))
    avoid.add(text)
    return {"text": text, "detail": detail, "struct": struct}


# ----- the dataset's structure ----------------------------------------------------------------------------------


def _split_names(cfg: SyntheticConfig) -> list[tuple[str, int]]:
    splits = [("train", cfg.num_train_families)]
    if cfg.format == "msvd" and cfg.num_val_families:
        splits.append(("val", cfg.num_val_families))
    return [*splits, ("test", cfg.num_test_families)]


def _family(
    rng: np.random.Generator, world: _World, cfg: SyntheticConfig, used: set[str]
) -> list[tuple[dict, dict | None]]:
    for _attempt in range(200):
        base = world.base(rng)
        sig = _signature(base)
        if sig in used:
            continue
        members: list[tuple[dict, dict | None]] = [(base, None)]
        seen = {sig}
        kinds: list[str] = []
        for _ in range(cfg.family_size - 1):
            for _try in range(60):
                if not kinds:  # cycle through the kinds in random order, so a family mixes kinds
                    kinds = [str(k) for k in rng.permutation(world.applicable(base))]
                out = world.mutate(rng, base, kinds.pop())
                if out is not None and _signature(out[0]) not in seen and _signature(out[0]) not in used:
                    members.append(out)
                    seen.add(_signature(out[0]))
                    break
            else:
                break
        if len(members) == cfg.family_size:
            used |= seen
            return members
    raise ValueError(
        "cannot build a family of distinct videos: the world is too small for family_size / the number of "
        "families (raise num_colours / num_shapes / num_motions / num_backgrounds or allow more mutations)"
    )


def _plan(cfg: SyntheticConfig) -> dict:
    """The structured content of every video and its captions (no pixels); deterministic in cfg."""
    world = _World(cfg)
    used: set[str] = set()
    videos: list[dict] = []
    fps = cfg.fps
    n_caps = cfg.resolved_captions_per_video
    for split, num_families in _split_names(cfg):
        split_videos = []
        for f in range(num_families):
            rng = np.random.default_rng([cfg.seed, _SPLIT_CODES[split], f])
            for member, (content, mutation) in enumerate(_family(rng, world, cfg, used)):
                start = 0
                events = []
                for e in content["events"]:
                    n = e["seconds"] * fps
                    events.append({**e, "start_frame": start, "num_frames": n})
                    start += n
                distractor = None
                if rng.random() < cfg.p_distractor:
                    corner = rng.integers(2, size=2)
                    distractor = {
                        "colour": _pick(rng, world.colours),
                        "shape": _pick(rng, world.shapes),
                        "x": round(0.12 + 0.76 * int(corner[0]), 4),
                        "y": round(0.12 + 0.76 * int(corner[1]), 4),
                        "s": 0.16,
                    }
                video = {
                    "video_id": f"video{len(videos)}",
                    "split": split,
                    "family": f"{split}-{f:04d}",
                    "member": member,
                    "mutation": mutation,
                    "background": content["background"],
                    "events": events,
                    "distractor": distractor,
                    "num_frames": start,
                    "fps": fps,
                    "frame_size": cfg.frame_size,
                    "seed": int(rng.integers(2**31 - 1)),
                    "captions": [],
                }
                videos.append(video)
                split_videos.append(video)
        # captions
        for video in split_videos:
            rng = random.Random(f"dmae_tpm.synthetic/{cfg.seed}/{video['video_id']}/captions")  # str seeds: sha512
            texts: set[str] = set()
            if split == "train":
                for _ in range(n_caps):
                    full = rng.random() < cfg.p_full_caption or len(video["events"]) == 1
                    struct, _idx = _sample_struct(rng, cfg, video, full)
                    video["captions"].append(_caption(rng, cfg, struct, "full" if full else "partial", texts))
            else:
                structs: set[str] = set()
                for _ in range(1 if cfg.format == "msrvtt" else n_caps):
                    struct = _unique_struct(rng, cfg, video, split_videos, structs)
                    full = len(struct["events"]) == len(video["events"])
                    video["captions"].append(_caption(rng, cfg, struct, "full" if full else "partial", texts))
    return {"videos": videos}


# ----- pixels ---------------------------------------------------------------------------------------------------


def _shape_mask(shape: str, cx: float, cy: float, extent: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    r = extent / 2.0
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * r
    if shape == "triangle":  # apex up
        return (dy >= -r) & (dy <= 0.8 * r) & (np.abs(dx) <= (dy + r) / 1.8)
    if shape == "cross":
        return ((np.abs(dx) <= 0.36 * r) & (np.abs(dy) <= r)) | ((np.abs(dy) <= 0.36 * r) & (np.abs(dx) <= r))
    if shape == "bar":
        return (np.abs(dx) <= r) & (np.abs(dy) <= 0.38 * r)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    raise ValueError(f"unknown shape {shape!r}")


def _draw(video: dict, noise: int, jitter: int, frames_wanted: bool) -> np.ndarray:
    """The frames (T, H, W, 3) uint8 of `video` or, if not `frames_wanted`, the main object's masks (T, H, W)."""
    side = int(video["frame_size"])
    rng = np.random.default_rng(video["seed"])
    total = int(video["num_frames"])
    shifts = rng.integers(-jitter, jitter + 1, size=(total, 2)) if jitter else np.zeros((total, 2), dtype=np.int64)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    masks = np.zeros((total, side, side), dtype=bool)
    frames = np.empty((total, side, side, 3), dtype=np.uint8)
    frames[:] = BACKGROUNDS[video["background"]]
    d = video.get("distractor")
    if d:
        frames[:, _shape_mask(d["shape"], d["x"] * side, d["y"] * side, d["s"] * side, yy, xx)] = COLOURS[d["colour"]]
    fps = int(video["fps"])
    for e in video["events"]:
        n = e["num_frames"]
        # progress p in [0, 1]: reaches 1 at the first frame of the event's last second, so the frames sampled at
        # 1 fps (the first of each second) show the whole travel / size change; held there for the last second
        span = n - fps if n > fps else n - 1
        for k in range(n):
            t = e["start_frame"] + k
            p = min(1.0, k / span) if span > 0 else 0.0
            cx = (e["x0"] + (e["x1"] - e["x0"]) * p) * side + shifts[t, 0]
            cy = (e["y0"] + (e["y1"] - e["y0"]) * p) * side + shifts[t, 1]
            extent = (e["s0"] + (e["s1"] - e["s0"]) * p) * side
            # only within the object's bounding box (faster than whole-frame masks)
            r = extent / 2 + 1
            y0, y1 = max(0, int(cy - r)), min(side, int(cy + r) + 1)
            x0, x1 = max(0, int(cx - r)), min(side, int(cx + r) + 1)
            box = _shape_mask(e["shape"], cx, cy, extent, yy[y0:y1, x0:x1], xx[y0:y1, x0:x1])
            masks[t, y0:y1, x0:x1] = box
            frames[t, y0:y1, x0:x1][box] = COLOURS[e["colour"]]
    if not frames_wanted:
        return masks
    if noise:
        noisy = frames.astype(np.int16) + rng.integers(-noise, noise + 1, size=frames.shape, dtype=np.int16)
        frames = np.clip(noisy, 0, 255).astype(np.uint8)
    return frames


def render_video(video: dict, cfg: SyntheticConfig) -> np.ndarray:
    """The uint8 frames ``(T, H, W, 3)`` of a video meta entry, exactly as encoded (before compression)."""
    return _draw(video, cfg.noise, cfg.position_jitter, True)


def object_masks(video: dict, cfg: SyntheticConfig) -> np.ndarray:
    """Bool ``(T, H, W)``: the pixels of the described (non-distractor) object in each frame of the video."""
    return _draw(video, cfg.noise, cfg.position_jitter, False)


def _encode(path: Path, frames: np.ndarray, fps: int, crf: int) -> None:
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "ultrafast"}
        stream.thread_count = 1
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_videos(job: tuple[list[dict], str, int, int, int]) -> int:
    videos, folder, noise, jitter, crf = job
    total = 0
    for video in videos:
        path = Path(folder) / f"{video['video_id']}.mp4"
        _encode(path, _draw(video, noise, jitter, True), video["fps"], crf)
        total += path.stat().st_size
    return total


# ----- files ----------------------------------------------------------------------------------------------------


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", newline="\n")


def _csv_text(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _write_annotations(cfg: SyntheticConfig, videos: list[dict], root: Path) -> None:
    by_split: dict[str, list[dict]] = {}
    for v in videos:
        by_split.setdefault(v["split"], []).append(v)
    if cfg.format == "msrvtt":
        sentences = []
        for v in videos:
            for c in v["captions"]:
                sentences.append({"caption": c["text"], "video_id": v["video_id"], "sen_id": len(sentences)})
        data = {
            "info": {
                "description": "dmae_tpm synthetic benchmark (see synthetic_meta.json)",
                "version": FORMAT_VERSION,
            },
            "videos": [{"video_id": v["video_id"], "id": int(v["video_id"][5:]), "split": v["split"]} for v in videos],
            "sentences": sentences,
        }
        _write_text(root / "MSRVTT_data.json", json.dumps(data, indent=1) + "\n")
        _write_text(
            root / "MSRVTT_train.9k.csv", _csv_text([["video_id"]] + [[v["video_id"]] for v in by_split["train"]])
        )
        rows = [["key", "vid_key", "video_id", "sentence"]]
        for n, v in enumerate(by_split["test"]):
            rows.append([f"ret{n}", f"msr{v['video_id'][5:]}", v["video_id"], v["captions"][0]["text"]])
        _write_text(root / "MSRVTT_JSFUSION_test.csv", _csv_text(rows))
    else:
        raw = {v["video_id"]: [caption_tokens(c["text"]) for c in v["captions"]] for v in videos}
        (root / "raw-captions.pkl").write_bytes(pickle.dumps(raw, protocol=4))
        for split in ("train", "val", "test"):
            _write_text(root / f"{split}_list.txt", "".join(f"{v['video_id']}\n" for v in by_split.get(split, [])))


def _counts(videos: list[dict], max_words: int) -> dict[str, Any]:
    splits = sorted({v["split"] for v in videos}, key=list(_SPLIT_CODES).index)
    words = [len(caption_tokens(c["text"])) for v in videos for c in v["captions"]]
    frames = [v["num_frames"] for v in videos]
    return {
        "videos": {s: sum(v["split"] == s for v in videos) for s in splits},
        "captions": {s: sum(len(v["captions"]) for v in videos if v["split"] == s) for s in splits},
        "families": {s: len({v["family"] for v in videos if v["split"] == s}) for s in splits},
        "partial_captions": {
            s: sum(c["detail"] == "partial" for v in videos if v["split"] == s for c in v["captions"]) for s in splits
        },
        "frames_per_video": [min(frames), max(frames)],
        "caption_words": {"mean": round(sum(words) / len(words), 2), "max": max(words)},
        "captions_over_max_words": sum(_length(c["text"]) > max_words for v in videos for c in v["captions"]),
    }


def _meta_text(meta: dict, videos: list[dict]) -> str:
    """The meta file's JSON: the header indented, then one video per line (greppable, about 3 kB each)."""
    head = json.dumps({k: v for k, v in meta.items() if k != "videos"}, indent=1)
    rows = ",\n".join(" " + json.dumps(v, separators=(",", ":")) for v in videos)
    return f'{head[:-2]},\n "videos": [\n{rows}\n ]\n}}\n'


def read_meta(out_dir: str | Path) -> dict:
    """The parsed ``synthetic_meta.json`` of a finished dataset (raises FileNotFoundError / ValueError)."""
    path = Path(out_dir) / META_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {out_dir} is not a finished synthetic dataset")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a synthetic meta file of format version {FORMAT_VERSION}")
    return meta


def _disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _finished(out_dir: Path, cfg: SyntheticConfig) -> dict | None:
    """The meta of `out_dir` if it is a finished dataset of `cfg` (meta present, same config, videos present)."""
    try:
        meta = read_meta(out_dir)
        same = meta["config"] == cfg.identity()
        videos = meta["videos"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not same or not all((out_dir / "videos" / f"{v['video_id']}.mp4").is_file() for v in videos):
        return None
    return meta


def _summary(out_dir: Path, meta: dict, seconds: float, cached: bool) -> dict[str, Any]:
    return {
        "out_dir": str(out_dir),
        "format": meta["config"]["format"],
        "seed": meta["seed"],
        "cached": cached,
        "seconds": round(seconds, 3),
        **meta["counts"],
        "disk_bytes": _disk_bytes(out_dir),
    }


def generate(cfg: SyntheticConfig, out_dir: str | Path) -> dict[str, Any]:
    """Write the dataset of `cfg` to `out_dir` (skipped if already there) and return a summary.

    If `out_dir` holds a finished dataset of the same config (``workers`` aside), nothing is written and the
    summary has ``cached: True``. Otherwise the dataset is built in a sibling ``<out_dir>.tmp-XXXX`` folder,
    with the meta file written last, and renamed to `out_dir`, replacing an earlier synthetic dataset there.
    A non-empty `out_dir` without a meta file is refused (FileExistsError), so no foreign folder is deleted.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    meta = _finished(out_dir, cfg)
    if meta is not None:
        return _summary(out_dir, meta, time.perf_counter() - start, cached=True)
    if out_dir.exists() and not (out_dir / META_NAME).is_file() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(
            f"{out_dir} exists and is not a synthetic dataset (no {META_NAME}); refusing to overwrite it -- "
            "choose another output folder or delete this one"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        videos = _plan(cfg)["videos"]
        timings = {"plan": time.perf_counter() - start}
        (tmp / "videos").mkdir()
        chunks = max(1, min(len(videos), cfg.workers * 4))
        jobs = [
            (videos[i::chunks], str(tmp / "videos"), cfg.noise, cfg.position_jitter, cfg.crf) for i in range(chunks)
        ]
        log.info("generating %d synthetic videos into %s (%d workers)", len(videos), out_dir, cfg.workers)
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="synthetic videos", unit="part", disable=not sys.stderr.isatty())
        if cfg.workers > 1 and len(videos) >= 32:
            with concurrent.futures.ProcessPoolExecutor(max_workers=cfg.workers) as pool:
                for _ in pool.map(_write_videos, jobs):
                    bar.update(1)
        else:
            for job in jobs:
                _write_videos(job)
                bar.update(1)
        bar.close()
        timings["videos"] = time.perf_counter() - start - timings["plan"]
        _write_annotations(cfg, videos, tmp)
        meta = {"format_version": FORMAT_VERSION, "seed": cfg.seed, "config": cfg.identity()}
        meta["counts"] = _counts(videos, cfg.max_caption_words)
        meta["videos"] = videos
        part = tmp / f"{META_NAME}.part"
        _write_text(part, _meta_text(meta, videos))
        os.replace(part, tmp / META_NAME)
        if out_dir.exists():
            old = out_dir.with_name(f"{out_dir.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
        timings["write"] = time.perf_counter() - start - timings["plan"] - timings["videos"]
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary = _summary(out_dir, meta, time.perf_counter() - start, cached=False)
    summary["seconds_by_stage"] = {k: round(v, 3) for k, v in timings.items()}
    return summary


# ----- command line ---------------------------------------------------------------------------------------------


def _parse_value(name: str, text: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(SyntheticConfig)}
    if name not in fields:
        raise ValueError(f"--set: unknown field {name!r}; fields: {', '.join(fields)}")
    default = SyntheticConfig().__getattribute__(name)
    if text.lower() in ("none", "null"):
        return None
    if isinstance(default, tuple):
        items = [s.strip() for s in text.strip("()[]").split(",") if s.strip()]
        return tuple(int(s) if re.fullmatch(r"-?\d+", s) else s for s in items)
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "yes")
    if isinstance(default, int) or name == "captions_per_video":
        return int(text)
    if isinstance(default, float):
        return float(text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make_synthetic",
        description="Generate the synthetic text-video retrieval benchmark (data/SYNTHETIC.md).",
        epilog="config fields for --set (default preset values): "
        + ", ".join(f"{k}={v}" for k, v in SyntheticConfig().identity().items()),
    )
    parser.add_argument("--out", required=True, help="output folder (skipped if it already holds this dataset)")
    parser.add_argument("--size", choices=sorted(PRESETS), default="default", help="size preset")
    parser.add_argument("--format", choices=("msrvtt", "msvd"), default=None, help="annotation layout")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None, help="processes for rendering/encoding videos")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    for key, value in (("format", args.format), ("seed", args.seed), ("workers", args.workers)):
        if value is not None:
            overrides[key] = value
    for item in args.set:
        if "=" not in item:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            overrides[key.strip()] = _parse_value(key.strip(), value.strip())
        except ValueError as err:
            parser.error(str(err))
    try:
        cfg = SyntheticConfig.preset(args.size, **overrides)
    except ValueError as err:
        parser.error(str(err))
    summary = generate(cfg, args.out)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
