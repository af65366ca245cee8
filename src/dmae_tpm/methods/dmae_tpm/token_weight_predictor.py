"""Cross-Modal Token Weight Predictor of TPM-CL (Sec. 3.3 Eqs. 10-11, Appendix A.2 Eqs. 20-21).

Text side: the frames' f_cls (N x D) are mixed into M rows by a learned M x N matrix W (Eq. 20), concatenated
with t_tokens (Eq. 21), and an MLP + Softmax gives one weight per word (Eq. 10). Video side: the same with
t_cls (1 x D) mixed into P rows and v_tokens (Eq. 11).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...token_interaction import masked_softmax


class CrossModalTokenWeightPredictor(nn.Module):
    """Predicts weights over `num_tokens` tokens of one modality from `num_queries` features of the other.

    normalize="softmax" is the paper's f_tw (MLP + Softmax); "sigmoid" is the authors' code (a sigmoid per
    token, then divided by the sum). Either way the weights are 0 on padded tokens and sum to one.
    """

    def __init__(self, num_queries: int, num_tokens: int, embed_dim: int, normalize: str = "softmax"):
        super().__init__()
        if normalize not in ("softmax", "sigmoid"):
            raise ValueError(f"tpm.predictor_normalize must be 'softmax' or 'sigmoid', got {normalize!r}")
        self.normalize = normalize
        self.mix = nn.Parameter(torch.empty(num_tokens, num_queries))  # W in Eq. (20)
        nn.init.normal_(self.mix, std=num_queries ** -0.5)
        self.mlp = nn.Sequential(  # f_tw / f_vw in Eqs. (10)-(11), before the Softmax
            nn.LayerNorm(2 * embed_dim),
            nn.Linear(2 * embed_dim, embed_dim // 2),
            nn.GELU(),
            nn.Linear(embed_dim // 2, 1),
        )

    def forward(self, queries: torch.Tensor, query_mask: torch.Tensor,
                tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """queries (B, Q, D) with query_mask (B, Q); tokens (B, T, D) with token_mask (B, T). Returns (B, T)."""
        q_len, t_len = queries.shape[1], tokens.shape[1]
        if q_len > self.mix.shape[1] or t_len > self.mix.shape[0]:
            raise ValueError(f"token weight predictor built for {self.mix.shape[1]} queries x "
                             f"{self.mix.shape[0]} tokens, got {q_len} x {t_len}; raise max_words/max_frames")
        queries = queries * query_mask.unsqueeze(-1).to(queries.dtype)  # padded frames must not leak in
        mix = self.mix[:t_len, :q_len]
        if q_len == 1:  # the video side: the t_cls half is rank one, factorised (measured 1.9x, 206 -> 94 MiB)
            hidden = self.first_layer(mix, queries, tokens)  # (B, T, D/2)
        else:  # the text side: N frames mixed into M rows; factorising measured no faster here
            mixed = torch.einsum("tq,bqd->btd", mix, queries)  # (B, T, D)  Eq. (20)
            hidden = self.mlp[1](self.mlp[0](torch.cat([tokens, mixed], dim=-1)))  # Eq. (21), (B, T, 2D) joint
        score = self.mlp[3](self.mlp[2](hidden)).squeeze(-1)  # (B, T)
        token_mask = token_mask.bool()
        if self.normalize == "softmax":
            return masked_softmax(score, token_mask)  # (B, T)  Eqs. (10)-(11)
        gate = torch.sigmoid(score) * token_mask.to(score.dtype)
        return gate / gate.sum(-1, keepdim=True).clamp_min(1e-12)


    def first_layer(self, mix: torch.Tensor, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Linear(LayerNorm([tokens; mix @ queries])) of Eqs. (20)-(21) for one query (B, 1, D), without the
        (B, T, 2D) joint: mixed row t is mix[t] * q, so LayerNorm's mean and variance come from each half's sums
        and the first Linear splits into a token half and a query half computed once per sample. Equal to the
        concatenated form (tests/test_tpm_cl.py); statistics in float32 (float64 stays), as LayerNorm's under
        autocast."""
        norm, linear = self.mlp[0], self.mlp[1]
        d = tokens.shape[-1]
        g_t, g_q = norm.weight[:d], norm.weight[d:]
        w_t, w_q = linear.weight[:, :d], linear.weight[:, d:]  # (H, D) each
        acc = torch.promote_types(tokens.dtype, torch.float32)
        t_acc, c, m = tokens.to(acc), queries[:, 0].to(acc), mix[:, 0].to(acc)  # (B, T, D), (B, D), (T,)
        mean = (t_acc.sum(-1) + m * c.sum(-1, keepdim=True)) / (2 * d)  # (B, T)
        square = (t_acc.square().sum(-1) + m.square() * c.square().sum(-1, keepdim=True)) / (2 * d)
        inv_std = torch.rsqrt((square - mean.square()).clamp_min(0) + norm.eps)  # (B, T)
        a_t = F.linear(tokens * g_t, w_t)  # (B, T, H)
        a_q = F.linear(queries[:, 0] * g_q, w_q)  # (B, H): once per sample
        centre = (w_t @ g_t + w_q @ g_q) * mean.unsqueeze(-1)  # mean x W g: (B, T, H)
        shift = m.to(a_t.dtype)[None, :, None] * a_q[:, None, :]  # (B, T, H)
        return (a_t + shift - centre) * inv_std.unsqueeze(-1) + (linear.weight @ norm.bias + linear.bias)


def text_token_weights(predictor: CrossModalTokenWeightPredictor, f_cls, frame_mask, t_tokens, t_mask):
    """w^p_tokens = f_tw([t_tokens; W f_cls]).  # Eq. (10)"""
    return predictor(f_cls, frame_mask, t_tokens, t_mask)  # (B, M)


def video_token_weights(predictor: CrossModalTokenWeightPredictor, t_cls, v_tokens, v_mask):
    """w^p_{v_tokens} = f_vw([v_tokens; W t_cls]).  # Eq. (11)"""
    ones = torch.ones(t_cls.shape[0], 1, dtype=torch.bool, device=t_cls.device)
    return predictor(t_cls.unsqueeze(1), ones, v_tokens, v_mask)  # (B, P)


def weighted_global(tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """t_g = t_tokens . w^p (Eq. 15); with masked tokens, t_g^p (Eq. 16). (B, T, D), (B, T) -> (B, D)."""
    return torch.einsum("btd,bt->bd", tokens, weights)


__all__ = ["CrossModalTokenWeightPredictor", "text_token_weights", "video_token_weights", "weighted_global"]
