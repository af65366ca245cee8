"""X-MLNet's cross-attention levels (X-Pool's block): a query embedding attends over the other modality's tokens of
every candidate, giving one query-conditioned embedding per (query, candidate) pair.

sentence -> frames: query s_t, keys/values the frames f_v of each video  -> (B_t, B_v, D), s_s2f[t, v]
video -> words:     query v_v, keys/values the words w_t of each caption -> (B_v, B_t, D), s_v2w[v, t],
                    transposed into caption x video order (the public code adds it untransposed: docs/xmlnet.md X4).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...token_interaction import masked_softmax


class CrossAttention(nn.Module):
    """Multi-head attention of one query vector per row over a candidate's keys, for all (query, candidate) pairs.

    q (Q, D), keys (C, K, D), key_mask (C, K) bool -> (Q, C, D). Softmax over the K keys of each candidate, padded
    keys excluded; a candidate with no real key (an unreadable video) attends to nothing: zeros before out_proj.
    """

    def __init__(self, embed_dim: int, heads: int):
        super().__init__()
        if embed_dim % heads:
            raise ValueError(f"xmlnet.heads={heads} must divide the embedding width {embed_dim}")
        self.heads, self.head_dim = heads, embed_dim // heads
        self.q_proj, self.k_proj = nn.Linear(embed_dim, embed_dim), nn.Linear(embed_dim, embed_dim)
        self.v_proj, self.out_proj = nn.Linear(embed_dim, embed_dim), nn.Linear(embed_dim, embed_dim)

    def forward(self, q: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        n_q, (n_c, n_k, d) = q.shape[0], keys.shape
        h, hd = self.heads, self.head_dim
        qh = self.q_proj(q).view(n_q, h, hd)  # (Q, H, hd)
        kh = self.k_proj(keys).view(n_c, n_k, h, hd)  # (C, K, H, hd)
        vh = self.v_proj(keys).view(n_c, n_k, h, hd)  # (C, K, H, hd)
        logits = torch.einsum("qhd,ckhd->qchk", qh, kh) / math.sqrt(hd)  # (Q, C, H, K)
        attn = masked_softmax(logits, key_mask.bool()[None, :, None, :].expand_as(logits))  # (Q, C, H, K)
        out = torch.einsum("qchk,ckhd->qchd", attn, vh).reshape(n_q, n_c, d)  # (Q, C, D)
        return self.out_proj(out)


class CrossAttentionBlock(nn.Module):
    """X-Pool's block: a shared LayerNorm on query and keys, cross-attention, LayerNorm, a residual Linear through
    dropout, LayerNorm. `init="identity"` is X-Pool's (every projection the identity, biases 0); "normal" is what
    the public X-MLNet code ends up with (N(0, 0.02) from a later init_weights pass)."""

    def __init__(self, embed_dim: int, heads: int, dropout: float = 0.3, init: str = "identity"):
        super().__init__()
        self.attn = CrossAttention(embed_dim, heads)
        self.linear = nn.Linear(embed_dim, embed_dim)
        self.norm_in, self.norm_attn, self.norm_out = (nn.LayerNorm(embed_dim) for _ in range(3))
        self.dropout = nn.Dropout(dropout)
        self.reset(init)

    def reset(self, init: str) -> None:
        if init not in ("identity", "normal"):
            raise ValueError(f"xmlnet.cross_init must be 'identity' or 'normal', got {init!r}")
        for lin in (self.attn.q_proj, self.attn.k_proj, self.attn.v_proj, self.attn.out_proj, self.linear):
            if init == "identity":
                nn.init.eye_(lin.weight)
            else:
                nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)

    def forward(self, q: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """q (Q, D), keys (C, K, D), key_mask (C, K) -> query-conditioned candidate embeddings (Q, C, D)."""
        out = self.norm_attn(self.attn(self.norm_in(q), self.norm_in(keys), key_mask))  # (Q, C, D)
        return self.norm_out(out + self.dropout(self.linear(out)))


def conditioned_score(query: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """<query_q, norm(pooled[q, c])>: (Q, D), (Q, C, D) -> (Q, C). The query is L2-normalised already."""
    return torch.einsum("qd,qcd->qc", query, F.normalize(pooled, dim=-1))


def sentence_to_frames(block: CrossAttentionBlock, s: torch.Tensor, frames: torch.Tensor,
                       frame_mask: torch.Tensor) -> torch.Tensor:
    """s_s2f (B_t, B_v): each sentence pools each video's frames. s (B_t, D), frames (B_v, F, D)."""
    return conditioned_score(s, block(s, frames, frame_mask))


def video_to_words(block: CrossAttentionBlock, v: torch.Tensor, words: torch.Tensor,
                   word_mask: torch.Tensor) -> torch.Tensor:
    """s_v2w in caption x video order (B_t, B_v): each video pools each caption's words. v (B_v, D),
    words (B_t, L, D)."""
    return conditioned_score(v, block(v, words, word_mask)).t()  # (B_v, B_t) -> (B_t, B_v)
