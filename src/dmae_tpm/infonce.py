"""Symmetric InfoNCE over a B x B text-video similarity matrix (Sec. 3.2, Eq. 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def contrastive_logits(sim: torch.Tensor, logit_scale: torch.Tensor | float,
                       ignore: torch.Tensor | None = None) -> torch.Tensor:
    """tau * sim, with `ignore`d pairs (e.g. two captions of one MSVD video) removed from every softmax."""
    logits = sim * logit_scale  # (B, B)
    if ignore is not None:
        logits = logits.masked_fill(ignore, float("-inf"))
    return logits


def infonce_terms(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L_p^{t2v} and L_p^{v2t}: cross-entropy of each row / column against its diagonal.  # Eq. (4)"""
    target = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, target), F.cross_entropy(logits.t(), target)


class InfoNCE(nn.Module):
    """L = (L_p^{t2v} + L_p^{v2t}) / 2; row i of sim is text t_i, column j video v_j, (t_i, v_i) matched."""

    def forward(self, sim: torch.Tensor, logit_scale: torch.Tensor | float,
                ignore: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        l_t2v, l_v2t = infonce_terms(contrastive_logits(sim, logit_scale, ignore))  # Eq. (4)
        return {"loss": 0.5 * (l_t2v + l_v2t), "loss_p_t2v": l_t2v, "loss_p_v2t": l_v2t}
