"""DMAE: Textual Attention (Eq. 1), Visual Attention (Eq. 2), the enhanced similarity (Eq. 3, all three readings)."""

import math

import pytest
import torch
import torch.nn.functional as F

from dmae_tpm.methods.dmae_tpm.dmae import Similarity, SimilarityConfig, TextInput
from dmae_tpm.methods.dmae_tpm.textual_attention import textual_attention, uniform_textual_attention
from dmae_tpm.methods.dmae_tpm.visual_attention import identity_visual_attention, visual_attention


# -- Eq. 1 ------------------------------------------------------------------------------------------------------
def test_textual_attention_hand_worked():
    # words: "a man rides a horse" + 1 pad; w_pos = 2 on man/rides/horse; w_freq = 0 on "a" (lowest tf-idf)
    w_pos = torch.tensor([[1.0, 2.0, 2.0, 1.0, 2.0, 1.0]])
    w_freq = torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0, 1.0]])
    mask = torch.tensor([[True, True, True, True, True, False]])
    z = 2 * math.exp(0) + 3 * math.exp(2)  # softmax over the 5 real words of (0, 2, 2, 0, 2)
    want = torch.tensor([[1 / z, math.e ** 2 / z, math.e ** 2 / z, 1 / z, math.e ** 2 / z, 0.0]])
    assert torch.allclose(textual_attention(w_pos, w_freq, mask), want)


def test_textual_attention_off_is_uniform_over_real_words():
    mask = torch.tensor([[True, True, False, False]])
    assert torch.allclose(uniform_textual_attention(mask), torch.tensor([[0.5, 0.5, 0.0, 0.0]]))


# -- Eq. 2 ------------------------------------------------------------------------------------------------------
def naive_visual_attention(v, k):
    """Per column j keep the k largest S[i, j] over i, zero the rest."""
    n = len(v)
    s = [[F.cosine_similarity(v[i], v[j], dim=0).item() for j in range(n)] for i in range(n)]
    w = [[0.0] * n for _ in range(n)]
    for j in range(n):
        for i in sorted(range(n), key=lambda i: -s[i][j])[:k]:
            w[i][j] = s[i][j]
    return torch.tensor(w, dtype=torch.float64)


def test_visual_attention_matches_naive_topk_along_dim0():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(1, 5, 8, generator=g, dtype=torch.float64)
    got = visual_attention(v, torch.ones(1, 5, dtype=torch.bool), k=2)[0]
    assert torch.allclose(got, naive_visual_attention(v[0], 2), atol=1e-12)
    assert torch.allclose(got.diagonal(), torch.ones(5, dtype=torch.float64))  # each frame keeps itself
    assert ((got != 0).sum(0) == 2).all()


def test_visual_attention_hand_worked():
    # frames: e0, e0 (duplicate), e1 -> S = [[1,1,0],[1,1,0],[0,0,1]]; top-2 per column:
    # cols 0,1 keep rows 0,1 (both 1); col 2 keeps row 2 (1) and one of the zeros (value 0 either way)
    v = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    got = visual_attention(v, torch.ones(1, 3, dtype=torch.bool))[0]
    assert torch.allclose(got, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))


def test_visual_attention_ignores_padded_frames():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(1, 4, 8, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False]])
    v_pad = v.clone()
    v_pad[0, 3] = v[0, 0]  # a padded duplicate would otherwise be frame 0's best partner
    got = visual_attention(v_pad, mask)[0]
    assert torch.allclose(got[:3, :3], naive_visual_attention(v[0, :3], 2), atol=1e-12)
    assert (got[3] == 0).all() and (got[:, 3] == 0).all()
    one = visual_attention(v, torch.tensor([[True, False, False, False]]))[0]
    assert one[0, 0] == 1 and one.abs().sum() == 1  # a single real frame only keeps itself


def test_identity_visual_attention():
    assert torch.equal(identity_visual_attention(torch.tensor([[True, False]])), torch.tensor([[[1.0, 0], [0, 0]]]))


# -- Eq. 3, pooled reading (the literal 1 x N annotation) ----------------------------------------------------------
def _batch(bt=3, bv=3, m=6, n=5, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    t_cls = torch.randn(bt, d, generator=g, dtype=torch.float64)
    t_tok = torch.randn(bt, m, d, generator=g, dtype=torch.float64)
    v_h = torch.randn(bv, n, d, generator=g, dtype=torch.float64)
    tm = torch.ones(bt, m, dtype=torch.bool)
    tm[1, 3:] = False
    fm = torch.ones(bv, n, dtype=torch.bool)
    fm[-1, 2:] = False
    w_pos = torch.randint(1, 3, (bt, m), generator=g).double()
    w_freq = torch.randint(0, 2, (bt, m), generator=g).double()
    return TextInput(t_cls, t_tok, tm, w_pos, w_freq), v_h, fm


def naive_pooled_score(text, a, v_h, fm, b, ta, va, video_w=None):
    """Eq. 3 literally with matrices of the real tokens/frames, then TI (or WTI) on the 1 x N matrix."""
    tm, vm = text.t_mask[a], fm[b]
    t = F.normalize(text.t_tokens[a][tm], dim=-1)
    c = F.normalize(text.t_cls[a], dim=-1)
    v = F.normalize(v_h[b][vm], dim=-1)
    m, n = t.shape[0], v.shape[0]
    s_tok = t @ v.T  # M x N
    s_cls = (c @ v.T)[None]  # 1 x N
    w_ta = (torch.softmax(text.w_pos[a][tm] * text.w_freq[a][tm], 0) if ta else torch.full((m,), 1 / m,
                                                                                        dtype=torch.float64))[None]
    w_va = naive_visual_attention(v_h[b][vm], 2) if va else torch.eye(n, dtype=torch.float64)
    s_prime = 0.5 * (w_ta @ s_tok @ w_va + s_cls @ w_va)  # 1 x N  Eq. 3
    row = s_prime[0].tolist()
    t2v = max(row)
    v2t = sum(r * w for r, w in zip(row, video_w, strict=True)) if video_w is not None else sum(row) / n
    return 0.5 * (t2v + v2t)


@pytest.mark.parametrize("ta,va", [(True, True), (True, False), (False, True)])
def test_pooled_dmae_matches_literal_eq3_ti(ta, va):
    text, v_h, fm = _batch()
    sim = Similarity(SimilarityConfig("ti", ta, va, "pooled"), 8).double()
    got = sim(text, v_h, fm)
    for a in range(3):
        for b in range(3):
            assert abs(got[a, b].item() - naive_pooled_score(text, a, v_h, fm, b, ta, va)) < 1e-12


def test_pooled_dmae_matches_literal_eq3_wti():
    text, v_h, fm = _batch(seed=3)
    sim = Similarity(SimilarityConfig("wti", True, True, "pooled"), 8).double()
    got = sim(text, v_h, fm)
    for a in range(3):
        for b in range(3):
            vw = torch.softmax(sim.weights.video_fc(v_h[b][fm[b]]).squeeze(-1), 0).tolist()
            assert abs(got[a, b].item() - naive_pooled_score(text, a, v_h, fm, b, True, True, vw)) < 1e-12


@pytest.mark.parametrize("variant", ["word", "pooled", "official"])
@pytest.mark.parametrize("inter", ["ti", "wti"])
def test_everything_off_is_the_baseline_similarity(variant, inter):
    text, v_h, fm = _batch()
    sim = Similarity(SimilarityConfig(inter, False, False, variant, sentence_term=False), 8).double()
    assert torch.allclose(sim(text, v_h, fm), sim.plain(text.t_tokens, text.t_mask, v_h, fm))
    # the same without the shortcut: the word reading with neutral W_TA / W_VA is TI / WTI itself
    assert torch.allclose(sim.word_dmae(text, v_h, fm), sim.plain(text.t_tokens, text.t_mask, v_h, fm), atol=1e-12)


# -- Eq. 3, word reading (default) ----------------------------------------------------------------------------------
def naive_word_score(sim, text, a, v_h, fm, b, ta, va, sentence):
    """S(t_tokens, v_h) . W_VA per word and frame, TI/WTI on it with W_TA (x WTI's weights, renormalised) as the
    word weights; the sentence's 1 x N row through TI/WTI; the mean of the two. Loops over real tokens/frames."""
    tm, vm = text.t_mask[a], fm[b]
    words, frames = text.t_tokens[a][tm], v_h[b][vm]
    t, v = F.normalize(words, dim=-1), F.normalize(frames, dim=-1)
    c = F.normalize(text.t_cls[a], dim=-1)
    m, n = t.shape[0], v.shape[0]
    w_va = naive_visual_attention(frames, 2) if va else torch.eye(n, dtype=torch.float64)
    s = [[sum((t[i] @ v[k]).item() * w_va[k, j].item() for k in range(n)) for j in range(n)] for i in range(m)]
    s_cls = [sum((c @ v[k]).item() * w_va[k, j].item() for k in range(n)) for j in range(n)]
    word_w = [1.0 / m] * m
    if ta:
        e = [math.exp(x) for x in (text.w_pos[a][tm] * text.w_freq[a][tm]).tolist()]
        word_w = [x / sum(e) for x in e]
    frame_w = [1.0 / n] * n
    if sim.weights is not None:
        learned = torch.softmax(sim.weights.text_fc(words).squeeze(-1), 0).tolist()
        joint = [x * y for x, y in zip(word_w, learned, strict=True)] if ta else learned
        word_w = [x / sum(joint) for x in joint]
        frame_w = torch.softmax(sim.weights.video_fc(frames).squeeze(-1), 0).tolist()
    t2v = sum(word_w[i] * max(s[i]) for i in range(m))
    v2t = sum(frame_w[j] * max(s[i][j] for i in range(m)) for j in range(n))
    word = 0.5 * (t2v + v2t)
    if not sentence:
        return word
    return 0.5 * (word + 0.5 * (max(s_cls) + sum(frame_w[j] * s_cls[j] for j in range(n))))


@pytest.mark.parametrize("inter", ["ti", "wti"])
@pytest.mark.parametrize("ta,va,sentence", [(True, True, True), (True, False, True), (False, True, True),
                                            (False, False, True), (True, True, False), (True, False, False)])
def test_word_dmae_matches_naive_loop(inter, ta, va, sentence):
    text, v_h, fm = _batch(seed=11)
    sim = Similarity(SimilarityConfig(inter, ta, va, "word", sentence_term=sentence), 8).double()
    got = sim(text, v_h, fm)
    for a in range(3):
        for b in range(3):
            assert abs(got[a, b].item() - naive_word_score(sim, text, a, v_h, fm, b, ta, va, sentence)) < 1e-12


def test_word_reading_keeps_token_wise_matching_that_pooling_loses():
    """Hand-worked: two words e0, e1. Video A shows e0 then e1, video B twice the blend (e0 + e1) / sqrt 2.
    Token-wise, each word finds its own frame in A (score 1) but only 1/sqrt 2 in B. Pooling the words first
    (the literal 1 x N reading) compares the blend (e0 + e1) / 2 with every frame and prefers B (1/sqrt 2 > 1/2)."""
    e0, e1 = torch.eye(2, dtype=torch.float64)
    text = TextInput(torch.stack([e0])[None][:, 0], torch.stack([e0, e1])[None], torch.ones(1, 2, dtype=torch.bool))
    blend = (e0 + e1) / math.sqrt(2)
    v_h = torch.stack([torch.stack([e0, e1]), torch.stack([blend, blend])])  # (2 videos, 2 frames, 2)
    fm = torch.ones(2, 2, dtype=torch.bool)
    word = Similarity(SimilarityConfig("ti", False, False, "word", sentence_term=False), 2).double()
    pooled = Similarity(SimilarityConfig("ti", False, False, "pooled", sentence_term=False), 2).double()
    assert torch.allclose(word.word_dmae(text, v_h, fm), torch.tensor([[1.0, 1 / math.sqrt(2)]], dtype=torch.float64))
    want = torch.tensor([[0.5, 1 / math.sqrt(2)]], dtype=torch.float64)
    assert torch.allclose(pooled.pooled_dmae(text, v_h, fm), want)


def test_sentence_term_is_its_own_switch():
    """Turning an attention on must not add the sentence term: with TA on and the sentence term off, the score is
    the word term alone; with it on, the mean of word and sentence terms."""
    text, v_h, fm = _batch(seed=12)
    on = Similarity(SimilarityConfig("ti", True, False, "word", sentence_term=True), 8).double()
    off = Similarity(SimilarityConfig("ti", True, False, "word", sentence_term=False), 8).double()
    sentence_only = Similarity(SimilarityConfig("ti", False, False, "word", sentence_term=False), 8).double()
    one = torch.ones(3, 1, dtype=torch.bool)
    sent = sentence_only.plain(text.t_cls[:, None], one, v_h, fm)
    assert torch.allclose(on(text, v_h, fm), 0.5 * (off(text, v_h, fm) + sent), atol=1e-12)


def test_textual_attention_needs_weights():
    text, v_h, fm = _batch()
    text.w_pos = None
    with pytest.raises(ValueError, match="w_pos"):
        Similarity(SimilarityConfig("ti", True, False), 8).double()(text, v_h, fm)


# -- Eq. 3, the authors' code ------------------------------------------------------------------------------------
def naive_official_term(x, w, v, self_weight, weights=None):
    """The authors' _get_wti_similarity for one pair, real tokens/frames only, in loops: TI, or WTI with
    `weights` (the TokenWeights heads, fed unit features; words of weight 0 out of the text softmax)."""
    x, v = F.normalize(x, dim=-1), F.normalize(v, dim=-1)
    lx, n = x.shape[0], v.shape[0]
    r = [[(x[t] @ v[j]).item() * (1.0 if w[t] > 0 else 0.0) for j in range(n)] for t in range(lx)]
    f = [[(v[i] @ v[j]).item() if i != j else -math.inf for j in range(n)] for i in range(n)]
    t2v = []
    for t in range(lx):
        best = max(range(n), key=lambda j: r[t][j])
        score = r[t][best]
        if self_weight and n > 1:
            second = max(range(n), key=lambda j: f[best][j])
            score += 0.5 * max(0.0, f[best][second]) * r[t][second]
        t2v.append(score)
    v2t = [max(r[t][j] for t in range(lx)) for j in range(n)]
    if weights is None:
        return 0.5 * (sum(a * b for a, b in zip(t2v, w, strict=True)) / sum(w) + sum(v2t) / n)
    logits = [weights.text_fc(x[t]).item() for t in range(lx)]
    z = sum(math.exp(g) for g, wt in zip(logits, w, strict=True) if wt > 0)
    a = [math.exp(g) / z if wt > 0 else 0.0 for g, wt in zip(logits, w, strict=True)]
    c = torch.softmax(weights.video_fc(v).squeeze(-1), 0).tolist()
    t2v_score = sum(s * wt * at for s, wt, at in zip(t2v, w, a, strict=True))
    return 0.5 * (t2v_score + sum(s * cn for s, cn in zip(v2t, c, strict=True)))


@pytest.mark.parametrize("ta,va", [(True, True), (False, True), (True, False)])
def test_official_dmae_matches_authors_formula(ta, va):
    text, v_h, fm = _batch(seed=5)
    sim = Similarity(SimilarityConfig("ti", ta, va, "official"), 8).double()
    got = sim(text, v_h, fm)
    for a in range(3):
        tm = text.t_mask[a]
        w = (text.w_pos[a] * text.w_freq[a])[tm].tolist() if ta else [1.0] * int(tm.sum())
        for b in range(3):
            v = v_h[b][fm[b]]
            sent = naive_official_term(text.t_cls[a][None], [1.0], v, va)
            words = naive_official_term(text.t_tokens[a][tm], w, v, va)
            assert abs(got[a, b].item() - 0.5 * (sent + words)) < 1e-12


def test_official_dmae_wti_matches_authors_formula():
    text, v_h, fm = _batch(seed=13)
    text.w_freq[0, :2] = 0.0  # words of weight 0 must leave the learned softmax, not just score 0
    sim = Similarity(SimilarityConfig("wti", True, True, "official"), 8).double()
    got = sim(text, v_h, fm)
    for a in range(3):
        tm = text.t_mask[a]
        w = (text.w_pos[a] * text.w_freq[a])[tm].tolist()
        for b in range(3):
            v = v_h[b][fm[b]]
            sent = naive_official_term(text.t_cls[a][None], [1.0], v, True, sim.weights)
            words = naive_official_term(text.t_tokens[a][tm], w, v, True, sim.weights)
            assert abs(got[a, b].item() - 0.5 * (sent + words)) < 1e-12


@pytest.mark.parametrize("inter", ["ti", "wti"])
def test_official_dmae_with_leading_padding_matches_authors_formula(inter):
    """Padding first: a padded frame holds a copy of the first real frame and ties with it in the max over frames;
    the second-frame term must still look up the real frame's neighbour (and scores, gradients stay finite)."""
    text, v_h, fm = _batch(seed=14)
    fm[0, :2] = False  # frames 0-1 padded, 2-4 real
    text.t_mask[2, :2] = False  # words 0-1 padded
    sim = Similarity(SimilarityConfig(inter, True, True, "official"), 8).double()
    v = v_h.clone().requires_grad_(True)
    got = sim(text, v, fm)
    for a in range(3):
        tm = text.t_mask[a]
        w = (text.w_pos[a] * text.w_freq[a])[tm].tolist()
        if sum(w) == 0:
            continue
        for b in range(3):
            real = v_h[b][fm[b]]
            heads = sim.weights if inter == "wti" else None
            sent = naive_official_term(text.t_cls[a][None], [1.0], real, True, heads)
            words = naive_official_term(text.t_tokens[a][tm], w, real, True, heads)
            assert abs(got[a, b].item() - 0.5 * (sent + words)) < 1e-12
    got.sum().backward()
    assert torch.isfinite(v.grad).all() and (v.grad[~fm] == 0).all()


def test_official_second_frame_weight_is_never_negative():
    """Frames pairwise at negative cosine: the authors' max over the zeroed diagonal gives weight 0."""
    x = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    v_h = torch.tensor([[[1.0, 0.0], [-1.0, 0.1]]], dtype=torch.float64)
    text = TextInput(x[:, 0], x, torch.ones(1, 1, dtype=torch.bool), torch.ones(1, 1), torch.ones(1, 1))
    va = Similarity(SimilarityConfig("ti", False, True, "official", sentence_term=False), 2).double()
    no_va = Similarity(SimilarityConfig("ti", False, False, "official", sentence_term=False), 2).double()
    fm = torch.ones(1, 2, dtype=torch.bool)
    assert torch.equal(va(text, v_h, fm), no_va(text, v_h, fm))


def test_official_dmae_one_frame_video_has_no_second_frame_term_and_finite_grads():
    """A video with one real frame has no `second` frame: its term is 0, and no -inf leaks into the gradient."""
    text, v_h, fm = _batch(seed=6)
    fm[1, 1:] = False
    sim = Similarity(SimilarityConfig("ti", True, True, "official"), 8).double()
    t_tok, v = text.t_tokens.clone().requires_grad_(True), v_h.clone().requires_grad_(True)
    got = sim(TextInput(text.t_cls, t_tok, text.t_mask, text.w_pos, text.w_freq), v, fm)
    for a in range(3):
        tm = text.t_mask[a]
        w = (text.w_pos[a] * text.w_freq[a])[tm].tolist()
        if sum(w) == 0:
            continue
        sent = naive_official_term(text.t_cls[a][None], [1.0], v_h[1][fm[1]], True)
        words = naive_official_term(text.t_tokens[a][tm], w, v_h[1][fm[1]], True)
        assert abs(got[a, 1].item() - 0.5 * (sent + words)) < 1e-12
    got.sum().backward()
    assert torch.isfinite(t_tok.grad).all() and torch.isfinite(v.grad).all()


# -- properties of both variants ------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["word", "pooled", "official"])
@pytest.mark.parametrize("inter", ["ti", "wti"])
def test_dmae_padding_invariance(variant, inter):
    text, v_h, fm = _batch(seed=7)
    sim = Similarity(SimilarityConfig(inter, True, True, variant), 8).double()
    base = sim(text, v_h, fm)
    pad = lambda x, k, val: torch.cat([x, torch.full((x.shape[0], k, *x.shape[2:]), val, dtype=x.dtype)], 1)  # noqa
    text2 = TextInput(text.t_cls, pad(text.t_tokens, 2, 3.0), pad(text.t_mask, 2, False),
                      pad(text.w_pos, 2, 2.0), pad(text.w_freq, 2, 1.0))
    got = sim(text2, pad(v_h, 3, -1.0), pad(fm, 3, False))
    assert torch.allclose(base, got, atol=1e-12)


@pytest.mark.parametrize("variant", ["word", "pooled", "official"])
def test_dmae_gradcheck(variant):
    text, v_h, fm = _batch(bt=2, bv=2, m=4, n=3, d=4, seed=9)
    sim = Similarity(SimilarityConfig("wti", True, True, variant), 4).double()
    t_tok = text.t_tokens.clone().requires_grad_(True)
    v = v_h.clone().requires_grad_(True)

    def f(tt, vv):
        return sim(TextInput(text.t_cls, tt, text.t_mask, text.w_pos, text.w_freq), vv, fm)

    assert torch.autograd.gradcheck(f, (t_tok, v))


def test_config_validation():
    with pytest.raises(ValueError, match="interaction"):
        SimilarityConfig(interaction="max")
    with pytest.raises(ValueError, match="variant"):
        SimilarityConfig(variant="v2")
    with pytest.warns(UserWarning, match="pooled"):
        assert SimilarityConfig(variant="paper").variant == "pooled"  # configs written before the rename
