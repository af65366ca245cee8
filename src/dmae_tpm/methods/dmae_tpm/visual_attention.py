"""DMAE Visual Attention (Sec. 3.2, Eq. 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def frame_self_similarity(v_h: torch.Tensor) -> torch.Tensor:
    """S(v_h, v_h): cosine similarity between the frames of each video. (B, N, D) -> (B, N, N)."""
    v = F.normalize(v_h, dim=-1)
    return v @ v.transpose(-1, -2)  # (B, N, N)


def visual_attention(v_h: torch.Tensor, frame_mask: torch.Tensor, k: int = 2) -> torch.Tensor:
    """W_VA = topK(S(v_h, v_h), dim=0): per column keep the k largest entries, zero the rest.  # Eq. (2)

    Column j then holds frame j itself (self-similarity 1) and the k-1 frames most similar to it, so that
    S(t, v_h) @ W_VA adds to every frame's score the scores of its most similar frames, weighted by how
    similar they are. Padded frames never enter a top-k and their columns are zero.
    v_h: (B, N, D), frame_mask: (B, N) bool. Returns (B, N, N).
    """
    frame_mask = frame_mask.bool()
    sim = frame_self_similarity(v_h)  # (B, N, N)
    valid = frame_mask.unsqueeze(-1) & frame_mask.unsqueeze(-2)  # (B, N, N)
    k = min(k, sim.shape[-1])
    values, rows = sim.masked_fill(~valid, float("-inf")).topk(k, dim=-2)  # (B, k, N)  dim 0 of each N x N
    values = values.masked_fill(torch.isinf(values), 0.0)  # fewer than k real frames
    return torch.zeros_like(sim).scatter(-2, rows, values)  # (B, N, N)  Eq. (2)


def identity_visual_attention(frame_mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The neutral W_VA used when Visual Attention is switched off."""
    eye = torch.eye(frame_mask.shape[-1], dtype=dtype, device=frame_mask.device)
    return eye * frame_mask.unsqueeze(-1).to(dtype)  # (B, N, N)
