"""DMAE-TPM's typed configs: the similarity (Sec. 3.2), NegNCE (Sec. 3.2) and TPM-CL (Sec. 3.3) parameters and the
objective (Eq. 19). Torch-free, like every config module, so the entry points compose and check a config before
torch loads; each is re-exported by the module it configures (dmae, negnce, tpm_cl, objective).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

VARIANTS = ("word", "pooled", "official")


@dataclass
class SimilarityConfig:
    interaction: str = "ti"  # "ti" | "wti"
    textual_attention: bool = True
    visual_attention: bool = True
    variant: str = "word"  # "word" | "pooled" (the literal 1 x N annotation; "paper" before) | "official"
    topk: int = 2  # Eq. 2
    official_self_weight: float = 0.5  # authors' code: weight of the second-best-frame term
    sentence_term: bool = True  # Eq. 3's S'(t_cls, v_h); its own switch so ablations change one thing

    def __post_init__(self):
        if self.interaction not in ("ti", "wti"):
            raise ValueError(f"similarity.interaction must be 'ti' or 'wti', got {self.interaction!r}")
        if self.variant == "paper":  # checkpoints and configs written before the rename
            warnings.warn("similarity.variant=paper is now called 'pooled' (the literal 1 x N reading of Eq. 3); "
                          "the default is 'word' (docs/fidelity.md D7)", stacklevel=2)
            self.variant = "pooled"
        if self.variant not in VARIANTS:
            raise ValueError(f"similarity.variant must be one of {VARIANTS}, got {self.variant!r}")

    @property
    def dmae(self) -> bool:
        return self.textual_attention or self.visual_attention or self.sentence_term


@dataclass
class NegNCEConfig:
    gamma1: float = 1.0  # Eq. 8, weight of the InfoNCE (positive) term
    gamma2: float = 0.5  # Eq. 8, weight of the hard-negative term
    margin: float = 0.0  # xi in Eq. 5
    variant: str = "paper"  # "paper" | "official"
    official_scale: float = 100.0  # the authors' code ignores the learned tau and uses this
    official_clamp: float = 1e-6  # and clamps probabilities to [eps, 1 - eps]

    def __post_init__(self):
        if self.variant not in ("paper", "official"):
            raise ValueError(f"negnce.variant must be 'paper' or 'official', got {self.variant!r}")


@dataclass
class LossConfig:
    name: str = "negnce"  # "infonce" (baseline, Eq. 4) | "negnce" (Eqs. 5-9)
    negnce: NegNCEConfig = field(default_factory=NegNCEConfig)
    tpm_weight: float = 1.0  # Eq. 19 adds L_TPM unweighted; exposed for ablations only

    def __post_init__(self):
        if self.name not in ("infonce", "negnce"):
            raise ValueError(f"loss.name must be 'infonce' or 'negnce', got {self.name!r}")


@dataclass
class TPMConfig:
    enabled: bool = True
    threshold: float = 0.6  # tau in Eq. 14: cumulative weight of the informative tokens to mask
    margin: float = 0.6  # delta in Eq. 17
    predictor_normalize: str = "softmax"  # "softmax" (paper) | "sigmoid" (authors' code)
    # How t_g and t_g^p (Eqs. 15-16, weighted sums of unit word features) are scored in Eq. 17 (D17):
    # "t_g": t_g L2-normalised, t_g^p as it is (the authors' code): masking removes weight from the partial text;
    # "none": both as they are (S a dot product with unit frames); "both": both normalised, as before: the partial
    # text then keeps the full text's length and masking only turns it.
    text_global_norm: str = "t_g"

    def __post_init__(self):
        if not 0.0 < self.threshold < 1.0:
            # tau = 1: the weights' cumulative sum ends a rounding error below 1, so some rows mask every token
            raise ValueError(f"tpm.threshold (tau of Eq. 14) must be in (0, 1), got {self.threshold!r}")
        if self.margin < 0:
            raise ValueError(f"tpm.margin (delta of Eq. 17) must be >= 0, got {self.margin!r}")
        if self.predictor_normalize not in ("softmax", "sigmoid"):
            raise ValueError(f"tpm.predictor_normalize must be softmax or sigmoid, got {self.predictor_normalize!r}")
        if self.text_global_norm not in ("t_g", "none", "both"):
            raise ValueError(f"tpm.text_global_norm must be t_g, none or both, got {self.text_global_norm!r}")
