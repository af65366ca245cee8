"""The CLIP text encoder g and video encoder h over open_clip (Sec. 3.1, Appendix A.1)."""

import open_clip
import pytest
import torch
from torch.testing import assert_close

from dmae_tpm.backbone import (
    MODEL_CONFIG_DIR,
    BackboneConfig,
    CLIPDualEncoder,
    _vit_embeds_by_parts,
    build_backbone,
    register_model_configs,
)

TINY = "dmae-tiny"
K1 = 17  # dmae-tiny: (32 / 8)^2 patches + [CLS]
EXACT = {"atol": 1e-5, "rtol": 0.0}


def tiny(seed: int = 0, **kwargs) -> CLIPDualEncoder:
    torch.manual_seed(seed)
    return build_backbone(BackboneConfig(name=TINY, **kwargs)).eval()


@pytest.fixture(scope="module")
def enc() -> CLIPDualEncoder:
    return tiny()


def frames(batch: int, num_frames: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, num_frames, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# -- building ------------------------------------------------------------------------------------------------
def test_register_model_configs_is_idempotent():
    register_model_configs()
    register_model_configs()
    assert TINY in open_clip.list_models()
    assert open_clip.factory._MODEL_CONFIG_PATHS.count(MODEL_CONFIG_DIR) <= 1


def test_tiny_config(enc):
    assert enc.embed_dim == 64 and enc.image_size == (32, 32) and enc.tokens_per_frame == K1
    assert enc.context_length == 77
    assert enc.mean == open_clip.OPENAI_DATASET_MEAN and enc.std == open_clip.OPENAI_DATASET_STD
    assert isinstance(enc.tokenizer, open_clip.SimpleTokenizer)
    assert len(enc.clip.transformer.resblocks) == 2 and len(enc.clip.visual.transformer.resblocks) == 2


def test_logit_scale_is_the_registered_clip_parameter(enc):
    assert dict(enc.named_parameters())["clip.logit_scale"] is enc.logit_scale


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"open_clip\.list_models\(\)"):
        build_backbone(BackboneConfig(name="ViT-Q-99"))


def test_missing_checkpoint_names_the_path(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_backbone(BackboneConfig(name=TINY, pretrained=str(missing)))


@pytest.mark.parametrize("wrap", ["plain", "ddp"])
def test_local_state_dict_checkpoint(tmp_path, wrap):
    torch.manual_seed(3)
    ref = open_clip.create_model(TINY).eval()
    with torch.no_grad():
        ref.visual.proj.add_(1.0)  # not something a random init could reproduce
        ref.logit_scale.fill_(3.0)
    state = ref.state_dict()
    if wrap == "ddp":
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(state, tmp_path / "tiny.pt")

    built = tiny(seed=4, pretrained=str(tmp_path / "tiny.pt"))
    for key, value in ref.state_dict().items():
        assert torch.equal(built.clip.state_dict()[key], value), key
    images = frames(1, 2)[0]
    assert_close(built.encode_frames(images)[:, 0], ref.encode_image(images), **EXACT)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::torch.jit.TracerWarning")
def test_torchscript_checkpoint_loads_with_quickgelu(tmp_path):
    # OpenAI's released .pt files are TorchScript archives of QuickGELU models.
    torch.manual_seed(5)
    ref = open_clip.create_model(TINY, force_quick_gelu=True).eval()
    example = (torch.randn(1, 3, 32, 32), torch.zeros(1, 77, dtype=torch.long))
    torch.jit.save(torch.jit.trace(ref, example, check_trace=False), tmp_path / "tiny_jit.pt")

    built = tiny(seed=6, pretrained=str(tmp_path / "tiny_jit.pt"))
    images = frames(1, 2)[0]
    assert_close(built.encode_frames(images)[:, 0], ref.encode_image(images), **EXACT)


def test_pretrained_tag_follows_the_tags_quickgelu(monkeypatch):
    calls = []
    create = open_clip.create_model

    def fake_create(name, **kwargs):
        calls.append((name, kwargs))
        return create(TINY)  # no download

    monkeypatch.setattr(open_clip, "create_model", fake_create)
    build_backbone(BackboneConfig(name="ViT-B/32", pretrained="openai"))
    assert calls == [("ViT-B-32", {"pretrained": "openai", "force_quick_gelu": True})]


# -- the architecture of pretrained weights, without them (evaluating a checkpoint) ----------------------------
def _activations(enc: CLIPDualEncoder) -> set[str]:
    blocks = [*enc.clip.transformer.resblocks, *enc.clip.visual.transformer.resblocks]
    return {type(block.mlp.gelu).__name__ for block in blocks}


def test_tag_without_weights_builds_the_tags_architecture_and_loads_nothing(monkeypatch):
    calls = []
    create = open_clip.create_model

    def fake_create(name, **kwargs):
        calls.append((name, kwargs))
        return create(TINY, **kwargs)  # the same overrides, on a small model

    monkeypatch.setattr(open_clip, "create_model", fake_create)
    built = build_backbone(BackboneConfig(name="ViT-B/32", pretrained="openai"), load_weights=False)
    tag = open_clip.get_pretrained_cfg("ViT-B-32", "openai")
    preprocess = {k: tag[k] for k in ("mean", "std", "interpolation", "resize_mode")}
    assert calls == [("ViT-B-32", {"force_quick_gelu": True, "force_preprocess_cfg": preprocess})]  # no `pretrained`
    assert _activations(built) == {"QuickGELU"} and not built.pretrained_loaded
    assert built.mean == tuple(tag["mean"]) and built.std == tuple(tag["std"])


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning", "ignore::torch.jit.TracerWarning")
def test_torchscript_file_without_weights_is_quickgelu_with_random_weights(tmp_path):
    register_model_configs()
    torch.manual_seed(5)
    ref = open_clip.create_model(TINY, force_quick_gelu=True).eval()
    example = (torch.randn(1, 3, 32, 32), torch.zeros(1, 77, dtype=torch.long))
    torch.jit.save(torch.jit.trace(ref, example, check_trace=False), tmp_path / "tiny_jit.pt")
    loaded = tiny(seed=6, pretrained=str(tmp_path / "tiny_jit.pt"))
    bare = build_backbone(BackboneConfig(name=TINY, pretrained=str(tmp_path / "tiny_jit.pt")), load_weights=False)
    assert _activations(loaded) == _activations(bare) == {"QuickGELU"}
    assert loaded.pretrained_loaded and not bare.pretrained_loaded
    assert not torch.equal(bare.clip.visual.proj, ref.visual.proj)  # nothing was loaded


def test_state_dict_file_and_random_init_keep_the_configs_activation(tmp_path, caplog):
    register_model_configs()
    torch.save(open_clip.create_model(TINY).state_dict(), tmp_path / "tiny.pt")
    assert tiny(pretrained=str(tmp_path / "tiny.pt")).pretrained_loaded
    bare = build_backbone(BackboneConfig(name=TINY, pretrained=str(tmp_path / "tiny.pt")), load_weights=False)
    assert _activations(bare) == _activations(tiny()) == {"GELU"} and not tiny().pretrained_loaded
    with caplog.at_level("WARNING", logger="dmae_tpm.backbone"):  # e.g. evaluating on another machine
        gone = build_backbone(BackboneConfig(name=TINY, pretrained=str(tmp_path / "gone.pt")), load_weights=False)
    assert _activations(gone) == {"GELU"} and "gone.pt" in caplog.text


def test_resnet_towers_are_rejected():
    clip = open_clip.CLIP(
        embed_dim=32,
        vision_cfg={"layers": [1, 1, 1, 1], "width": 16, "image_size": 64, "head_width": 16},
        text_cfg={"width": 32, "heads": 2, "layers": 1},
    )
    with pytest.raises(ValueError, match=r"'RN-tiny'.*ModifiedResNet.*Supported: .*ViT-B-32"):
        CLIPDualEncoder(clip, open_clip.SimpleTokenizer(), model_name="RN-tiny")


def test_grad_checkpointing_gives_the_same_outputs_and_gradients():
    plain, ckpt = tiny(seed=7).train(), tiny(seed=8, grad_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.clip.transformer.grad_checkpointing and ckpt.clip.visual.transformer.grad_checkpointing
    tokens = plain.tokenize(["a dog runs"], 16)
    video = frames(1, 2)
    for model in (plain, ckpt):
        loss = model.encode_text(tokens).t_tokens.square().mean()
        loss = loss + model.encode_video(video, torch.ones(1, 2, dtype=torch.bool)).v_tokens.square().mean()
        loss.backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        if p.grad is not None:
            assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("name,k1", [("ViT-B-32", 50), ("ViT-B-16", 197)])
def test_vit_b_builds_without_weights(name, k1):
    torch.manual_seed(0)
    model = build_backbone(BackboneConfig(name=name)).eval()
    assert model.embed_dim == 512 and model.image_size == (224, 224) and model.tokens_per_frame == k1
    tokens = model.tokenize(["a man is unboxing a smartphone"], 77)
    image = torch.randn(1, 1, 3, 224, 224)
    with torch.no_grad():
        assert_close(model.encode_text(tokens).t_cls, model.clip.encode_text(tokens), **EXACT)
        video = model.encode_video(image, torch.ones(1, 1, dtype=torch.bool))
        assert_close(video.f_cls[:, 0], model.clip.encode_image(image[:, 0]), **EXACT)


# -- text: g(t) ----------------------------------------------------------------------------------------------
SENTENCES = ["a man is unboxing a smartphone", "zxqv blorptastic", ""]
# Hand-counted BPE pieces: six common words, "z x q v</w> bl or p tastic</w>", nothing.
NUM_WORDS = [6, 8, 0]


def test_t_cls_matches_open_clip_encode_text(enc):
    tokens = enc.tokenize(SENTENCES, 77)
    with torch.no_grad():
        assert_close(enc.encode_text(tokens).t_cls, enc.clip.encode_text(tokens), **EXACT)


def test_text_shapes_and_word_mask(enc):
    tokens = enc.tokenize(SENTENCES, 32)
    feats = enc.encode_text(tokens)
    assert (
        feats.t_cls.shape == (3, 64) and feats.t_tokens.shape == (3, 32, 64) and feats.t_mask.shape == (3, 32)
    )
    assert feats.t_mask.dtype == torch.bool
    for row, n in enumerate(NUM_WORDS):
        assert feats.t_mask[row].nonzero().flatten().tolist() == list(range(0, n + 2))  # [BOS] words [EOS]
        assert (
            tokens[row, 0] == enc.tokenizer.sot_token_id and tokens[row, n + 1] == enc.tokenizer.eot_token_id
        )
        assert_close(feats.t_cls[row], feats.t_tokens[row, n + 1], **EXACT)  # t_cls is the [EOS] token


def test_word_mask_without_specials_keeps_the_words_only():
    model = tiny(word_mask_specials=False)
    mask = model.encode_text(model.tokenize(SENTENCES, 32)).t_mask
    for row, n in enumerate(NUM_WORDS):
        assert mask[row].nonzero().flatten().tolist() == list(range(1, n + 1))


def test_truncated_text_keeps_eos_and_masks_the_words_left(enc):
    tokens = enc.tokenize(["a man is unboxing a smartphone"], 5)  # [BOS] a man is [EOS]
    assert tokens[0, -1] == enc.tokenizer.eot_token_id
    assert enc.encode_text(tokens).t_mask.tolist() == [[True] * 5]  # [BOS] a man is [EOS]
    assert tiny(word_mask_specials=False).encode_text(tokens).t_mask.tolist() == [[False, True, True, True, False]]


def test_short_context_equals_the_prefix_of_the_full_context(enc):
    short, full = enc.encode_text(enc.tokenize(SENTENCES, 32)), enc.encode_text(enc.tokenize(SENTENCES, 77))
    assert_close(short.t_tokens, full.t_tokens[:, :32], **EXACT)  # causal attention: padding cannot leak back
    assert_close(short.t_cls, full.t_cls, **EXACT)


def test_text_longer_than_the_context_is_rejected(enc):
    with pytest.raises(ValueError, match="context length 77"):
        enc.tokenize(["a"], 78)


# -- video: h(v) ---------------------------------------------------------------------------------------------
def test_f_cls_matches_open_clip_encode_image(enc):
    video = frames(2, 3)
    with torch.no_grad():
        feats = enc.encode_video(video, torch.ones(2, 3, dtype=torch.bool))
        assert_close(feats.f_cls, enc.clip.encode_image(video.flatten(0, 1)).view(2, 3, 64), **EXACT)


def test_video_shapes_are_frame_major(enc):
    mask = torch.tensor([[True, True, False], [True, True, True]])
    feats = enc.encode_video(frames(2, 3), mask)
    assert feats.f_cls.shape == (2, 3, 64) and feats.v_tokens.shape == (2, 3 * K1, 64)
    assert feats.tokens_per_frame == K1 and feats.frame_mask is mask
    assert torch.equal(feats.v_tokens[:, ::K1], feats.f_cls)  # frame n's [CLS] sits at n * (K + 1)
    assert torch.equal(feats.v_mask, mask.repeat_interleave(K1, dim=1))


def test_padded_frames_are_zero_and_do_not_change_real_frames(enc):
    video = frames(2, 4)  # padded slots hold noise, not zeros, to show they are never read
    mask = torch.tensor([[True, True, False, False], [True, False, False, False]])
    with torch.no_grad():
        padded = enc.encode_video(video, mask)
        for b, n in enumerate(mask.sum(1).tolist()):
            alone = enc.encode_video(video[b : b + 1, :n], torch.ones(1, n, dtype=torch.bool))
            assert_close(padded.f_cls[b, :n], alone.f_cls[0], **EXACT)
            assert_close(padded.v_tokens[b, : n * K1], alone.v_tokens[0], **EXACT)
            assert not padded.v_tokens[b, n * K1 :].any() and not padded.f_cls[b, n:].any()


def test_all_frames_padded_gives_zeros(enc):
    feats = enc.encode_video(frames(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    assert feats.v_tokens.shape == (2, 3 * K1, 64) and not feats.v_tokens.any() and not feats.f_cls.any()


def test_bad_frame_shapes_are_rejected(enc):
    with pytest.raises(ValueError, match=r"\(2, 3, 3, 32, 32\)"):
        enc.encode_video(torch.zeros(2, 3, 3, 16, 16), torch.ones(2, 3, dtype=torch.bool))


def test_embeds_by_parts_match_open_clip(enc):
    images = frames(1, 2)[0]
    assert_close(_vit_embeds_by_parts(enc.clip.visual, images), enc.clip.visual._embeds(images), **EXACT)


# -- gradients -----------------------------------------------------------------------------------------------
TEXT_PARAMS = (
    "clip.token_embedding.weight",
    "clip.transformer.resblocks.0.attn.in_proj_weight",
    "clip.text_projection",
)
VISUAL_PARAMS = (
    "clip.visual.conv1.weight",
    "clip.visual.transformer.resblocks.0.attn.in_proj_weight",
    "clip.visual.proj",
)


@pytest.mark.parametrize("output", ["t_cls", "t_tokens", "f_cls", "v_tokens"])
def test_gradients_reach_the_tower(output):
    model = tiny().train()
    mask = torch.tensor([[True, False], [True, True]])
    text = model.encode_text(model.tokenize(["a dog runs", "a cat sits"], 16))
    video = model.encode_video(frames(2, 2), mask)
    feats = {"t_cls": text.t_cls, "t_tokens": text.t_tokens, "f_cls": video.f_cls, "v_tokens": video.v_tokens}
    feats[output].square().mean().backward()
    params = dict(model.named_parameters())
    reached, untouched = (
        (TEXT_PARAMS, VISUAL_PARAMS) if output.startswith("t_") else (VISUAL_PARAMS, TEXT_PARAMS)
    )
    for name in reached:
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name
        assert torch.isfinite(params[name].grad).all(), name
    assert all(params[name].grad is None for name in untouched)


def test_uint8_frames_are_normalised_on_the_device_like_the_float_transform(enc):
    """The data pipeline ships uint8 frames; encode_video normalises them exactly as frame_transform would."""
    from dmae_tpm.data.video import normalizer

    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (2, 3, 3, *enc.image_size), generator=g, dtype=torch.uint8)  # (B, N, 3, H, W)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    float_frames = normalizer(enc.mean, enc.std)(raw)  # (B, N, 3, H, W) float32
    a, b = enc.encode_video(raw, mask), enc.encode_video(float_frames, mask)
    torch.testing.assert_close(a.v_tokens, b.v_tokens, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(enc.normalize(raw), float_frames, rtol=0, atol=1e-6)


def test_normalize_pixels_is_the_affine_form_of_mean_std_and_takes_uint8_only():
    from dmae_tpm.backbone import normalize_pixels, pixel_affine

    mean, std = (0.5, 0.25, 0.125), (0.5, 0.25, 2.0)
    raw = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 2)  # (1, 3, 2, 2)
    want = torch.tensor([(0 / 255 - 0.5) / 0.5, (51 / 255 - 0.25) / 0.25, (1.0 - 0.125) / 2.0])  # by hand
    got = normalize_pixels(raw, *pixel_affine(mean, std))
    torch.testing.assert_close(got, want.view(1, 3, 1, 1).expand(1, 3, 2, 2), rtol=0, atol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        normalize_pixels(raw.float(), *pixel_affine(mean, std))
