"""Inference-time re-scoring of a caption x video score matrix (paper Table 9; off by default in the project).

Both methods are transductive or use extra data at test time, which is why the project reports them apart:

* `dual_softmax` (DSL, CAMoE / TS2-Net) re-weights every score with a softmax over the *whole test set*, so a
  query's ranking depends on the other test queries.
* `querybank_norm` (QB-Norm with the Dynamic Inverted Softmax) normalises with a bank of training captions.

Rows are captions (text queries) and columns videos, as everywhere in the project. Scores are computed in
float32 or better; inputs must be finite (pad with -inf only after post-processing, since 0 * -inf is NaN).
"""

from __future__ import annotations

import torch


def _finite_scores(sim: torch.Tensor, name: str) -> torch.Tensor:
    sim = torch.as_tensor(sim)
    if sim.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(sim.shape)}")
    sim = sim.to(torch.promote_types(sim.dtype, torch.float32))
    bad = ~sim.isfinite()  # (Q, V)
    if bad.any():
        first = int(bad.any(1).nonzero()[0, 0])
        raise ValueError(
            f"{name} has {int(bad.sum())} NaN/inf entries (first in row {first}); post-processing needs finite scores"
        )
    return sim


def dual_softmax(sim: torch.Tensor, temperature: float = 0.01, dim: int = 0) -> torch.Tensor:
    """Dual Softmax at inference: sim * softmax(sim / temperature, dim), the prior taken over the caption axis.

    Convention checked in TS2-Net (github.com/yuqi657/ts2_net, main_task_retrieval.py, eval_epoch):
    ``sim_matrix_dsl = sim_matrix * softmax(sim_matrix, axis=0)`` on the caption x video matrix of *logits*
    (cosine * logit_scale.exp(), the scale clamped at 100 in training), computed before the multi-caption
    reshaping, and the same re-scored matrix is used for both directions (rows for t2v, its transpose or the
    caption-group max for v2t). Hence:

    * axis: ``dim=0``, a softmax over all test captions for each video, i.e. how strongly a video prefers this
      caption over the other test captions. It uses the statistics of the whole test gallery (transductive).
    * scale: ``temperature=0.01`` on cosine scores equals TS2-Net's softmax of logits at scale 100; the output
      is theirs divided by 100, a positive factor that changes no ranking. Pass ``temperature=1`` for logits.
    * direction: feed the one returned matrix to `metrics.retrieval_metrics` for both t2v and v2t, as TS2-Net
      does. ``dim=1`` (prior over videos) is the transposed prior of CAMoE's v2t loss term, for experiments.

    Like TS2-Net, the raw score multiplies the prior, so negative scores become more negative where the prior
    is large. Returns a new (C, V) tensor.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    s = _finite_scores(sim, "sim")  # (C, V)
    return s * torch.softmax(s / temperature, dim=dim)  # (C, V)


def querybank_norm(sim: torch.Tensor, bank_sim: torch.Tensor, beta: float = 20.0, k: int = 1) -> torch.Tensor:
    """QB-Norm with the Dynamic Inverted Softmax (Bogolin et al., "Cross Modal Retrieval with Querybank
    Normalisation", CVPR 2022), for text-to-video ranking.

    sim (Q, V) test queries x test gallery, bank_sim (Qb, V) a query bank (training captions) x the same gallery.
    Convention of the authors' code (github.com/ioanacroi/qb-norm, dynamic_inverted_softmax.py, ``qb_norm``),
    which later text-video codebases copy as is (DRL's public repository ships no QB-Norm code of its own):

    * activation set A = the gallery items among the top-k of at least one bank query;
    * a test query whose top-1 gallery item is in A has its *whole row* replaced by the inverted softmax
      exp(beta * s[q, v]) / sum_b exp(beta * bank_sim[b, v]); every other row keeps its raw scores.

    The normalised row is returned as its logarithm, beta * s[q, v] - logsumexp_b(beta * bank_sim[b, v]):
    a monotone map, so each row ranks exactly as in the reference, without exp overflowing for logits or
    underflowing into false ties. Rows are normalised whole, so scores stay comparable *within* a row, which
    is all t2v ranking uses; across rows raw and normalised values mix, so do not rank columns (v2t) of the
    result. Ties: top-k and top-1 take the lowest gallery index first. Returns a new (Q, V) tensor.
    """
    s = _finite_scores(sim, "sim")  # (Q, V)
    bank = _finite_scores(bank_sim, "bank_sim")  # (Qb, V)
    if bank.shape[1] != s.shape[1]:
        raise ValueError(f"bank_sim has {bank.shape[1]} gallery columns, sim has {s.shape[1]}")
    if not 1 <= k <= s.shape[1]:
        raise ValueError(f"k must be in [1, {s.shape[1]}], got {k}")
    dtype = torch.promote_types(s.dtype, bank.dtype)
    s, bank = s.to(dtype), bank.to(dtype)

    # A stable sort makes the top-k deterministic under ties (numpy's default argsort does not promise that).
    topk = bank.sort(dim=1, descending=True, stable=True).indices[:, :k]  # (Qb, k)
    active = torch.zeros(s.shape[1], dtype=torch.bool, device=s.device)  # (V,)
    active[topk.reshape(-1)] = True
    normalise = active[s.argmax(1)]  # (Q,) argmax returns the first maximum
    log_z = torch.logsumexp(beta * bank, dim=0)  # (V,) log of the bank's column sums of exp(beta * s)
    return torch.where(normalise[:, None], beta * s - log_z, s)  # (Q, V)
