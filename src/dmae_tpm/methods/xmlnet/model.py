"""X-MLNet behind the `RetrievalMethod` interface: CLIP, the shared temporal encoder (seqTransf over the frames'
[CLS] features), the multi-level similarity, and symmetric InfoNCE on it plus the false-negative-aware loss.

L = 1/2 [CE(tau S) + CE(tau S^T)] + weight * L_FN, both on the gathered global batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ...infonce import InfoNCE
from ...method import Gather, RetrievalMethod, no_gather
from ...temporal_encoder import TemporalEncoder, init_temporal
from .config import EVAL_SCORES, FalseNegativeConfig, XMLNetConfig  # noqa: F401 (re-exported)
from .false_negative_loss import FalseNegativeAwareLoss
from .similarity import MultiLevelSimilarity, XText, XVideo, pooled_video

if TYPE_CHECKING:
    from ...model import ModelConfig


class XMLNet(RetrievalMethod):
    def __init__(self, cfg: ModelConfig, backbone):
        super().__init__()
        x = cfg.xmlnet
        self.cfg, self.xcfg = cfg, x
        self.logit_scale_max = cfg.logit_scale_max
        self.backbone = backbone
        d = backbone.embed_dim
        self.temporal = TemporalEncoder(cfg.temporal, d, activation=backbone.text_activation)
        self.temporal_init = init_temporal(self.temporal, backbone)
        self.similarity = MultiLevelSimilarity(d, cfg.max_words, cfg.max_frames, x.heads, x.dropout, x.cross_init,
                                               x.alpha, x.word_frame_temperature)
        self.fn_loss = FalseNegativeAwareLoss(x.fn_loss, d) if x.fn_loss.enabled else None
        self.contrastive = InfoNCE()

    def embed_text(self, batch: dict[str, torch.Tensor]) -> XText:
        text = self.backbone.encode_text(batch["tokens"])
        return XText(F.normalize(text.t_cls, dim=-1), F.normalize(text.t_tokens, dim=-1), text.t_mask)

    def embed_video(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> XVideo:
        video = self.backbone.encode_video(frames, frame_mask)
        v_h = self.temporal(video)  # (B, N, D)
        f = video.f_cls if self.xcfg.frames == "clip" else v_h
        return XVideo(pooled_video(v_h, video.frame_mask), F.normalize(f, dim=-1), video.frame_mask)

    def score(self, text: XText, video: XVideo) -> torch.Tensor:
        """S (B_t, B_v); outside training `eval_score` picks S or the code's test-time form."""
        return self.similarity(text, video, full=self.training or self.xcfg.eval_score == "full")

    def forward(self, batch: dict[str, torch.Tensor], gather: Gather = no_gather) -> dict[str, torch.Tensor]:
        """Training losses for matched pairs; batch as for DMAE-TPM (tokens, frames, frame_mask, optional ignore)."""
        text = gather(self.embed_text(batch))
        video = gather(self.embed_video(batch["frames"], batch["frame_mask"]))
        scale = self.logit_scale()
        sim = self.score(text, video)  # (B_glob, B_glob)
        contrastive = self.contrastive(sim, scale, batch.get("ignore"))
        out = {f"contrastive/{k}": v for k, v in contrastive.items() if k != "loss"}
        out["loss_contrastive"] = total = contrastive["loss"]
        if self.fn_loss is not None:
            fn = self.fn_loss(video.v, text.s, scale, batch.get("ignore"))
            out.update({f"fn/{k}": v for k, v in fn.items() if k != "loss"})
            out["loss_fn"] = fn["loss"]
            total = total + self.xcfg.fn_loss.weight * fn["loss"]
        out["loss"] = total
        out["logit_scale"] = scale.detach()
        return out
