"""``dmae-train`` / ``python -m dmae_tpm.train``: compose the Hydra config and run `trainer.train`.

torchrun --nproc_per_node=8 -m dmae_tpm.train experiment=msrvtt_vitb32_wti
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from .config import to_run_config
from .trainer import train

CONFIG_PATH = "../../configs"  # the repository's configs/ (install with pip install -e .)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def main(cfg: DictConfig) -> None:
    train(to_run_config(cfg))


if __name__ == "__main__":
    main()
