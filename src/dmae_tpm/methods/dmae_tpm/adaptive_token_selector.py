"""Adaptive Token Selector of TPM-CL (Sec. 3.3, Eqs. 12-14).

Tokens are ranked by predicted weight in descending order; those whose cumulative weight stays below the
threshold tau -- the most informative ones -- are masked (b = 0), all others kept (b = 1). This follows the
prose ("masking informative textual and visual tokens"), Fig. 6 and the authors' code; Eq. 14 as typeset
assigns 1 and 0 the other way round (docs/fidelity.md).
"""

from __future__ import annotations

import torch


def informative_token_mask(weights: torch.Tensor, threshold: float) -> torch.Tensor:
    """b: 0 where cum_sum(r_i) < tau for the token ranked r_i-th by weight, else 1.  # Eq. (14)

    weights: (B, T), zero on padding (padding sorts last and, summing to one, never falls below tau
    before the real tokens are exhausted). The mask is a discrete choice and carries no gradient.
    """
    with torch.no_grad():
        sorted_w, order = weights.sort(dim=-1, descending=True, stable=True)
        masked_sorted = sorted_w.cumsum(-1) < threshold  # (B, T) in rank order
        masked = torch.zeros_like(masked_sorted).scatter(-1, order, masked_sorted)
    return (~masked).to(weights.dtype)  # (B, T)


def mask_tokens(tokens: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """t^p_tokens = t_tokens o b_t (Eq. 12), v^p_tokens = v_tokens o b_v (Eq. 13). (B, T, D), (B, T)."""
    return tokens * b.unsqueeze(-1)
