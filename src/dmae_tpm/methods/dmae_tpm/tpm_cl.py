"""Triplet Partial Margin Contrastive Learning (Sec. 3.3, Eqs. 10-18).

Only matched pairs (t_i, v_i) enter Eq. 17, so everything here runs on the B matched pairs: O(B) time and
memory. The authors' code predicts token weights and partial features for all B x B pairs and then keeps the
diagonal, which gives the same loss at O(B^2) cost (tests/test_tpm_cl.py checks the two agree).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...features import TextFeatures, VideoFeatures
from .adaptive_token_selector import informative_token_mask, mask_tokens
from .config import TPMConfig
from .token_weight_predictor import (
    CrossModalTokenWeightPredictor,
    text_token_weights,
    video_token_weights,
    weighted_global,
)

# score(q, v_h, frame_mask): S(q, v_h) of Eq. 17 for B matched pairs; q (B, D), v_h (B, N, D) -> (B,)
PairScore = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
TemporalFn = Callable[[VideoFeatures], torch.Tensor]


def inside_margin(full: torch.Tensor, partial: torch.Tensor, margin: float) -> torch.Tensor:
    """The fraction of pairs whose Eq. 17 hinge is active (partial - full + delta > 0): a diagnostic."""
    return (partial - full + margin > 0).float().mean().detach()


def triplet_partial_margin(full: torch.Tensor, partial: torch.Tensor, margin: float) -> torch.Tensor:
    """max(0, S_partial - S_full + delta), averaged over pairs: the full pair must beat the partial one by
    delta. Eq. 17 as typeset has the operands swapped; this is its stated intent and the authors' code
    (MarginRankingLoss with target 1).  # Eq. (17)"""
    return F.relu(partial - full + margin).mean()


def length_kept(score: PairScore) -> PairScore:
    """S(q, v_h) of q as it is, not of q / |q|: the one-token TI/WTI is a max and a weighted mean of per-frame
    scores, both positively homogeneous, so scoring <q, unit frame> is |q| times the cosine score."""
    return lambda q, v_h, frame_mask: q.norm(dim=-1) * score(q, v_h, frame_mask)  # (B,)


class TPMCL(nn.Module):
    def __init__(self, cfg: TPMConfig, embed_dim: int, max_words: int, max_frames: int, tokens_per_frame: int):
        super().__init__()
        self.cfg = cfg
        self.text_predictor = CrossModalTokenWeightPredictor(
            max_frames, max_words, embed_dim, cfg.predictor_normalize)  # Eq. (10)
        self.video_predictor = CrossModalTokenWeightPredictor(
            1, max_frames * tokens_per_frame, embed_dim, cfg.predictor_normalize)  # Eq. (11)

    def partial_samples(self, text: TextFeatures, video: VideoFeatures, temporal: TemporalFn) -> dict:
        """Token weights, masks and the partial features t_g, t_g^p and v_h^p of the matched pairs."""
        w_t = text_token_weights(self.text_predictor, video.f_cls, video.frame_mask, text.t_tokens,
                                 text.t_mask)  # (B, M)  Eq. (10)
        with torch.no_grad():  # w_v only feeds the discrete selection of Eq. 14: no gradient exists (D14)
            w_v = video_token_weights(self.video_predictor, text.t_cls, video.v_tokens, video.v_mask)  # (B, P) Eq. (11)
        b_t = informative_token_mask(w_t, self.cfg.threshold)  # (B, M)  Eq. (14)
        b_v = informative_token_mask(w_v, self.cfg.threshold)  # (B, P)
        # Unit words, as every similarity sees them: a masked word then takes its weight out of t_g^p's length.
        words = text.t_tokens if self.cfg.text_global_norm == "both" else F.normalize(text.t_tokens, dim=-1)
        t_tokens_p = mask_tokens(words, b_t)  # (B, M, D)  Eq. (12)
        v_tokens_p = mask_tokens(video.v_tokens, b_v)  # (B, P, D)  Eq. (13)
        partial_video = VideoFeatures(v_tokens_p[:, ::video.tokens_per_frame], v_tokens_p, video.frame_mask)
        return {
            "w_t": w_t, "w_v": w_v, "b_t": b_t, "b_v": b_v,
            "t_g": weighted_global(words, w_t),  # (B, D)  Eq. (15)
            "t_g_p": weighted_global(t_tokens_p, w_t),  # (B, D)  Eq. (16)
            "v_h_p": temporal(partial_video),  # (B, N, D)  the temporal encoder over v^p_tokens
        }

    def eq17_pairs(self, t_cls: torch.Tensor, p: dict, v_h: torch.Tensor, frame_mask: torch.Tensor,
                   score: PairScore) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(full, partial) scores (B,) of Eq. 17's three terms; `text_global_norm` picks how t_g, t_g^p score."""
        norm = self.cfg.text_global_norm
        score_g = length_kept(score) if norm == "none" else score  # S(t_g, .)
        score_gp = score if norm == "both" else length_kept(score)  # S(t_g^p, .)
        s_g_full = score_g(p["t_g"], v_h, frame_mask)
        return {
            "trpl1": (score(t_cls, v_h, frame_mask), score(t_cls, p["v_h_p"], frame_mask)),
            "trpl2": (s_g_full, score_g(p["t_g"], p["v_h_p"], frame_mask)),
            "trpl3": (s_g_full, score_gp(p["t_g_p"], v_h, frame_mask)),
        }

    def forward(self, text: TextFeatures, video: VideoFeatures, v_h: torch.Tensor,
                temporal: TemporalFn, score: PairScore) -> dict[str, torch.Tensor]:
        p = self.partial_samples(text, video, temporal)
        pairs = self.eq17_pairs(text.t_cls, p, v_h, video.frame_mask, score)
        d = self.cfg.margin
        trpl1, trpl2, trpl3 = (triplet_partial_margin(*pairs[k], d) for k in ("trpl1", "trpl2", "trpl3"))  # Eq. (17)
        real_t, real_v = text.t_mask.float(), video.v_mask.float()
        return {
            "loss": trpl1 + trpl2 + trpl3,  # Eq. (18)
            "trpl1": trpl1, "trpl2": trpl2, "trpl3": trpl3,
            "masked_text_frac": ((1 - p["b_t"]) * real_t).sum() / real_t.sum().clamp_min(1),
            "masked_video_frac": ((1 - p["b_v"]) * real_v).sum() / real_v.sum().clamp_min(1),
            # what the text predictor learned: its largest weight, and the weight the partial text keeps (D25)
            "top_text_weight": p["w_t"].detach().amax(-1).mean(),
            "kept_text_weight": (p["w_t"].detach() * p["b_t"]).sum(-1).mean(),
            # the pairs each triplet term still pushes on (a term at 0 has every pair past the margin)
            "inside_margin1": inside_margin(*pairs["trpl1"], d),
            "inside_margin2": inside_margin(*pairs["trpl2"], d),
            "inside_margin3": inside_margin(*pairs["trpl3"], d),
        }
