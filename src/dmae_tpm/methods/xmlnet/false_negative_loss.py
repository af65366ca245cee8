"""X-MLNet's false-negative-aware contrastive loss: CrossCLR's intra-modal negatives without the samples most
connected to the rest of the batch, which are likely false negatives (docs/xmlnet.md X6-X9).

On the gathered global batch, with v (B, D) the videos and s (B, D) the sentences, L2-normalised:
  A_v = v v^T, A_t = s s^T                                   intra-modal similarity
  c_i = mean_j A[i, j],  c~_i = c_i / max_k c_k               connectivity (no gradient)
  K = {k : c~_k < gamma}                                      kept as intra-modal negatives (the rest: influential)
  video anchor i: logits [v_i W_v2t s_j^T for all j,  lambda A_v[i, k] for k in K, k != i] x tau, target i
  sentence anchor i: the same with s, W_t2v, A_t
  L_FN = (mean_i CE_v + mean_i CE_t) / 2
c_i averages over all j (self included), as the code does: then sum_i c_i = B |mean v|^2 >= 0, so max_k c_k >= 0
and c~ never flips sign; when every c_i is 0 (mean exactly 0) nothing is influential.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import FalseNegativeConfig


@torch.no_grad()
def connectivity(a: torch.Tensor) -> torch.Tensor:
    """c~ (B,): each sample's mean similarity to the batch, over the largest. a: (B, B) intra-modal similarity."""
    c = a.float().mean(1)  # (B,)
    top = c.max()
    return c / top if bool(top > 0) else torch.zeros_like(c)


def influential(c_norm: torch.Tensor, gamma: float) -> torch.Tensor:
    """(B,) bool: the samples left out of the intra-modal negatives."""
    return c_norm >= gamma


def anchor_loss(cross: torch.Tensor, intra: torch.Tensor, excluded: torch.Tensor, cfg: FalseNegativeConfig,
                logit_scale: torch.Tensor, weights: torch.Tensor | None = None,
                ignore: torch.Tensor | None = None) -> torch.Tensor:
    """One direction: row i's logits are [cross[i, :], lambda intra[i, k] for kept k] x tau, target i.
    cross, intra (B, B); excluded (B,) bool (influential); weights (B,) or None (plain mean); ignore (B, B) bool:
    pairs known to be positives (two captions of one video), out of both parts as they are out of InfoNCE."""
    b = cross.shape[0]
    eye = torch.eye(b, dtype=torch.bool, device=cross.device)
    drop_intra = excluded[None, :].expand(b, b)
    if cfg.mask_diagonal:
        drop_intra = drop_intra | eye
    cross = cross * logit_scale
    if cfg.prune_cross_modal:
        cross = cross.masked_fill(excluded[None, :] & ~eye, float("-inf"))  # the positive always stays
    if ignore is not None:
        cross, drop_intra = cross.masked_fill(ignore, float("-inf")), drop_intra | ignore
    intra = (cfg.negative_weight * intra * logit_scale).masked_fill(drop_intra, float("-inf"))
    logits = torch.cat([cross, intra], dim=1)  # (B, 2B); dropped columns are -inf: out of every softmax
    per_anchor = F.cross_entropy(logits, torch.arange(b, device=cross.device), reduction="none")  # (B,)
    if weights is None:
        return per_anchor.mean()
    return (per_anchor * weights).sum() / weights.sum()


@torch.no_grad()
def crossclr_weights(a: torch.Tensor, temperature: float) -> torch.Tensor:
    """CrossCLR's per-sample weights exp((c_i / sum_j c_j) / temperature), c_i the mean similarity. (B,)"""
    c = a.float().mean(1)
    share = c / c.sum().clamp_min(1e-12)
    return torch.exp((share - share.max()) / temperature)  # shifted: the ratio of weights is what counts


class FalseNegativeAwareLoss(nn.Module):
    """L_FN with W_v2t and W_t2v (D x D, identity at init). forward(v, s, logit_scale) on the global batch."""

    def __init__(self, cfg: FalseNegativeConfig, embed_dim: int):
        super().__init__()
        self.cfg = cfg
        self.v2t = nn.Parameter(torch.eye(embed_dim))
        self.t2v = nn.Parameter(torch.eye(embed_dim))

    def forward(self, v: torch.Tensor, s: torch.Tensor, logit_scale: torch.Tensor,
                ignore: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        a_v, a_t = v @ v.t(), s @ s.t()  # (B, B)
        c_v, c_t = connectivity(a_v), connectivity(a_t)
        out_v, out_t = influential(c_v, cfg.gamma_video), influential(c_t, cfg.gamma_text)
        w_v = crossclr_weights(a_v, cfg.weight_temperature) if cfg.weighting else None
        w_t = crossclr_weights(a_t, cfg.weight_temperature) if cfg.weighting else None
        l_v = anchor_loss(v @ self.v2t @ s.t(), a_v, out_v, cfg, logit_scale, w_v, ignore)
        l_t = anchor_loss(s @ self.t2v @ v.t(), a_t, out_t, cfg, logit_scale, w_t, ignore)
        return {"loss": 0.5 * (l_v + l_t), "loss_v": l_v, "loss_t": l_t,
                "influential_video_frac": out_v.float().mean(), "influential_text_frac": out_t.float().mean()}
