"""``dmae-eval`` / ``python -m dmae_tpm.eval checkpoint=PATH data=msrvtt``: evaluate a checkpoint.

Each evaluation writes into a folder of its own, so that it never overwrites a training run's files (its
``.hydra/`` config above all): ``<run>/eval/<date_time>/`` for a checkpoint under ``<run>/checkpoints/``, else
``<run_dir>/eval/<date_time>/`` when ``run_dir=`` is given, else ``outputs/eval/<date_time>/``. It holds
``eval_results.json``, ``eval.log`` (the table and the log) and Hydra's ``.hydra/``. ``hydra.run.dir=`` overrides.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from .config import run_hydra, to_run_config


def output_dir(argv: list[str], stamp: str) -> str:
    """Where this evaluation writes, from the command line's checkpoint= and run_dir= (see the module doc)."""
    given = dict(arg.split("=", 1) for arg in argv if "=" in arg and not arg.startswith(("+", "~")))
    if "run_dir" in given:
        return f"{given['run_dir']}/eval/{stamp}"
    ckpt = Path(given.get("checkpoint", ""))
    if ckpt.parent.name == "checkpoints":
        return str(ckpt.parent.parent / "eval" / stamp)
    return f"outputs/eval/{stamp}"


def _evaluate(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    run_cfg = to_run_config(cfg)  # torch-free: a config error answers before torch and open_clip load
    from .evaluate import evaluate_checkpoint

    evaluate_checkpoint(run_cfg, HydraConfig.get().runtime.output_dir)


def main() -> None:
    argv = sys.argv[1:]
    if not any(arg.startswith("hydra.run.dir=") for arg in argv) and "--help" not in argv and "-h" not in argv:
        sys.argv.append(f"hydra.run.dir={output_dir(argv, time.strftime('%Y-%m-%d_%H-%M-%S'))}")
    run_hydra(_evaluate)


if __name__ == "__main__":
    main()
