"""Temporal encoder: aggregates per-frame features into v_h (N x D) (Sec. 3.1).

``meanP`` is parameter-free (v_h is the per-frame [CLS] feature; TI/WTI does the pooling), ``seqTransf`` is
the CLIP4Clip/DRL temporal transformer: frame position embeddings, a small transformer over the sequence, and
a residual to its input. The paper feeds it ``v_tokens`` (all tokens of all frames) for MSR-VTT/MSVD and
``f_cls`` for DiDeMo/ActivityNet; either way v_h is read off the frames' [CLS] positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .features import VideoFeatures


@dataclass
class TemporalConfig:
    type: str = "seqTransf"  # "meanP" | "seqTransf"
    input: str = "v_tokens"  # "v_tokens" | "f_cls"
    layers: int = 4
    max_frames: int = 64  # size of the frame position table
    head_width: int = 64

    def __post_init__(self):
        if self.type not in ("meanP", "seqTransf"):
            raise ValueError(f"temporal.type must be 'meanP' or 'seqTransf', got {self.type!r}")
        if self.input not in ("v_tokens", "f_cls"):
            raise ValueError(f"temporal.input must be 'v_tokens' or 'f_cls', got {self.input!r}")


class TemporalEncoder(nn.Module):
    def __init__(self, cfg: TemporalConfig, embed_dim: int):
        super().__init__()
        self.cfg = cfg
        if cfg.type == "seqTransf":
            self.frame_position = nn.Embedding(cfg.max_frames, embed_dim)
            nn.init.normal_(self.frame_position.weight, std=0.01)
            layer = nn.TransformerEncoderLayer(
                embed_dim, max(1, embed_dim // cfg.head_width), 4 * embed_dim, dropout=0.0,
                activation="gelu", batch_first=True, norm_first=True)
            self.transformer = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)

    def forward(self, video: VideoFeatures) -> torch.Tensor:
        """Returns v_h: (B, N, D)."""
        if self.cfg.input == "f_cls":
            x, mask, per_frame = video.f_cls, video.frame_mask.bool(), 1  # (B, N, D)
        else:
            x, mask, per_frame = video.v_tokens, video.v_mask.bool(), video.tokens_per_frame  # (B, P, D)
        if self.cfg.type == "seqTransf":
            return self._transform(x, mask, per_frame)
        return x[:, ::per_frame]  # (B, N, D) the frames' [CLS] positions

    def _transform(self, x: torch.Tensor, mask: torch.Tensor, per_frame: int) -> torch.Tensor:
        n_frames = x.shape[1] // per_frame
        if n_frames > self.cfg.max_frames:
            raise ValueError(f"{n_frames} frames exceed temporal.max_frames={self.cfg.max_frames}; raise it")
        frame_idx = torch.arange(n_frames, device=x.device).repeat_interleave(per_frame)  # (P,)
        # A video with no real frame would make attention softmax over nothing (NaN); let it see itself.
        mask = mask.clone()
        mask[~mask.any(1), 0] = True
        *layers, last = self.transformer.layers
        y = x + self.frame_position(frame_idx)  # (B, P, D)
        for layer in layers:
            y = layer(y, src_key_padding_mask=~mask)  # (B, P, D)
        y = _cls_queries_layer(last, y, ~mask, per_frame)  # (B, N, D)
        return y + x[:, ::per_frame]  # residual to the CLIP features, as in CLIP4Clip


def _cls_queries_layer(layer: nn.TransformerEncoderLayer, y: torch.Tensor, padding: torch.Tensor,
                       per_frame: int) -> torch.Tensor:
    """The last pre-norm encoder layer, evaluated at the frames' [CLS] positions only.

    v_h reads nothing else from the last layer's output, and a position's output depends on the others only
    through its attention's keys and values, so the queries, residual and MLP can skip the K patch positions of
    every frame: the same v_h for a 1/(K+1) share of that layer's query-side work (all of it with input=f_cls).
    """
    h = layer.norm1(y)  # (B, P, D)
    q = h[:, ::per_frame]  # (B, N, D)
    attn = layer.self_attn(q, h, h, key_padding_mask=padding, need_weights=False)[0]  # (B, N, D)
    z = y[:, ::per_frame] + layer.dropout1(attn)  # (B, N, D)
    ff = layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(z)))))
    return z + layer.dropout2(ff)  # (B, N, D)
