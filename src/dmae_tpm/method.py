"""The one interface the trainer and the evaluator use of a retrieval method (DMAE-TPM, X-MLNet).

A method is an `nn.Module` holding the shared CLIP backbone as `self.backbone`. Its text and video embeddings are
dataclasses of tensors whose first dimension is the caption / video (`features.map_fields` slices, concatenates,
casts and gathers them), so the evaluator can encode a test set once and score it in chunks without knowing what a
method keeps of a caption or a video.

    embed_text(batch)          batch: tokens (B, L), and the caption fields the data pipeline adds (w_pos, w_freq)
    embed_video(frames, mask)  frames (B, N, 3, H, W), mask (B, N) bool
    score(text, video)         (B_t, B_v) similarity, the one used in training and, in chunks, in evaluation
    forward(batch, gather)     training losses: {"loss": total, named terms...}; `gather` maps an embedding to the
                               global batch's (exact gradients under DDP, identity in one process)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Gather = Callable[[Any], Any]


def no_gather(x):
    return x


class RetrievalMethod(nn.Module):
    """Base class; see the module docstring for the contract."""

    backbone: nn.Module
    logit_scale_max: float = 100.0

    def logit_scale(self) -> torch.Tensor:
        """CLIP's learned temperature, clamped as in CLIP: tau of the contrastive losses."""
        return self.backbone.logit_scale.exp().clamp(max=self.logit_scale_max)

    def embed_text(self, batch: dict[str, torch.Tensor]) -> Any:
        raise NotImplementedError

    def embed_video(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> Any:
        raise NotImplementedError

    def score(self, text: Any, video: Any) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor], gather: Gather = no_gather) -> dict[str, torch.Tensor]:
        raise NotImplementedError
