"""``dmae-eval`` / ``python -m dmae_tpm.eval checkpoint=PATH data=msrvtt``: evaluate a checkpoint."""

from __future__ import annotations

from omegaconf import DictConfig

from .config import run_hydra, to_run_config
from .evaluate import evaluate_checkpoint


def _evaluate(cfg: DictConfig) -> None:
    evaluate_checkpoint(to_run_config(cfg))


def main() -> None:
    run_hydra(_evaluate)


if __name__ == "__main__":
    main()
