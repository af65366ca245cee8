"""The synthetic CLIP pre-training stage: stills and captions, the loss against a naive formula, the checkpoint
file as `model.backbone.pretrained` and as `model.backbone.pretrain`, its cache key, and zero-shot retrieval."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from dmae_tpm import checkpoint
from dmae_tpm.backbone import BackboneConfig, build_backbone
from dmae_tpm.clip_pretraining import PretrainConfig, contrastive_step, prepare, pretrain, weights_path, zero_shot
from dmae_tpm.data.synthetic import _COLOUR_WORDS, _SHAPE_WORDS, COLOURS, SyntheticConfig
from dmae_tpm.data.synthetic_images import image_text_pairs, render_still, sample_still, still_caption

TINY = "dmae-tiny"
SMALL = {"steps": 3, "num_pairs": 32, "batch_size": 8, "warmup": 1}


def test_a_still_shows_what_its_caption_names():
    rng, words = np.random.default_rng(0), random.Random(0)
    for _ in range(50):
        still = sample_still(rng, SyntheticConfig())
        caption = still_caption(still, words)
        assert any(w in caption for w in _COLOUR_WORDS[still["colour"]])
        assert any(w in caption for w in _SHAPE_WORDS[still["shape"]])
        image = render_still(still, 64, 0, rng)
        centre = image[int(still["y"] * 64), int(still["x"] * 64)]  # every shape covers its own centre
        assert tuple(centre) == COLOURS[still["colour"]]


def test_pairs_are_a_function_of_the_seed():
    a = image_text_pairs(SyntheticConfig(), 16, seed=1)
    b = image_text_pairs(SyntheticConfig(), 16, seed=1)
    c = image_text_pairs(SyntheticConfig(), 16, seed=2)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert not np.array_equal(a[0], c[0])


def test_the_loss_is_clips_symmetric_cross_entropy():
    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(name=TINY))
    pixels = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    tokens = backbone.tokenize(["a red circle", "a blue box", "a big cross", "a green bar"], context_length=16)
    got = contrastive_step(backbone, ClipLoss(), pixels, tokens)
    image = F.normalize(backbone.encode_frames(backbone.normalize(pixels))[:, 0], dim=-1)
    text = F.normalize(backbone.encode_text(tokens).t_cls, dim=-1)
    logits = backbone.logit_scale.exp() * image @ text.T
    naive = sum(-torch.log_softmax(m, dim=-1)[i, i] for m in (logits, logits.T) for i in range(4)) / 8
    assert torch.allclose(got, naive, atol=1e-5)


def test_the_checkpoint_loads_as_pretrained_and_as_pretrain(tmp_path):
    settings = {**SMALL, "cache_dir": str(tmp_path)}
    path = PretrainConfig(**settings).path(TINY)
    record = pretrain(PretrainConfig(**settings), TINY, path)
    assert checkpoint.verify(path) and record["config"]["steps"] == 3
    saved = torch.load(path, weights_only=True)
    by_file = build_backbone(BackboneConfig(name=TINY, pretrained=str(path)))
    by_config = build_backbone(BackboneConfig(name=TINY, pretrain=settings))
    assert weights_path(BackboneConfig(name=TINY, pretrain=settings)) == str(path)
    for model in (by_file, by_config):
        assert model.pretrained_loaded
        for name, value in model.clip.state_dict().items():
            assert torch.equal(value, saved[name]), name
    with pytest.raises(ValueError, match="not both"):
        weights_path(BackboneConfig(name=TINY, pretrained=str(path), pretrain=settings))


def test_the_cache_key_follows_what_changes_the_weights(tmp_path):
    base = PretrainConfig(**SMALL)
    assert base.path(TINY) == PretrainConfig(**SMALL, cache_dir=base.cache_dir).path(TINY)
    assert base.path(TINY) != PretrainConfig(**{**SMALL, "steps": 4}).path(TINY)
    assert base.path(TINY) != PretrainConfig(**SMALL, synthetic={"noise": 0}).path(TINY)
    assert base.path(TINY) == PretrainConfig(**SMALL, synthetic={"num_test_families": 200}).path(TINY)
    assert PretrainConfig(**SMALL, cache_dir=str(tmp_path)).path(TINY).parent == tmp_path


def test_prepare_builds_once(tmp_path):
    cfg = BackboneConfig(name=TINY, pretrain={**SMALL, "cache_dir": str(tmp_path)})
    prepare(cfg)
    path = tmp_path / next(p.name for p in tmp_path.glob("*.pt"))
    stamp = path.stat().st_mtime_ns
    prepare(cfg)
    assert path.stat().st_mtime_ns == stamp


def test_zero_shot_is_mean_pooled_cosine_retrieval():
    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(name=TINY))
    tokens = backbone.tokenize(["a red circle", "a blue box", "a cross"], context_length=16)
    frames = torch.randint(0, 256, (3, 4, 3, 32, 32), dtype=torch.uint8)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    result = zero_shot(backbone, [{"tokens": tokens}], [{"frames": frames, "frame_mask": mask}],
                       torch.arange(3))
    with torch.no_grad():
        text = F.normalize(backbone.encode_text(tokens).t_cls, dim=-1)
        videos = []
        for v in range(3):  # naive: each video's real frames one by one
            real = [F.normalize(backbone.encode_frames(backbone.normalize(frames[v, n:n + 1]))[0, 0], dim=-1)
                    for n in range(4) if mask[v, n]]
            videos.append(F.normalize(torch.stack(real).mean(0), dim=-1))
        sim = text @ torch.stack(videos).T
    expected = [1 + int((sim[i] > sim[i, i]).sum()) for i in range(3)]
    assert result["t2v"]["ranks"] == expected
