"""``dmae-eval`` / ``python -m dmae_tpm.eval checkpoint=PATH data=msrvtt``: evaluate a checkpoint."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from .config import config_dir, to_run_config
from .evaluate import evaluate_checkpoint


def _evaluate(cfg: DictConfig) -> None:
    evaluate_checkpoint(to_run_config(cfg))


def main() -> None:
    hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")(_evaluate)()


if __name__ == "__main__":
    main()
