"""X-MLNet (Kim & Lee, Applied Intelligence 2025): multi-level cross-modal interaction (cross_attention: the
sentence-to-frames and video-to-words blocks; cross_grained: the word-frame term; similarity: the levels joined)
and the false-negative-aware contrastive loss (false_negative_loss), joined in `model.XMLNet`. Readings and the
public code's defects avoided: docs/xmlnet.md."""
