"""Run logs: JSON lines always, wandb offline without network, one wandb run id per run dir (resume)."""

from __future__ import annotations

import json

import pytest

from dmae_tpm.run_log import RunLog


def test_jsonl_and_wandb_offline_resume_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is not installed (the lent GPU machines run without it)")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    log = RunLog(tmp_path, True, "offline", "dmae_tpm_test", "probe", {"seed": 1})
    log.write({"loss": 1.5, "lr": {"other_decay": 1e-4}, "eval": {"t2v": {"R@1": 5.0}}}, step=1)
    log.close()
    first_id = (tmp_path / "wandb_id.txt").read_text()
    assert list((tmp_path / "wandb").glob(f"offline-run-*-{first_id}"))
    record = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert record == {"step": 1, "loss": 1.5, "lr": {"other_decay": 1e-4}, "eval": {"t2v": {"R@1": 5.0}}}
    RunLog(tmp_path, True, "disabled", "dmae_tpm_test", "probe", {}).close()
    assert (tmp_path / "wandb_id.txt").read_text() == first_id


def test_environment_wins_and_non_main_ranks_write_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    log = RunLog(tmp_path / "a", True, "online", "dmae_tpm_test", "probe", {})
    assert log.wandb is None  # no network attempt: WANDB_MODE=disabled overrides trainer.wandb=online
    log.write({"loss": float("nan")}, step=3)
    assert json.loads((tmp_path / "a" / "metrics.jsonl").read_text()) == {"step": 3, "loss": "nan"}
    silent = RunLog(tmp_path / "b", False, "offline", "dmae_tpm_test", "probe", {})
    silent.write({"loss": 1.0}, step=1)
    assert not (tmp_path / "b").exists()
