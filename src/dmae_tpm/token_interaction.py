"""Token-wise interaction (TI) and weighted token-wise interaction (WTI), as defined by DRL [47].

Both reduce a token-to-token cosine-similarity matrix S (M text tokens x N video tokens) to one score:
text-to-video takes, for every text token, its best video token and averages over text tokens; video-to-text
does the same the other way; the score is the mean of the two directions. WTI replaces both averages by
learned softmax weights over the tokens. Padded tokens are excluded from every max and every average, so
padding never changes a score.

`token_interaction` works on arbitrary leading dimensions (B matched pairs: sim of shape (B, M, N)).
`all_pairs_token_interaction` scores every caption against every video of two sets, the hot path of training
(B x B) and evaluation (chunks of the test set): the same values, computed from one matmul in the layout it comes
out in, with padded slots holding copies of real tokens so that no pass over the product removes them
(docs/performance.md, evaluation similarity).
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


def fill_padding(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """tokens with every padded slot holding a copy of its row's first real token (zeros in a row with none).

    A max over a row's tokens is then the max over its real ones, with no -inf pass: a copy only ties with its
    original (and autograd's tie split hands the original the whole gradient back). A row with no real token
    scores 0 against everything, the value `masked_max` gives it. tokens (B, L, D), mask (B, L) -> (B, L, D).
    """
    mask = mask.bool()
    first = mask.int().argmax(-1)  # (B,) the first real slot; 0 in a row with none
    src = tokens.gather(1, first[:, None, None].expand(-1, 1, tokens.shape[-1]))  # (B, 1, D)
    src = src * mask.any(-1)[:, None, None].to(src.dtype)  # (B, 1, D) zeros for a row with no real token
    return torch.where(mask[..., None], tokens, src)


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

    One matmul, kept in its own layout (V, N, C, M): the max over frames then runs across contiguous words and the
    max over words along them, both vectorised (the (C, M, V, N) layout spent 3x longer on its max over the 12
    frames of MSR-VTT), and S . W_VA is one batched matmul per video with no permuted copy. Padding is removed by
    `fill_padding` rather than -inf passes over the product (docs/performance.md, evaluation similarity).
    """
    c, m, d = t_tokens.shape
    v, n, _ = v_tokens.shape
    t_hat = F.normalize(fill_padding(t_tokens, t_mask), dim=-1).reshape(c * m, d)  # (C*M, D)
    v_hat = F.normalize(fill_padding(v_tokens, v_mask), dim=-1).reshape(v * n, d)  # (V*N, D)
    s = (v_hat @ t_hat.T).view(v, n, c * m)  # (V, N, C*M) the matmul's own layout
    if frame_mix is not None:
        # Eq. (3)'s S . W_VA: (S W)[.., j] = sum_i S[.., i] W[i, j], here W^T @ s per video. W_VA's padded columns
        # would give padded frames a 0 that could win a max: they get a copy of a real frame's column instead.
        mix_t = fill_padding(frame_mix.to(s.dtype).transpose(1, 2), v_mask)  # (V, N_j, N_i)
        s = torch.bmm(mix_t, s)  # (V, N, C*M)
    s = s.view(v, n, c, m)  # (V, N, C, M)
    t2v = s.amax(1)  # (V, C, M) best video token per text token
    v2t = s.amax(3)  # (V, N, C) best text token per video token
    tw = uniform_weights(t_mask, t2v.dtype) if text_weight is None else text_weight.to(t2v.dtype)
    vw = uniform_weights(v_mask, v2t.dtype) if video_weight is None else video_weight.to(v2t.dtype)
    t2v_score = torch.einsum("vcm,cm->cv", t2v, tw * t_mask)  # (C, V) padded words' copies weigh 0
    v2t_score = torch.einsum("vnc,vn->cv", v2t, vw * v_mask)  # (C, V)
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
