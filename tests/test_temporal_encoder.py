"""Temporal encoder (Sec. 3.1): meanP / seqTransf over f_cls or v_tokens."""

import logging

import pytest
import torch
from open_clip.transformer import QuickGELU, Transformer
from torch import nn
from torch.testing import assert_close

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


# -- initialisation --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("inp", ["f_cls", "v_tokens"])
def test_identity_init_gives_twice_the_input_then_trains_every_parameter(inp):
    torch.manual_seed(0)
    enc = TemporalEncoder(TemporalConfig("seqTransf", inp, layers=2, max_frames=8, head_width=8), 16)
    enc.init_identity()
    video = _video(seed=3)
    v_h = enc(video)  # (B, N, D)
    assert torch.equal(v_h, 2 * video.f_cls)  # f_cls is v_tokens at the frames' [CLS] positions
    assert torch.allclose(torch.cosine_similarity(v_h, video.f_cls, dim=-1), torch.ones(2, 4))
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    opt = torch.optim.Adam(enc.parameters(), lr=1e-2)
    target = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(9))
    for _ in range(3):  # the zeroed projections move at step 1, what feeds them from step 2 on
        opt.zero_grad()
        (enc(video) - target).square().mean().backward()
        opt.step()
    unchanged = [n for n, p in enc.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged


def _clip_text(width=16, heads=2, layers=2, positions=10, mlp_ratio=4.0, seed=4):
    torch.manual_seed(seed)
    text = Transformer(width, layers, heads, mlp_ratio=mlp_ratio, act_layer=QuickGELU).eval()
    return text, torch.randn(positions, width)  # (L_ctx, W): the text position embedding


def _encoder(inp="v_tokens", layers=2, max_frames=4, head_width=8, activation=None):
    torch.manual_seed(5)
    return TemporalEncoder(TemporalConfig("seqTransf", inp, layers, max_frames, head_width), 16, activation)


def test_init_from_clip_text_copies_the_blocks_and_positions():
    text, pos = _clip_text()
    enc = _encoder(activation=QuickGELU())
    assert enc.init_from_clip_text(text, pos)
    for layer, block in zip(enc.transformer.layers, text.resblocks, strict=True):
        assert torch.equal(layer.norm1.weight, block.ln_1.weight) and torch.equal(layer.norm2.bias, block.ln_2.bias)
        assert torch.equal(layer.self_attn.in_proj_weight, block.attn.in_proj_weight)
        assert torch.equal(layer.self_attn.in_proj_bias, block.attn.in_proj_bias)
        assert torch.equal(layer.self_attn.out_proj.weight, block.attn.out_proj.weight)
        assert torch.equal(layer.linear1.weight, block.mlp.c_fc.weight)
        assert torch.equal(layer.linear2.bias, block.mlp.c_proj.bias)
        x = torch.randn(2, 6, 16)  # (B, L, D)
        assert_close(layer(x), block(x), rtol=1e-5, atol=1e-5)  # torch's layer == open_clip's block, no mask
    assert torch.equal(enc.frame_position.weight, pos[:4])


@pytest.mark.parametrize("inp", ["f_cls", "v_tokens"])
def test_clip_text_init_v_h_is_clips_blocks_over_the_frames(inp):
    """v_h = text blocks (no causal mask) over x + text positions of each frame, read at [CLS], plus x."""
    text, pos = _clip_text()
    enc = _encoder(inp, activation=QuickGELU())
    assert enc.init_from_clip_text(text, pos)
    video = _video(seed=6)
    video.frame_mask[:] = True  # no padding: open_clip's blocks take no key mask here
    x, per_frame = (video.f_cls, 1) if inp == "f_cls" else (video.v_tokens, 3)
    y = x + pos[torch.arange(4).repeat_interleave(per_frame)]  # (B, P, D)
    for block in text.resblocks:
        y = block(y)  # (B, P, D)
    assert_close(enc(video), y[:, ::per_frame] + x[:, ::per_frame], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("why,text_kw,enc_kw", [
    ("layers=3 exceeds the 2 text blocks", {}, {"layers": 3}),
    ("2 heads, the temporal layers 1", {}, {"head_width": 16}),
    ("activation QuickGELU", {}, {"activation": None}),
    ("max_frames=12 exceeds the 10 text positions", {}, {"max_frames": 12}),
    ("text width 32", {"width": 32}, {}),
    ("mlp.c_fc.weight is (32, 16), the temporal linear1.weight (64, 16)", {"mlp_ratio": 2.0}, {}),
])
def test_init_from_clip_text_refuses_what_does_not_fit(caplog, why, text_kw, enc_kw):
    text, pos = _clip_text(**text_kw)
    enc = _encoder(**{"activation": QuickGELU(), **enc_kw})
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="dmae_tpm.temporal_encoder"):
        assert not enc.init_from_clip_text(text, pos)
    assert why in caplog.text
    assert all(torch.equal(v, before[k]) for k, v in enc.state_dict().items())  # nothing half-copied


def test_activation_is_the_given_module_and_not_in_the_state_dict():
    quick, plain = _encoder(activation=QuickGELU()), _encoder()
    assert all(isinstance(layer.activation, QuickGELU) for layer in quick.transformer.layers)
    assert all(isinstance(layer.activation, nn.GELU) for layer in plain.transformer.layers)
    assert quick.state_dict().keys() == plain.state_dict().keys()  # checkpoints load into either
    plain.load_state_dict(quick.state_dict())
    video = _video()
    assert not torch.allclose(quick(video), plain(video), atol=1e-4)  # the layers, the last one too, apply it
