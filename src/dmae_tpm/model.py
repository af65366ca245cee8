"""The model config and the builder: the shared parts (CLIP backbone, temporal encoder) and the method that
`model.method` names, each in its folder under `methods/` behind `method.RetrievalMethod`:
dmae_tpm (DMAE + NegNCE + TPM-CL, the default) and xmlnet (X-MLNet)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .backbone import BackboneConfig, build_backbone
from .checks import at_least
from .method import RetrievalMethod
from .methods.dmae_tpm.dmae import SimilarityConfig
from .methods.dmae_tpm.objective import LossConfig
from .methods.dmae_tpm.tpm_cl import TPMConfig
from .methods.xmlnet.model import XMLNetConfig
from .temporal_encoder import TemporalConfig

METHODS = ("dmae_tpm", "xmlnet")


@dataclass
class ModelConfig:
    method: str = "dmae_tpm"  # "dmae_tpm" | "xmlnet": which folder of methods/ the trainer and evaluator run
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    # DMAE-TPM's parts (read only when method=dmae_tpm; at the top level so paper configs and checkpoints keep
    # their keys)
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    tpm: TPMConfig = field(default_factory=TPMConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    xmlnet: XMLNetConfig = field(default_factory=XMLNetConfig)  # read only when method=xmlnet
    max_words: int = 32  # Sec. 4.1: 32 for MSR-VTT/MSVD, 64 for DiDeMo/ActivityNet
    max_frames: int = 12  # Sec. 4.1: 12 for MSR-VTT/MSVD, 64 for DiDeMo/ActivityNet
    logit_scale_max: float = 100.0  # tau is CLIP's learned logit scale, clamped as in CLIP

    def __post_init__(self):
        at_least("model", self, max_words=3, max_frames=1)  # max_words: [BOS], one word, [EOS]
        if self.method not in METHODS:
            raise ValueError(f"model.method must be one of {', '.join(METHODS)}, got {self.method!r}")


def build_model(cfg: ModelConfig, load_pretrained: bool = True) -> RetrievalMethod:
    """`load_pretrained=False`: the architecture `cfg.backbone.pretrained` needs (QuickGELU for OpenAI's weights),
    without loading those weights, for a checkpoint that holds every weight (evaluation)."""
    backbone = build_backbone(cfg.backbone, load_weights=load_pretrained)
    if cfg.method == "xmlnet":
        from .methods.xmlnet.model import XMLNet

        return XMLNet(cfg, backbone)
    from .methods.dmae_tpm.model import DMAETPM

    return DMAETPM(cfg, backbone)
