"""Temporal encoder (Sec. 3.1): meanP / seqTransf over f_cls or v_tokens."""

import pytest
import torch

from dmae_tpm.features import VideoFeatures
from dmae_tpm.temporal_encoder import TemporalConfig, TemporalEncoder


def _video(b=2, n=4, k1=3, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    v_tokens = torch.randn(b, n * k1, d, generator=g)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, 2:] = False
    return VideoFeatures(v_tokens[:, ::k1].clone(), v_tokens, mask)


@pytest.mark.parametrize("inp", ["f_cls", "v_tokens"])
def test_meanp_is_the_frames_cls(inp):
    video = _video()
    v_h = TemporalEncoder(TemporalConfig("meanP", inp), 16)(video)
    assert torch.equal(v_h, video.f_cls)


@pytest.mark.parametrize("inp", ["f_cls", "v_tokens"])
def test_seqtransf_shape_residual_and_padding_invariance(inp):
    torch.manual_seed(0)
    enc = TemporalEncoder(TemporalConfig("seqTransf", inp, layers=2, max_frames=8, head_width=8), 16).eval()
    video = _video()
    v_h = enc(video)
    assert v_h.shape == (2, 4, 16)
    # padded frames (sample 1, frames 2-3) filled with garbage change nothing for the real frames
    noisy = video.v_tokens.clone()
    noisy[1, 6:] = 100.0
    noisy_video = VideoFeatures(noisy[:, ::3].clone(), noisy, video.frame_mask)
    v_h2 = enc(noisy_video)
    assert torch.allclose(v_h[1, :2], v_h2[1, :2], atol=1e-5)
    # frame order matters (frame position embeddings)
    perm = VideoFeatures(video.f_cls.flip(1), video.v_tokens.view(2, 4, 3, 16).flip(1).reshape(2, 12, 16),
                         torch.ones(2, 4, dtype=torch.bool))
    same = VideoFeatures(video.f_cls, video.v_tokens, torch.ones(2, 4, dtype=torch.bool))
    assert not torch.allclose(enc(perm).flip(1), enc(same), atol=1e-4)


def test_seqtransf_gradients_and_all_padded_video():
    enc = TemporalEncoder(TemporalConfig("seqTransf", "v_tokens", layers=1, max_frames=8, head_width=8), 16)
    video = _video()
    video.frame_mask[1] = False
    video.v_tokens.requires_grad_(True)
    v_h = enc(video)
    assert torch.isfinite(v_h).all()
    v_h.sum().backward()
    assert torch.isfinite(video.v_tokens.grad).all()
    assert all(p.grad is not None for p in enc.parameters())


def test_too_many_frames_is_a_clear_error():
    enc = TemporalEncoder(TemporalConfig("seqTransf", "f_cls", layers=1, max_frames=2), 16)
    with pytest.raises(ValueError, match="max_frames"):
        enc(_video())


def test_config_validation():
    with pytest.raises(ValueError, match="temporal.type"):
        TemporalConfig(type="lstm")
    with pytest.raises(ValueError, match="temporal.input"):
        TemporalConfig(input="patches")


@pytest.mark.parametrize("inp", ["f_cls", "v_tokens"])
def test_last_layer_on_cls_queries_equals_the_full_transformer(inp):
    """v_h from the last layer evaluated at the [CLS] positions only equals the stock nn.TransformerEncoder run
    over every position and then read at the [CLS] positions: values and gradients."""
    torch.manual_seed(1)
    enc = TemporalEncoder(TemporalConfig("seqTransf", inp, layers=3, max_frames=8, head_width=8), 16)
    video = _video(seed=2)
    tokens = video.v_tokens.clone().requires_grad_(True)
    video = VideoFeatures(tokens[:, ::3], tokens, video.frame_mask)
    x, mask, per_frame = (video.f_cls, video.frame_mask, 1) if inp == "f_cls" else (tokens, video.v_mask, 3)
    pos = enc.frame_position(torch.arange(4).repeat_interleave(per_frame))
    reference = (enc.transformer(x + pos, src_key_padding_mask=~mask) + x)[:, ::per_frame]  # (B, N, D)
    v_h = enc(video)
    torch.testing.assert_close(v_h, reference, rtol=1e-5, atol=1e-5)
    g_ours = torch.autograd.grad(v_h.square().sum(), [tokens, *enc.parameters()])
    g_ref = torch.autograd.grad(reference.square().sum(), [tokens, *enc.parameters()])
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
