"""Dual-Modal Attention-Enhanced similarity (Sec. 3.2, Eq. 3), and the plain TI/WTI score it enhances.

Three readings of Eq. 3 are offered (docs/fidelity.md, D7-D9, states exactly what each computes):

* ``word`` (default): DMAE acts on the word x frame matrix that TI/WTI needs. For every text-video pair,
  S(t_tokens, v_h) . W_VA (M x N) goes through TI/WTI with W_TA as the weights of the text-to-video average
  (each word's row weighted, Eq. 1), S(t_cls, v_h) . W_VA (1 x N) through TI/WTI as a one-token text, and the
  score is the mean of the two, as the authors' code joins its sentence and word terms.
* ``pooled``: the literal "1 x N" annotation of Eq. 3. W_TA (1 x M) . S(t_tokens, v_h) . W_VA pools the words
  into one row before any max, S' = (that + S(t_cls, v_h) . W_VA) / 2, then TI / WTI on the 1 x N matrix S'.
  Token-wise interaction then degenerates to the max / mean over frames of one pooled text.
* ``official``: what the authors' released code (prj/dmae_vtp, dmae_utils.py) computes: the mean of a
  sentence-to-frames and a words-to-frames TI/WTI score, where the textual weights scale each word's
  best-frame score after the max, and Visual Attention adds 0.5 x (frame-frame similarity) x (similarity to
  the frame most similar to the best frame).

`sentence_term=false` drops S(t_cls, v_h) from every reading, so that an ablation row changes one component.
With both attentions and the sentence term off the score is the baseline's plain TI/WTI between t_tokens and v_h.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...features import TextFeatures
from ...token_interaction import (
    TokenWeights,
    all_pairs_token_interaction,
    cosine_tokens,
    finite_or_zero,
    masked_max,
    masked_mean,
    neg_inf_bias,
    token_interaction,
    uniform_weights,
)
from .config import VARIANTS, SimilarityConfig  # noqa: F401 (re-exported)
from .textual_attention import textual_attention, uniform_textual_attention
from .visual_attention import frame_self_similarity, identity_visual_attention, visual_attention


@dataclass
class TextInput:
    """What the similarity needs from a caption: features plus Algorithm 1's weights."""

    t_cls: torch.Tensor  # (B, D)
    t_tokens: torch.Tensor  # (B, M, D)
    t_mask: torch.Tensor  # (B, M) bool
    w_pos: torch.Tensor | None = None  # (B, M) Algorithm 1, needed when Textual Attention is on
    w_freq: torch.Tensor | None = None  # (B, M)

    @classmethod
    def of(cls, text: TextFeatures, batch: dict[str, torch.Tensor]) -> TextInput:
        """The encoder's features with the batch's Algorithm 1 weights (absent when the data leaves them out)."""
        return cls(text.t_cls, text.t_tokens, text.t_mask, batch.get("w_pos"), batch.get("w_freq"))


@dataclass
class VideoInput:
    """What the similarity needs from a video: the temporal encoder's tokens and which frames are real."""

    v_h: torch.Tensor  # (B, N, D)
    frame_mask: torch.Tensor  # (B, N) bool


class Similarity(nn.Module):
    """sim(t_i, v_j) for all pairs: TI/WTI, optionally enhanced by DMAE. Returns (B_t, B_v)."""

    def __init__(self, cfg: SimilarityConfig, embed_dim: int):
        super().__init__()
        self.cfg = cfg
        self.weights = TokenWeights(embed_dim) if cfg.interaction == "wti" else None

    def forward(self, text: TextInput, v_h: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        frame_mask = frame_mask.bool()
        if not self.cfg.dmae:
            return self.plain(text.t_tokens, text.t_mask, v_h, frame_mask)
        reading = {"word": self.word_dmae, "pooled": self.pooled_dmae, "official": self.official_dmae}
        return reading[self.cfg.variant](text, v_h, frame_mask)

    # -- plain TI / WTI ---------------------------------------------------------------------------------------
    def plain(self, t_tokens, t_mask, v_h, frame_mask, pairwise: bool = True) -> torch.Tensor:
        """TI/WTI between text tokens and frames: (B_t, B_v). pairwise=False scores B matched pairs: (B,)."""
        tw, vw = self._token_weights(t_tokens, t_mask, v_h, frame_mask)
        if pairwise:
            return all_pairs_token_interaction(t_tokens, t_mask, v_h, frame_mask, tw, vw)
        sim = cosine_tokens(t_tokens, v_h, pairwise=False)  # (B, M, N)
        return token_interaction(sim, t_mask, frame_mask, tw, vw)

    def _token_weights(self, t_tokens, t_mask, v_h, frame_mask):
        if self.weights is None:
            return None, None
        return self.weights.text(t_tokens, t_mask), self.weights.video(v_h, frame_mask)

    # -- Eq. 3 on the word x frame matrix (default) ---------------------------------------------------------------
    def word_dmae(self, text: TextInput, v_h, frame_mask) -> torch.Tensor:
        w_va = self._w_va(v_h, frame_mask)  # (B_v, N, N) or None  Eq. (2)
        vw = None if self.weights is None else self.weights.video(v_h, frame_mask)  # (B_v, N)
        words = all_pairs_token_interaction(text.t_tokens, text.t_mask, v_h, frame_mask,
                                            self._word_weights(text), vw, frame_mix=w_va)  # (B_t, B_v)
        if not self.cfg.sentence_term:
            return words
        one = torch.ones_like(text.t_mask[:, :1])
        sentence = all_pairs_token_interaction(text.t_cls[:, None], one, v_h, frame_mask, None, vw,
                                               frame_mix=w_va)  # (B_t, B_v)  a one-token text: weight 1
        return 0.5 * (words + sentence)  # Eq. (3), joined as the authors' code joins its two terms

    def _w_va(self, v_h, frame_mask) -> torch.Tensor | None:
        """W_VA of Eq. 2, or None when Visual Attention is off (W_VA = I: nothing to multiply)."""
        return visual_attention(v_h, frame_mask, self.cfg.topk) if self.cfg.visual_attention else None

    def _word_weights(self, text: TextInput) -> torch.Tensor | None:
        """The weights of the text-to-video average over words: W_TA (Eq. 1), WTI's learned ones, or both.

        Scaling word m's row of S . W_VA by a positive w_m scales its best-frame score by w_m, so weighting rows
        by W_TA is TI with W_TA in place of the uniform average. With WTI as well, the two weightings multiply
        and are renormalised (a product of experts): the score stays a convex combination of the words'
        best-frame scores, and each weighting alone is recovered when the other is uniform.
        """
        w_ta = self._w_ta(text) if self.cfg.textual_attention else None  # (B_t, M)
        if self.weights is None:
            return w_ta
        learned = self.weights.text(text.t_tokens, text.t_mask)  # (B_t, M)
        if w_ta is None:
            return learned
        joint = w_ta * learned
        return joint / joint.sum(-1, keepdim=True).clamp_min(torch.finfo(joint.dtype).tiny)

    # -- Eq. 3 with its literal 1 x N annotation ---------------------------------------------------------------------
    def pooled_dmae(self, text: TextInput, v_h, frame_mask) -> torch.Tensor:
        w_ta = self._w_ta(text) if self.cfg.textual_attention else uniform_textual_attention(
            text.t_mask, text.t_tokens.dtype)  # (B_t, M)  Eq. (1)
        w_va = (visual_attention(v_h, frame_mask, self.cfg.topk) if self.cfg.visual_attention
                else identity_visual_attention(frame_mask, v_h.dtype))  # (B_v, N, N)  Eq. (2)
        # W_TA . S(t_tokens, v_h) is linear in the normalised tokens, so sum them first: no (B_t, B_v, M, N).
        t_hat = F.normalize(text.t_tokens, dim=-1)
        t_att = torch.einsum("am,amd->ad", w_ta.to(t_hat.dtype), t_hat)  # (B_t, D)
        v_hat = F.normalize(v_h, dim=-1)
        s_rows = torch.einsum("ad,bnd->abn", t_att, v_hat)  # (B_t, B_v, N)  W_TA . S(t_tokens, v_h)
        if self.cfg.sentence_term:
            s_cls = torch.einsum("ad,bnd->abn", F.normalize(text.t_cls, dim=-1), v_hat)  # (B_t, B_v, N)
            s_rows = 0.5 * (s_rows + s_cls)
        s_prime = torch.einsum("abi,bij->abj", s_rows, w_va)  # (B_t, B_v, N)  Eq. (3)
        return self._interaction_1xN(s_prime, v_h, frame_mask)

    def _w_ta(self, text: TextInput) -> torch.Tensor:
        _require_algorithm1(text)
        return textual_attention(text.w_pos, text.w_freq, text.t_mask)  # (B_t, M)  Eq. (1)

    def _interaction_1xN(self, s_prime, v_h, frame_mask) -> torch.Tensor:
        """TI/WTI on S' (1 x N per pair): the single text row's best frame, and every frame's own score."""
        fm = frame_mask[None].expand_as(s_prime)  # (B_t, B_v, N)
        t2v = masked_max(s_prime, fm, dim=-1)  # (B_t, B_v)  the one text row has weight 1 in WTI too
        if self.weights is None:
            v2t = masked_mean(s_prime, fm)
        else:
            v2t = (s_prime * self.weights.video(v_h, frame_mask)[None]).sum(-1)
        return 0.5 * (t2v + v2t)

    # -- the authors' released code -----------------------------------------------------------------------------
    def official_dmae(self, text: TextInput, v_h, frame_mask) -> torch.Tensor:
        word_weight = text.t_mask.float()
        if self.cfg.textual_attention:
            _require_algorithm1(text)
            word_weight = text.w_pos * text.w_freq * word_weight
        words = self._official_score(text.t_tokens, text.t_mask, word_weight, v_h, frame_mask)
        if not self.cfg.sentence_term:
            return words
        ones = torch.ones_like(text.t_mask[:, :1], dtype=torch.bool)
        sentence = self._official_score(text.t_cls[:, None], ones, ones.float(), v_h, frame_mask)
        return 0.5 * (sentence + words)

    def _official_score(self, x, x_mask, x_weight, v_h, frame_mask) -> torch.Tensor:
        """One of the two terms of the authors' `_get_wti_similarity`, padding excluded from every max.

        Laid out like `all_pairs_token_interaction`: one matmul kept as (C, L, V, N), padding added as -inf.
        """
        x_mask = x_mask.bool()
        (c, length, d), (v, n, _) = x.shape, v_h.shape
        # Words whose textual weight is 0 keep a similarity of exactly 0, as the authors' clamp(w, 0, 1) does.
        x_hat = F.normalize(x, dim=-1) * (x_weight > 0).to(x.dtype)[..., None]  # (C, L, D)
        v_hat = F.normalize(v_h, dim=-1)
        s = (x_hat.reshape(c * length, d) @ v_hat.reshape(v * n, d).T).view(c, length, v, n)  # (C, L, V, N)
        s += neg_inf_bias(x_mask, s.dtype)[:, :, None, None]
        s += neg_inf_bias(frame_mask, s.dtype)[None, None]
        t2v, best = s.max(3)  # (C, L, V) each: every word's best frame
        t2v = finite_or_zero(t2v)
        if self.cfg.visual_attention:
            t2v = t2v + self.cfg.official_self_weight * _second_frame_term(s, best, v_h, frame_mask)
        v2t = finite_or_zero(s.amax(1))  # (C, V, N)
        if self.weights is None:
            t2v = torch.einsum("clv,cl->cv", t2v, x_weight.to(t2v.dtype)) / x_weight.sum(-1).clamp_min(1e-12)[:, None]
            v2t = torch.einsum("cvn,vn->cv", v2t, uniform_weights(frame_mask, v2t.dtype))
        else:
            # As in their code: the weight heads see unit features, and words of textual weight 0 are left out of
            # the learned softmax's normaliser (their word_weight is masked with the text weights, not the mask).
            learned = self.weights.text(F.normalize(x, dim=-1), x_mask & (x_weight > 0))  # (C, L)
            video_w = self.weights.video(v_hat, frame_mask)  # (V, N)
            t2v = torch.einsum("clv,cl->cv", t2v, (x_weight * learned).to(t2v.dtype))
            v2t = torch.einsum("cvn,vn->cv", v2t, video_w.to(v2t.dtype))
        return 0.5 * (t2v + v2t)


def _require_algorithm1(text: TextInput) -> None:
    if text.w_pos is None or text.w_freq is None:
        raise ValueError("Textual Attention is on but the batch has no w_pos/w_freq (Algorithm 1 weights); "
                         "compute them in the data pipeline or set similarity.textual_attention=false")


def _second_frame_term(s, best, v_h, frame_mask) -> torch.Tensor:
    """For each text token: max(0, f2f(best, second)) x sim(token, second), where `best` is the token's best frame
    and `second` the frame most similar to it (authors' self_weight). 0 if the video has one real frame.

    s: (C, L, V, N) with -inf on padding; best: (C, L, V). Returns (C, L, V).
    """
    f2f = frame_self_similarity(v_h)  # (V, N, N)
    n = f2f.shape[-1]
    other = frame_mask[:, :, None] & frame_mask[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=f2f.device)
    f2f_best, second = f2f.masked_fill(~other, float("-inf")).max(-1)  # (V, N) each
    # Their max also sees the zeroed diagonal and padding: a frame whose every other frame has negative cosine
    # (or that has no other real frame) gets weight 0, not a negative one.
    f2f_best = f2f_best.clamp_min(0.0)
    video = torch.arange(f2f.shape[0], device=f2f.device)[None, None]  # (1, 1, V)
    weight = f2f_best[video, best]  # (C, L, V)
    sim_second = s.gather(3, second[video, best][..., None]).squeeze(-1)  # (C, L, V)
    # -inf there only on padded words, or with no second frame (weight 0): drop before multiplying (no NaN grad)
    return weight * finite_or_zero(sim_second)
