"""DMAE-TPM (ACM MM 2023): Dual-Modal Attention-Enhanced similarity (Sec. 3.2: textual_attention,
visual_attention, dmae), NegNCE (Sec. 3.3: negnce) and Triplet Partial Margin Contrastive Learning (Sec. 3.4:
adaptive_token_selector, token_weight_predictor, tpm_cl), joined in `model.DMAETPM` (objective: Eq. 19)."""
