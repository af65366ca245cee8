"""``dmae-train`` / ``python -m dmae_tpm.train``: compose the Hydra config and run `trainer.train`.

torchrun --nproc_per_node=8 -m dmae_tpm.train experiment=msrvtt_vitb32_wti
"""

from __future__ import annotations

from omegaconf import DictConfig

from .config import run_hydra, to_run_config
from .trainer import train


def _train(cfg: DictConfig) -> None:
    train(to_run_config(cfg))


def main() -> None:
    run_hydra(_train)


if __name__ == "__main__":
    main()
