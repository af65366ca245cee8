"""Token-wise interaction (TI) and weighted token-wise interaction (WTI), as defined by DRL [47].

Both reduce a token-to-token cosine-similarity matrix S (M text tokens x N video tokens) to one score:
text-to-video takes, for every text token, its best video token and averages over text tokens; video-to-text
does the same the other way; the score is the mean of the two directions. WTI replaces both averages by
learned softmax weights over the tokens. Padded tokens are excluded from every max and every average, so
padding never changes a score.

`token_interaction` works on arbitrary leading dimensions (B matched pairs: sim of shape (B, M, N)).
`all_pairs_token_interaction` scores every caption against every video of two sets, the hot path of training
(B x B) and evaluation (chunks of the test set): the same values, computed from one matmul in the layout it comes
out in, with padding excluded by adding -inf in place (docs/performance.md, evaluation similarity).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NEG_INF = float("-inf")


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over the positions where mask is True; exactly 0 elsewhere (and 0 if a row has none)."""
    logits = logits.masked_fill(~mask, NEG_INF)
    out = torch.softmax(logits, dim=dim)
    return out.nan_to_num(0.0)  # rows with no valid position come out as NaN


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum(dim) / mask.sum(dim).clamp_min(1.0)


def masked_max(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Max over valid positions. Positions that have no valid partner at all come out as 0, not -inf."""
    out = x.masked_fill(~mask, NEG_INF).amax(dim)
    return out.masked_fill(torch.isinf(out), 0.0)


def token_interaction(
    sim: torch.Tensor,
    text_mask: torch.Tensor,
    video_mask: torch.Tensor,
    text_weight: torch.Tensor | None = None,
    video_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """TI (weights None) or WTI (weights given) on a token similarity matrix.

    sim: (..., M, N); text_mask / text_weight: broadcastable to (..., M); video_mask / video_weight to (..., N).
    Weights must already be zero on padded tokens and sum to one (see TokenWeights).
    Returns (...,).
    """
    text_mask = text_mask.bool()
    video_mask = video_mask.bool()
    pair_mask = text_mask.unsqueeze(-1) & video_mask.unsqueeze(-2)  # (..., M, N)
    t2v = masked_max(sim, pair_mask, dim=-1)  # (..., M) best video token per text token
    v2t = masked_max(sim, pair_mask, dim=-2)  # (..., N) best text token per video token
    if text_weight is None:
        t2v_score = masked_mean(t2v, text_mask.expand_as(t2v))
    else:
        t2v_score = (t2v * text_weight).sum(-1)
    if video_weight is None:
        v2t_score = masked_mean(v2t, video_mask.expand_as(v2t))
    else:
        v2t_score = (v2t * video_weight).sum(-1)
    return 0.5 * (t2v_score + v2t_score)


def neg_inf_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """0 where mask is True, -inf elsewhere: added to scores, it removes the padded positions from every max."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask.bool(), NEG_INF)


def finite_or_zero(x: torch.Tensor) -> torch.Tensor:
    """A max over positions that were all padding is -inf; count it as 0, as `masked_max` does (out of place:
    autograd keeps the max's output for its backward)."""
    return torch.where(torch.isinf(x), torch.zeros((), dtype=x.dtype, device=x.device), x)


def uniform_weights(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """TI's plain mean written as weights: 1/count on the real tokens, 0 on padding. (..., L)"""
    mask = mask.to(dtype)
    return mask / mask.sum(-1, keepdim=True).clamp_min(1.0)


def all_pairs_token_interaction(
    t_tokens: torch.Tensor,
    t_mask: torch.Tensor,
    v_tokens: torch.Tensor,
    v_mask: torch.Tensor,
    text_weight: torch.Tensor | None = None,
    video_weight: torch.Tensor | None = None,
    frame_mix: torch.Tensor | None = None,
) -> torch.Tensor:
    """TI (weights None) or WTI of every caption with every video, on unnormalised token features.

    t_tokens (C, M, D), t_mask / text_weight (C, M); v_tokens (V, N, D), v_mask / video_weight (V, N).
    Returns (C, V), equal to `token_interaction(cosine_tokens(t, v, pairwise=True), ...)`.
    frame_mix (V, N, N), optional: each pair's similarity matrix is right-multiplied by its video's matrix
    before the interaction (DMAE's S . W_VA, Eq. 3); it must be zero in the rows and columns of padded frames.
    Only the similarity itself is of size C x M x V x N: no permuted copy, no 4-D masks, no masked copies.
    """
    c, m, d = t_tokens.shape
    v, n, _ = v_tokens.shape
    t_hat = F.normalize(t_tokens, dim=-1).reshape(c * m, d)  # (C*M, D)
    v_hat = F.normalize(v_tokens, dim=-1).reshape(v * n, d)  # (V*N, D)
    s = (t_hat @ v_hat.T).view(c, m, v, n)  # (C, M, V, N) the matmul's own layout
    if frame_mix is not None:
        s = torch.einsum("cmvi,vij->cmvj", s, frame_mix.to(s.dtype))  # (C, M, V, N)  S . W_VA
    s += neg_inf_bias(t_mask, s.dtype)[:, :, None, None]  # (C, M, 1, 1) padded words lose every max
    s += neg_inf_bias(v_mask, s.dtype)[None, None]  # (1, 1, V, N) padded frames too
    t2v = finite_or_zero(s.amax(3))  # (C, M, V) best video token per text token
    v2t = finite_or_zero(s.amax(1))  # (C, V, N) best text token per video token
    tw = uniform_weights(t_mask, t2v.dtype) if text_weight is None else text_weight.to(t2v.dtype)
    vw = uniform_weights(v_mask, v2t.dtype) if video_weight is None else video_weight.to(v2t.dtype)
    t2v_score = torch.einsum("cmv,cm->cv", t2v, tw)  # (C, V)
    v2t_score = torch.einsum("cvn,vn->cv", v2t, vw)  # (C, V)
    return 0.5 * (t2v_score + v2t_score)


def cosine_tokens(a: torch.Tensor, b: torch.Tensor, pairwise: bool) -> torch.Tensor:
    """Cosine similarity of every token of a with every token of b.

    pairwise=True: a (B_t, M, D), b (B_v, N, D) -> (B_t, B_v, M, N) for all pairs of the batch.
    pairwise=False: a (B, M, D), b (B, N, D) -> (B, M, N) for matched pairs only.
    """
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    if pairwise:
        return torch.einsum("amd,bnd->abmn", a, b)
    return torch.einsum("bmd,bnd->bmn", a, b)


class TokenWeights(nn.Module):
    """WTI's learned token weights: a linear score per token, softmax over the real tokens (DRL)."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.text_fc = nn.Linear(embed_dim, 1)
        self.video_fc = nn.Linear(embed_dim, 1)

    def text(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_softmax(self.text_fc(tokens).squeeze(-1), mask.bool())  # (B, M)

    def video(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_softmax(self.video_fc(tokens).squeeze(-1), mask.bool())  # (B, N)
