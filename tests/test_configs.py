"""Every Hydra config composes, validates against RunConfig and builds; the experiment files match the paper's rows.

The ViT-B CLIP backbones are not built (seconds each): their width and tokens per frame come from open_clip's model
config, and only the similarity, the contrastive loss and TPM-CL are built and run on small random features.
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from dmae_tpm.config import RunConfig, to_run_config
from dmae_tpm.methods.dmae_tpm.dmae import Similarity, TextInput
from dmae_tpm.methods.dmae_tpm.objective import build_contrastive_loss
from dmae_tpm.methods.dmae_tpm.tpm_cl import TPMCL
from dmae_tpm.methods.xmlnet.false_negative_loss import FalseNegativeAwareLoss
from dmae_tpm.methods.xmlnet.similarity import MultiLevelSimilarity, XText, XVideo
from dmae_tpm.model import build_model

CONFIG_DIR = (Path(__file__).resolve().parents[1] / "configs").as_posix()
EXPERIMENTS = sorted(p.stem for p in Path(CONFIG_DIR, "experiment").glob("*.yaml"))
PAPER = [e for e in EXPERIMENTS if not e.startswith(("demo", "xmlnet"))]  # Tables 1-9, under DMAE_DATA_ROOT
XMLNET = [e for e in EXPERIMENTS if e.startswith("xmlnet")]
DATASETS = ("msrvtt", "msvd", "didemo", "activitynet")


@pytest.fixture(scope="module")
def composed():
    """Every experiment composed once (the default config under the key None), interpolations unresolved."""
    GlobalHydra.instance().clear()  # in case another test left Hydra initialised
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return {e: compose(config_name="config", overrides=[] if e is None else [f"experiment={e}"])
                for e in [None, *EXPERIMENTS]}


@pytest.fixture(scope="module")
def runs(composed) -> dict[str, RunConfig]:
    """Every composed config validated against RunConfig."""
    return {e: to_run_config(cfg) for e, cfg in composed.items()}


def _dims(run: RunConfig) -> tuple[int, int]:
    """(embed_dim, tokens_per_frame) of the backbone from its open_clip config, without building it."""
    spec = open_clip.get_model_config(run.model.backbone.name)
    assert spec is not None, run.model.backbone.name
    vision = spec["vision_cfg"]
    return spec["embed_dim"], (vision["image_size"] // vision["patch_size"]) ** 2 + 1


def _check_builds(run: RunConfig) -> None:
    m = run.model
    d, tokens_per_frame = _dims(run)
    g = torch.Generator().manual_seed(0)
    b, words, frames = 3, 5, 4
    text = TextInput(torch.randn(b, d, generator=g), torch.randn(b, words, d, generator=g),
                     torch.ones(b, words, dtype=torch.bool), torch.rand(b, words, generator=g) + 1,
                     torch.rand(b, words, generator=g))
    v_h, frame_mask = torch.randn(b, frames, d, generator=g), torch.ones(b, frames, dtype=torch.bool)
    sim = Similarity(m.similarity, d)(text, v_h, frame_mask)
    assert sim.shape == (b, b) and torch.isfinite(sim).all()
    out = build_contrastive_loss(m.loss)(sim, 100.0)
    assert torch.isfinite(out["loss"])
    assert run.eval.postprocess in ("none", "dsl", "qbnorm")
    if m.tpm.enabled:
        assert 0.0 < m.tpm.threshold < 1.0 and m.tpm.margin >= 0.0
        TPMCL(m.tpm, d, m.max_words, m.max_frames, tokens_per_frame)  # validates predictor_normalize
    assert m.max_frames <= m.temporal.max_frames  # the temporal encoder's frame position table


@pytest.mark.parametrize("experiment", [None, *EXPERIMENTS])
def test_composes_validates_and_builds(runs, experiment):
    run = runs[experiment]
    assert run.name == (experiment or "default")
    assert run.run_dir == f"outputs/{run.name}"
    if run.model.backbone.name == "dmae-tiny":  # the demo: build the whole model, it is small
        model = build_model(run.model, load_pretrained=False)  # its pre-training: tests/test_clip_pretraining.py
        assert type(model).__name__ == {"dmae_tpm": "DMAETPM", "xmlnet": "XMLNet"}[run.model.method]
        assert run.model.method == "xmlnet" or model.tpm is not None or not run.model.tpm.enabled
    elif run.model.method == "xmlnet":
        _check_builds_xmlnet(run)
    else:
        _check_builds(run)


def _check_builds_xmlnet(run: RunConfig) -> None:
    """X-MLNet's similarity and false-negative loss at the experiment's sizes, on random features."""
    m, (d, _) = run.model, _dims(run)
    g = torch.Generator().manual_seed(0)
    b, words, frames = 3, m.max_words, m.max_frames
    norm = torch.nn.functional.normalize
    text = XText(norm(torch.randn(b, d, generator=g), dim=-1), norm(torch.randn(b, words, d, generator=g), dim=-1),
                 torch.ones(b, words, dtype=torch.bool))
    video = XVideo(norm(torch.randn(b, d, generator=g), dim=-1), norm(torch.randn(b, frames, d, generator=g), dim=-1),
                   torch.ones(b, frames, dtype=torch.bool))
    x = m.xmlnet
    sim = MultiLevelSimilarity(d, words, frames, x.heads, x.dropout, x.cross_init, x.alpha).eval()(text, video)
    assert sim.shape == (b, b) and torch.isfinite(sim).all()
    assert torch.isfinite(FalseNegativeAwareLoss(x.fn_loss, d)(video.v, text.s, torch.tensor(100.0))["loss"])
    assert m.max_frames <= m.temporal.max_frames


@pytest.mark.parametrize("experiment", XMLNET)
def test_xmlnet_experiments(runs, experiment):
    """docs/xmlnet.md: ViT-B/32 from OpenAI's weights, seqTransf (4 layers) over f_cls, lr 1e-4 / 1e-7, 5 epochs,
    alpha 0.8, the false-negative loss at weight 0.5 with lambda 0.8 and gamma 0.7; 12 frames / 32 words but on
    the paragraph datasets; checkpoints never picked on the test split."""
    run = runs[experiment]
    m, data = run.model, run.data
    assert m.method == "xmlnet" and data.name == experiment.split("_")[1]
    assert m.backbone.name == "ViT-B-32" and m.backbone.pretrained == "openai"
    assert (m.temporal.type, m.temporal.input, m.temporal.layers) == ("seqTransf", "f_cls", 4)
    assert (run.optim.lr, run.optim.lr_clip, run.optim.warmup, run.optim.weight_decay) == (1e-4, 1e-7, 0.1, 0.2)
    assert run.trainer.epochs == 5
    x = m.xmlnet
    assert (x.alpha, x.heads, x.dropout, x.cross_init, x.eval_score) == (0.8, 8, 0.3, "identity", "full")
    fn = x.fn_loss
    assert fn.enabled and (fn.weight, fn.negative_weight, fn.gamma_video, fn.gamma_text) == (0.5, 0.8, 0.7, 0.7)
    assert fn.mask_diagonal and not fn.weighting and not fn.prune_cross_modal
    paragraphs = data.name in ("didemo", "activitynet")
    assert (m.max_words, m.max_frames) == ((64, 64) if paragraphs else (32, 12))
    assert data.test_split == "val" or run.trainer.best_metric is None  # never selected on test


@pytest.mark.parametrize("experiment", [None, *EXPERIMENTS])
def test_every_interpolation_resolves(composed, experiment):
    OmegaConf.to_container(composed[experiment], resolve=True)


@pytest.mark.parametrize("experiment", PAPER)
def test_paper_data_under_data_root(composed, monkeypatch, experiment):
    """oc.env is resolved on access, so the composed config follows the variable."""
    root = "/datasets/dmae-root"
    monkeypatch.setenv("DMAE_DATA_ROOT", root)
    data = composed[experiment].data
    ablation = experiment.startswith(("table5", "table6", "table7", "table8"))  # all on MSR-VTT
    assert data.name == ("msrvtt" if ablation else next(d for d in DATASETS if f"{d}_" in experiment))
    assert data.annotations == f"{root}/{data.name}"
    assert data.videos == f"{root}/{data.name}/videos"
    monkeypatch.delenv("DMAE_DATA_ROOT")
    assert data.annotations == f"data/{data.name}"  # the fallback: the repo's data/


def _kind(run: RunConfig) -> str:
    """baseline | full | other, from the switches that define them (Sec. 4.2)."""
    m = run.model
    dmae = m.similarity.textual_attention and m.similarity.visual_attention
    if m.loss.name == "infonce" and not m.similarity.dmae and not m.tpm.enabled:
        return "baseline"
    if m.loss.name == "negnce" and dmae and m.tpm.enabled:
        return "full"
    return "other"


def test_paper_defaults_in_the_full_method(runs):
    m = runs["msrvtt_vitb16_ti"].model
    assert (m.loss.negnce.gamma1, m.loss.negnce.gamma2) == (1.0, 0.5)  # Sec. 4.1, Eq. 8
    assert (m.tpm.threshold, m.tpm.margin) == (0.6, 0.6)  # Sec. 4.1, tau and delta of Eqs. 14 and 17
    assert m.similarity.variant == "word" and m.loss.negnce.variant == "paper" and m.loss.tpm_weight == 1.0


@pytest.mark.parametrize("experiment", PAPER)
def test_dataset_and_backbone_settings(runs, experiment):
    """Sec. 4.1: 32 words / 12 frames / batch 128 / v_tokens on MSR-VTT and MSVD, 64 / 64 / 64 / f_cls on DiDeMo
    and ActivityNet (val_1); ablations (Tables 5-8) on ViT-B/16, other datasets on ViT-B/32; OpenAI init."""
    run = runs[experiment]
    m, data = run.model, run.data
    if data.name in ("msrvtt", "msvd"):
        assert (m.max_words, m.max_frames, data.batch_size, m.temporal.input) == (32, 12, 128, "v_tokens")
    else:
        assert (m.max_words, m.max_frames, data.batch_size, m.temporal.input) == (64, 64, 64, "f_cls")
    assert data.test_split == {"activitynet": "val", "msrvtt": "test", "msvd": "test", "didemo": "test"}[data.name]
    assert data.synthetic is None
    vitb16 = "vitb16" in experiment or experiment.startswith(("table5", "table6", "table7", "table8"))
    assert m.backbone.name == ("ViT-B-16" if vitb16 else "ViT-B-32") and m.backbone.pretrained == "openai"
    assert (run.optim.lr, run.optim.lr_clip) == (1e-4, 1e-7)
    assert m.temporal.layers == 4 and m.temporal.type == "seqTransf"
    if experiment.startswith(("table5", "table6", "table7", "table8")):
        assert data.name == "msrvtt" and m.similarity.interaction == "ti"


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e.split("_")[0] in DATASETS])
def test_tables_1_to_4_rows(runs, experiment):
    m = runs[experiment].model
    row = experiment.rsplit("_", 1)[1]
    assert _kind(runs[experiment]) == ("baseline" if row == "baseline" else "full")
    assert m.similarity.interaction == ("wti" if row == "wti" else "ti")
    assert runs[experiment].eval.postprocess == "none"


def test_table5_dmae_ablation(runs):
    expect = {"table5_exp1_negnce": (False, False), "table5_exp2_negnce_ta": (True, False),
              "table5_exp3_negnce_va": (False, True), "table5_exp4_all": (True, True)}
    for experiment, (ta, va) in expect.items():
        m = runs[experiment].model
        assert (m.similarity.textual_attention, m.similarity.visual_attention) == (ta, va), experiment
        assert m.loss.name == "negnce" and m.loss.negnce.gamma2 == 0.5 and not m.tpm.enabled, experiment
        # each row differs from Exp1 in the named attention(s) alone: the sentence term is in all four (D8)
        assert m.similarity.sentence_term, experiment
        switches = {"model.similarity.textual_attention": False, "model.similarity.visual_attention": False}
        assert _same_run(runs[experiment], runs["table5_exp1_negnce"], **switches), experiment


def _same_run(a: RunConfig, b: RunConfig, **differ) -> bool:
    da, db = OmegaConf.structured(a), OmegaConf.structured(b)
    for cfg in (da, db):
        cfg.name, cfg.run_dir = "x", "x"
        for key, value in differ.items():
            OmegaConf.update(cfg, key, value)
    return OmegaConf.to_container(da) == OmegaConf.to_container(db)


def test_table6_negnce_weights(runs):
    for experiment, gamma2 in (("table6_gamma2_0", 0.0), ("table6_gamma2_03", 0.3), ("table6_gamma2_05", 0.5),
                               ("table6_gamma2_07", 0.7)):
        run = runs[experiment]
        assert (run.model.loss.negnce.gamma1, run.model.loss.negnce.gamma2) == (1.0, gamma2), experiment
        assert not run.model.tpm.enabled, experiment
        # "the experiment setting is the same as Exp4 in Tab. 5", gamma2 apart
        assert _same_run(run, runs["table5_exp4_all"], **{"model.loss.negnce.gamma2": 0.5}), experiment
    assert _same_run(runs["table6_gamma2_05"], runs["table5_exp4_all"])


def test_table7_tpm(runs):
    m = runs["table7_tpm"].model
    assert m.loss.name == "infonce" and not m.similarity.dmae and m.tpm.enabled
    assert m.similarity.interaction == "ti"
    assert _same_run(runs["table7_tpm"], runs["msrvtt_vitb16_baseline"], **{"model.tpm.enabled": True})
    assert _same_run(runs["table7_dmae_tpm"], runs["msrvtt_vitb16_ti"])


def test_table8_tpm_hyperparameters(runs):
    for experiment, tau, delta in (("table8_delta02_tau02", 0.2, 0.2), ("table8_delta02_tau06", 0.6, 0.2),
                                   ("table8_delta02_tau09", 0.9, 0.2), ("table8_tau06_delta06", 0.6, 0.6)):
        run = runs[experiment]
        assert (run.model.tpm.threshold, run.model.tpm.margin) == (tau, delta), experiment
        assert _kind(run) == "full", experiment
        assert _same_run(run, runs["msrvtt_vitb16_ti"], **{"model.tpm.threshold": 0.6, "model.tpm.margin": 0.6})
    assert _same_run(runs["table8_tau06_delta06"], runs["msrvtt_vitb16_ti"])


TABLE9 = [e for e in EXPERIMENTS if e.startswith("table9_")]


def test_table9_has_every_row():
    expect = {f"table9_{ds}_{bb}_{row}_dsl" for ds, bb in (("msrvtt", "vitb32"), ("msrvtt", "vitb16"),
                                                           ("msvd", "vitb32"), ("didemo", "vitb32"),
                                                           ("activitynet", "vitb32")) for row in ("baseline", "ours")}
    assert set(TABLE9) == expect


@pytest.mark.parametrize("experiment", TABLE9)
def test_table9_dsl(runs, experiment):
    """DSL at inference on the Tables 1-4 model: the baseline, and Ours* = the WTI full method (our choice)."""
    run = runs[experiment]
    assert run.eval.postprocess == "dsl"
    source = experiment.removeprefix("table9_").removesuffix("_dsl").replace("_ours", "_wti")
    assert _same_run(run, runs[source], **{"eval.postprocess": "dsl"})


def test_demo_baseline(runs):
    demo, base = runs[None], runs["demo_baseline"]
    assert _kind(demo) == "full" and _kind(base) == "baseline" and base.model.similarity.interaction == "ti"
    assert base.data.name == "synthetic" and base.model.backbone.name == "dmae-tiny"
    assert _same_run(base, demo, **{"model.similarity.textual_attention": True,
                                    "model.similarity.visual_attention": True, "model.similarity.sentence_term": True,
                                    "model.loss.name": "negnce", "model.tpm.enabled": True})


def test_config_dir_search_order_and_error(tmp_path, monkeypatch):
    from dmae_tpm.config import config_dir

    repo_configs = Path(__file__).resolve().parents[1] / "configs"
    assert config_dir() == str(repo_configs)  # the checkout this package is installed from
    custom = tmp_path / "mine"
    custom.mkdir()
    (custom / "config.yaml").write_text("seed: 1\n")
    monkeypatch.setenv("DMAE_CONFIGS", str(custom))
    assert config_dir() == str(custom)
    with pytest.raises(FileNotFoundError, match="DMAE_CONFIGS"):
        config_dir([tmp_path / "nowhere", None])


def test_every_field_is_overridable_and_typos_fail_at_composition():
    """The RunConfig schema heads the defaults: a field no YAML file sets still takes a plain override, and a
    misspelt key or a wrong type is refused when Hydra composes, not after."""
    from hydra.errors import ConfigCompositionException

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["model.tpm.predictor_normalize=sigmoid", "eval.qb_k=3"])
        run = to_run_config(cfg)
        assert run.model.tpm.predictor_normalize == "sigmoid" and run.eval.qb_k == 3
        with pytest.raises(ConfigCompositionException):
            compose("config", overrides=["model.tpm.predictor_normalise=sigmoid"])
        with pytest.raises(ConfigCompositionException):
            compose("config", overrides=["trainer.epochs=many"])


@pytest.mark.parametrize("override,key", [
    ("data.batch_size=-4", "data.batch_size"), ("data.batch_size=0", "data.batch_size"),
    ("data.eval_batch_size=0", "data.eval_batch_size"), ("model.max_frames=0", "model.max_frames"),
    ("model.max_words=2", "model.max_words"), ("trainer.log_every=0", "trainer.log_every"),
    ("trainer.epochs=0", "trainer.epochs"), ("trainer.max_steps=0", "trainer.max_steps"),
])
def test_out_of_range_values_fail_at_composition_naming_the_key(override, key):
    """Issue 11 item 6: these used to exit 0 after 0 steps (a negative batch) or divide by zero deep inside."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[override])
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        to_run_config(cfg)


@pytest.mark.parametrize("override,message", [
    ("+trainer.epoch=3", r"trainer\.epoch \(did you mean trainer\.epochs\?\)"),
    ("+optimm.lr=0.5", r"optimm \(did you mean optim\?\)"),
    ("+model.tpm.treshold=0.5", r"model\.tpm\.treshold \(did you mean model\.tpm\.threshold\?\)"),
])
def test_appended_unknown_keys_are_refused(override, message):
    """Issue 11 item 7: `+key=value`, the form Hydra's own error suggests, adds a key the schema lacks; the merge
    into RunConfig used to drop it and the run started without the value."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[override])
        free_form = compose("config", overrides=["+data.reader_options.train_csv=MSRVTT_train.7k.csv"])
    with pytest.raises(ValueError, match=message):
        to_run_config(cfg)
    assert to_run_config(free_form).data.reader_options == {"train_csv": "MSRVTT_train.7k.csv"}


def test_train_help_describes_the_tool_and_lists_the_experiments():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "dmae_tpm.train", "--help"], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "dmae-train" in out and "Common overrides" in out and "msrvtt_vitb32_wti" in out and "xmlnet" in out


# Runs an entry point's main in a fresh interpreter, then names the heavy modules it imported.
_PROBE = """
import sys
from importlib import import_module
module, func, *args = sys.argv[1:]
sys.argv = [module] + args
try:
    getattr(import_module(module), func)()
except SystemExit:
    pass
print("HEAVY", sorted(m for m in ("torch", "open_clip", "spacy", "sklearn", "matplotlib") if m in sys.modules))
"""


@pytest.mark.parametrize("entry, args, says", [
    ("dmae_tpm.train:main", ["--help"], "dmae-train"),
    ("dmae_tpm.train:main", ["model.tpm.treshold=0.5"], "treshold"),
    ("dmae_tpm.train:main", ["trainer.best_metric=t2v.R@2"], "unknown metric"),
    ("dmae_tpm.train:main", ["model.tpm.threshold=1.5"], "tpm.threshold"),
    ("dmae_tpm.eval:main", ["--help"], "dmae-train"),  # one config, one help page
    ("dmae_tpm.tool_args:search_main", ["--help"], "videos="),
    ("dmae_tpm.tool_args:search_main", ["checkpoint=x", "videos=y", "data.bogus=1"], "bogus"),
    ("dmae_tpm.tool_args:explain_main", ["checkpoint=x"], "caption="),
    ("dmae_tpm.data.frame_cache_cli:main", ["--help"], "dmae-frame-cache"),
    ("dmae_tpm.data.check:main", ["--help"], "--decode"),
    ("dmae_tpm.data.synthetic:main", ["--help"], "usage"),
    ("dmae_tpm.curves:main", ["--help"], "usage"),
    ("dmae_tpm.compare:main", ["--help"], "usage"),
])
def test_entry_points_answer_help_and_config_errors_before_importing_torch(tmp_path, entry, args, says):
    """Issue 17.9: --help and a bad config answer in about a second, not after 10 s of importing torch."""
    import subprocess
    import sys

    module, func = entry.split(":")
    out = subprocess.run([sys.executable, "-c", _PROBE, module, func, *args], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert says in out.stdout + out.stderr
    assert "HEAVY []" in out.stdout, out.stdout[-500:] + out.stderr[-2000:]
