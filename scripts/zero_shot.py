"""Zero-shot retrieval of a config's backbone, before any fine-tuning: the floor of the fine-tuned runs.

    python scripts/zero_shot.py name=zero_shot                      # the demo's synthetic pre-trained CLIP
    python scripts/zero_shot.py model=vitb32 data=msrvtt name=zs    # OpenAI's ViT-B/32 on MSR-VTT 1k-A

Mean-pooled frame features against caption features (CLIP4Clip's zero-shot protocol); builds the synthetic
pre-training checkpoint first when model.backbone.pretrain names one that is absent.
"""

from dmae_tpm.clip_pretraining import evaluate_zero_shot
from dmae_tpm.config import run_hydra, to_run_config

if __name__ == "__main__":
    run_hydra(lambda cfg: evaluate_zero_shot(to_run_config(cfg)))
