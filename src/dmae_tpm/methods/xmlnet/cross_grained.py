"""X-MLNet's word-frame level: X-CLIP's attention over the word x frame similarity matrix, as the public code
modifies it (docs/xmlnet.md X5).

G[t, l, v, f] = w_{t,l} M f_{v,f}^T with M (D x D, identity at init).
Word side:  a = softmax over words of G / T, mixed across words by an L x L matrix, weights the sum over words
            -> one score per frame (B_t, B_v, F); then softmax over frames of that / T, mixed by an F x F matrix,
            weights the max over words of G -> (B_t, B_v).
Frame side: the same with words and frames exchanged -> (B_t, B_v).
s_fw = the mean of the two sides. X-CLIP's second stage weights the first stage's logits; X-MLNet's weights the
max-pooled G (as implemented). Padded words and frames are excluded from every softmax, mix and max (the public
code has no masks), so a caption's score does not depend on how far it is padded.
"""

from __future__ import annotations

import torch
from torch import nn

from ...token_interaction import masked_max, masked_softmax


def _mixed_weights(logits: torch.Tensor, mask: torch.Tensor, mix: torch.Tensor, dim: int) -> torch.Tensor:
    """softmax over `dim` (mask True = real), mixed across that axis by `mix` (n x n: out[m] = sum_l a[l] mix[l, m]),
    zero again on padded positions."""
    a = masked_softmax(logits, mask, dim=dim).movedim(dim, -1)  # (..., n)
    return (a @ mix).movedim(-1, dim) * mask  # (..., n) along dim


class WordFrameSimilarity(nn.Module):
    """s_fw (B_t, B_v) from words (B_t, L, D) and frames (B_v, F, D), both L2-normalised."""

    def __init__(self, embed_dim: int, max_words: int, max_frames: int, temperature: float = 0.01):
        super().__init__()
        self.temperature = temperature
        self.local = nn.Parameter(torch.eye(embed_dim))  # M
        self.word_mix, self.word_mix2 = nn.Parameter(torch.eye(max_words)), nn.Parameter(torch.eye(max_words))
        self.frame_mix, self.frame_mix2 = nn.Parameter(torch.eye(max_frames)), nn.Parameter(torch.eye(max_frames))

    def forward(self, words, word_mask, frames, frame_mask) -> torch.Tensor:
        n_w, n_f = words.shape[1], frames.shape[1]
        if n_w != self.word_mix.shape[0] or n_f != self.frame_mix.shape[0]:
            raise ValueError(f"word-frame term built for {self.word_mix.shape[0]} words x {self.frame_mix.shape[0]} "
                             f"frames, got {n_w} x {n_f}: the model's max_words / max_frames must match the data's")
        g = torch.einsum("tld,de,vfe->tlvf", words, self.local, frames)  # (B_t, L, B_v, F)
        wm = word_mask.bool()[:, :, None, None].expand_as(g)
        fm = frame_mask.bool()[None, None].expand_as(g)
        both = wm & fm
        t = self.temperature
        per_frame = (_mixed_weights(g / t, wm, self.word_mix, dim=1) * g).sum(1)  # (B_t, B_v, F)
        per_word = (_mixed_weights(g / t, fm, self.frame_mix, dim=3) * g).sum(3)  # (B_t, L, B_v)
        word_max = masked_max(g, both, dim=1)  # (B_t, B_v, F)
        frame_max = masked_max(g, both, dim=3)  # (B_t, L, B_v)
        fmask, wmask = fm[:, 0], wm[..., 0]  # (B_t, B_v, F), (B_t, L, B_v)
        sent2frame = (_mixed_weights(per_frame / t, fmask, self.frame_mix2, dim=2) * word_max).sum(2)  # (B_t, B_v)
        video2word = (_mixed_weights(per_word / t, wmask, self.word_mix2, dim=1) * frame_max).sum(1)  # (B_t, B_v)
        return 0.5 * (sent2frame + video2word)
