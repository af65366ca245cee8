"""The whole model on the tiny open_clip backbone: forward + backward on CPU for every ablation switch."""

import logging

import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU

from dmae_tpm.backbone import BackboneConfig, register_model_configs
from dmae_tpm.features import map_fields
from dmae_tpm.methods.dmae_tpm.dmae import SimilarityConfig, TextInput
from dmae_tpm.methods.dmae_tpm.negnce import NegNCEConfig
from dmae_tpm.methods.dmae_tpm.objective import LossConfig
from dmae_tpm.methods.dmae_tpm.tpm_cl import TPMConfig
from dmae_tpm.model import ModelConfig, build_model
from dmae_tpm.temporal_encoder import TemporalConfig

B, WORDS, FRAMES = 3, 12, 4
CAPTIONS = ["a red ball rolls left", "a man rides a horse on the beach", "two blue cubes"]


def _cfg(**kw) -> ModelConfig:
    base = dict(backbone=BackboneConfig(name="dmae-tiny"),
                temporal=TemporalConfig("seqTransf", "v_tokens", layers=1, max_frames=FRAMES),
                max_words=WORDS, max_frames=FRAMES)
    base.update(kw)
    return ModelConfig(**base)


def _batch(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = model.backbone.image_size
    tokens = model.backbone.tokenize(CAPTIONS, context_length=WORDS)
    mask = torch.ones(B, FRAMES, dtype=torch.bool)
    mask[2, 2:] = False
    return {"tokens": tokens, "frames": torch.randn(B, FRAMES, 3, h, w, generator=g), "frame_mask": mask,
            "w_pos": torch.randint(1, 3, (B, WORDS), generator=g).float(),
            "w_freq": torch.randint(0, 2, (B, WORDS), generator=g).float()}


def test_full_method_forward_backward():
    torch.manual_seed(0)
    model = build_model(_cfg())
    out = model(_batch(model))
    assert set(out) >= {"loss", "loss_contrastive", "loss_tpm", "tpm/trpl1", "contrastive/num_hard"}
    assert torch.isfinite(out["loss"])
    torch.testing.assert_close(out["loss"], out["loss_contrastive"] + out["loss_tpm"])  # Eq. 19
    out["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    # The video token weights only choose which tokens Eq. 13 masks (a discrete choice), and no other term
    # uses them, so the video predictor gets no gradient -- in the paper as in the authors' code (fidelity.md).
    missing = [n for n, g in grads.items() if g is None]
    assert missing and all(n.startswith("tpm.video_predictor.") for n in missing), missing
    assert all(torch.isfinite(g).all() for g in grads.values() if g is not None)
    for prefix in ("backbone.clip.visual", "backbone.clip.transformer", "temporal.", "tpm.text_predictor"):
        assert any(n.startswith(prefix) and g is not None and g.abs().sum() > 0 for n, g in grads.items()), prefix


@pytest.mark.parametrize("kw", [
    dict(loss=LossConfig("infonce"), similarity=SimilarityConfig("ti", False, False), tpm=TPMConfig(False)),
    dict(similarity=SimilarityConfig("wti", True, False)),
    dict(similarity=SimilarityConfig("ti", False, True)),
    dict(similarity=SimilarityConfig("wti", True, True, "official"), loss=LossConfig(
        "negnce", NegNCEConfig(variant="official")), tpm=TPMConfig(predictor_normalize="sigmoid")),
    dict(temporal=TemporalConfig("meanP", "f_cls")),
])
def test_ablation_switches_run(kw):
    torch.manual_seed(0)
    model = build_model(_cfg(**kw))
    out = model(_batch(model))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert ("loss_tpm" in out) == model.cfg.tpm.enabled


def test_similarity_matrix_matches_training_scores():
    torch.manual_seed(0)
    model = build_model(_cfg()).eval()
    batch = _batch(model)
    with torch.no_grad():
        text = model.encode_text(batch["tokens"])
        video, v_h = model.encode_video(batch["frames"], batch["frame_mask"])
        t = TextInput.of(text, batch)
        full = model.similarity_matrix(t, v_h, video.frame_mask)
        rows = [map_fields(lambda x, i=i: x[i:i + 1], t) for i in range(B)]
        chunks = torch.cat([model.similarity_matrix(row, v_h, video.frame_mask) for row in rows])
    assert full.shape == (B, B)
    torch.testing.assert_close(full, chunks)  # scoring in text chunks gives the same matrix


def test_logit_scale_is_clamped():
    model = build_model(_cfg())
    with torch.no_grad():
        model.backbone.logit_scale.fill_(10.0)
    assert model.logit_scale().item() == pytest.approx(100.0)


# -- the temporal encoder's initialisation and activation (fidelity.md D3) ------------------------------------
def _saved_tiny(tmp_path, torchscript=False):
    """A dmae-tiny CLIP saved as a local `pretrained` file: a state dict, or an OpenAI-style QuickGELU TorchScript."""
    register_model_configs()
    torch.manual_seed(11)
    clip = open_clip.create_model("dmae-tiny", force_quick_gelu=torchscript).eval()
    if not torchscript:
        torch.save(clip.state_dict(), tmp_path / "tiny.pt")
        return tmp_path / "tiny.pt", clip
    example = (torch.randn(1, 3, 32, 32), torch.zeros(1, 77, dtype=torch.long))
    torch.jit.save(torch.jit.trace(clip, example, check_trace=False), tmp_path / "tiny_jit.pt")
    return tmp_path / "tiny_jit.pt", clip


def _cfg_from(path, inp="v_tokens", **temporal) -> ModelConfig:
    # dmae-tiny's text tower: width 64 = embed_dim, 2 heads of 32, 2 blocks
    kw = {"layers": 2, "max_frames": FRAMES, "head_width": 32, **temporal}
    return _cfg(backbone=BackboneConfig(name="dmae-tiny", pretrained=None if path is None else str(path)),
                temporal=TemporalConfig("seqTransf", inp, **kw))


@pytest.mark.parametrize("inp", ["f_cls", "v_tokens"])
def test_random_backbone_gets_the_identity_temporal_init(inp):
    torch.manual_seed(0)
    model = build_model(_cfg_from(None, inp)).eval()
    assert model.temporal_init == "identity" and not model.backbone.pretrained_loaded
    batch = _batch(model)
    with torch.no_grad():
        video, v_h = model.encode_video(batch["frames"], batch["frame_mask"])
    assert torch.equal(v_h, 2 * video.f_cls)  # step 0: CLIP's own frame features, doubled


def test_temporal_init_random_keeps_the_layers_own_init():
    """temporal.init=random: the reading before issue 10, reachable by config (the random draw is unchanged)."""
    torch.manual_seed(0)
    model = build_model(_cfg_from(None, init="random")).eval()
    assert model.temporal_init == "random"
    assert model.temporal.transformer.layers[0].linear2.weight.abs().sum() > 0
    with pytest.raises(ValueError, match="temporal.init"):
        TemporalConfig(init="zeros")


def test_pretrained_backbone_initialises_the_temporal_encoder_from_clip_text(tmp_path):
    path, ref = _saved_tiny(tmp_path)
    model = build_model(_cfg_from(path))
    assert model.temporal_init == "clip_text" and model.backbone.pretrained_loaded
    text = model.backbone.clip
    for layer, block in zip(model.temporal.transformer.layers, text.transformer.resblocks, strict=True):
        for ours, theirs in [("norm1", "ln_1"), ("self_attn.out_proj", "attn.out_proj"), ("norm2", "ln_2"),
                             ("linear1", "mlp.c_fc"), ("linear2", "mlp.c_proj")]:
            for p in ("weight", "bias"):
                assert torch.equal(layer.get_parameter(f"{ours}.{p}"), block.get_parameter(f"{theirs}.{p}"))
        assert torch.equal(layer.self_attn.in_proj_weight, block.attn.in_proj_weight)
        assert torch.equal(layer.self_attn.in_proj_bias, block.attn.in_proj_bias)
    assert torch.equal(model.temporal.frame_position.weight, ref.positional_embedding[:FRAMES])


@pytest.mark.parametrize("temporal,why", [({"head_width": 64}, "2 heads, the temporal layers 1"),
                                          ({"layers": 3}, "layers=3 exceeds the 2 text blocks")])
def test_pretrained_backbone_that_does_not_fit_falls_back_to_identity(tmp_path, caplog, temporal, why):
    path, _ = _saved_tiny(tmp_path)
    with caplog.at_level(logging.WARNING, logger="dmae_tpm.temporal_encoder"):
        model = build_model(_cfg_from(path, **temporal))
    assert model.temporal_init == "identity" and why in caplog.text
    assert not model.temporal.frame_position.weight.any()


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::torch.jit.TracerWarning")
def test_quickgelu_backbone_and_its_eval_build_share_the_architecture(tmp_path):
    """OpenAI weights (TorchScript here) build QuickGELU towers and QuickGELU temporal layers; the eval build
    (`load_pretrained=False`, then the checkpoint) builds the same modules, so it computes the same features."""
    path, _ = _saved_tiny(tmp_path, torchscript=True)
    trained = build_model(_cfg_from(path)).eval()
    assert trained.temporal_init == "clip_text"
    assert all(isinstance(layer.activation, QuickGELU) for layer in trained.temporal.transformer.layers)
    assert isinstance(trained.backbone.clip.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    evaluated = build_model(_cfg_from(path), load_pretrained=False).eval()
    assert evaluated.temporal_init == "identity" and not evaluated.backbone.pretrained_loaded
    modules = [(n, repr(m)) for n, m in trained.named_modules() if not list(m.children())]  # the leaves
    assert [(n, repr(m)) for n, m in evaluated.named_modules() if not list(m.children())] == modules
    batch = _batch(trained)

    def features(model):
        model.load_state_dict(trained.state_dict())
        with torch.no_grad():
            t_tokens = model.encode_text(batch["tokens"]).t_tokens  # (B, L, D)
            return t_tokens, model.encode_video(batch["frames"], batch["frame_mask"])[1]  # v_h: (B, N, D)

    for ours, theirs in zip(features(evaluated), features(trained), strict=True):
        assert torch.equal(ours, theirs)
    gelu = build_model(_cfg_from(None)).eval()  # the old eval build (pretrained=None): GELU everywhere
    assert not any(torch.allclose(a, b) for a, b in zip(features(gelu), features(trained), strict=True))
