"""One folder per paper's method, each behind `dmae_tpm.method.RetrievalMethod`: dmae_tpm (DMAE, NegNCE, TPM-CL)
and xmlnet (multi-level cross-attention, false-negative-aware loss)."""
