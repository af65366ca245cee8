"""DMAE-TPM (Fig. 2): CLIP dual encoder, temporal encoder, (DMAE-)TI/WTI similarity, NegNCE/InfoNCE and TPM-CL,
behind the `RetrievalMethod` interface."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ...backbone import CLIPDualEncoder
from ...features import TextFeatures, VideoFeatures
from ...method import Gather, RetrievalMethod, no_gather
from ...temporal_encoder import TemporalEncoder
from .diagnostics import batch_diagnostics
from .dmae import Similarity, TextInput, VideoInput
from .objective import build_contrastive_loss, total_objective
from .tpm_cl import TPMCL

if TYPE_CHECKING:
    from ...model import ModelConfig


class DMAETPM(RetrievalMethod):
    def __init__(self, cfg: ModelConfig, backbone: CLIPDualEncoder):
        super().__init__()
        from ...temporal_encoder import init_temporal

        self.cfg = cfg
        self.logit_scale_max = cfg.logit_scale_max
        self.backbone = backbone
        d = backbone.embed_dim
        # The activation is in no state dict: from the backbone's architecture, a model rebuilt to load a checkpoint
        # computes what the trained one did.
        self.temporal = TemporalEncoder(cfg.temporal, d, activation=backbone.text_activation)
        self.temporal_init = init_temporal(self.temporal, backbone)  # "clip_text" | "identity" | "none"
        self.similarity = Similarity(cfg.similarity, d)
        self.tpm = (TPMCL(cfg.tpm, d, cfg.max_words, cfg.max_frames, backbone.tokens_per_frame)
                    if cfg.tpm.enabled else None)
        self.contrastive = build_contrastive_loss(cfg.loss)

    def encode_text(self, tokens: torch.Tensor) -> TextFeatures:
        return self.backbone.encode_text(tokens)

    def encode_video(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> tuple[VideoFeatures, torch.Tensor]:
        video = self.backbone.encode_video(frames, frame_mask)
        return video, self.temporal(video)  # v_h: (B, N, D)

    # -- the method interface ------------------------------------------------------------------------------------
    def embed_text(self, batch: dict[str, torch.Tensor]) -> TextInput:
        return TextInput.of(self.encode_text(batch["tokens"]), batch)

    def embed_video(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> VideoInput:
        video, v_h = self.encode_video(frames, frame_mask)
        return VideoInput(v_h, video.frame_mask)

    def score(self, text: TextInput, video: VideoInput) -> torch.Tensor:
        return self.similarity_matrix(text, video.v_h, video.frame_mask)

    def similarity_matrix(self, text: TextInput, v_h: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """sim(t_i, v_j) for every caption and video given: (B_t, B_v)."""
        return self.similarity(text, v_h, frame_mask)

    def pair_score(self, q: torch.Tensor, v_h: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """S(q, v_h) of Eq. 17 for matched pairs: TI/WTI of a one-token text against the frames. (B,)"""
        one = torch.ones(q.shape[0], 1, dtype=torch.bool, device=q.device)
        return self.similarity.plain(q.unsqueeze(1), one, v_h, frame_mask.bool(), pairwise=False)

    def forward(self, batch: dict[str, torch.Tensor], gather: Gather = no_gather) -> dict[str, torch.Tensor]:
        """Training losses for a batch of matched (caption, video) pairs.

        batch: tokens (B, L), frames (B, N, 3, H, W), frame_mask (B, N), optionally w_pos / w_freq (B, L)
        (Algorithm 1) and ignore (B_glob, B_glob) bool: pairs to leave out of the contrastive softmax.
        The contrastive loss sees the gathered global batch; TPM-CL needs only the local matched pairs.
        """
        text = self.encode_text(batch["tokens"])
        video, v_h = self.encode_video(batch["frames"], batch["frame_mask"])
        text_in = TextInput.of(text, batch)
        g_text, g_video = gather(text_in), gather(VideoInput(v_h, video.frame_mask))
        sim = self.score(g_text, g_video)  # (B_glob, B_glob)
        contrastive = self.contrastive(sim, self.logit_scale(), batch.get("ignore"))
        tpm = self.tpm(text, video, v_h, self.temporal, self.pair_score) if self.tpm is not None else None
        out = total_objective(contrastive, tpm, self.cfg.loss.tpm_weight)
        out["logit_scale"] = self.logit_scale().detach()
        out.update(batch_diagnostics(self.cfg.similarity, text_in, v_h, video.frame_mask, sim, batch.get("ignore"),
                                     batch.get("same_family")))
        return out
