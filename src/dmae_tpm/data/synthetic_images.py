"""Image-text pairs of the synthetic world: what pre-training the tiny CLIP sees (issue 12, `clip_pretraining`).

The paper fine-tunes a CLIP that was pre-trained on images and their captions, so its word and patch features mean
something before the new modules train. These pairs play that part on the synthetic benchmark. A still is one
coloured shape of the benchmark's palettes, at a random place and size, on one of its backgrounds, sometimes with
an uncaptioned distractor in a corner (as video frames have), drawn with the videos' own shape masks and pixel
noise. Its caption names what a single frame shows -- colour, shape, often size, place or background -- with the
benchmark's words and synonyms. Motions, event order and counts cannot be seen in a still: they are left to
fine-tuning, as video dynamics are for a CLIP pre-trained on images. Stills are drawn from their own random stream,
never from the frames of any benchmark video, and are a deterministic function of (world, seed, count).
"""

from __future__ import annotations

import random

import numpy as np

from .synthetic import (
    _BACKGROUND_WORDS,
    _EXTENT,
    _FILLERS,
    _GROW,
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    SyntheticConfig,
    _clause,
    _shape_mask,
)

__all__ = ["image_text_pairs", "render_still", "sample_still", "still_caption"]

P_SIZE_WORD = 0.5  # the benchmark's captions name size 30% and background 30% of the time; stills teach both words
P_BACKGROUND_WORD = 0.5
P_PLACE_WORDS = 0.5  # where the object is: a still's only trace of what a move will change
P_UNSIZED = 0.3  # an object between the two sizes (a growing or shrinking one): its size is never named


def sample_still(rng: np.random.Generator, world: SyntheticConfig) -> dict:
    """The content of one still: background, the object (colour, shape, size or None, centre, extent), distractor."""
    colours, shapes = list(COLOURS)[: world.num_colours], list(SHAPES[: world.num_shapes])
    backgrounds = list(BACKGROUNDS)[: world.num_backgrounds]
    if rng.random() < P_UNSIZED:
        size, extent = None, float(rng.uniform(*_GROW))
    else:
        size = ("small", "big")[int(rng.integers(2))]
        extent = _EXTENT[size]
    x, y = (float(v) for v in rng.uniform(0.22, 0.78, size=2))
    distractor = None
    if rng.random() < world.p_distractor:
        corner = rng.integers(2, size=2)
        distractor = {"colour": colours[int(rng.integers(len(colours)))],
                      "shape": shapes[int(rng.integers(len(shapes)))],
                      "x": 0.12 + 0.76 * int(corner[0]), "y": 0.12 + 0.76 * int(corner[1]), "s": 0.16}
    return {
        "background": backgrounds[int(rng.integers(len(backgrounds)))],
        "colour": colours[int(rng.integers(len(colours)))],
        "shape": shapes[int(rng.integers(len(shapes)))],
        "size": size, "x": x, "y": y, "s": extent, "distractor": distractor,
    }


def render_still(still: dict, side: int, noise: int, rng: np.random.Generator) -> np.ndarray:
    """The uint8 image (side, side, 3) of `still`, drawn as `synthetic._draw` draws a video frame."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    image = np.empty((side, side, 3), dtype=np.uint8)
    image[:] = BACKGROUNDS[still["background"]]
    d = still["distractor"]
    if d:
        image[_shape_mask(d["shape"], d["x"] * side, d["y"] * side, d["s"] * side, yy, xx)] = COLOURS[d["colour"]]
    mask = _shape_mask(still["shape"], still["x"] * side, still["y"] * side, still["s"] * side, yy, xx)
    image[mask] = COLOURS[still["colour"]]
    if noise:
        noisy = image.astype(np.int16) + rng.integers(-noise, noise + 1, size=image.shape, dtype=np.int16)
        image = np.clip(noisy, 0, 255).astype(np.uint8)
    return image


def _place(still: dict) -> str:
    """Where the object is ("at the top left"), or "" near the centre: spatial words a pre-trained CLIP knows."""
    vertical = "at the top" if still["y"] < 0.4 else "at the bottom" if still["y"] > 0.6 else ""
    horizontal = "left" if still["x"] < 0.4 else "right" if still["x"] > 0.6 else ""
    if vertical and horizontal:
        return f"{vertical} {horizontal}"
    return vertical or (f"on the {horizontal}" if horizontal else "")


def still_caption(still: dict, rng: random.Random) -> str:
    """A sentence naming what the still shows, in the benchmark's grammar ("a big red circle is shown on a ...")."""
    mention = {"colour": still["colour"], "shape": still["shape"], "motion": None,
               "size": still["size"] if rng.random() < P_SIZE_WORD else None}
    text = _clause(rng, mention)
    where = _place(still)
    if where and rng.random() < P_PLACE_WORDS:
        text += f" {where}"
    if rng.random() < P_BACKGROUND_WORD:
        text += f" on a {rng.choice(_BACKGROUND_WORDS[still['background']])} background"
    if rng.random() < 0.2:
        text = f"{rng.choice(_FILLERS)} {text}"
    return text


def image_text_pairs(world: SyntheticConfig, count: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """`count` stills (count, side, side, 3) uint8 at the benchmark's frame size, and their captions."""
    rng = np.random.default_rng([seed, 0x5717])  # a stream of its own: no benchmark video is drawn from it
    words = random.Random(f"dmae_tpm.synthetic_images/{seed}/captions")
    images = np.empty((count, world.frame_size, world.frame_size, 3), dtype=np.uint8)
    captions = []
    for i in range(count):
        still = sample_still(rng, world)
        images[i] = render_still(still, world.frame_size, world.noise, rng)
        captions.append(still_caption(still, words))
    return images, captions
