"""DMAE: Textual Attention (Eq. 1), Visual Attention (Eq. 2), the enhanced similarity (Eq. 3, both variants)."""

import math

import pytest
import torch
import torch.nn.functional as F

from dmae_tpm.dmae import Similarity, SimilarityConfig, TextInput
from dmae_tpm.textual_attention import textual_attention, uniform_textual_attention
from dmae_tpm.visual_attention import identity_visual_attention, visual_attention


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


# -- Eq. 3, paper variant ---------------------------------------------------------------------------------------
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


def naive_paper_score(text, a, v_h, fm, b, ta, va, video_w=None):
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
def test_paper_dmae_matches_literal_eq3_ti(ta, va):
    text, v_h, fm = _batch()
    sim = Similarity(SimilarityConfig("ti", ta, va, "paper"), 8).double()
    got = sim(text, v_h, fm)
    for a in range(3):
        for b in range(3):
            assert abs(got[a, b].item() - naive_paper_score(text, a, v_h, fm, b, ta, va)) < 1e-12


def test_paper_dmae_matches_literal_eq3_wti():
    text, v_h, fm = _batch(seed=3)
    sim = Similarity(SimilarityConfig("wti", True, True, "paper"), 8).double()
    got = sim(text, v_h, fm)
    for a in range(3):
        for b in range(3):
            vw = torch.softmax(sim.weights.video_fc(v_h[b][fm[b]]).squeeze(-1), 0).tolist()
            assert abs(got[a, b].item() - naive_paper_score(text, a, v_h, fm, b, True, True, vw)) < 1e-12


def test_both_attentions_off_is_the_baseline_ti():
    text, v_h, fm = _batch()
    sim = Similarity(SimilarityConfig("ti", False, False, "paper"), 8).double()
    assert torch.allclose(sim(text, v_h, fm), sim.plain(text.t_tokens, text.t_mask, v_h, fm))


def test_textual_attention_needs_weights():
    text, v_h, fm = _batch()
    text.w_pos = None
    with pytest.raises(ValueError, match="w_pos"):
        Similarity(SimilarityConfig("ti", True, False), 8).double()(text, v_h, fm)


# -- Eq. 3, the authors' code ------------------------------------------------------------------------------------
def naive_official_term(x, w, v, self_weight):
    """The authors' _get_wti_similarity (TI branch) for one pair, real tokens/frames only, in loops."""
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
            score += 0.5 * f[best][second] * r[t][second]
        t2v.append(score)
    v2t = [max(r[t][j] for t in range(lx)) for j in range(n)]
    return 0.5 * (sum(a * b for a, b in zip(t2v, w, strict=True)) / sum(w) + sum(v2t) / n)


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
@pytest.mark.parametrize("variant", ["paper", "official"])
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


@pytest.mark.parametrize("variant", ["paper", "official"])
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
