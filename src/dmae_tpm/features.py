"""Feature containers passed between the encoders, the similarity and the losses (Sec. 3.1)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class TextFeatures:
    """Outputs of the text encoder g(t) in the joint space (not L2-normalised)."""

    t_cls: torch.Tensor  # (B, D)      sentence feature: the [EOS] token
    t_tokens: torch.Tensor  # (B, M, D) word-level features, all M context positions
    t_mask: torch.Tensor  # (B, M) bool, True on the tokens that count: [BOS] words [EOS] (word_mask_specials)

    def __getitem__(self, idx) -> TextFeatures:
        return TextFeatures(self.t_cls[idx], self.t_tokens[idx], self.t_mask[idx])


@dataclass
class VideoFeatures:
    """Outputs of the video encoder h(v) in the joint space (not L2-normalised).

    v_tokens is frame-major: frame n owns positions n*(K+1) ... n*(K+1)+K, its [CLS] first.
    """

    f_cls: torch.Tensor  # (B, N, D)   per-frame [CLS] features
    v_tokens: torch.Tensor  # (B, P, D) P = N*(K+1): per-frame [CLS] + K patch tokens
    frame_mask: torch.Tensor  # (B, N) bool, False on padded frames

    @property
    def tokens_per_frame(self) -> int:
        return self.v_tokens.shape[1] // self.f_cls.shape[1]

    @property
    def v_mask(self) -> torch.Tensor:
        return self.frame_mask.repeat_interleave(self.tokens_per_frame, dim=1)  # (B, P)

    def __getitem__(self, idx) -> VideoFeatures:
        return VideoFeatures(self.f_cls[idx], self.v_tokens[idx], self.frame_mask[idx])


def map_fields(fn, *items):
    """`fn` applied field by field across dataclass instances of one type (None fields stay None): how the trainer
    and the evaluator slice, concatenate, cast and gather a method's embeddings without knowing their fields.
    Every field's first dimension is the caption / video index."""
    first = items[0]
    out = {}
    for f in fields(first):
        values = [getattr(x, f.name) for x in items]
        out[f.name] = None if values[0] is None else fn(*values)
    return type(first)(**out)
