"""The full retrieval model: CLIP dual encoder, temporal encoder, (DMAE-)TI/WTI similarity, NegNCE/InfoNCE
and TPM-CL (Fig. 2), built from one typed config."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .backbone import BackboneConfig, CLIPDualEncoder, build_backbone
from .checks import at_least
from .diagnostics import batch_diagnostics
from .dmae import Similarity, SimilarityConfig, TextInput
from .features import TextFeatures, VideoFeatures
from .objective import LossConfig, build_contrastive_loss, total_objective
from .temporal_encoder import TemporalConfig, TemporalEncoder
from .tpm_cl import TPMCL, TPMConfig

log = logging.getLogger(__name__)
# gather(text, v_h, frame_mask) -> the same three for the global batch (identity in one process)
Gather = Callable[[TextInput, torch.Tensor, torch.Tensor], tuple[TextInput, torch.Tensor, torch.Tensor]]


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    tpm: TPMConfig = field(default_factory=TPMConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    max_words: int = 32  # Sec. 4.1: 32 for MSR-VTT/MSVD, 64 for DiDeMo/ActivityNet
    max_frames: int = 12  # Sec. 4.1: 12 for MSR-VTT/MSVD, 64 for DiDeMo/ActivityNet
    logit_scale_max: float = 100.0  # tau is CLIP's learned logit scale, clamped as in CLIP

    def __post_init__(self):
        at_least("model", self, max_words=3, max_frames=1)  # max_words: [BOS], one word, [EOS]


def _no_gather(text: TextInput, v_h: torch.Tensor, frame_mask: torch.Tensor):
    return text, v_h, frame_mask


class DMAETPM(nn.Module):
    def __init__(self, cfg: ModelConfig, backbone: CLIPDualEncoder):
        super().__init__()
        self.cfg = cfg
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

    def logit_scale(self) -> torch.Tensor:
        """tau of Eqs. 4 and 7."""
        return self.backbone.logit_scale.exp().clamp(max=self.cfg.logit_scale_max)

    def encode_text(self, tokens: torch.Tensor) -> TextFeatures:
        return self.backbone.encode_text(tokens)

    def encode_video(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> tuple[VideoFeatures, torch.Tensor]:
        video = self.backbone.encode_video(frames, frame_mask)
        return video, self.temporal(video)  # v_h: (B, N, D)

    def similarity_matrix(self, text: TextInput, v_h: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """sim(t_i, v_j) for every caption and video given: (B_t, B_v)."""
        return self.similarity(text, v_h, frame_mask)

    def pair_score(self, q: torch.Tensor, v_h: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """S(q, v_h) of Eq. 17 for matched pairs: TI/WTI of a one-token text against the frames. (B,)"""
        one = torch.ones(q.shape[0], 1, dtype=torch.bool, device=q.device)
        return self.similarity.plain(q.unsqueeze(1), one, v_h, frame_mask.bool(), pairwise=False)

    def forward(self, batch: dict[str, torch.Tensor], gather: Gather = _no_gather) -> dict[str, torch.Tensor]:
        """Training losses for a batch of matched (caption, video) pairs.

        batch: tokens (B, L), frames (B, N, 3, H, W), frame_mask (B, N), optionally w_pos / w_freq (B, L)
        (Algorithm 1) and ignore (B_glob, B_glob) bool: pairs to leave out of the contrastive softmax.
        The contrastive loss sees the gathered global batch; TPM-CL needs only the local matched pairs.
        """
        text = self.encode_text(batch["tokens"])
        video, v_h = self.encode_video(batch["frames"], batch["frame_mask"])
        text_in = TextInput(text.t_cls, text.t_tokens, text.t_mask, batch.get("w_pos"), batch.get("w_freq"))
        g_text, g_v_h, g_mask = gather(text_in, v_h, video.frame_mask)
        sim = self.similarity_matrix(g_text, g_v_h, g_mask)  # (B_glob, B_glob)
        contrastive = self.contrastive(sim, self.logit_scale(), batch.get("ignore"))
        tpm = self.tpm(text, video, v_h, self.temporal, self.pair_score) if self.tpm is not None else None
        out = total_objective(contrastive, tpm, self.cfg.loss.tpm_weight)
        out["logit_scale"] = self.logit_scale().detach()
        out.update(batch_diagnostics(self.cfg.similarity, text_in, v_h, video.frame_mask, sim, batch.get("ignore"),
                                     batch.get("same_family")))
        return out


def init_temporal(temporal: TemporalEncoder, backbone: CLIPDualEncoder) -> str:
    """Initialise seqTransf from CLIP's text transformer when pretrained weights were loaded and it fits (CLIP4Clip,
    DRL, X-MLNet), else as the identity (v_h = 2x at step 0); returns which. A random branch would dominate v_h."""
    if temporal.cfg.type != "seqTransf":
        return "none"
    if temporal.cfg.init == "random":
        return "random"
    clip = backbone.clip
    if backbone.pretrained_loaded and temporal.init_from_clip_text(clip.transformer, clip.positional_embedding):
        how = "clip_text"
    else:
        temporal.init_identity()
        how = "identity"
    log.info("temporal encoder initialised: %s (activation %r)", how, temporal.transformer.layers[0].activation)
    return how


def build_model(cfg: ModelConfig, load_pretrained: bool = True) -> DMAETPM:
    """`load_pretrained=False`: the architecture `cfg.backbone.pretrained` needs (QuickGELU for OpenAI's weights),
    without loading those weights, for a checkpoint that holds every weight (evaluation)."""
    return DMAETPM(cfg, build_backbone(cfg.backbone, load_weights=load_pretrained))
