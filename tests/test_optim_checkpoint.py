"""Optimiser groups and schedule (Sec. 4.1), and checkpoint files (atomic, weights_only, RNG round trip)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from dmae_tpm import checkpoint
from dmae_tpm.backbone import BackboneConfig
from dmae_tpm.config import OptimConfig
from dmae_tpm.model import ModelConfig, build_model
from dmae_tpm.optim import build_optimizer, build_scheduler, lr_factor, param_groups


def test_lr_factor_warmup_then_cosine_by_hand():
    # 10 steps, warmup 0.2 -> 2 warmup steps: 1/2, 2/2, then cos from 1 to 0 over the remaining 8 steps.
    f = [lr_factor(s, 10, 0.2) for s in range(10)]
    assert f[0] == pytest.approx(0.5) and f[1] == pytest.approx(1.0)
    assert f[2] == pytest.approx(1.0)  # progress 0
    assert f[6] == pytest.approx(0.5)  # progress 4/8: 0.5 * (1 + cos(pi / 2))
    assert f[9] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert lr_factor(10, 10, 0.2) == pytest.approx(0.0)
    assert lr_factor(10, 10, 0.2, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(0, 10, 0.0) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def tiny():
    return build_model(ModelConfig(backbone=BackboneConfig(name="dmae-tiny"), max_words=16, max_frames=4))


def test_param_groups_two_lrs_and_no_decay_on_bias_norm_logit_scale(tiny):
    cfg = OptimConfig(lr=1e-4, lr_clip=1e-7, weight_decay=0.2)
    groups = {g["name"]: g for g in param_groups(tiny, cfg)}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    named = dict(tiny.named_parameters())
    assert sum(len(v) for v in ids.values()) == len(named)  # every parameter exactly once
    for name, p in named.items():
        group = next(g for g, members in ids.items() if id(p) in members)
        assert group.startswith("clip") == name.startswith("backbone.clip.")
        no_decay = p.ndim < 2 or "logit_scale" in name or "embedding" in name
        assert group.endswith("no_decay") == no_decay, name
    assert groups["clip_decay"]["lr"] == 1e-7 and groups["other_decay"]["lr"] == 1e-4
    assert groups["clip_no_decay"]["weight_decay"] == 0.0 and groups["other_decay"]["weight_decay"] == 0.2
    assert id(named["backbone.clip.logit_scale"]) in ids["clip_no_decay"]


def test_scheduler_scales_both_groups(tiny):
    opt = build_optimizer(tiny, OptimConfig(lr=1e-4, lr_clip=1e-7, warmup=0.5))
    sched = build_scheduler(opt, OptimConfig(warmup=0.5), total_steps=4)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["other_decay"] == pytest.approx(0.5e-4) and lrs["clip_decay"] == pytest.approx(0.5e-7)
    opt.step()
    sched.step()
    assert {g["name"]: g["lr"] for g in opt.param_groups}["other_decay"] == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="optim.name"):
        build_optimizer(tiny, OptimConfig(name="sgd"))


def test_save_atomic_and_weights_only_load(tmp_path, tiny):
    state = {"model": tiny.state_dict(), "rng": checkpoint.rng_state(), "config": {"a": [1, 2], "b": None}}
    path = checkpoint.save_atomic(state, tmp_path / "checkpoints" / "step_00000003.pt")
    assert not list(path.parent.glob("*.tmp"))
    loaded = checkpoint.load(path)  # weights_only=True inside
    assert loaded["config"] == {"a": [1, 2], "b": None}
    assert all(torch.equal(loaded["model"][k], v) for k, v in tiny.state_dict().items())
    checkpoint.save_atomic({"x": torch.ones(1)}, tmp_path / "checkpoints" / "step_00000010.pt")
    assert checkpoint.latest(tmp_path).name == "step_00000010.pt"
    checkpoint.prune(tmp_path, keep=1)
    assert [p.name for p in (tmp_path / "checkpoints").glob("*.pt")] == ["step_00000010.pt"]


def test_keep_checkpoints_zero_keeps_every_checkpoint(tmp_path):
    """keep=0 used to delete every step checkpoint right after writing it (issue 11): it now keeps all."""
    for step in (1, 2, 3):
        checkpoint.save_atomic({"x": torch.ones(1)}, tmp_path / "checkpoints" / f"step_{step:08d}.pt")
    checkpoint.prune(tmp_path, keep=0)
    assert len(list((tmp_path / "checkpoints").glob("step_*.pt"))) == 3
    from dmae_tpm.config import TrainerConfig
    with pytest.raises(ValueError, match="keep_checkpoints"):
        TrainerConfig(keep_checkpoints=-1)


def test_save_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    def boom(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_atomic({"x": 1}, tmp_path / "step_00000001.pt")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_names_the_checkpoint_path(tmp_path, monkeypatch):
    """Issue 11 item 13: ENOSPC during a save used to surface as torch's error without the file."""
    import errno

    def full(obj, handle):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=r"step_00000002\.pt.*No space left.*df -h") as info:
        checkpoint.save_atomic({"x": 1}, tmp_path / "step_00000002.pt")
    assert info.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []


def test_digest_beside_each_checkpoint_catches_a_flipped_byte_and_goes_with_prune(tmp_path):
    import hashlib

    run = tmp_path / "run"
    for step in (1, 2, 3):
        path = checkpoint.save_atomic({"w": torch.randn(64)}, run / "checkpoints" / f"step_{step:08d}.pt")
    digest = (run / "checkpoints" / "step_00000003.pt.sha256").read_text().split()[0]
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()  # the bytes torch.save wrote, in order
    data = bytearray(path.read_bytes())
    data[-100] ^= 1  # inside the zip's tensor data: torch.load alone does not notice
    path.write_bytes(bytes(data))
    assert torch.load(path, weights_only=True)["w"].shape == (64,)
    with pytest.raises(checkpoint.CorruptCheckpointError, match="step_00000003.pt.*sha256"):
        checkpoint.load(path)
    assert checkpoint.load_latest_valid(run)[0].name == "step_00000002.pt"
    checkpoint.prune(run, keep=1)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000003.pt", "step_00000003.pt.sha256"]


def test_corrupt_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "step_00000001.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="step_00000001.pt"):
        checkpoint.load(bad)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        checkpoint.load(tmp_path / "missing.pt")


def test_rng_state_round_trip(tmp_path):
    state = checkpoint.rng_state()
    path = checkpoint.save_atomic({"rng": state}, tmp_path / "r.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint.set_rng_state(checkpoint.load(path)["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]
