"""Negative-aware InfoNCE (Sec. 3.2, Eqs. 5-9).

``paper``: Eqs. 5-9 as written. ``official``: the authors' released NegNCE (prj/dmae_vtp, dmae_utils.py),
applied to S and to S^T and averaged as their training step does; see docs/fidelity.md for the differences.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...infonce import contrastive_logits, infonce_terms
from .config import NegNCEConfig


def marginal_similarity(sim: torch.Tensor, margin: float) -> torch.Tensor:
    """sim^m_ij = max(0, s_ij - s_ii + xi) + max(0, s_ji - s_ii + xi).  # Eq. (5)"""
    pos = sim.diagonal().unsqueeze(1)  # (B, 1) s_ii, broadcast along row i
    return F.relu(sim - pos + margin) + F.relu(sim.t() - pos + margin)  # (B, B)


def hard_negative_mask(sim: torch.Tensor, margin: float, ignore: torch.Tensor | None = None) -> torch.Tensor:
    """The set N of Eq. 5: off-diagonal pairs with sim^m_ij > 0. A set carries no gradient."""
    with torch.no_grad():
        hard = marginal_similarity(sim, margin) > 0
        hard.fill_diagonal_(False)  # with xi > 0 the positive itself would otherwise qualify
        if ignore is not None:
            hard &= ~ignore
    return hard


def log1m_softmax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log(1 - softmax(logits)) without cancellation.

    Entries with p <= 1/2 use log1p(-p). At most one entry per row can have p > 1/2, and for it
    log(1 - p) = logsumexp(other entries) - logsumexp(all), computed exactly.
    """
    floor = torch.finfo(logits.dtype).min / 4  # finite stand-in for -inf keeps every gradient finite
    logits = logits.clamp_min(floor)
    log_p = torch.log_softmax(logits, dim=dim)
    small = torch.log1p(-log_p.exp().clamp(max=0.5))
    top = logits.argmax(dim=dim, keepdim=True)
    others = logits.scatter(dim, top, floor)
    log1m_top = torch.logsumexp(others, dim=dim, keepdim=True) - torch.logsumexp(logits, dim=dim, keepdim=True)
    is_top = torch.zeros_like(logits, dtype=torch.bool).scatter(dim, top, True)
    big = log1m_top.expand_as(logits)
    return torch.where(is_top & (log_p > -0.6931471805599453), big, small)


def negative_terms(logits: torch.Tensor, hard: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L_n^{t2v}, L_n^{v2t}: -1/H sum over N of log(1 - p_ij), p from row / column softmax.  # Eqs. (6)-(7)"""
    h = hard.sum()
    if h == 0:  # no hard negative in the batch: the term vanishes rather than becoming 0/0
        # A constant, not logits.sum() * 0: pairs left out by `ignore` hold -inf there, and -inf * 0 is NaN.
        zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
        return zero, zero
    log1m_t2v = log1m_softmax(logits, dim=1)  # p^{t2v}_ij: softmax over videos k for text i
    log1m_v2t = log1m_softmax(logits, dim=0)  # p^{v2t}_ij: softmax over texts k for video j
    return -log1m_t2v[hard].sum() / h, -log1m_v2t[hard].sum() / h


class NegNCE(nn.Module):
    def __init__(self, cfg: NegNCEConfig):
        super().__init__()
        self.cfg = cfg

    def forward(self, sim: torch.Tensor, logit_scale: torch.Tensor | float,
                ignore: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if self.cfg.variant == "official":
            return self._official(sim, ignore)
        c = self.cfg
        logits = contrastive_logits(sim, logit_scale, ignore)  # (B, B) tau * sim
        lp_t2v, lp_v2t = infonce_terms(logits)  # Eq. (4)
        hard = hard_negative_mask(sim, c.margin, ignore)  # Eq. (5)
        ln_t2v, ln_v2t = negative_terms(logits, hard)  # Eqs. (6)-(7)
        l_t2v = c.gamma1 * lp_t2v + c.gamma2 * ln_t2v  # Eq. (8)
        l_v2t = c.gamma1 * lp_v2t + c.gamma2 * ln_v2t
        return {"loss": 0.5 * (l_t2v + l_v2t),  # Eq. (9)
                "loss_p_t2v": lp_t2v, "loss_p_v2t": lp_v2t, "loss_n_t2v": ln_t2v, "loss_n_v2t": ln_v2t,
                "num_hard": hard.sum().to(sim.dtype)}

    def _official(self, sim, ignore) -> dict[str, torch.Tensor]:
        rows = _official_direction(sim, self.cfg, ignore)
        cols = _official_direction(sim.t(), self.cfg, None if ignore is None else ignore.t())
        return {"loss": 0.5 * (rows[0] + cols[0]), "loss_p_t2v": rows[1], "loss_p_v2t": cols[1],
                "loss_n_t2v": rows[2], "loss_n_v2t": cols[2], "num_hard": rows[3] + cols[3]}


def _official_direction(sim, cfg: NegNCEConfig, ignore):
    """The authors' NegNCE on one orientation of the matrix (rows are the queries)."""
    logits = contrastive_logits(sim, cfg.official_scale, ignore)
    p = torch.softmax(logits, dim=-1).clamp(cfg.official_clamp, 1 - cfg.official_clamp)
    with torch.no_grad():
        d = sim.diagonal()
        # Their margin compares s_ij with both s_ii and s_jj (Eq. 5 compares s_ij and s_ji with s_ii).
        hard = (F.relu(cfg.margin + sim - d[:, None]) + F.relu(cfg.margin + sim - d[None, :])) > 0
        hard.fill_diagonal_(False)
        if ignore is not None:
            hard &= ~ignore
    loss_p = -torch.log(p.diagonal()).mean()
    loss_n = -torch.log(1 - p[hard]).mean() if hard.any() else torch.zeros((), dtype=sim.dtype, device=sim.device)
    return cfg.gamma1 * loss_p + cfg.gamma2 * loss_n, loss_p, loss_n, hard.sum().to(sim.dtype)
