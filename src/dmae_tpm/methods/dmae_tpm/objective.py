"""The total training objective L_all = L_NegNCE + L_TPM (Sec. 3.4, Eq. 19), with InfoNCE as the baseline."""

from __future__ import annotations

import torch
from torch import nn

from ...infonce import InfoNCE
from .config import LossConfig, NegNCEConfig  # noqa: F401 (re-exported)
from .negnce import NegNCE


def build_contrastive_loss(cfg: LossConfig) -> nn.Module:
    return InfoNCE() if cfg.name == "infonce" else NegNCE(cfg.negnce)


def total_objective(contrastive: dict[str, torch.Tensor], tpm: dict[str, torch.Tensor] | None,
                    tpm_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """L_all = L_contrastive + L_TPM, with every term kept under a prefixed name for logging.  # Eq. (19)"""
    out = {f"contrastive/{k}": v for k, v in contrastive.items() if k != "loss"}
    out["loss_contrastive"] = contrastive["loss"]
    total = contrastive["loss"]
    if tpm is not None:
        out.update({f"tpm/{k}": v for k, v in tpm.items() if k != "loss"})
        out["loss_tpm"] = tpm["loss"]
        total = total + tpm_weight * tpm["loss"]
    out["loss"] = total
    return out
