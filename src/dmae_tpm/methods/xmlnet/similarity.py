"""X-MLNet's multi-level similarity: sentence-video, sentence-to-frames, video-to-words and word-frame, joined.

S = 1/2 (s_vs + s_fw) + alpha s_s2f + (1 - alpha) s_v2w            (the public code's training logits, alpha 0.8)
The public code ranks test sets by 1/2 (s_vs + s_fw) alone; that is `eval_score=global_fine`, the default
`full` scores with S in training and evaluation alike (docs/xmlnet.md X3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...token_interaction import masked_mean
from .cross_attention import CrossAttentionBlock, sentence_to_frames, video_to_words
from .cross_grained import WordFrameSimilarity


@dataclass
class XText:
    """A caption for X-MLNet: sentence s and words w, L2-normalised."""

    s: torch.Tensor  # (B, D)
    words: torch.Tensor  # (B, L, D)
    word_mask: torch.Tensor  # (B, L) bool


@dataclass
class XVideo:
    """A video for X-MLNet: pooled video v and per-frame features f, L2-normalised."""

    v: torch.Tensor  # (B, D)
    frames: torch.Tensor  # (B, F, D)
    frame_mask: torch.Tensor  # (B, F) bool


def pooled_video(v_h: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """v: the masked mean over frames of the L2-normalised temporal output, L2-normalised. (B, N, D) -> (B, D)"""
    mask = frame_mask.bool()[..., None].expand_as(v_h)
    return F.normalize(masked_mean(F.normalize(v_h, dim=-1), mask, dim=1), dim=-1)


def combine(s_vs, s_fw, s_s2f, s_v2w, alpha: float) -> torch.Tensor:
    """S = 1/2 (s_vs + s_fw) + alpha s_s2f + (1 - alpha) s_v2w, all (B_t, B_v)."""
    return 0.5 * (s_vs + s_fw) + alpha * s_s2f + (1.0 - alpha) * s_v2w


class MultiLevelSimilarity(nn.Module):
    def __init__(self, embed_dim: int, max_words: int, max_frames: int, heads: int = 8, dropout: float = 0.3,
                 init: str = "identity", alpha: float = 0.8, temperature: float = 0.01):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"xmlnet.alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha
        self.s2f = CrossAttentionBlock(embed_dim, heads, dropout, init)
        self.v2w = CrossAttentionBlock(embed_dim, heads, dropout, init)
        self.word_frame = WordFrameSimilarity(embed_dim, max_words, max_frames, temperature)

    def levels(self, text: XText, video: XVideo, cross: bool = True) -> dict[str, torch.Tensor]:
        """Each level's (B_t, B_v) score; cross=False leaves out the two cross-attention levels."""
        out = {"s_vs": text.s @ video.v.t(),
               "s_fw": self.word_frame(text.words, text.word_mask, video.frames, video.frame_mask)}
        if cross:
            out["s_s2f"] = sentence_to_frames(self.s2f, text.s, video.frames, video.frame_mask)
            out["s_v2w"] = video_to_words(self.v2w, video.v, text.words, text.word_mask)
        return out

    def forward(self, text: XText, video: XVideo, full: bool = True) -> torch.Tensor:
        """S (B_t, B_v); full=False: the public code's test-time 1/2 (s_vs + s_fw) (no cross-attention)."""
        lv = self.levels(text, video, cross=full)
        if not full:
            return 0.5 * (lv["s_vs"] + lv["s_fw"])
        return combine(lv["s_vs"], lv["s_fw"], lv["s_s2f"], lv["s_v2w"], self.alpha)
