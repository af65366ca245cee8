"""X-MLNet's formulas against naive loops and hand-worked values (docs/xmlnet.md), gradient checks, and the model
behind the method interface: chunked evaluation equal to the one-piece score, the eval-score switch."""

import math

import pytest
import torch
import torch.nn.functional as F

from dmae_tpm.backbone import BackboneConfig
from dmae_tpm.evaluate import similarity_chunked
from dmae_tpm.methods.xmlnet.cross_attention import (
    CrossAttention,
    CrossAttentionBlock,
    sentence_to_frames,
    video_to_words,
)
from dmae_tpm.methods.xmlnet.cross_grained import WordFrameSimilarity
from dmae_tpm.methods.xmlnet.false_negative_loss import (
    FalseNegativeAwareLoss,
    FalseNegativeConfig,
    anchor_loss,
    connectivity,
    crossclr_weights,
    influential,
)
from dmae_tpm.methods.xmlnet.model import XMLNetConfig
from dmae_tpm.methods.xmlnet.similarity import MultiLevelSimilarity, XText, XVideo, combine, pooled_video
from dmae_tpm.model import ModelConfig, build_model
from dmae_tpm.temporal_encoder import TemporalConfig

F64 = torch.float64
D, H = 8, 2


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=_g(seed), dtype=F64), dim=-1)


def _mask(rows, length, lengths):
    m = torch.zeros(rows, length, dtype=torch.bool)
    for i, n in enumerate(lengths):
        m[i, :n] = True
    return m


def _randomise(module, seed=0):
    """Every parameter random (identity init would hide transposes)."""
    g = _g(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5 + (1.0 if p.ndim == 1 else 0.0))
    return module


# ----- cross-attention ------------------------------------------------------------------------------------------


def naive_attention(att: CrossAttention, q, keys, key_mask):
    """One (query, candidate) pair at a time, one head at a time."""
    n_q, n_c, hd = q.shape[0], keys.shape[0], att.head_dim
    out = torch.zeros(n_q, n_c, q.shape[1], dtype=q.dtype)
    for i in range(n_q):
        for c in range(n_c):
            real = [k for k in range(keys.shape[1]) if key_mask[c, k]]
            heads = []
            for h in range(att.heads):
                sl = slice(h * hd, (h + 1) * hd)
                qi = att.q_proj(q[i])[sl]
                logits = torch.stack([att.k_proj(keys[c, k])[sl] @ qi / math.sqrt(hd) for k in real])
                w = torch.softmax(logits, 0)
                heads.append(sum(w[j] * att.v_proj(keys[c, k])[sl] for j, k in enumerate(real)))
            out[i, c] = att.out_proj(torch.cat(heads))
    return out


def test_cross_attention_equals_a_per_pair_per_head_loop_with_padding():
    att = _randomise(CrossAttention(D, H).double())
    q, keys = _unit(3, D, seed=1), _unit(4, 5, D, seed=2)
    mask = _mask(4, 5, [5, 2, 1, 3])
    torch.testing.assert_close(att(q, keys, mask), naive_attention(att, q, keys, mask))


def test_padded_keys_change_nothing_whatever_their_values():
    block = _randomise(CrossAttentionBlock(D, H, dropout=0.0).double()).eval()
    q, keys = _unit(3, D, seed=1), _unit(2, 4, D, seed=2)
    mask = _mask(2, 4, [4, 2])
    garbage = keys.clone()
    garbage[1, 2:] = 1e3 * torch.randn(2, D, dtype=F64, generator=_g(5))
    torch.testing.assert_close(block(q, keys, mask), block(q, garbage, mask))
    longer = torch.cat([keys, _unit(2, 3, D, seed=9)], 1)  # more padding appended
    longer_mask = torch.cat([mask, torch.zeros(2, 3, dtype=torch.bool)], 1)
    torch.testing.assert_close(block(q, keys, mask), block(q, longer, longer_mask))


def test_block_is_xpool_layer_order():
    """LN_in on both inputs, attention, LN, + dropout(Linear), LN: against the same steps written out."""
    block = _randomise(CrossAttentionBlock(D, H, dropout=0.0).double()).eval()
    q, keys = _unit(2, D, seed=1), _unit(3, 4, D, seed=2)
    mask = _mask(3, 4, [4, 1, 3])
    a = naive_attention(block.attn, block.norm_in(q), block.norm_in(keys), mask)
    a = block.norm_attn(a)
    want = block.norm_out(a + block.linear(a))
    torch.testing.assert_close(block(q, keys, mask), want)


def test_identity_init_and_the_public_codes_normal_init():
    block = CrossAttentionBlock(D, H, init="identity")
    for lin in (block.attn.q_proj, block.attn.k_proj, block.attn.v_proj, block.attn.out_proj, block.linear):
        assert torch.equal(lin.weight, torch.eye(D)) and not lin.bias.any()
    normal = CrossAttentionBlock(64, 8, init="normal")
    assert abs(normal.attn.q_proj.weight.std().item() - 0.02) < 0.003
    with pytest.raises(ValueError, match="cross_init"):
        CrossAttentionBlock(D, H, init="xavier")


def test_s2f_and_v2w_in_caption_by_video_order_with_unequal_counts():
    """B_t != B_v: the v2w term must come out (B_t, B_v), entry [t, v] = <v_v, norm(pool of w_t by v_v)>."""
    s2f, v2w = (_randomise(CrossAttentionBlock(D, H, dropout=0.0).double(), seed=k).eval() for k in (1, 2))
    s, words = _unit(3, D, seed=3), _unit(3, 6, D, seed=4)
    v, frames = _unit(5, D, seed=5), _unit(5, 4, D, seed=6)
    wm, fm = _mask(3, 6, [6, 3, 2]), _mask(5, 4, [4, 4, 1, 2, 3])
    got_s2f, got_v2w = sentence_to_frames(s2f, s, frames, fm), video_to_words(v2w, v, words, wm)
    assert got_s2f.shape == got_v2w.shape == (3, 5)
    for t in range(3):
        for j in range(5):
            pooled = s2f(s[t : t + 1], frames[j : j + 1], fm[j : j + 1])[0, 0]
            torch.testing.assert_close(got_s2f[t, j], s[t] @ F.normalize(pooled, dim=-1))
            pooled = v2w(v[j : j + 1], words[t : t + 1], wm[t : t + 1])[0, 0]
            torch.testing.assert_close(got_v2w[t, j], v[j] @ F.normalize(pooled, dim=-1))


def test_a_video_without_frames_attends_to_nothing_and_stays_finite():
    block = CrossAttentionBlock(D, H, dropout=0.0).double().eval()
    out = block(_unit(2, D), _unit(2, 3, D), _mask(2, 3, [3, 0]))
    assert torch.isfinite(out).all()


# ----- word-frame term ------------------------------------------------------------------------------------------


def naive_word_frame(m: WordFrameSimilarity, words, wm, frames, fm):
    """One caption-video pair at a time, softmaxes and maxima over the real words / frames only."""
    t_ = m.temperature
    out = torch.zeros(words.shape[0], frames.shape[0], dtype=words.dtype)
    for t in range(words.shape[0]):
        for v in range(frames.shape[0]):
            ls = [i for i in range(words.shape[1]) if wm[t, i]]
            fs = [j for j in range(frames.shape[1]) if fm[v, j]]
            g = {(i, j): words[t, i] @ m.local @ frames[v, j] for i in ls for j in fs}
            # word side, stage 1: per frame, softmax over words, mixed by word_mix, weights on G
            per_frame = {}
            for j in fs:
                a = torch.softmax(torch.stack([g[i, j] / t_ for i in ls]), 0)
                mixed = {k: sum(a[n] * m.word_mix[i, k] for n, i in enumerate(ls)) for k in ls}
                per_frame[j] = sum(mixed[k] * g[k, j] for k in ls)
            b = torch.softmax(torch.stack([per_frame[j] / t_ for j in fs]), 0)
            mixed = {k: sum(b[n] * m.frame_mix2[j, k] for n, j in enumerate(fs)) for k in fs}
            s2f = sum(mixed[k] * max(g[i, k] for i in ls) for k in fs)
            # frame side
            per_word = {}
            for i in ls:
                a = torch.softmax(torch.stack([g[i, j] / t_ for j in fs]), 0)
                mixed = {k: sum(a[n] * m.frame_mix[j, k] for n, j in enumerate(fs)) for k in fs}
                per_word[i] = sum(mixed[k] * g[i, k] for k in fs)
            b = torch.softmax(torch.stack([per_word[i] / t_ for i in ls]), 0)
            mixed = {k: sum(b[n] * m.word_mix2[i, k] for n, i in enumerate(ls)) for k in ls}
            v2w = sum(mixed[k] * max(g[k, j] for j in fs) for k in ls)
            out[t, v] = 0.5 * (s2f + v2w)
    return out


def test_word_frame_term_equals_a_naive_loop_with_padding_and_random_mixes():
    m = _randomise(WordFrameSimilarity(D, 4, 3, temperature=0.3).double(), seed=7)
    words, frames = _unit(3, 4, D, seed=1), _unit(2, 3, D, seed=2)
    wm, fm = _mask(3, 4, [4, 2, 1]), _mask(2, 3, [3, 2])
    torch.testing.assert_close(m(words, wm, frames, fm), naive_word_frame(m, words, wm, frames, fm))


def test_word_frame_term_hand_values():
    """One word, one frame, identity M: both sides reduce to the cosine. Two words equal up to sign against one
    frame at temperature 0.01: the softmax picks the larger, and the max is that cosine."""
    m = WordFrameSimilarity(2, 1, 1).double()
    w, f = torch.tensor([[[0.6, 0.8]]], dtype=F64), torch.tensor([[[1.0, 0.0]]], dtype=F64)
    ones = torch.ones(1, 1, dtype=torch.bool)
    torch.testing.assert_close(m(w, ones, f, ones), torch.tensor([[0.6]], dtype=F64))
    m2 = WordFrameSimilarity(2, 2, 1).double()
    w2 = torch.tensor([[[0.6, 0.8], [0.0, 1.0]]], dtype=F64)  # cosines 0.6 and 0.0 with f
    got = m2(w2, torch.ones(1, 2, dtype=torch.bool), f, ones)
    # word side: softmax over (60, 0) ~ (1, e^-60): per_frame ~ 0.6, one frame: s2f = max = 0.6.
    # frame side: one frame, per_word = (0.6, 0.0); softmax over (60, 0) weights the max over frames (0.6, 0): 0.6.
    torch.testing.assert_close(got, torch.tensor([[0.6]], dtype=F64), atol=1e-12, rtol=0)


def test_word_frame_shapes_must_match_the_model():
    m = WordFrameSimilarity(D, 4, 3)
    with pytest.raises(ValueError, match="max_words / max_frames"):
        m(_unit(1, 5, D).float(), torch.ones(1, 5, dtype=torch.bool), _unit(1, 3, D).float(),
          torch.ones(1, 3, dtype=torch.bool))


# ----- levels joined --------------------------------------------------------------------------------------------


def test_combination_hand_values_and_levels():
    one = torch.ones(1, 1)
    assert combine(0.2 * one, 0.4 * one, 0.5 * one, 0.1 * one, 0.8).item() == pytest.approx(0.3 + 0.4 + 0.02)
    sim = _randomise(MultiLevelSimilarity(D, 4, 3, heads=H, dropout=0.0).double()).eval()
    text = XText(_unit(3, D, seed=1), _unit(3, 4, D, seed=2), _mask(3, 4, [4, 2, 3]))
    video = XVideo(_unit(2, D, seed=3), _unit(2, 3, D, seed=4), _mask(2, 3, [3, 1]))
    lv = sim.levels(text, video)
    torch.testing.assert_close(sim(text, video), combine(lv["s_vs"], lv["s_fw"], lv["s_s2f"], lv["s_v2w"], 0.8))
    torch.testing.assert_close(sim(text, video, full=False), 0.5 * (lv["s_vs"] + lv["s_fw"]))
    torch.testing.assert_close(lv["s_vs"], text.s @ video.v.t())


def test_pooled_video_is_the_normalised_masked_mean_of_normalised_frames():
    v_h = torch.randn(2, 3, D, generator=_g(1), dtype=F64)
    mask = _mask(2, 3, [3, 1])
    want = torch.stack([F.normalize(F.normalize(v_h[0], dim=-1).mean(0), dim=0), F.normalize(v_h[1, 0], dim=0)])
    torch.testing.assert_close(pooled_video(v_h, mask), want)


# ----- false-negative-aware loss --------------------------------------------------------------------------------


def test_connectivity_hand_values():
    a = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 1.0]])
    c = torch.tensor([1.5, 1.8, 1.3]) / 3
    torch.testing.assert_close(connectivity(a), c / c.max())
    assert influential(connectivity(a), 0.8).tolist() == [True, True, False]  # 0.833, 1.0, 0.722
    assert not connectivity(torch.zeros(3, 3)).any()  # nothing connected: nothing influential
    # c_i = v_i . mean(v) sums to B |mean v|^2 >= 0: the max is never negative, c~ never flips sign
    v = _unit(6, D, seed=3)
    assert (v @ v.t()).mean(1).max() >= 0


def naive_anchor_loss(cross, intra, excluded, cfg, scale, weights=None, ignore=None):
    b = cross.shape[0]
    losses = []
    for i in range(b):
        logits = []
        for j in range(b):
            pruned = cfg.prune_cross_modal and excluded[j] and j != i
            if not pruned and not (ignore is not None and ignore[i, j]):
                logits.append((j == i, scale * cross[i, j]))
        for k in range(b):
            if excluded[k] or (cfg.mask_diagonal and k == i) or (ignore is not None and ignore[i, k]):
                continue
            logits.append((False, scale * cfg.negative_weight * intra[i, k]))
        values = torch.stack([x for _, x in logits])
        pos = next(n for n, (is_pos, _) in enumerate(logits) if is_pos)
        losses.append(torch.logsumexp(values, 0) - values[pos])
    losses = torch.stack(losses)
    return losses.mean() if weights is None else (losses * weights).sum() / weights.sum()


@pytest.mark.parametrize("switches", [{}, {"mask_diagonal": False}, {"prune_cross_modal": True},
                                      {"weighting": True}, {"negative_weight": 0.3}])
def test_anchor_loss_equals_a_naive_loop(switches):
    cfg = FalseNegativeConfig(**switches)
    v, s = _unit(5, D, seed=1), _unit(5, D, seed=2)
    cross, intra = v @ s.t(), v @ v.t()
    excluded = torch.tensor([False, True, False, False, True])
    w = crossclr_weights(intra, cfg.weight_temperature) if cfg.weighting else None
    scale = torch.tensor(20.0, dtype=F64)
    torch.testing.assert_close(anchor_loss(cross, intra, excluded, cfg, scale, w),
                               naive_anchor_loss(cross, intra, excluded, cfg, scale, w))
    ignore = torch.zeros(5, 5, dtype=torch.bool)
    ignore[0, 3] = ignore[3, 0] = True  # two captions of one video
    torch.testing.assert_close(anchor_loss(cross, intra, excluded, cfg, scale, w, ignore),
                               naive_anchor_loss(cross, intra, excluded, cfg, scale, w, ignore))


def test_diagonal_mask_removes_the_constant_self_negative():
    """Unmasked, A_ii = 1 sits among the negatives as a constant lambda * tau logit (the code's defect)."""
    v, s = _unit(4, D, seed=1), _unit(4, D, seed=2)
    none = torch.zeros(4, dtype=torch.bool)
    scale = torch.tensor(50.0, dtype=F64)
    masked = anchor_loss(v @ s.t(), v @ v.t(), none, FalseNegativeConfig(), scale)
    unmasked = anchor_loss(v @ s.t(), v @ v.t(), none, FalseNegativeConfig(mask_diagonal=False), scale)
    assert unmasked > masked + 1.0  # exp(0.8 * 50) dominates every softmax


def test_crossclr_weights_hand_values():
    a = torch.tensor([[1.0, 0.0], [0.0, 0.5]])  # c = (0.5, 0.25), shares (2/3, 1/3)
    w = crossclr_weights(a, 0.5)
    torch.testing.assert_close(w[0] / w[1], torch.tensor(math.exp((2 / 3 - 1 / 3) / 0.5)))


def test_loss_module_excludes_influential_samples_and_identity_maps():
    v, s = _unit(6, D, seed=1), _unit(6, D, seed=2)
    v[1] = v[0]  # a near duplicate pulls both connectivities up
    loss = FalseNegativeAwareLoss(FalseNegativeConfig(), D).double()
    assert torch.equal(loss.v2t, torch.eye(D, dtype=F64)) and torch.equal(loss.t2v, torch.eye(D, dtype=F64))
    scale = torch.tensor(30.0, dtype=F64)
    out = loss(v, s, scale)
    cfg = loss.cfg
    ex_v, ex_t = influential(connectivity(v @ v.t()), 0.7), influential(connectivity(s @ s.t()), 0.7)
    want_v = naive_anchor_loss(v @ s.t(), v @ v.t(), ex_v, cfg, scale)
    want_t = naive_anchor_loss(s @ v.t(), s @ s.t(), ex_t, cfg, scale)
    torch.testing.assert_close(out["loss"], 0.5 * (want_v + want_t))
    assert out["influential_video_frac"] == ex_v.double().mean() > 0


def test_connectivity_carries_no_gradient():
    v = _unit(4, D, seed=1).requires_grad_()
    assert not connectivity(v @ v.t()).requires_grad


# ----- gradients ------------------------------------------------------------------------------------------------


def test_gradcheck_cross_attention_word_frame_and_fn_loss():
    block = _randomise(CrossAttentionBlock(4, 2, dropout=0.0).double()).eval()
    q, keys = _unit(2, 4, seed=1).requires_grad_(), _unit(2, 3, 4, seed=2).requires_grad_()
    mask = _mask(2, 3, [3, 2])
    assert torch.autograd.gradcheck(lambda a, b: block(a, b, mask), (q, keys))
    wf = _randomise(WordFrameSimilarity(4, 3, 2, temperature=0.5).double(), seed=3)
    w, f = _unit(2, 3, 4, seed=4).requires_grad_(), _unit(2, 2, 4, seed=5).requires_grad_()
    wm, fm = _mask(2, 3, [3, 2]), _mask(2, 2, [2, 1])
    assert torch.autograd.gradcheck(lambda a, b: wf(a, wm, b, fm), (w, f))
    fn = FalseNegativeAwareLoss(FalseNegativeConfig(gamma_video=0.9, gamma_text=0.9), 4).double()
    v, s = _unit(4, 4, seed=6).requires_grad_(), _unit(4, 4, seed=7).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: fn(a, b, torch.tensor(5.0, dtype=F64))["loss"], (v, s))


# ----- the model behind the interface ---------------------------------------------------------------------------


WORDS, FRAMES = 10, 3


def tiny_xmlnet(**xmlnet):
    torch.manual_seed(0)
    cfg = ModelConfig(method="xmlnet", backbone=BackboneConfig(name="dmae-tiny"),
                      temporal=TemporalConfig("seqTransf", "f_cls", layers=1, max_frames=FRAMES),
                      xmlnet=XMLNetConfig(**xmlnet), max_words=WORDS, max_frames=FRAMES)
    return build_model(cfg)


def tiny_batch(model, b=5):
    g = _g(1)
    h, w = model.backbone.image_size
    mask = torch.ones(b, FRAMES, dtype=torch.bool)
    mask[1, 1:] = False
    captions = ["a red ball", "a man rides a horse", "two blue cubes spin", "a cat sleeps", "rain"][:b]
    return {"tokens": model.backbone.tokenize(captions, WORDS),
            "frames": torch.randn(b, FRAMES, 3, h, w, generator=g), "frame_mask": mask}


def test_model_trains_one_step_and_names_its_terms():
    model = tiny_xmlnet()
    out = model(tiny_batch(model))
    assert {"loss", "loss_contrastive", "loss_fn", "fn/loss_v", "fn/loss_t", "logit_scale"} <= set(out)
    torch.testing.assert_close(out["loss"], out["loss_contrastive"] + 0.5 * out["loss_fn"])
    out["loss"].backward()
    for name in ("similarity.s2f.attn.q_proj.weight", "similarity.v2w.linear.weight", "similarity.word_frame.local",
                 "fn_loss.v2t", "fn_loss.t2v", "temporal.frame_position.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name
    assert tiny_xmlnet(fn_loss=FalseNegativeConfig(enabled=False))(tiny_batch(model))["loss"].isfinite()


def test_chunked_evaluation_equals_the_one_piece_score_and_the_eval_switch():
    model = tiny_xmlnet().eval()
    batch = tiny_batch(model)
    with torch.no_grad():
        text = model.embed_text(batch)
        video = model.embed_video(batch["frames"], batch["frame_mask"])
        whole = model.score(text, video)  # (5, 5)
    torch.testing.assert_close(similarity_chunked(model, text, video, 2, 3), whole, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(whole).all()
    code_form = tiny_xmlnet(eval_score="global_fine").eval()
    with torch.no_grad():
        lv = code_form.similarity.levels(text, video)
        torch.testing.assert_close(code_form.score(text, video), 0.5 * (lv["s_vs"] + lv["s_fw"]))
        code_form.train()
        assert not torch.allclose(code_form.score(text, video), 0.5 * (lv["s_vs"] + lv["s_fw"]))  # training: S


def test_video_embedding_uses_clip_frames_before_the_temporal_encoder():
    model = tiny_xmlnet().eval()
    batch = tiny_batch(model)
    with torch.no_grad():
        video = model.embed_video(batch["frames"], batch["frame_mask"])
        clip = model.backbone.encode_video(batch["frames"], batch["frame_mask"])
        v_h = model.temporal(clip)
    torch.testing.assert_close(video.frames, F.normalize(clip.f_cls, dim=-1))
    torch.testing.assert_close(video.v, pooled_video(v_h, batch["frame_mask"]))


def test_meanp_temporal_encoder_works_for_xmlnet():
    """The public code's meanP path crashes (docs/xmlnet.md defect 8): here v is the mean of the frames' features."""
    torch.manual_seed(0)
    cfg = ModelConfig(method="xmlnet", backbone=BackboneConfig(name="dmae-tiny"),
                      temporal=TemporalConfig("meanP", "f_cls", max_frames=FRAMES), max_words=WORDS,
                      max_frames=FRAMES)
    model = build_model(cfg)
    batch = tiny_batch(model)
    out = model(batch)
    out["loss"].backward()
    with torch.no_grad():
        clip = model.backbone.encode_video(batch["frames"], batch["frame_mask"])
        video = model.embed_video(batch["frames"], batch["frame_mask"])
    torch.testing.assert_close(video.v, pooled_video(clip.f_cls, batch["frame_mask"]))
