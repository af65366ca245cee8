"""``dmae-train`` / ``python -m dmae_tpm.train``: compose the Hydra config and run `trainer.train`.

torchrun --nproc_per_node=8 -m dmae_tpm.train experiment=msrvtt_vitb32_wti
"""

from __future__ import annotations

from omegaconf import DictConfig

from .config import run_hydra, to_run_config


def _train(cfg: DictConfig) -> None:
    run_cfg = to_run_config(cfg)  # torch-free: a config error answers before torch and open_clip load (~10 s)
    from .trainer import train

    train(run_cfg)


def main() -> None:
    run_hydra(_train)


if __name__ == "__main__":
    main()
