"""Fixtures for the data tests: tiny real videos, written with PyAV (imported lazily: callers skip when it is
absent), and MSR-VTT annotation files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

W, H, FPS = 64, 48, 10


def write_video(path: Path, frames, fps: int = FPS, codec: str = "libx264", options: dict | None = None,
                faststart: bool = False, times_ms: list[int] | None = None) -> Path:
    """Encode RGB uint8 frames (h, w, 3) (W x H unless the frames say otherwise) into `path` with PyAV, yuv420p, at
    `fps`, or, given `times_ms`, frame i shown at times_ms[i] milliseconds (a variable frame rate)."""
    from fractions import Fraction

    import av

    frames = list(frames)
    height, width = frames[0].shape[:2] if frames else (H, W)
    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {})
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = options or {}
    if times_ms is not None:
        stream.codec_context.time_base = Fraction(1, 1000)
    container.start_encoding()  # writes the header even when there are no frames (the empty-video tests)
    for i, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        if times_ms is not None:
            frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def write_gradient_video(path: Path, num_frames: int, seed: int = 0) -> Path:
    """A tiny H.264 mp4 (W x H, FPS): each frame a horizontal gradient tinted by its index (distinct frames)."""
    ramp = np.linspace(0, 255, W, dtype=np.float32)[None, :].astype(np.uint8)

    def frame(i: int) -> np.ndarray:
        image = np.empty((H, W, 3), np.uint8)
        image[..., 0] = ramp
        image[..., 1] = (5 * i + 40 * seed) % 256
        image[..., 2] = 255 - ramp
        return image

    return write_video(path, (frame(i) for i in range(num_frames)), options={"crf": "10"})


def write_msrvtt_annotations(root: Path, train: dict[str, list[str]], test: dict[str, str]) -> Path:
    """MSR-VTT annotation files in the CLIP4Clip layout (MSRVTT_data.json + 9k train csv + JSFUSION test csv)."""
    root.mkdir(parents=True, exist_ok=True)
    sentences = [
        {"caption": c, "video_id": v, "sen_id": n}
        for n, (v, c) in enumerate(
            (v, c) for v, caps in {**train, **{k: [s] for k, s in test.items()}}.items() for c in caps
        )
    ]
    videos = [{"video_id": v, "category": 0} for v in {**train, **test}]
    (root / "MSRVTT_data.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    with open(root / "MSRVTT_train.9k.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id"])
        w.writerows([v] for v in train)
    with open(root / "MSRVTT_JSFUSION_test.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        w.writerows([f"ret{k}", f"msr{v[5:]}", v, s] for k, (v, s) in enumerate(test.items()))
    return root
