"""The model builder: the shared parts (CLIP backbone, temporal encoder) and the method that
`model.method` names, each in its folder under `methods/` behind `method.RetrievalMethod`:
dmae_tpm (DMAE + NegNCE + TPM-CL, the default) and xmlnet (X-MLNet)."""

from __future__ import annotations

from .backbone import build_backbone
from .config import METHODS, ModelConfig  # noqa: F401 (re-exported: the config lives in the torch-free config.py)
from .method import RetrievalMethod


def build_model(cfg: ModelConfig, load_pretrained: bool = True) -> RetrievalMethod:
    """`load_pretrained=False`: the architecture `cfg.backbone.pretrained` needs (QuickGELU for OpenAI's weights),
    without loading those weights, for a checkpoint that holds every weight (evaluation)."""
    backbone = build_backbone(cfg.backbone, load_weights=load_pretrained)
    if cfg.method == "xmlnet":
        from .methods.xmlnet.model import XMLNet

        return XMLNet(cfg, backbone)
    from .methods.dmae_tpm.model import DMAETPM

    return DMAETPM(cfg, backbone)
