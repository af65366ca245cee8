"""dmae-explain (the paper's Fig. 6 as a command): what `explanation` returns against the modules called directly,
the Eq. 17 scores against TPMCL.forward and a hand-written TI, the PNG, and `main` on the tiny synthetic benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _tiny_bench import FRAMES, WORDS, untrained_checkpoint
from _tiny_bench import overrides as _overrides
from matplotlib.image import imread

from dmae_tpm.backbone import BackboneConfig
from dmae_tpm.explain import DPI, FIGSIZE, draw, explanation, main, word_labels, word_rows
from dmae_tpm.methods.dmae_tpm.adaptive_token_selector import informative_token_mask
from dmae_tpm.methods.dmae_tpm.dmae import SimilarityConfig
from dmae_tpm.methods.dmae_tpm.token_weight_predictor import text_token_weights, video_token_weights
from dmae_tpm.methods.dmae_tpm.tpm_cl import TPMConfig
from dmae_tpm.model import ModelConfig, build_model
from dmae_tpm.temporal_encoder import TemporalConfig

CAPTION = "a red ball rolls left"
PIXELS = (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI))  # (height, width)


def _model(**kw):
    torch.manual_seed(0)
    base = dict(backbone=BackboneConfig(name="dmae-tiny"), max_words=WORDS, max_frames=FRAMES,
                temporal=TemporalConfig("seqTransf", "v_tokens", layers=1, max_frames=FRAMES))
    return build_model(ModelConfig(**{**base, **kw})).eval()


def _batch(model):
    g = torch.Generator().manual_seed(0)
    h, w = model.backbone.image_size
    mask = torch.tensor([[True, True, True, False]])  # one padded frame
    return {"tokens": model.backbone.tokenize([CAPTION], context_length=WORDS),
            "frames": torch.randint(0, 256, (1, FRAMES, 3, h, w), generator=g, dtype=torch.uint8),
            "frame_mask": mask, "w_pos": torch.randint(1, 3, (1, WORDS), generator=g).float(),
            "w_freq": torch.randint(0, 2, (1, WORDS), generator=g).float()}


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def expl(model):
    return explanation(model, _batch(model))


def test_masks_are_the_selector_on_the_predictors_weights(model, expl):
    batch = _batch(model)
    with torch.no_grad():
        text = model.encode_text(batch["tokens"])
        video, _ = model.encode_video(batch["frames"], batch["frame_mask"])
        w_t = text_token_weights(model.tpm.text_predictor, video.f_cls, video.frame_mask, text.t_tokens, text.t_mask)
        w_v = video_token_weights(model.tpm.video_predictor, text.t_cls, video.v_tokens, video.v_mask)
    tau = model.tpm.cfg.threshold
    torch.testing.assert_close(expl["w_t"], w_t[0])
    torch.testing.assert_close(expl["b_t"], informative_token_mask(w_t, tau)[0])  # Eq. (14)
    torch.testing.assert_close(expl["w_v"], w_v[0].view(FRAMES, -1))  # frame-major: (N, K+1)
    torch.testing.assert_close(expl["b_v"], informative_token_mask(w_v, tau)[0].view(FRAMES, -1))
    real = expl["t_mask"]
    assert 0 < (expl["b_t"][real] == 0).sum() < real.sum()  # some words masked, not all: the check means something
    assert (expl["b_v"][3] == 1).all() and (expl["w_v"][3] == 0).all()  # the padded frame: weight 0, never masked

    words = word_labels(model.backbone.tokenizer, expl["tokens"], expl["t_mask"])
    assert words == ["[BOS]", *CAPTION.split(), "[EOS]"]
    rows = word_rows(expl, words)
    assert [r["struck"] for r in rows] == (expl["b_t"][real] == 0).tolist()
    assert [r["w_t"] for r in rows] == expl["w_t"][real].tolist()


def _ti_one_token(q, v_h, real):
    """TI of a one-token text against the real frames: 0.5 (max + mean) of the cosines."""
    cos = F.normalize(q, dim=-1) @ F.normalize(v_h[0, real], dim=-1).T  # (1, N_real)
    return (0.5 * (cos.max() + cos.mean())).item()


@pytest.mark.parametrize("norm", ["t_g", "none", "both"])
def test_eq17_scores_follow_tpmcl_forward(model, norm):
    old = model.tpm.cfg.text_global_norm
    model.tpm.cfg.text_global_norm = norm
    try:
        batch = _batch(model)
        got = explanation(model, batch)
        with torch.no_grad():
            text = model.encode_text(batch["tokens"])
            video, v_h = model.encode_video(batch["frames"], batch["frame_mask"])
            losses = model.tpm(text, video, v_h, model.temporal, model.pair_score)
            p = model.tpm.partial_samples(text, video, model.temporal)
    finally:
        model.tpm.cfg.text_global_norm = old
    for term in ("trpl1", "trpl2", "trpl3"):  # one pair: the batch mean is that pair's hinge
        assert got["eq17"][term]["hinge"] == pytest.approx(losses[term].item(), abs=1e-6)
    real = batch["frame_mask"][0]
    len_g = p["t_g"].norm().item() if norm == "none" else 1.0  # length_kept(score) scores q as it is
    len_gp = 1.0 if norm == "both" else p["t_g_p"].norm().item()
    want = {
        "trpl1": (_ti_one_token(text.t_cls, v_h, real), _ti_one_token(text.t_cls, p["v_h_p"], real)),
        "trpl2": (len_g * _ti_one_token(p["t_g"], v_h, real), len_g * _ti_one_token(p["t_g"], p["v_h_p"], real)),
        "trpl3": (len_g * _ti_one_token(p["t_g"], v_h, real), len_gp * _ti_one_token(p["t_g_p"], v_h, real)),
    }
    for term, (full, partial) in want.items():
        assert got["eq17"][term]["full"] == pytest.approx(full, abs=1e-5)
        assert got["eq17"][term]["partial"] == pytest.approx(partial, abs=1e-5)
        hinge = max(0.0, partial - full + model.tpm.cfg.margin)
        assert got["eq17"][term]["hinge"] == pytest.approx(hinge, abs=1e-5)
    with torch.no_grad():
        assert got["score"] == pytest.approx(model.score(*_inputs(model, batch))[0, 0].item())


def _inputs(model, batch):
    from dmae_tpm.methods.dmae_tpm.dmae import TextInput, VideoInput

    video, v_h = model.encode_video(batch["frames"], batch["frame_mask"])
    return TextInput.of(model.encode_text(batch["tokens"]), batch), VideoInput(v_h, video.frame_mask)


def _check_png(path: Path) -> None:
    image = imread(path)  # (H, W, 4) floats in [0, 1]
    assert image.shape[:2] == PIXELS
    assert image[..., :3].std() > 0.1  # a blank canvas has 0
    rgb = (image[..., :3] * 255).astype(np.int32).reshape(-1, 3)
    assert len(np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2])) > 100  # distinct colours


def test_png_has_the_figure_size_and_content(model, expl, tmp_path):
    words = word_labels(model.backbone.tokenizer, expl["tokens"], expl["t_mask"])
    out = draw(expl, _batch(model)["frames"][0], words, tmp_path / "sub" / "x.png")
    assert out == tmp_path / "sub" / "x.png"
    _check_png(out)


def test_without_tpm_and_textual_attention_draws_what_exists(tmp_path):
    model = _model(tpm=TPMConfig(enabled=False), similarity=SimilarityConfig(textual_attention=False))
    batch = _batch(model)
    got = explanation(model, batch)
    assert got["w_t"] is None and got["b_v"] is None and got["eq17"] is None and got["w_ta"] is None
    assert got["w_va"] is not None  # Visual Attention is still on
    words = word_labels(model.backbone.tokenizer, got["tokens"], got["t_mask"])
    assert not any(r["struck"] for r in word_rows(got, words))
    _check_png(draw(got, batch["frames"][0], words, tmp_path / "off.png"))


# -- the command on the tiny synthetic benchmark ---------------------------------------------------------------
@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return tmp_path_factory.mktemp("bench") / "synthetic"


def test_main_entry_and_free_caption_write_the_png(bench, tmp_path, capsys):
    ckpt = untrained_checkpoint(tmp_path / "step.pt", bench)
    out = tmp_path / "entry.png"
    main([f"checkpoint={ckpt}", "entry=0", f"out={out}", *_overrides(bench)])  # generates the benchmark first
    _check_png(out)
    assert f"wrote {out}" in capsys.readouterr().out

    video = sorted((bench / "videos").rglob("*.mp4"))[0]
    free = tmp_path / "free.png"
    main([f"checkpoint={ckpt}", "caption=a red ball rolls left", f"video={video}", f"out={free}", *_overrides(bench)])
    _check_png(free)

    with pytest.raises(SystemExit) as stop:
        main([f"checkpoint={ckpt}", "caption=a ball", f"video={tmp_path / 'none.mp4'}", *_overrides(bench)])
    assert stop.value.code == 2 and "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([f"checkpoint={ckpt}", "entry=999", *_overrides(bench)])
    assert "entry=999" in capsys.readouterr().err


def test_xmlnet_is_refused_clearly(bench, tmp_path, capsys):
    xmlnet = _model(method="xmlnet", temporal=TemporalConfig("seqTransf", "f_cls", layers=1, max_frames=FRAMES))
    with pytest.raises(ValueError, match="model.method=xmlnet"):
        explanation(xmlnet, _batch(xmlnet))
    ckpt = untrained_checkpoint(tmp_path / "xmlnet.pt", bench, "method=xmlnet")
    with pytest.raises(SystemExit) as stop:
        main([f"checkpoint={ckpt}", "caption=a ball", "video=v.mp4", *_overrides(bench)])
    assert stop.value.code == 2 and "model.method=xmlnet" in capsys.readouterr().err


def test_command_line_errors(capsys):
    for argv, why in ([["entry=0"], "checkpoint=PATH"], [["checkpoint=x.pt"], "either caption"],
                      [["checkpoint=x.pt", "caption=a"], "go together"], [["checkpoint=x.pt", "oops"], "key=value"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert why in capsys.readouterr().err
