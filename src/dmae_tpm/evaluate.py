"""The retrieval evaluator: encode every caption and every video once, score all pairs in bounded chunks with the
training similarity (TI/WTI, DMAE), then R@1/5/10, MdR, MeanR and rsum in both directions.

Under DDP each rank encodes a contiguous shard of the captions and videos, the features are gathered, each rank
scores its share of caption chunks, and rank 0 assembles the (C, V) matrix and computes the metrics.

Precision: the encoders may run under the runtime's autocast (bf16 on GPU), but their outputs are stored in
float32 (float16 only with ``eval.half``), and the similarity, the post-processing and the ranks always run in
float32 with autocast explicitly disabled. Under bf16 the similarity itself is rounded to 8 mantissa bits, which
turns close scores into exact ties and, with ties counted against the query, costs R@1 (docs/fidelity.md D22).
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import fields

import torch
from torch.utils.data import DataLoader

from . import distributed
from .config import EvalConfig
from .features import map_fields
from .method import RetrievalMethod
from .metrics import retrieval_metrics
from .postprocess import dual_softmax, querybank_norm

log = logging.getLogger(__name__)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def fp32_scoring(device: torch.device | str):
    """A context in which ops on `device` run in the dtype of their inputs: autocast explicitly disabled, so that
    scoring stays float32 even when the caller (or an outer context) has bf16/fp16 autocast on."""
    return torch.autocast(device_type=torch.device(device).type, enabled=False)


def _as(dtype: torch.dtype):
    """Cast a floating tensor to `dtype`; masks and indices stay as they are."""
    return lambda x: x.to(dtype) if x.is_floating_point() else x


def _cat(*xs: torch.Tensor) -> torch.Tensor:
    return torch.cat(xs)


def _progress(loader: DataLoader, desc: str):
    """`loader` with a tqdm bar on rank 0 when stderr is a terminal (a log file gets no redraws)."""
    if distributed.rank() != 0 or not sys.stderr.isatty():
        return loader
    from tqdm import tqdm

    return tqdm(loader, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


@torch.no_grad()
def encode_captions(model: RetrievalMethod, loader: DataLoader, device, autocast, dtype):
    """The method's caption embedding of every caption of `loader`, floats stored in `dtype`."""
    parts = []
    for batch in _progress(loader, "eval: captions"):
        batch = _to(batch, device)
        with autocast():
            parts.append(map_fields(_as(dtype), model.embed_text(batch)))
    if not parts:
        raise ValueError("no captions to encode")
    return map_fields(_cat, *parts)


def _encode_captions_gathered(model: RetrievalMethod, loader: DataLoader, runtime, dtype):
    """Every rank's shard of captions encoded, then all of them on every rank, in rank order."""
    text = encode_captions(model, loader, runtime.device, runtime.autocast, dtype)
    return map_fields(distributed.gather_varsize, text)


@torch.no_grad()
def encode_videos(model: RetrievalMethod, loader: DataLoader, device, autocast, dtype):
    """The method's video embedding of every video of `loader`, and ok (V,): unreadable videos (skipped on request)
    are not encoded, their rows are zeros (masks False)."""
    parts, oks = [], []
    for batch in _progress(loader, "eval: videos"):
        batch = _to(batch, device)
        ok = batch["ok"]
        oks.append(ok)
        if ok.any():
            with autocast():
                parts.append(map_fields(_as(dtype), model.embed_video(batch["frames"][ok], batch["frame_mask"][ok])))
    ok = torch.cat(oks)
    if not parts:
        raise ValueError(f"none of the {ok.numel()} test videos could be read: nothing to evaluate")

    def spread(x: torch.Tensor) -> torch.Tensor:  # the encoded rows at their videos' places, zeros elsewhere
        out = x.new_zeros((ok.numel(), *x.shape[1:]))
        out[ok] = x
        return out

    return map_fields(lambda *xs: spread(torch.cat(xs)), *parts), ok


@torch.no_grad()
def similarity_chunked(model: RetrievalMethod, text, video, text_chunk: int, video_chunk: int) -> torch.Tensor:
    """sim (C, V) in float32, peak memory set by the chunk sizes rather than by C x V.

    Always computed in float32: every chunk's features are cast to float32 and scored with autocast disabled
    (`fp32_scoring`), whatever autocast the caller runs under: bf16 scoring creates ties (docs/fidelity.md D22).
    """
    n_text, n_video = _rows(text), _rows(video)
    rows = []
    with fp32_scoring(_device(video)):
        for i in range(0, n_text, text_chunk):
            t = _chunk_fp32(text, i, text_chunk)
            cols = [model.score(t, _chunk_fp32(video, j, video_chunk)).float() for j in range(0, n_video, video_chunk)]
            rows.append(torch.cat(cols, dim=1))  # (c, V)
    return torch.cat(rows)  # (C, V)


MAX_CHUNK = 256  # the largest chunk side chosen (the fixed default before the shapes chose it)
CPU_CHUNK_MIB = 16.0


def chunk_sizes(cfg: EvalConfig, text, video) -> tuple[int, int]:
    """(text_chunk, video_chunk): eval.text_chunk / eval.video_chunk where set, else the largest square chunk, at
    most MAX_CHUNK, whose fp32 token similarity (chunk x M x chunk x N) fits eval.chunk_mib (16 MiB on CPU, no
    budget on CUDA). M and N are the longest token axes of the caption and video features (1 if they have none).
    On CPU 16 MiB stays in cache and below glibc's largest mmap threshold (32 MiB), so a chunk's product reuses
    freed memory instead of faulting in fresh pages: measured as fast as 256 x 256 or up to 1.1x faster, at 1/6 to
    1/64 of its memory (docs/performance.md).
    """
    budget = cfg.chunk_mib
    if budget is None and _device(video).type != "cuda":
        budget = CPU_CHUNK_MIB
    side = MAX_CHUNK
    if budget is not None:
        pair_bytes = 4 * _tokens(text) * _tokens(video)
        side = max(1, min(MAX_CHUNK, math.isqrt(int(budget * 2**20 // pair_bytes))))
    return cfg.text_chunk or side, cfg.video_chunk or side


def _tokens(embedding) -> int:
    """The longest token axis of an embedding's (rows, tokens, D) fields; 1 if it has none."""
    values = (getattr(embedding, f.name) for f in fields(embedding))
    return max((x.shape[1] for x in values if x is not None and x.dim() >= 3), default=1)


def _chunk_fp32(embedding, start: int, size: int):
    """Rows start ... start + size of an embedding, floats in float32."""
    return map_fields(lambda x: _as(torch.float32)(x[start : start + size]), embedding)


def _rows(embedding) -> int:
    return getattr(embedding, fields(embedding)[0].name).shape[0]


def _device(embedding) -> torch.device:
    return getattr(embedding, fields(embedding)[0].name).device


def postprocess(sim: torch.Tensor, cfg: EvalConfig, bank_sim: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The (C, V) matrix each direction ranks: raw, DSL or QB-Norm (Table 9), in float32 with autocast off."""
    with fp32_scoring(sim.device):
        return _postprocess(sim.float(), cfg, None if bank_sim is None else bank_sim.float())


def _postprocess(sim: torch.Tensor, cfg: EvalConfig, bank_sim: torch.Tensor | None) -> dict[str, torch.Tensor]:
    if cfg.postprocess == "none":
        return {"t2v": sim, "v2t": sim}
    if cfg.postprocess == "dsl":
        rescored = dual_softmax(sim, temperature=cfg.dsl_temperature)  # one matrix for both directions (TS2-Net)
        return {"t2v": rescored, "v2t": rescored}
    if cfg.postprocess == "qbnorm":
        if bank_sim is None:
            raise ValueError("eval.postprocess=qbnorm needs a query bank (training captions)")
        normed = querybank_norm(sim, bank_sim, beta=cfg.qb_beta, k=cfg.qb_k)
        return {"t2v": normed, "v2t": sim}
    raise ValueError(f"eval.postprocess must be none, dsl or qbnorm, got {cfg.postprocess!r}")


def _storage_dtype(runtime, cfg: EvalConfig) -> torch.dtype:
    """Storage dtype of the encoder outputs only; `similarity_chunked` scores in float32 either way."""
    return torch.float16 if (cfg.half and runtime.device.type == "cuda") else torch.float32


def _encode_all(model, loaders, runtime, cfg: EvalConfig):
    dtype = _storage_dtype(runtime, cfg)
    text = _encode_captions_gathered(model, loaders["captions"], runtime, dtype)
    video, ok = encode_videos(model, loaders["videos"], runtime.device, runtime.autocast, dtype)
    return text, map_fields(distributed.gather_varsize, video), distributed.gather_varsize(ok)


def _shared_sim(model, text, video, runtime, cfg: EvalConfig) -> torch.Tensor:
    """Each rank scores a contiguous block of captions; the blocks are gathered in rank order."""
    n = _rows(text)
    lo, hi = n * runtime.rank // runtime.world, n * (runtime.rank + 1) // runtime.world
    mine = map_fields(lambda x: x[lo:hi], text)
    block = similarity_chunked(model, mine, video, *chunk_sizes(cfg, mine, video))  # float32
    return distributed.gather_varsize(block).cpu()  # (C, V)


def evaluate_model(
    model: RetrievalMethod,
    loaders: dict,
    caption_video: torch.Tensor,
    runtime,
    cfg: EvalConfig,
    bank_loader: DataLoader | None = None,
) -> dict | None:
    """Metrics dict on rank 0 (None on the other ranks). ``loaders``: captions and videos of the test split."""
    was_training = model.training
    model.eval()
    try:
        text, video, ok = _encode_all(model, loaders, runtime, cfg)
        sim = _shared_sim(model, text, video, runtime, cfg)
        bank_sim = None
        if bank_loader is not None:
            bank = _encode_captions_gathered(model, bank_loader, runtime, _storage_dtype(runtime, cfg))
            bank_sim = _shared_sim(model, bank, video, runtime, cfg)
    finally:
        model.train(was_training)
    if not runtime.is_main:
        return None
    return _metrics(sim, caption_video, ok.cpu(), cfg, bank_sim)


def _metrics(sim, caption_video, ok, cfg: EvalConfig, bank_sim) -> dict:
    with fp32_scoring(sim.device):
        return _metrics_fp32(sim.float(), caption_video, ok, cfg, None if bank_sim is None else bank_sim.float())


def _metrics_fp32(sim, caption_video, ok, cfg: EvalConfig, bank_sim) -> dict:
    """Ranks and recalls of the float32 (C, V) matrix; each direction also reports its tied queries and its
    per-query ranks ("ranks", which the trainer keeps out of metrics.jsonl: eval_ranks.json)."""
    dropped = int((~ok).sum())
    if dropped:  # only with data.eval_skip_bad_videos=true: drop those videos and their captions
        keep_rows = ok[caption_video]
        new_index = torch.cumsum(ok.long(), 0) - 1
        sim, caption_video = sim[keep_rows][:, ok], new_index[caption_video[keep_rows]]
        bank_sim = bank_sim[:, ok] if bank_sim is not None else None
    mats = postprocess(sim, cfg, bank_sim)
    t2v = retrieval_metrics(mats["t2v"], caption_video, v2t_mode=cfg.v2t_mode, keep_ranks=True)["t2v"]
    v2t = retrieval_metrics(mats["v2t"], caption_video, v2t_mode=cfg.v2t_mode, keep_ranks=True)["v2t"]
    return {
        "t2v": t2v,
        "v2t": v2t,
        "rsum_total": t2v["rsum"] + v2t["rsum"],
        "dropped_videos": dropped,
        "postprocess": cfg.postprocess,
        "captions": int(sim.shape[0]),
        "videos": int(sim.shape[1]),
    }


def pop_ranks(result: dict) -> dict[str, list[int]]:
    """Take each direction's per-query ranks out of `result` (they stay out of tables and metrics.jsonl)."""
    return {d: result[d].pop("ranks") for d in ("t2v", "v2t") if "ranks" in result[d]}


def evaluate_checkpoint(cfg, out_dir=None) -> dict | None:
    """``dmae-eval``: load ``cfg.checkpoint``, evaluate on ``cfg.data``'s test split, print the table and write
    ``eval_results.json`` and the table (``eval.log``) into `out_dir` (default ``cfg.run_dir``; the command gives
    each evaluation a folder of its own, `dmae_tpm.eval.output_dir`). The model config stored in a training
    checkpoint is used (so an eval needs no experiment override) unless ``model_from_checkpoint=false``."""
    import json
    from pathlib import Path

    from . import runtime as rt
    from .config import to_dict
    from .data import loaders
    from .metrics import format_table

    if not cfg.checkpoint:
        raise ValueError("dmae-eval needs checkpoint=PATH (a step_*.pt of a run, or a file holding a state_dict)")
    runtime = rt.setup(cfg.trainer)
    try:
        model, model_cfg = load_model(cfg, runtime.device)
        loaders.prepare(cfg.data, model.backbone.image_size, model_cfg.max_frames)
        split, captions, videos = loaders.eval_datasets(
            cfg.data, model.backbone, model_cfg.max_words, model_cfg.max_frames
        )
        w, r = runtime.world, runtime.rank
        eval_loaders = loaders.eval_loaders(cfg.data, captions, videos, w, r)
        bank = None
        if cfg.eval.postprocess == "qbnorm":
            bank = _bank(cfg, model, model_cfg.max_words, w, r)
        result = evaluate_model(model, eval_loaders, torch.tensor(split.caption_video), runtime, cfg.eval, bank)
        if runtime.is_main:
            ranks = pop_ranks(result)
            title = f"{cfg.data.name} {split.split}: {cfg.checkpoint}"
            table = format_table(result, title=title)
            print(table)
            out = Path(out_dir or cfg.run_dir) / "eval_results.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(out.parent / "eval.log", "a") as handle:  # beside Hydra's log lines, when it writes there
                handle.write(table + "\n")
            out.write_text(
                json.dumps(
                    {
                        "checkpoint": str(cfg.checkpoint),
                        "data": cfg.data.name,
                        "split": split.split,
                        "results": result,
                        "ranks": ranks,  # per query, 1 = best: what a bootstrap over queries resamples
                        # what ran: the model is the checkpoint's when model_from_checkpoint took it from there
                        "config": {**to_dict(cfg), "model": to_dict_model(model_cfg)},
                    },
                    indent=2,
                )
            )
            log.info("wrote %s", out)
        return result
    finally:
        rt.teardown()


def load_model(cfg, device, path: str | None = None):
    """(model, its ModelConfig) of the checkpoint `path` (default cfg.checkpoint), weights loaded, on `device`, in
    eval mode; the model config is the checkpoint's unless model_from_checkpoint=false (`_model_config`)."""
    from . import checkpoint
    from . import runtime as rt
    from .model import build_model

    path = path or cfg.checkpoint
    state = checkpoint.load(path)
    model_cfg = _model_config(cfg, state, path)
    rt.seed_everything(cfg.seed)
    # The checkpoint holds every weight, but not the activation: build what `pretrained` needs (QuickGELU for
    # OpenAI's weights) without loading it, or the towers and temporal encoder compute other features.
    model = build_model(model_cfg, load_pretrained=False).to(device)
    hint = ("evaluate it with the model config it was trained with: drop the model overrides and keep "
            "model_from_checkpoint=true" if not cfg.model_from_checkpoint or model_cfg is cfg.model else
            "the file's config and its weights disagree: it was not written by dmae-train")
    checkpoint.load_weights(model, state, path, hint)
    return model.eval(), model_cfg


def _model_config(cfg, state: dict, path=None):
    """The checkpoint's model config (model_from_checkpoint=true, a training checkpoint), else cfg.model; warns
    for each model value of this command that the checkpoint's config overrides."""
    from omegaconf import OmegaConf

    from .config import flatten
    from .model import ModelConfig

    saved = state.get("config")
    if not (cfg.model_from_checkpoint and isinstance(saved, dict) and "model" in saved):
        return cfg.model
    model_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), saved["model"]))
    asked, used = flatten(to_dict_model(cfg.model)), flatten(to_dict_model(model_cfg))
    ignored = [f"model.{k}={asked[k]!r} (the checkpoint has {used.get(k)!r})" for k in asked if asked[k] != used.get(k)]
    if ignored:
        log.warning("evaluating %s with the model config it was trained with, not with: %s (set "
                    "model_from_checkpoint=false to build the configured model instead)", path or cfg.checkpoint,
                    "; ".join(ignored[:8]) + (" ..." if len(ignored) > 8 else ""))
    return model_cfg


def to_dict_model(model_cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(model_cfg), resolve=True)


def _bank(cfg, model, max_words: int, world: int, rank: int) -> DataLoader:
    from .data import loaders
    from .data.dataset import CaptionDataset

    split = loaders.read(cfg.data, cfg.data.train_split)
    table = loaders.text_table(cfg.data, split, model.backbone, max_words)
    pick = torch.randperm(len(table.tokens), generator=torch.Generator().manual_seed(0))[: cfg.eval.qb_bank_size]
    return loaders.eval_loader(cfg.data, torch.utils.data.Subset(CaptionDataset(table), pick.tolist()), world, rank)
