"""``dmae-train`` / ``python -m dmae_tpm.train``: compose the Hydra config and run `trainer.train`.

torchrun --nproc_per_node=8 -m dmae_tpm.train experiment=msrvtt_vitb32_wti
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from .config import config_dir, to_run_config
from .trainer import train


def _train(cfg: DictConfig) -> None:
    train(to_run_config(cfg))


def main() -> None:
    # the configs folder is looked up at call time, so a missing one is a clear error, not an import failure
    hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")(_train)()


if __name__ == "__main__":
    main()
