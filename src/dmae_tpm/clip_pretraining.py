"""Pre-training a small CLIP on the synthetic world's image-text pairs, so fine-tuning starts as the paper's does.

The paper (Sec. 4.1) fine-tunes pretrained CLIP with lr 1e-7 on its towers and 1e-4 on the new modules. A tiny CLIP
trained from scratch on the benchmark faces another problem: its word features mean nothing at first, so Textual
Attention, the token weight predictor and the temporal encoder learn on noise. `pretrain` trains the backbone's
towers with CLIP's own contrastive loss (open_clip's `ClipLoss`) on `synthetic_images` stills, never on a frame of a
benchmark video, deterministically from `PretrainConfig.seed`, and writes the CLIP state_dict: a checkpoint file
`model.backbone.pretrained` accepts like any other. `model.backbone.pretrain` (the fields below) names one by its
config instead; `prepare` builds it once under ``cache_dir``, keyed by the config, and `zero_shot` measures the
retrieval it gives without fine-tuning (the floor a fine-tuned model must beat).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from . import checkpoint, distributed
from .backbone import BackboneConfig, CLIPDualEncoder, build_backbone
from .checks import at_least
from .data.synthetic import SyntheticConfig
from .data.synthetic_images import image_text_pairs
from .data.video import resize_crop
from .metrics import retrieval_metrics
from .optim import _no_decay, lr_factor

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the stills, the captions or the training loop change what a config produces
# The SyntheticConfig fields a still depends on (data/synthetic_images.py).
WORLD_FIELDS = ("seed", "num_colours", "num_shapes", "num_backgrounds", "p_distractor", "frame_size", "noise")


@dataclass
class PretrainConfig:
    """How the synthetic CLIP checkpoint is made; every field but cache_dir is part of its cache key."""

    seed: int = 0
    num_pairs: int = 20000  # distinct stills; each is seen steps * batch_size / num_pairs times
    steps: int = 1500
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1  # not on biases, norms, embeddings or the logit scale (as CLIP)
    warmup: int = 100  # linear warm-up steps, then cosine decay to 0 (optim.lr_factor)
    max_words: int = 32  # caption tokens, [BOS] and [EOS] included
    synthetic: dict[str, Any] = field(default_factory=dict)  # SyntheticConfig fields of the world drawn from
    cache_dir: str = "data/cache/clip_pretrain"

    def __post_init__(self):
        at_least("model.backbone.pretrain", self, num_pairs=2, steps=1, batch_size=2, lr=0.0, warmup=0,
                 max_words=3)

    def identity(self, backbone: str) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        fields.pop("cache_dir")
        world = SyntheticConfig(**self.synthetic).identity()
        fields["synthetic"] = {k: world[k] for k in WORLD_FIELDS}  # split sizes etc. do not change the stills
        return {"format": FORMAT_VERSION, "backbone": backbone, **fields}

    def path(self, backbone: str) -> Path:
        key = hashlib.sha256(json.dumps(self.identity(backbone), sort_keys=True).encode()).hexdigest()[:16]
        return Path(self.cache_dir) / f"{backbone}_synthetic_{key}.pt"


def weights_path(cfg: BackboneConfig) -> str | None:
    """The file (or open_clip tag) the backbone's weights come from: `pretrained`, or the `pretrain` checkpoint."""
    if cfg.pretrain is None:
        return cfg.pretrained
    if cfg.pretrained is not None:
        raise ValueError(f"model.backbone: set pretrained ({cfg.pretrained!r}) or pretrain, not both")
    return str(PretrainConfig(**cfg.pretrain).path(cfg.name))


def prepare(cfg: BackboneConfig) -> None:
    """Rank 0 builds the `pretrain` checkpoint when it is configured and absent; the other ranks wait."""
    if cfg.pretrain is not None and distributed.rank() == 0:
        settings = PretrainConfig(**cfg.pretrain)
        path = settings.path(cfg.name)
        if not path.is_file():
            pretrain(settings, cfg.name, path)
    distributed.barrier()


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if _no_decay(name, p) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _stills(cfg: PretrainConfig, backbone: CLIPDualEncoder) -> tuple[torch.Tensor, torch.Tensor]:
    images, captions = image_text_pairs(SyntheticConfig(**cfg.synthetic), cfg.num_pairs, cfg.seed)
    crop = resize_crop(backbone.image_size)  # as video frames are resized for the backbone
    pixels = torch.cat([crop(torch.from_numpy(images[i:i + 1024])) for i in range(0, len(images), 1024)])
    return pixels, backbone.tokenize(captions, context_length=cfg.max_words)  # (P, 3, h, w) uint8, (P, L)


def contrastive_step(backbone: CLIPDualEncoder, loss_fn: ClipLoss, pixels: torch.Tensor,
                     tokens: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE on one batch, through the same features fine-tuning reads (CLS token, [EOS])."""
    image = F.normalize(backbone.encode_frames(backbone.normalize(pixels))[:, 0], dim=-1)  # (B, D)
    text = F.normalize(backbone.encode_text(tokens).t_cls, dim=-1)  # (B, D)
    return loss_fn(image, text, backbone.logit_scale.exp())


def pretrain(cfg: PretrainConfig, backbone_name: str, out: str | Path) -> dict[str, Any]:
    """Train a randomly initialised `backbone_name` CLIP on `cfg`'s stills; write its state_dict to `out` (atomic,
    with a .sha256 and a .json record of the config, loss and time). Returns that record."""
    start = time.time()
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(BackboneConfig(name=backbone_name))
    pixels, tokens = _stills(cfg, backbone)
    optimizer = torch.optim.AdamW(_param_groups(backbone, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg.steps,
                                                                                   cfg.warmup / cfg.steps))
    loss_fn, order = ClipLoss(), torch.Generator().manual_seed(cfg.seed)
    losses = []
    for step in range(cfg.steps):
        batch = torch.randint(len(pixels), (cfg.batch_size,), generator=order)
        loss = contrastive_step(backbone, loss_fn, pixels[batch], tokens[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(backbone.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            backbone.logit_scale.clamp_(0, math.log(100))  # as CLIP
        losses.append(loss.item())
        if step % 100 == 0 or step == cfg.steps - 1:
            log.info("clip pre-training step %d/%d: loss %.4f", step + 1, cfg.steps, losses[-1])
    record = {"config": cfg.identity(backbone_name), "seconds": round(time.time() - start, 1),
              "loss_first_100": sum(losses[:100]) / min(100, len(losses)),
              "loss_last_100": sum(losses[-100:]) / min(100, len(losses))}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save_atomic(backbone.clip.state_dict(), out)
    out.with_name(out.name + ".json").write_text(json.dumps(record, indent=1) + "\n")
    log.info("clip pre-training: wrote %s in %.0f s (loss %.3f -> %.3f)", out, record["seconds"],
             record["loss_first_100"], record["loss_last_100"])
    return record


@torch.no_grad()
def zero_shot(backbone: CLIPDualEncoder, caption_loader, video_loader, caption_video: torch.Tensor) -> dict:
    """Retrieval with the backbone alone, as CLIP4Clip's zero-shot mean pooling: a video is the mean of its real
    frames' normalised CLS features, a caption its [EOS] feature; cosine similarity, `retrieval_metrics`."""
    backbone.eval()
    texts = [F.normalize(backbone.encode_text(b["tokens"]).t_cls, dim=-1) for b in caption_loader]
    videos = []
    for b in video_loader:
        f_cls = F.normalize(backbone.encode_video(b["frames"], b["frame_mask"]).f_cls, dim=-1)  # (B, N, D)
        weights = b["frame_mask"].unsqueeze(-1).to(f_cls.dtype)  # (B, N, 1)
        videos.append(F.normalize((f_cls * weights).sum(1) / weights.sum(1).clamp(min=1), dim=-1))  # (B, D)
    sim = torch.cat(texts) @ torch.cat(videos).T  # (captions, videos)
    return retrieval_metrics(sim.float(), caption_video, keep_ranks=True)


def evaluate_zero_shot(cfg) -> dict:
    """The backbone of `cfg` (its pre-training checkpoint built if needed), untrained further, on the test split:
    prints the results table and writes ``run_dir/zero_shot_results.json``. One process."""
    from . import runtime as rt
    from .config import to_dict
    from .data import loaders
    from .metrics import format_table

    runtime = rt.setup(cfg.trainer)
    try:
        prepare(cfg.model.backbone)
        backbone = build_backbone(cfg.model.backbone).to(runtime.device)
        loaders.prepare(cfg.data, backbone.image_size, cfg.model.max_frames)
        split, captions, videos = loaders.eval_datasets(cfg.data, backbone, cfg.model.max_words, cfg.model.max_frames)
        batches = loaders.eval_loaders(cfg.data, captions, videos, 1, 0)

        def on_device(loader):
            return ({k: v.to(runtime.device) for k, v in b.items()} for b in loader)

        result = zero_shot(backbone, on_device(batches["captions"]), on_device(batches["videos"]),
                           torch.tensor(split.caption_video))
        weights = weights_path(cfg.model.backbone)
        print(format_table(result, title=f"{cfg.data.name} {split.split}: zero-shot {weights}"))
        out = Path(cfg.run_dir) / "zero_shot_results.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"weights": weights, "results": result, "config": to_dict(cfg)}, indent=2) + "\n")
        return result
    finally:
        rt.teardown()
