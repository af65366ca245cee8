"""DMAE Textual Attention (Sec. 3.2, Eq. 1).

Algorithm 1 turns a caption into two per-word weight vectors (w_pos: eta for NOUN/VERB/ADJ, else 1;
w_freq: 0 for the k lowest TF-IDF words of the video's paragraph, else 1); computing them from text belongs
to the data pipeline (dmae_tpm.data). This module only combines them.
"""

from __future__ import annotations

import torch

from ...token_interaction import masked_softmax


def textual_attention(w_pos: torch.Tensor, w_freq: torch.Tensor, t_mask: torch.Tensor) -> torch.Tensor:
    """W_TA = Softmax(w_pos o w_freq) over the caption's real tokens; 0 on padding.  # Eq. (1)

    w_pos, w_freq, t_mask: (B, M). Returns (B, M), each row summing to one.
    """
    return masked_softmax(w_pos * w_freq, t_mask.bool())  # (B, M)  Eq. (1)


def uniform_textual_attention(t_mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The neutral W_TA used when Textual Attention is switched off: Eq. 1 with equal word weights."""
    ones = torch.ones(t_mask.shape, dtype=dtype, device=t_mask.device)
    return textual_attention(ones, ones, t_mask)
