"""Video decoding and frame sampling for text-video retrieval (Appendix A.1, Sec. 4.1).

Frames are sampled at 1 frame per second (Appendix A.1) and, if that gives more than ``max_frames``, thinned
uniformly to ``max_frames`` (12 for MSR-VTT / MSVD, 64 for DiDeMo / ActivityNet, Sec. 4.1). Each frame is resized
and centre-cropped to the backbone's ``image_size`` and normalised with its ``mean`` / ``std`` (see
`CLIPDualEncoder`), giving the ``(N, 3, H, W)`` frames and ``(N,)`` bool mask that ``encode_video`` takes per video.

decord is imported lazily inside `read_frames`, so this module imports on machines without it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from .config import FrameSamplingConfig

__all__ = [
    "FrameSamplingConfig",
    "VideoDecodeError",
    "frame_transform",
    "normalizer",
    "is_variable_rate",
    "read_frames",
    "resize_crop",
    "sample_indices",
    "sample_indices_by_time",
]

log = logging.getLogger(__name__)

FrameTransform = Callable[[torch.Tensor], torch.Tensor]


class VideoDecodeError(RuntimeError):
    """A video could not be decoded; the message names the file, what is wrong and what to do."""


def _uniform(candidates: Sequence[int], count: int) -> list[int]:
    """`count` elements of `candidates` at numpy-rounded linspace positions, deduplicated in order."""
    if len(candidates) <= count:
        return list(candidates)
    positions = np.round(np.linspace(0, len(candidates) - 1, count)).astype(np.int64)
    return list(dict.fromkeys(int(candidates[p]) for p in positions))


def sample_indices(num_frames: int, native_fps: float, cfg: FrameSamplingConfig) -> list[int]:
    """Indices (ascending, unique) of the frames to decode from a video of `num_frames` frames at `native_fps`.

    Rule (CLIP4Clip style):

    1. Rate sampling. With ``step = native_fps / cfg.fps`` (native frames per sampled frame), the k-th sample is
       frame ``floor(k * step + 1e-6)`` for k = 0, 1, 2, ... as long as that index is ``< num_frames``; i.e. the
       frame at (or just before) time ``k / cfg.fps`` seconds -- at 1 fps, the first frame of each second.
       Duplicates (``cfg.fps > native_fps``) are dropped. Frame 0 is always taken, so even a clip shorter than
       ``1 / cfg.fps`` seconds yields one frame.
    2. If that gives more than ``cfg.max_frames`` indices, keep those at positions
       ``np.round(np.linspace(0, len - 1, cfg.max_frames))`` of the list (numpy rounds halves to even), dropping
       duplicates while keeping order; so the first and last rate-sampled frames are always kept.

    Fallback: if `native_fps` is not a finite number > 0 (0, negative, NaN, inf -- broken container metadata),
    the rate cannot be applied and the result is all frames if ``num_frames <= cfg.max_frames``, else the frames at
    ``np.round(np.linspace(0, num_frames - 1, cfg.max_frames))``.

    Examples: 50 frames at 10 fps, 1 fps -> [0, 10, 20, 30, 40]; 750 frames at 25 fps (30 s), 1 fps,
    max 12 -> 12 of the 30 per-second frames [0, 25, ..., 725]; 3 frames at 10 fps -> [0].
    """
    if isinstance(num_frames, bool) or int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
    num_frames = int(num_frames)
    try:
        fps_ok = math.isfinite(native_fps) and native_fps > 0
    except TypeError:
        fps_ok = False
    if not fps_ok:
        return _uniform(range(num_frames), cfg.max_frames)
    step = float(native_fps) / float(cfg.fps)
    indices: list[int] = []
    k = 0
    while True:
        index = math.floor(k * step + 1e-6)
        if index >= num_frames:
            break
        if not indices or index != indices[-1]:
            indices.append(index)
        k += 1
    return _uniform(indices, cfg.max_frames)


def is_variable_rate(timestamps: Sequence[float], tolerance: float = 0.25) -> bool:
    """True when the frames' presentation times (seconds, ascending) are not evenly spaced: some interval differs
    from the median one by more than `tolerance` of it. Container rounding of a constant rate stays far below."""
    if len(timestamps) < 3:
        return False
    intervals = np.diff(np.asarray(timestamps, dtype=np.float64))
    median = float(np.median(intervals))
    return median <= 0 or float(np.max(np.abs(intervals - median))) > tolerance * median


def sample_indices_by_time(timestamps: Sequence[float], cfg: FrameSamplingConfig) -> list[int]:
    """`sample_indices` for a variable-frame-rate video: the k-th sample is the frame shown at time ``k / cfg.fps``
    after the first frame (the last frame starting at or before it), as long as that time is within the video;
    then the same uniform thinning to ``cfg.max_frames``. On a constant-rate video this picks what `sample_indices`
    does up to timestamp rounding, but `read_frames` uses it only where the rate varies, so those stay identical."""
    times = np.asarray(timestamps, dtype=np.float64)
    if times.ndim != 1 or len(times) < 1:
        raise ValueError(f"timestamps must be a non-empty 1-d sequence, got shape {times.shape}")
    times = times - times[0]
    indices: list[int] = []
    k = 0
    while k / cfg.fps <= times[-1] + 1e-6:
        index = int(np.searchsorted(times, k / cfg.fps + 1e-6, side="right")) - 1
        if not indices or index != indices[-1]:
            indices.append(index)
        k += 1
    return _uniform(indices, cfg.max_frames)


def resize_crop(image_size: tuple[int, int] | int) -> FrameTransform:
    """A callable mapping uint8 frames ``(T, H, W, 3)`` to uint8 ``(T, 3, h, w)``, ``(h, w) = image_size``.

    As CLIP's preprocessing: resize (bicubic, antialiased, on uint8 like PIL) keeping the aspect ratio so the
    frame just covers ``(h, w)`` -- for a square ``image_size`` this is "shorter side to h" -- then centre crop.
    The output stays uint8 so the frame cache can store exactly what the model's normalisation then consumes.
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    out_h, out_w = (int(s) for s in image_size)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")

    def transform(frames: torch.Tensor) -> torch.Tensor:
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        x = frames.permute(0, 3, 1, 2)  # (T, 3, H, W)
        in_h, in_w = x.shape[-2:]
        scale = max(out_h / in_h, out_w / in_w)
        new_h = max(out_h, round(in_h * scale))
        new_w = max(out_w, round(in_w * scale))
        if (new_h, new_w) != (in_h, in_w):
            x = F.resize(x.contiguous(), [new_h, new_w], interpolation=InterpolationMode.BICUBIC, antialias=True)
        return F.center_crop(x, [out_h, out_w]).contiguous()  # (T, 3, h, w) uint8

    return transform


def normalizer(mean: Sequence[float], std: Sequence[float]) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 ``(..., 3, h, w)`` -> float32 scaled to [0, 1] and normalised per channel with `mean` / `std`."""
    mean = [float(m) for m in mean]
    std = [float(s) for s in std]
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std must have 3 entries (RGB), got mean={mean} std={std}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std entries must be > 0, got {std}")

    def normalize(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(F.to_dtype(x, torch.float32, scale=True), mean=mean, std=std)

    return normalize


def frame_transform(image_size: tuple[int, int] | int, mean: Sequence[float], std: Sequence[float]) -> FrameTransform:
    """uint8 frames ``(T, H, W, 3)`` -> normalised float32 ``(T, 3, h, w)``: `resize_crop`, then `normalizer`.

    Pass the backbone's ``image_size`` / ``mean`` / ``std`` (`CLIPDualEncoder`), i.e. open_clip's preprocess config.
    """
    crop, normalize = resize_crop(image_size), normalizer(mean, std)
    return lambda frames: normalize(crop(frames))


def _import_decord():
    try:
        import decord
    except ImportError as err:  # pragma: no cover - depends on the machine
        raise ImportError(
            "reading videos needs decord: `pip install decord==0.6.0` (wheels exist for x86_64 Linux/Windows "
            "only; on other platforms build it from source, https://github.com/dmlc/decord)"
        ) from err
    return decord


def read_frames(
    path: str | Path, cfg: FrameSamplingConfig, transform: FrameTransform
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode the frames `sample_indices` picks from the video at `path` and apply `transform` to them.

    Returns ``frames`` float ``(cfg.max_frames, 3, h, w)`` with the sampled frames first and zero padding after,
    and ``mask`` bool ``(cfg.max_frames,)``, True for real frames. Only the sampled frames are decoded
    (``VideoReader.get_batch``). Raises `VideoDecodeError` (naming the file) when the file is missing, cannot be
    opened or decoded (corrupt / truncated / not a video), or has no frames.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError(
            f"video file {str(path)!r} does not exist (or is not a file); check the dataset's video root and "
            "that the video id maps to the right file name / extension"
        )
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"video file {str(path)!r} is empty (0 bytes); re-download or re-extract it")
    _check_readable(path)
    decord = _import_decord()
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        num_frames = len(reader)
        native_fps = reader.get_avg_fps()
    except Exception as err:  # decord raises DECORDError / RuntimeError with ffmpeg text
        raise VideoDecodeError(
            f"cannot open video {str(path)!r} with decord ({type(err).__name__}: {_short(err)}); "
            f"{_advice(err, 'open')}"
        ) from err
    if num_frames < 1:
        raise VideoDecodeError(
            f"video {str(path)!r} has zero decodable frames; the file is empty or broken -- re-download or "
            "re-encode it, or drop it from the split"
        )
    try:
        indices = _sample(reader, num_frames, native_fps, cfg)
        batch = reader.get_batch(indices).asnumpy()
    except Exception as err:
        raise VideoDecodeError(
            f"cannot decode frames of video {str(path)!r} ({num_frames} frames, {native_fps} fps) with decord "
            f"({type(err).__name__}: {_short(err)}); {_advice(err, 'decode')}"
        ) from err
    finally:
        del reader
    if batch.ndim != 4 or batch.shape[0] != len(indices) or batch.shape[-1] != 3:
        raise VideoDecodeError(
            f"decord returned frames of shape {batch.shape} for {len(indices)} indices of video {str(path)!r}; "
            "expected (T, H, W, 3) -- re-encode the video"
        )
    out = transform(torch.from_numpy(np.ascontiguousarray(batch)))
    frames = out.new_zeros((cfg.max_frames, *out.shape[1:]))
    frames[: out.shape[0]] = out
    mask = torch.zeros(cfg.max_frames, dtype=torch.bool)
    mask[: out.shape[0]] = True
    return frames, mask


def _check_readable(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except PermissionError as err:  # decord would report it as an unreadable container
        raise VideoDecodeError(
            f"video file {str(path)!r} cannot be read: permission denied; give this user read access "
            f"(chmod a+r {str(path)!r}) or copy the dataset somewhere it owns"
        ) from err


def _sample(reader, num_frames: int, native_fps: float, cfg: FrameSamplingConfig) -> list[int]:
    """By frame index at the average rate (`sample_indices`), or by presentation time when the rate varies: the
    average of a video that is 10 fps for a second and 1 fps for nine would put the "1 fps" samples 2.4 frames
    apart, bunched in its first seconds. The timestamps come from the container index (no decoding): 0.6-1.5 ms for
    a 5,400-frame 64 px clip on this project's VM, against about 20 ms to open it and decode 12 frames."""
    if num_frames >= 3:
        timestamps = reader.get_frame_timestamp(range(num_frames))[:, 0]  # (F,) start times, seconds
        if is_variable_rate(timestamps):
            log.debug("variable frame rate: sampling by timestamps (%d frames, %.3g fps on average)",
                      num_frames, native_fps)
            return sample_indices_by_time(timestamps, cfg)
    return sample_indices(num_frames, native_fps, cfg)


# decord 0.6.0 copies frames of some widths with a padded row stride and then fails a size check. Measured on
# H.264 yuv420p files written with PyAV (heights 32 and 48): widths 8, 12, 16, 24, 48 and 72 px fail, every other
# even width from 8 to 198 px and every multiple of 8 up to 320 px decodes (tests/test_video.py holds the case).
_DECORD_WIDTH_BUG = "DECORDArrayCopyFromTo: The size must exactly match"


def _advice(err: BaseException, stage: str) -> str:
    """What a decord error at `stage` ("open" or "decode") means and what to do about it."""
    if _DECORD_WIDTH_BUG in str(err):
        return ("the video is valid but decord 0.6.0 cannot copy frames of this width (it fails on widths "
                "8, 12, 16, 24, 48 and 72 px) -- re-encode it wider, e.g. ffmpeg -i in.mp4 -vf scale=128:-2 out.mp4")
    if "cannot find video stream" in str(err):
        return "the file has no video stream (audio only?) -- fetch the video itself, or drop the id from the split"
    what = "unreadable, corrupt or truncated" if stage == "open" else "probably corrupt or truncated"
    return f"the file is {what} -- re-download it, or re-encode it (e.g. ffmpeg -i in.mp4 -c:v libx264 out.mp4)"


def _short(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + " ..."
