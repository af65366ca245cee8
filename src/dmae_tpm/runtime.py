"""Process setup for torchrun / single-process runs: distributed init, device, precision, seeding."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from .config import TrainerConfig

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    device: torch.device
    rank: int
    world: int
    local_rank: int
    amp_dtype: torch.dtype | None  # None: fp32

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


def _device(cfg: TrainerConfig, local_rank: int) -> torch.device:
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("trainer.device=cuda but CUDA is not available; use trainer.device=cpu or auto")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if want != "cpu":
        raise ValueError(f"trainer.device must be auto, cpu or cuda, got {want!r}")
    return torch.device("cpu")


def _amp_dtype(cfg: TrainerConfig, device: torch.device) -> torch.dtype | None:
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    table = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in table:
        raise ValueError(f"trainer.precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if device.type == "cpu" and precision != "fp32":
        # CPU autocast and a CPU GradScaler exist: the tests run the GPU's mixed-precision path here, slowly
        log.warning("trainer.precision=%s on CPU: autocast on CPU is slow and meant for testing the GPU path; "
                    "fp32 (auto) is the CPU's setting", precision)
    return table[precision]


def setup(cfg: TrainerConfig) -> Runtime:
    """Initialise torch.distributed when launched by torchrun (WORLD_SIZE > 1); NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(cfg, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = cfg.dist_backend if cfg.dist_backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend, rank=rank, world_size=world, device_id=device if backend == "nccl" else None)
    return Runtime(device, rank, world, local_rank, _amp_dtype(cfg, device))


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
