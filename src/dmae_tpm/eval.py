"""``dmae-eval`` / ``python -m dmae_tpm.eval checkpoint=PATH data=msrvtt``: evaluate a checkpoint."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from .config import to_run_config
from .evaluate import evaluate_checkpoint
from .train import CONFIG_PATH


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> None:
    evaluate_checkpoint(to_run_config(cfg))


if __name__ == "__main__":
    main()
