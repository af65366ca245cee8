"""What each component does during training, logged per step beside the losses (issue 12 section 5).

`batch_diagnostics` reads what the training step already computed and adds no gradient: how spread Textual
Attention's weights are over a caption's words (entropy over log of the word count: 1 is uniform, 0 one word), how
much of Visual Attention's mixing goes to other frames than the frame itself, and how many of the batch's pairs
NegNCE counts as hard negatives (on the synthetic benchmark also how many of those are family near-duplicates).
TPM-CL logs its own (masked fractions, triplet terms, pairs inside the margin).
"""

from __future__ import annotations

import torch

from .dmae import SimilarityConfig, TextInput
from .negnce import hard_negative_mask
from .textual_attention import textual_attention
from .visual_attention import visual_attention


@torch.no_grad()
def ta_entropy(w_ta: torch.Tensor, t_mask: torch.Tensor) -> torch.Tensor:
    """Mean over captions of H(W_TA) / log(words), captions of two or more words: 1 uniform, 0 one word. (B, M)"""
    words = t_mask.sum(-1)  # (B,)
    p = w_ta.clamp_min(1e-30)
    entropy = -(w_ta * p.log() * t_mask).sum(-1)  # (B,)
    many = words > 1
    if not bool(many.any()):
        return torch.zeros((), device=w_ta.device)
    return (entropy[many] / words[many].float().log()).mean()


@torch.no_grad()
def va_off_diagonal(w_va: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real frames j of the share of W_VA's column j on frames other than j. (B, N, N), (B, N)"""
    column = w_va.sum(-2)  # (B, N)
    own = torch.diagonal(w_va, dim1=-2, dim2=-1)  # (B, N)
    share = (column - own) / column.clamp_min(1e-12)  # (B, N)
    real = frame_mask.bool()
    return share[real].mean() if bool(real.any()) else torch.zeros((), device=w_va.device)


@torch.no_grad()
def batch_diagnostics(cfg: SimilarityConfig, text: TextInput, v_h: torch.Tensor, frame_mask: torch.Tensor,
                      sim: torch.Tensor, ignore: torch.Tensor | None,
                      same_family: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-step diagnostics of the local batch (text, v_h, frame_mask) and the global similarity matrix `sim`.
    Hard negatives are Eq. 5's set (xi = 0) whatever the loss, so the baseline's batches are measured too;
    `same_family` (B, B), where known (the synthetic benchmark), counts those that are near-duplicates."""
    out = {}
    if cfg.textual_attention and text.w_pos is not None and text.w_freq is not None:
        out["diag/ta_entropy"] = ta_entropy(textual_attention(text.w_pos, text.w_freq, text.t_mask), text.t_mask)
    if cfg.visual_attention:
        out["diag/va_off_diagonal"] = va_off_diagonal(visual_attention(v_h, frame_mask, cfg.topk), frame_mask)
    b = sim.shape[0]
    if b > 1:
        hard = hard_negative_mask(sim.detach(), 0.0, ignore)  # (B, B)
        out["diag/hard_negatives_per_caption"] = hard.sum() / b
        out["diag/hard_negative_frac"] = hard.sum() / (b * (b - 1))
        if same_family is not None:
            out["diag/same_family_per_caption"] = same_family.sum() / b
            out["diag/hard_same_family_per_caption"] = (hard & same_family).sum() / b
    return out


__all__ = ["batch_diagnostics", "ta_entropy", "va_off_diagonal"]
