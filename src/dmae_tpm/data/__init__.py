"""Data pipeline of DMAE-TPM: dataset inputs (videos, captions) and the text weights of Algorithm 1."""
