"""Optimiser and schedule of Sec. 4.1: Adam(W) with two learning rates and cosine decay after a linear warmup."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import OptimConfig


def _no_decay(name: str, param: nn.Parameter) -> bool:
    # CLIP convention: biases, norm gains, embeddings, the class token and the temperature are not decayed.
    return param.ndim < 2 or "logit_scale" in name or "embedding" in name or name.endswith("class_embedding")


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Four groups: {CLIP encoders, other modules} x {decay, no decay}. CLIP = parameters under ``backbone.clip``."""
    groups: dict[tuple[bool, bool], list] = {(c, d): [] for c in (True, False) for d in (True, False)}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        groups[(name.startswith("backbone.clip."), not _no_decay(name, param))].append(param)
    out = []
    for (clip, decay), params in groups.items():
        if params:
            out.append(
                {
                    "params": params,
                    "lr": cfg.lr_clip if clip else cfg.lr,
                    "weight_decay": cfg.weight_decay if decay else 0.0,
                    "name": f"{'clip' if clip else 'other'}_{'decay' if decay else 'no_decay'}",
                }
            )
    return out


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    kwargs = {"betas": tuple(cfg.betas), "eps": cfg.eps}
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, **kwargs)
    if cfg.name == "adam":  # Adam's L2 penalty (coupled), as torch.optim.Adam applies weight_decay
        return torch.optim.Adam(groups, **kwargs)
    raise ValueError(f"optim.name must be 'adam' or 'adamw', got {cfg.name!r}")


def lr_factor(step: int, total: int, warmup: float, min_ratio: float = 0.0) -> float:
    """Linear warmup over ``warmup * total`` steps from 0, then cosine from 1 down to `min_ratio` at `total`."""
    warm = int(round(warmup * total))
    if step < warm:
        return (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, cfg.warmup, cfg.min_lr_ratio)
    )
