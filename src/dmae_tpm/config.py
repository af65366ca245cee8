"""The typed run config: what Hydra composes from configs/ is validated against these dataclasses.

``configs/config.yaml`` composes the groups (model, loss, data, optim, trainer, eval, experiment); `to_run_config`
merges the result into `RunConfig`, so a misspelt key or a wrong type fails before anything is built.

Every config module (this one, ``methods/*/config.py``, ``data/config.py``, ``metric_names.py``) is torch-free:
the entry points compose and check a config in about a second and import torch and open_clip (~10 s) only to run
it. The shared parts' configs (backbone, temporal encoder, model) live here; each module re-exports its own.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from .checks import at_least
from .data.config import DataConfig
from .methods.dmae_tpm.config import LossConfig, SimilarityConfig, TPMConfig
from .methods.xmlnet.config import XMLNetConfig
from .metric_names import check_metric_name


@dataclass
class BackboneConfig:
    """Which CLIP backbone to build (Appendix A.1)."""

    name: str = "ViT-B-32"  # any open_clip model name (see open_clip.list_models()) or "dmae-tiny"
    pretrained: str | None = None  # None: random init; an open_clip tag ("openai"); or a checkpoint file
    # Or the CLIP pre-trained on the synthetic world (clip_pretraining.PretrainConfig fields), built when absent.
    pretrain: dict[str, Any] | None = None
    grad_checkpointing: bool = False  # activation checkpointing of both towers
    word_mask_specials: bool = True  # t_mask covers [BOS] and [EOS] too, as DRL and the authors count them (D1)


@dataclass
class TemporalConfig:
    type: str = "seqTransf"  # "meanP" | "seqTransf"
    input: str = "v_tokens"  # "v_tokens" | "f_cls"
    layers: int = 4
    max_frames: int = 64  # size of the frame position table
    head_width: int = 64
    # "auto": from CLIP's text layers when pretrained weights are loaded and fit, else the identity (D3);
    # "random": the layers' own random init (the library before issue 10)
    init: str = "auto"

    def __post_init__(self):
        if self.type not in ("meanP", "seqTransf"):
            raise ValueError(f"temporal.type must be 'meanP' or 'seqTransf', got {self.type!r}")
        if self.init not in ("auto", "random"):
            raise ValueError(f"temporal.init must be 'auto' or 'random', got {self.init!r}")
        if self.input not in ("v_tokens", "f_cls"):
            raise ValueError(f"temporal.input must be 'v_tokens' or 'f_cls', got {self.input!r}")


METHODS = ("dmae_tpm", "xmlnet")


@dataclass
class ModelConfig:
    method: str = "dmae_tpm"  # "dmae_tpm" | "xmlnet": which folder of methods/ the trainer and evaluator run
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    # DMAE-TPM's parts (read only when method=dmae_tpm; at the top level so paper configs and checkpoints keep
    # their keys)
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    tpm: TPMConfig = field(default_factory=TPMConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    xmlnet: XMLNetConfig = field(default_factory=XMLNetConfig)  # read only when method=xmlnet
    max_words: int = 32  # Sec. 4.1: 32 for MSR-VTT/MSVD, 64 for DiDeMo/ActivityNet
    max_frames: int = 12  # Sec. 4.1: 12 for MSR-VTT/MSVD, 64 for DiDeMo/ActivityNet
    logit_scale_max: float = 100.0  # tau is CLIP's learned logit scale, clamped as in CLIP

    def __post_init__(self):
        at_least("model", self, max_words=3, max_frames=1)  # max_words: [BOS], one word, [EOS]
        if self.method not in METHODS:
            raise ValueError(f"model.method must be one of {', '.join(METHODS)}, got {self.method!r}")


@dataclass
class OptimConfig:
    """Sec. 4.1: Adam, lr 1e-7 for the CLIP text/video encoders and 1e-4 for the other modules, cosine decay."""

    name: str = "adamw"  # adam | adamw
    lr: float = 1e-4  # modules other than CLIP (temporal encoder, DMAE, TPM-CL predictors)
    lr_clip: float = 1e-7  # CLIP text and video encoders (`backbone.clip.*`)
    weight_decay: float = 0.2  # not applied to biases, norms, embeddings or the logit scale
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup: float = 0.1  # fraction of all optimisation steps with linear warmup
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # max global gradient norm; 0 disables


@dataclass
class TrainerConfig:
    epochs: int = 5
    max_steps: int | None = None  # stop after this many optimisation steps (demo, smoke tests)
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp16 | fp32
    find_unused_parameters: bool = True  # TPM-CL's video predictor gets no gradient (docs/fidelity.md D14)
    log_every: int = 10
    eval_every: int = 1  # epochs; 0 evaluates only at the end
    checkpoint_every: int = 0  # optimisation steps between mid-epoch checkpoints; 0: end of epoch only
    keep_checkpoints: int = 2  # newest step checkpoints kept; 0 keeps all
    stop_after_steps: int | None = None  # leave after this many steps in this invocation (job time limits)
    progress: bool = True  # tqdm bars on rank 0
    wandb: str = "offline"  # online | offline | disabled
    wandb_project: str = "dmae_tpm"
    dist_backend: str = "auto"  # auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    # The evaluation figure that picks checkpoints/best.pt (CLIP4Clip/DRL select on t2v R@1); null: no best.pt.
    best_metric: str | None = "t2v.R@1"

    def __post_init__(self):
        if self.best_metric is not None:
            check_metric_name(self.best_metric)
        at_least("trainer", self, epochs=1, max_steps=1, log_every=1, eval_every=0, checkpoint_every=0,
                 stop_after_steps=1, keep_checkpoints=0)  # keep_checkpoints=0 keeps every checkpoint


@dataclass
class EvalConfig:
    # Captions and videos per similarity chunk: memory is O(text_chunk x video_chunk x M x N). null: the largest
    # square chunk (at most 256) whose fp32 token similarity fits chunk_mib, from the features' M and N
    # (evaluate.chunk_sizes): 104 x 104 at MSR-VTT's 32 words x 12 frames, 32 x 32 at 64 x 64 on CPU.
    text_chunk: int | None = None
    video_chunk: int | None = None
    # The budget of that similarity in MiB; null: 16 on CPU (as fast as 256 x 256 or up to 1.1x faster, at 1/6 of
    # its memory at MSR-VTT shapes and 1/64 at 64 x 64; docs/performance.md), none on CUDA (256 x 256).
    chunk_mib: float | None = None
    v2t_mode: str = "group_max"  # multi-caption v2t: group_max (CLIP4Clip/TS2-Net) | any_caption
    postprocess: str = "none"  # none | dsl | qbnorm (Table 9)
    dsl_temperature: float = 0.01  # softmax over sim / 0.01: TS2-Net's logits at logit scale 100
    qb_beta: float = 20.0
    qb_k: int = 1
    qb_bank_size: int = 5000  # training captions in the QB-Norm query bank
    # Opt-in, for memory: store the encoder outputs in fp16 on CUDA (fp32 always on CPU). Only the storage: the
    # similarity, post-processing and ranks run in fp32 either way (docs/fidelity.md D22).
    half: bool = False

    def __post_init__(self):
        if self.postprocess not in ("none", "dsl", "qbnorm"):
            raise ValueError(f"eval.postprocess must be none, dsl or qbnorm, got {self.postprocess!r}")
        if self.v2t_mode not in ("group_max", "any_caption"):
            raise ValueError(f"eval.v2t_mode must be group_max or any_caption, got {self.v2t_mode!r}")
        for key in ("text_chunk", "video_chunk", "chunk_mib"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"eval.{key} must be > 0 or null (chosen from the shapes), got {value!r}")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 42
    run_dir: str = "outputs/run"  # configs/config.yaml sets Hydra's run dir
    resume: str = "auto"  # auto (latest checkpoint in run_dir) | none | a checkpoint path
    checkpoint: str | None = None  # dmae-eval: the checkpoint to evaluate
    model_from_checkpoint: bool = True  # dmae-eval: use the model config stored in the checkpoint
    name: str = "default"  # run name: logs, wandb, and the default run dir outputs/<name>


# configs/config.yaml lists this first in its defaults, so the composed tree holds every RunConfig field with its
# type before the YAML files merge in: any field is overridable (model.tpm.predictor_normalize=sigmoid) and a
# misspelt or mistyped override fails at composition.
SCHEMA = "run_schema"
ConfigStore.instance().store(name=SCHEMA, node=RunConfig)


def to_run_config(cfg: DictConfig | dict) -> RunConfig:
    """Validate a composed config against `RunConfig` and return the dataclass tree."""
    schema = OmegaConf.structured(RunConfig)
    unknown = unknown_keys(cfg, schema)
    if unknown:  # `+key=value` adds keys Hydra's struct mode would refuse, and the merge drops them silently
        raise ValueError(f"unknown config key(s): {', '.join(_with_suggestion(k, schema) for k in unknown)}; "
                         "every key is listed in dmae_tpm/config.py (RunConfig) -- drop the leading '+' and fix "
                         "the spelling")
    merged = OmegaConf.merge(schema, cfg)
    return OmegaConf.to_object(merged)


def unknown_keys(cfg: DictConfig | dict, schema: DictConfig, prefix: str = "") -> list[str]:
    """Dotted keys of `cfg` that the typed `schema` lacks. Free-form dict fields (data.reader_options,
    data.synthetic) are not descended into: any key is theirs."""
    found = []
    for key, value in (cfg.items_ex(resolve=False) if isinstance(cfg, DictConfig) else cfg.items()):
        name = f"{prefix}{key}"
        if key not in schema:
            found.append(name)
            continue
        node = schema._get_node(key) if isinstance(schema, DictConfig) else None
        structured = isinstance(node, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(node))
        if structured and isinstance(value, (DictConfig, dict)):
            found += unknown_keys(value, node, name + ".")
    return found


def _with_suggestion(key: str, schema: DictConfig) -> str:
    parent, _, leaf = key.rpartition(".")
    known = schema
    for part in parent.split(".") if parent else []:
        known = known.get(part) if isinstance(known, DictConfig) and part in known else None
    close = difflib.get_close_matches(leaf, list(known.keys()), n=1) if isinstance(known, DictConfig) else []
    return f"{key} (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else key


def to_dict(cfg: RunConfig) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


# Keys a resumed run may change: where it runs, writes and reports, and how it evaluates. Any other difference from
# the checkpoint's config (lr, batch, epochs and so the schedule, model, data sampling, seed) changes training.
RESUMABLE_CHANGES = (
    "name", "run_dir", "resume", "checkpoint", "model_from_checkpoint", "eval.",
    "trainer.log_every", "trainer.progress", "trainer.wandb", "trainer.wandb_project", "trainer.eval_every",
    "trainer.checkpoint_every", "trainer.keep_checkpoints", "trainer.stop_after_steps", "trainer.best_metric",
    "trainer.dist_backend", "trainer.find_unused_parameters",
    "data.name", "data.annotations", "data.videos", "data.frame_cache", "data.build_frame_cache", "data.cache_dir",
    "data.num_workers", "data.eval_batch_size", "data.eval_skip_bad_videos", "data.test_split",
    "data.max_bad_fraction", "data.check_test_videos",
)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and free-form values stay whole."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(saved: dict, current: dict) -> tuple[list[str], list[str]]:
    """(changes that alter training, other changes) between a checkpoint's config and this run's, as
    "key: saved -> current". Keys the checkpoint lacks (written by an older version) are not compared."""
    old, new = flatten(saved), flatten(current)
    blocking, free = [], []
    for key in sorted(k for k in new if k in old and new[k] != old[k]):
        line = f"{key}: {old[key]!r} -> {new[key]!r}"
        (free if key.startswith(RESUMABLE_CHANGES) else blocking).append(line)
    return blocking, free


def config_dir(candidates: list[str | os.PathLike | None] | None = None) -> str:
    """The configs/ folder the entry points compose from: $DMAE_CONFIGS, else the checkout this package was
    installed from (pip install -e .), else ./configs. A clear error when none holds a config.yaml."""
    if candidates is None:
        candidates = [os.environ.get("DMAE_CONFIGS"), Path(__file__).resolve().parents[2] / "configs",
                      Path.cwd() / "configs"]
    for folder in candidates:
        if folder and (Path(folder) / "config.yaml").is_file():
            return str(Path(folder).resolve())
    tried = ", ".join(str(c) for c in candidates if c)
    raise FileNotFoundError(
        f"no configs/config.yaml found (tried {tried}): run from the repository checkout, install it with "
        "pip install -e ., or set DMAE_CONFIGS=/path/to/dmae_tpm/configs"
    )


def run_hydra(task) -> None:
    """Compose configs/config.yaml with the command line's overrides and call task(cfg): the entry points' main.
    The configs folder is looked up at call time, so a missing one is a clear error, not an import failure."""
    import hydra

    hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")(task)()
