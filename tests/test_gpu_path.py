"""The GPU path as far as a CPU machine can check it: every `torch.cuda.*` call (other than the is_available query)
and every `.cuda()` in src/ sits inside an `if` whose condition names CUDA (`device.type == "cuda"`,
`is_available()`); the lent-GPU scripts parse, and scripts/gpu_check.sh --dry-run runs all its steps (slow)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dmae_tpm"
QUERIES = {"is_available"}


def _cuda_calls(tree: ast.AST):
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        text = ast.unparse(f)
        if text.startswith("torch.cuda.") and text.split(".")[-1] not in QUERIES:
            yield node, text
        elif isinstance(f, ast.Attribute) and f.attr == "cuda" and not node.args:
            yield node, text


def _guarded(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.If, ast.IfExp)) and "cuda" in ast.unparse(node.test):
            return True
    return False


def test_cuda_only_calls_are_behind_a_cuda_condition():
    unguarded, seen = [], 0
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        for node, text in _cuda_calls(tree):
            seen += 1
            if not _guarded(node, parents):
                unguarded.append(f"{path.relative_to(SRC)}:{node.lineno} {text}")
    assert seen >= 5  # the scan finds the calls there are (set_device, peak memory, RNG states)
    assert not unguarded, unguarded


ROOT = SRC.parents[1]


@pytest.mark.parametrize("script", ["scripts/gpu_check.sh", "scripts/gpu_wheels.sh", "scripts/bench/gpu.sh",
                                    "scripts/torch_compat.sh", "scripts/gpu_rehearsal.sh"])
def test_gpu_scripts_parse(script):
    subprocess.run(["bash", "-n", str(ROOT / script)], check=True)


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step_on_cpu(tmp_path):
    """The lent-GPU script's steps at tiny sizes on CPU (bf16 autocast, gloo, torchrun, resume, dmae-eval, benches)."""
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_RUN": str(tmp_path / "run")}
    subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh"), "--dry-run"], check=True, env=env, cwd=ROOT,
                   capture_output=True, timeout=900)
    summary = (tmp_path / "out" / "summary.txt").read_text().split("\n")
    assert [line for line in summary if line] == [f"{s}: exit 0" for s in
                                                  ("env", "tests", "train_part", "train_resume", "eval", "bench")]
    assert json.loads((tmp_path / "out" / "eval.json").read_text())["results"]["captions"] > 0



def test_gpu_check_deadline_kills_a_hung_step_and_still_writes_the_summary(tmp_path):
    """A step that hangs is killed at the shared deadline (exit 124) and the later steps are skipped, so a hung step
    on the lent machine (an NCCL rendezvous, say) cannot eat the device call: summary.txt still comes back. The hang
    is an `nvidia-smi` on PATH that sleeps (the env step calls it first)."""
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "nvidia-smi").write_text("#!/bin/sh\nexec sleep 60\n")
    (shim / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_RUN": str(tmp_path / "run"),
           "GPU_CHECK_SECONDS": "10", "PATH": f"{shim}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh"), "--dry-run"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    summary = dict(line.split(": ", 1) for line in (tmp_path / "out" / "summary.txt").read_text().splitlines())
    assert summary.pop("env").startswith("exit 124 (killed at its")
    assert summary == {s: "not run (deadline)" for s in ("tests", "train_part", "train_resume", "eval", "bench")}
