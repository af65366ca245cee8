"""The training loop: DDP under torchrun, global-batch contrastive losses, AMP, exact resume, evaluation.

`train(cfg)` is what ``dmae-train`` / ``python -m dmae_tpm.train`` run, one process per GPU (or one CPU process).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import checkpoint, clip_pretraining, distributed
from . import runtime as rt
from .config import RunConfig, config_changes, to_dict
from .data import loaders
from .evaluate import evaluate_model, pop_ranks
from .method import RetrievalMethod
from .metrics import format_table, metric_score
from .model import build_model
from .optim import build_optimizer, build_scheduler
from .run_lock import RunFolderInUseError, RunLock
from .run_log import RunLog, attach_file_log, detach

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Raised on every rank when the loss of a step is NaN or infinite."""


class NonFiniteStateError(RuntimeError):
    """Raised on every rank instead of writing a checkpoint whose weights or optimiser state are NaN or infinite."""


class ResumeConfigError(RuntimeError):
    """Raised when the checkpoint to resume was trained under a config that differs in what shapes training."""


class TooManyBadVideosError(RuntimeError):
    """Raised when more than data.max_bad_fraction of the videos tried failed to decode."""


FRESH_START = "start a fresh run under a new name= (or resume=none in a new run_dir=)"


@dataclass
class Progress:
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already trained
    step: int = 0  # optimisation steps done
    videos_tried: int = 0
    videos_failed: int = 0
    best_score: float = -math.inf  # trainer.best_metric of checkpoints/best.pt, signed so larger is better


def same_video_mask(vid: torch.Tensor) -> torch.Tensor | None:
    """(B_glob, B_glob) True where two different captions of the global batch belong to one video (MSVD).
    `vid`: the global batch's video indices (`distributed.gather_no_grad` of each rank's)."""
    ignore = vid[:, None] == vid[None, :]
    ignore.fill_diagonal_(False)
    return ignore if ignore.any() else None


def same_family_mask(vid: torch.Tensor, families: torch.Tensor) -> torch.Tensor:
    """(B_glob, B_glob) True where two distinct videos of the global batch are of one family (synthetic data)."""
    fam = families.to(vid.device)[vid]  # (B_glob,)
    return (fam[:, None] == fam[None, :]) & (vid[:, None] != vid[None, :]) & (fam[:, None] >= 0)


def bad_video_budget_exceeded(failed: int, tried: int, limit: float, min_tried: int = 200) -> bool:
    """Stop when more than `limit` of the videos tried failed, judged once `min_tried` videos were tried (a couple
    of failures in the first batches of a large dataset must not stop the run)."""
    return tried >= min_tried and failed > limit * tried


def non_finite_tensors(tree, prefix: str = "") -> list[str]:
    """Names of the floating-point tensors in a nested dict/list that hold a NaN or an infinity."""
    if isinstance(tree, torch.Tensor):
        return [prefix] if tree.is_floating_point() and not bool(torch.isfinite(tree).all()) else []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    return [name for key, value in items for name in non_finite_tensors(value, f"{prefix}{'.' if prefix else ''}{key}")]


def _all_reduce(values: list[float], device, op="sum") -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if distributed.world_size() > 1:
        reduce_op = torch.distributed.ReduceOp.MAX if op == "max" else torch.distributed.ReduceOp.SUM
        torch.distributed.all_reduce(t, op=reduce_op)
    return t.tolist()


class Trainer:
    def __init__(self, cfg: RunConfig, runtime: rt.Runtime):
        self.cfg, self.rt = cfg, runtime
        self.run_dir = Path(cfg.run_dir)
        self._t_start, self._cpu_start = time.perf_counter(), time.process_time()  # this invocation's
        self._plain = runtime.is_main and cfg.trainer.progress and not sys.stderr.isatty()  # progress as log lines
        found = self._find_checkpoint()  # before the datasets are built: a refused resume fails in seconds
        clip_pretraining.prepare(cfg.model.backbone)  # the synthetic CLIP checkpoint, when configured and absent
        rt.seed_everything(cfg.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
        self.model: RetrievalMethod = build_model(cfg.model).to(runtime.device)
        loaders.prepare(cfg.data, self.model.backbone.image_size, cfg.model.max_frames)
        m = cfg.model
        # The test split first: its start-up check of the test videos then fails before the train captions' weights.
        self.split, captions, videos = loaders.eval_datasets(cfg.data, self.model.backbone, m.max_words, m.max_frames)
        self.train_set = loaders.train_dataset(cfg.data, self.model.backbone, m.max_words, m.max_frames, cfg.seed)
        w, r = runtime.world, runtime.rank
        self.eval_loaders = loaders.eval_loaders(cfg.data, captions, videos, w, r)
        self.bank_loader = self._bank_loader() if cfg.eval.postprocess == "qbnorm" else None
        self.steps_per_epoch = loaders.steps_per_epoch(cfg.data, self.train_set, w)
        self.families = loaders.video_families(cfg.data, self.train_set.video_ids)  # None unless synthetic
        self.total_steps = cfg.trainer.epochs * self.steps_per_epoch
        if cfg.trainer.max_steps:
            self.total_steps = min(self.total_steps, cfg.trainer.max_steps)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, self.total_steps)
        # fp16 only: bf16 has fp32's exponent range and needs no loss scaling
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype == torch.float16)
        self.skipped_steps = 0  # optimizer steps the scaler skipped (inf/NaN gradients) in this logging window
        self.progress = Progress()
        self._resume(found)
        if not self._resumed:  # per-rank streams from here on (a resumed run restores its saved ones)
            rt.seed_everything(cfg.seed + 7919 * runtime.rank)
        self.ddp = (
            DistributedDataParallel(
                self.model,
                device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
                find_unused_parameters=cfg.trainer.find_unused_parameters,
            )
            if runtime.world > 1
            else self.model
        )
        self.log = RunLog(
            self.run_dir, runtime.is_main, cfg.trainer.wandb, cfg.trainer.wandb_project, cfg.name, to_dict(cfg)
        )

    # ----- state -----

    def _bank_loader(self):
        from .evaluate import _bank

        return _bank(self.cfg, self.model, self.cfg.model.max_words, self.rt.world, self.rt.rank)

    def state(self) -> dict:
        p = self.progress
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": {
                "epoch": p.epoch,
                "batch_in_epoch": p.batch_in_epoch,
                "step": p.step,
                "videos_tried": p.videos_tried,
                "videos_failed": p.videos_failed,
                "best_score": p.best_score,
            },
            "rng": checkpoint.rng_state(),
            "config": to_dict(self.cfg),
            "world_size": self.rt.world,
        }

    def _find_checkpoint(self) -> tuple[Path, dict] | None:
        """The checkpoint `resume` names (auto: the newest valid one in run_dir), checked against this config."""
        resume = self.cfg.resume
        if resume == "none":
            return None
        if resume == "auto":
            found = checkpoint.load_latest_valid(self.run_dir)
        else:
            found = Path(resume), checkpoint.load(resume)
        if found is not None:
            self._check_config(*found)
        return found

    def _check_config(self, path: Path, state: dict) -> None:
        """Refuse to continue a checkpoint under settings that change training: a new lr would keep the saved
        schedule, a new batch size would skip data and shorten the run, a finished run would silently re-evaluate."""
        saved = state.get("config")
        if not isinstance(saved, dict):
            return
        blocking, free = config_changes(saved, to_dict(self.cfg))
        if blocking:
            raise ResumeConfigError(
                f"resume={self.cfg.resume} found {str(path)!r}, trained under another config: "
                f"{'; '.join(blocking)}. Continuing it would mix two configs in one run -- to train with the new "
                f"values {FRESH_START}; to continue this run, drop those overrides"
            )
        if free:
            log.info("resuming %s with changes that leave training as it was: %s", path, "; ".join(free))

    def _resume(self, found: tuple[Path, dict] | None) -> None:
        self._resumed = found is not None
        if found is None:
            return
        path, state = found
        checkpoint.load_weights(self.model, state, path, f"this run folder holds another model's run: {FRESH_START}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        saved = dict(state["progress"])
        saved.setdefault("best_score", saved.pop("best_rsum", -math.inf))  # checkpoints before best.pt existed
        self.progress = Progress(**saved)
        self._restore_best()
        if state.get("world_size", self.rt.world) == self.rt.world:
            checkpoint.set_rng_state(state["rng"])
        else:
            log.warning(
                "resuming on %d processes a run checkpointed on %d: batches are split differently, so "
                "the continuation is not bit-identical",
                self.rt.world,
                state["world_size"],
            )
        log.info("resumed from %s at epoch %d, step %d", path, self.progress.epoch, self.progress.step)
        if self.progress.step >= self.total_steps:
            log.info("the run is complete (step %d of %d): evaluating its final weights only", self.progress.step,
                     self.total_steps)

    def _restore_best(self) -> None:
        """best.json may be newer than the step checkpoint resumed from (the evaluation that set it runs after the
        epoch's checkpoint is written): without it a resumed run could replace best.pt by a worse model."""
        record, key = checkpoint.read_best(self.run_dir), self.cfg.trainer.best_metric
        if record is None or key is None:
            return
        if record.get("metric") != key:
            log.warning("best.json ranks by %s but trainer.best_metric is %s: best.pt is replaced at the next "
                        "evaluation", record.get("metric"), key)
            self.progress.best_score = -math.inf
            return
        self.progress.best_score = max(self.progress.best_score, float(record["score"]))

    def _select_best(self, result: dict | None) -> None:
        """Keep checkpoints/best.pt on the evaluation that scored best on trainer.best_metric so far."""
        key = self.cfg.trainer.best_metric
        if key is None or result is None or not self.rt.is_main:
            return
        value, score = metric_score(result, key)
        if score <= self.progress.best_score:
            return
        self.progress.best_score = score
        state = {k: v for k, v in self.state().items() if k in ("model", "progress", "config")}
        record = {"metric": key, "value": value, "score": score, "step": self.progress.step,
                  "epoch": self.progress.epoch, "results": result}
        path = checkpoint.save_best(self.run_dir, state, record)
        log.info("new best %s = %.2f at step %d: %s", key, value, self.progress.step, path)

    def save(self) -> None:
        self._check_finite()
        if self.rt.is_main:
            path = self.run_dir / "checkpoints" / f"step_{self.progress.step:08d}.pt"
            checkpoint.save_atomic(self.state(), path)
            checkpoint.prune(self.run_dir, self.cfg.trainer.keep_checkpoints)
            log.info("saved %s", path)
        if self.rt.world > 1:
            torch.distributed.barrier()

    def _check_finite(self) -> None:
        """A checkpoint of NaN weights would poison every resume: refuse to write one, on every rank."""
        bad = non_finite_tensors({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()})
        if _all_reduce([float(len(bad))], self.rt.device, "max")[0] == 0:
            return
        last = checkpoint.latest(self.run_dir)
        kept = f"the last checkpoint on disk, {str(last)!r}, is intact" if last else "no checkpoint was written"
        raise NonFiniteStateError(
            f"the weights or optimiser state are non-finite after step {self.progress.step} (epoch "
            f"{self.progress.epoch}): {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}; not saved, and {kept}. "
            f"Lower optim.lr (or use trainer.precision=fp32) and {FRESH_START}"
        )

    # ----- one step -----

    def _batch(self, batch: dict) -> dict:
        batch = {k: v.to(self.rt.device, non_blocking=True) for k, v in batch.items()}
        if not (self.cfg.data.mask_same_video or self.families is not None):
            return batch
        vid = distributed.gather_no_grad(batch["video_index"])  # (B_glob,) once for both masks
        if self.cfg.data.mask_same_video:
            ignore = same_video_mask(vid)
            if ignore is not None:
                batch["ignore"] = ignore
        if self.families is not None:  # only read by the diagnostics
            batch["same_family"] = same_family_mask(vid, self.families)
        return batch

    def step(self, batch: dict) -> dict[str, float]:
        with self.rt.autocast():
            out = self.ddp(batch, gather=distributed.gather_features)
        loss = out["loss"]
        if _all_reduce([0.0 if torch.isfinite(loss).item() else 1.0], self.rt.device, "max")[0] > 0:
            terms = {k: float(v.detach()) for k, v in out.items()}
            raise NonFiniteLossError(
                f"non-finite loss at step {self.progress.step} (epoch {self.progress.epoch}): {terms}. "
                "resume=auto would replay this batch from the last checkpoint: lower optim.lr, check the data "
                f"or use trainer.precision=fp32, and {FRESH_START}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else 0.0
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._advance_schedule(skipped=self.scaler.get_scale() < scale)  # the scale only falls on a skipped step
        with torch.no_grad():  # CLIP keeps the temperature parameter itself within [0, ln(max)]
            self.model.backbone.logit_scale.clamp_(0, math.log(self.cfg.model.logit_scale_max))
        return {k: float(v.detach()) for k, v in out.items()}

    def _advance_schedule(self, skipped: bool) -> None:
        """One scheduler step, also when the scaler skipped the optimizer's (the first fp16 steps at 2^16 often are):
        the learning rate stays a function of the step count (open_clip's convention), so fp16 and bf16 runs of one
        config line up. Skips are counted for the log; torch's warning that the schedule ran ahead of the optimizer
        is silenced on them only: catch_warnings invalidates every warning registry, so a warning shown once per
        place would show again after each use."""
        self.skipped_steps += int(skipped)
        if not skipped:
            self.scheduler.step()
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
            self.scheduler.step()

    # ----- loop -----

    def _check_bad_videos(self, failed: int, tried: int) -> None:
        p = self.progress
        failed, tried = _all_reduce([failed, tried], self.rt.device)
        p.videos_failed += int(failed)
        p.videos_tried += int(tried)
        limit = self.cfg.data.max_bad_fraction
        if bad_video_budget_exceeded(p.videos_failed, p.videos_tried, limit):
            raise TooManyBadVideosError(
                f"{p.videos_failed} of {p.videos_tried} videos tried failed to decode (> data.max_bad_fraction="
                f"{limit}); the warnings above name them -- run scripts/check_dataset.py --decode"
            )

    def evaluate(self) -> dict | None:
        result = evaluate_model(
            self.model,
            self.eval_loaders,
            torch.tensor(self.split.caption_video),
            self.rt,
            self.cfg.eval,
            self.bank_loader,
        )
        if self.rt.is_main:
            self._write_ranks(pop_ranks(result))
            log.info(
                "evaluation at step %d (%s %s):\n%s",
                self.progress.step,
                self.cfg.data.name,
                self.split.split,
                format_table(result),
            )
            self.log.write({"eval": result, "epoch": self.progress.epoch}, self.progress.step)
        self._select_best(result)
        return result

    def _write_ranks(self, ranks: dict) -> None:
        """The newest evaluation's per-query ranks (a study's bootstrap over queries reads the final one)."""
        path = self.run_dir / "eval_ranks.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"step": self.progress.step, "epoch": self.progress.epoch, **ranks}) + "\n")
        os.replace(tmp, path)

    def fit(self) -> dict:
        cfg, p = self.cfg, self.progress
        stop_after = cfg.trainer.stop_after_steps
        start_step = self._first_step = p.step
        self._t_fit = time.perf_counter()
        result = None
        while p.epoch < cfg.trainer.epochs and p.step < self.total_steps:
            loader = loaders.train_loader(
                cfg.data, self.train_set, self.rt.world, self.rt.rank, cfg.seed, p.epoch, p.batch_in_epoch
            )
            stopped = self._epoch(loader, start_step, stop_after)
            if stopped:
                self._draw_curves()
                return {"stopped_at_step": p.step}
            p.epoch, p.batch_in_epoch = p.epoch + 1, 0
            self.save()
            every = cfg.trainer.eval_every
            if every and p.epoch % every == 0 and p.epoch < cfg.trainer.epochs and p.step < self.total_steps:
                result = self.evaluate()
        result = self.evaluate()
        self._draw_curves()
        self._summarise(result)
        return {"metrics": result, "step": p.step}

    def _summarise(self, result: dict | None) -> None:
        if not self.rt.is_main:
            return
        from .run_summary import format_summary, run_summary, write_summary

        s = run_summary(self.run_dir, result, checkpoint.read_best(self.run_dir), self.progress.step,
                        time.perf_counter() - self._t_start, time.process_time() - self._cpu_start)
        write_summary(self.run_dir, s)
        log.info("%s", format_summary(s))

    def _draw_curves(self) -> None:
        """run_dir/curves.png from metrics.jsonl (rank 0); a figure that fails to draw never fails the run."""
        if not (self.rt.is_main and self.log.enabled):
            return
        try:
            from .curves import plot_curves

            log.info("training curves: %s", plot_curves(self.run_dir))
        except Exception as err:  # noqa: BLE001 -- matplotlib missing or a font problem: say so and go on
            log.warning("could not draw the training curves (%s: %s); `dmae-curves %s` retries",
                        type(err).__name__, err, self.run_dir)

    def _epoch(self, loader, start_step: int, stop_after: int | None) -> bool:
        cfg, p = self.cfg, self.progress
        # One bar over the whole run (its ETA is the run's), epochs counted from 1 as "epoch 1/2"; in a log file
        # (stderr not a terminal) plain lines at each logging step instead (`_log`).
        bar = tqdm(
            total=self.total_steps,
            initial=p.step,
            desc=f"epoch {p.epoch + 1}/{cfg.trainer.epochs}",
            disable=not (self.rt.is_main and cfg.trainer.progress) or self._plain,
            dynamic_ncols=True,
        )
        t_last, wait, failed, tried = time.perf_counter(), 0.0, 0, 0
        t_fetch = time.perf_counter()
        for raw in loader:
            wait += time.perf_counter() - t_fetch
            failed += int(raw["n_failed"].sum())  # each failure was replaced by another video: both were tried
            tried += len(raw["n_failed"]) + int(raw["n_failed"].sum())
            terms = self.step(self._batch(raw))
            p.step += 1
            p.batch_in_epoch += 1
            bar.update(1)
            if p.step % cfg.trainer.log_every == 0 or p.step == self.total_steps:
                now = time.perf_counter()
                self._log(terms, now - t_last, wait, bar)
                self._check_bad_videos(failed, tried)
                t_last, wait, failed, tried = now, 0.0, 0, 0
            if self._checkpoint_due():
                self._check_bad_videos(failed, tried)  # the checkpoint's counts include every batch before it
                failed = tried = 0
                self.save()
            if p.step >= self.total_steps or (stop_after and p.step - start_step >= stop_after):
                break
            t_fetch = time.perf_counter()
        bar.close()
        self._check_bad_videos(failed, tried)  # the batches after the epoch's last logging step count too
        if stop_after and p.step - start_step >= stop_after and p.step < self.total_steps:
            if not self._checkpoint_due():
                self.save()  # else the loop has just written this very state
            log.info("stopping after %d steps as trainer.stop_after_steps asks; resume=auto continues", stop_after)
            return True
        return False

    def _checkpoint_due(self) -> bool:
        every = self.cfg.trainer.checkpoint_every
        return bool(every) and self.progress.step % every == 0

    def close(self) -> None:
        """Close the run log and free the DDP wrapper while the process group still lives (train() destroys it
        next). DDP's Reducer holds the group: were the Reducer freed last, the group's destructor would run with the
        GIL held and join a gloo thread that is freeing the last all_gather's tensors and waits for the GIL, a
        deadlock seen at exit in 2 of 4 two-process runs (Python 3.12, torch 2.11)."""
        self.log.close()
        self.ddp = None  # freed by its reference count (the two-process test checks it)

    def _log(self, terms: dict, seconds: float, wait: float, bar) -> None:
        n = self.cfg.trainer.log_every
        clips = n * self.cfg.data.batch_size / max(seconds, 1e-9)
        lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
        record = {
            **terms,
            "lr": lrs,
            "clips_per_s": clips,
            "data_wait": wait / max(seconds, 1e-9),
            "epoch": self.progress.epoch,
        }
        if self.rt.device.type == "cuda":  # peak of this logging window, for sizing batches and spotting leaks
            record["gpu_mem_peak_gib"] = torch.cuda.max_memory_allocated(self.rt.device) / 2**30
            torch.cuda.reset_peak_memory_stats(self.rt.device)
        post = {"loss": f"{terms['loss']:.4f}", "lr": f"{lrs.get('other_decay', 0):.2e}",
                "lr_clip": f"{lrs.get('clip_decay', 0):.2e}", "clips_s": f"{clips:.1f}",
                "wait": f"{record['data_wait']:.0%}"}
        if self.scaler.is_enabled():  # many skipped steps mean fp16 overflows: try bf16 or a lower optim.lr
            record.update(grad_scale=self.scaler.get_scale(), fp16_skipped_steps=self.skipped_steps)
            post["skipped"] = str(self.skipped_steps)
            self.skipped_steps = 0
        bar.set_postfix(**post)
        if self._plain:
            p, total = self.progress, self.total_steps
            done = p.step - self._first_step
            eta = (time.perf_counter() - self._t_fit) / max(done, 1) * (total - p.step)
            log.info("step %d/%d (epoch %d/%d) %s, ETA %.1f min", p.step, total, p.epoch + 1,
                     self.cfg.trainer.epochs, " ".join(f"{k} {v}" for k, v in post.items()), eta / 60)
        self.log.write(record, self.progress.step)


def train(cfg: RunConfig) -> dict:
    """Train (and evaluate) as configured; returns {"metrics": ..., "step": ...} on rank 0."""
    runtime = rt.setup(cfg.trainer)
    lock, handler, trainer = None, None, None
    try:
        lock = claim_run_folder(Path(cfg.run_dir), runtime)
        handler = attach_file_log(Path(cfg.run_dir), "train") if runtime.is_main else None
        trainer = Trainer(cfg, runtime)
        return trainer.fit()
    finally:
        if trainer is not None:
            trainer.close()
        detach(handler)
        if lock is not None:
            lock.release()
        rt.teardown()


def claim_run_folder(run_dir: Path, runtime: rt.Runtime) -> RunLock | None:
    """Rank 0 locks the run folder and clears what killed saves left there; every rank raises if it could not,
    so a refused DDP job ends at once instead of waiting for rank 0 at the first collective."""
    lock, error = None, None
    if runtime.is_main:
        try:
            lock = RunLock(run_dir).acquire()
        except RunFolderInUseError as err:
            error = err
    if _all_reduce([1.0 if error else 0.0], runtime.device, "max")[0] > 0:
        raise error or RunFolderInUseError(f"rank 0 could not lock the run folder {str(run_dir)!r}; see its log")
    if lock is not None and (removed := checkpoint.remove_orphans(run_dir)):
        log.info("removed %d temporary file(s) that interrupted saves left in %s", removed, run_dir / "checkpoints")
    return lock
