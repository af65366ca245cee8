"""TI / WTI (DRL's definitions, used by Sec. 3.2) against naive loops, and padding invariance."""

import torch

from dmae_tpm.features import map_fields
from dmae_tpm.methods.dmae_tpm.dmae import Similarity, SimilarityConfig, TextInput
from dmae_tpm.token_interaction import (
    TokenWeights,
    all_pairs_token_interaction,
    cosine_tokens,
    fill_padding,
    token_interaction,
)


def naive_ti(s, text_w=None, video_w=None):
    """s: list of lists (M x N) of the real tokens only."""
    m, n = len(s), len(s[0])
    t2v = [max(s[i][j] for j in range(n)) for i in range(m)]
    v2t = [max(s[i][j] for i in range(m)) for j in range(n)]
    a = sum(t2v[i] * (text_w[i] if text_w else 1 / m) for i in range(m))
    b = sum(v2t[j] * (video_w[j] if video_w else 1 / n) for j in range(n))
    return (a + b) / 2


def test_ti_hand_worked():
    s = torch.tensor([[0.1, 0.9, -0.2], [0.4, 0.3, 0.5]])
    # t2v: max rows = 0.9, 0.5 -> mean 0.7; v2t: max cols = 0.4, 0.9, 0.5 -> mean 0.6; TI = 0.65
    got = token_interaction(s, torch.ones(2, dtype=torch.bool), torch.ones(3, dtype=torch.bool))
    assert torch.isclose(got, torch.tensor(0.65))


def test_wti_hand_worked():
    s = torch.tensor([[0.1, 0.9, -0.2], [0.4, 0.3, 0.5]])
    tw, vw = torch.tensor([0.25, 0.75]), torch.tensor([0.5, 0.25, 0.25])
    # t2v = 0.25*0.9 + 0.75*0.5 = 0.6; v2t = 0.5*0.4 + 0.25*0.9 + 0.25*0.5 = 0.55; WTI = 0.575
    got = token_interaction(s, torch.ones(2, dtype=torch.bool), torch.ones(3, dtype=torch.bool), tw, vw)
    assert torch.isclose(got, torch.tensor(0.575))


def _random_batch(bt=3, bv=4, m=6, n=5, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(bt, m, d, generator=g, dtype=torch.float64)
    v = torch.randn(bv, n, d, generator=g, dtype=torch.float64)
    tm = torch.ones(bt, m, dtype=torch.bool)
    vm = torch.ones(bv, n, dtype=torch.bool)
    tm[0, 4:] = False
    tm[2, 2:] = False
    vm[1, 3:] = False
    vm[3, 1:] = False
    return t, v, tm, vm


def test_ti_all_pairs_matches_naive_loop():
    t, v, tm, vm = _random_batch()
    sim = Similarity(SimilarityConfig("ti", False, False), 8).double()
    got = sim.plain(t, tm, v, vm)
    tn, vn = torch.nn.functional.normalize(t, dim=-1), torch.nn.functional.normalize(v, dim=-1)
    for a in range(t.shape[0]):
        for b in range(v.shape[0]):
            ta, vb = tn[a][tm[a]], vn[b][vm[b]]
            s = (ta @ vb.T).tolist()
            assert abs(got[a, b].item() - naive_ti(s)) < 1e-12


def test_wti_all_pairs_matches_naive_loop():
    t, v, tm, vm = _random_batch(seed=1)
    sim = Similarity(SimilarityConfig("wti", False, False), 8).double()
    got = sim.plain(t, tm, v, vm)
    tn, vn = torch.nn.functional.normalize(t, dim=-1), torch.nn.functional.normalize(v, dim=-1)
    w = sim.weights
    for a in range(t.shape[0]):
        for b in range(v.shape[0]):
            tw = torch.softmax(w.text_fc(t[a][tm[a]]).squeeze(-1), 0).tolist()
            vw = torch.softmax(w.video_fc(v[b][vm[b]]).squeeze(-1), 0).tolist()
            s = (tn[a][tm[a]] @ vn[b][vm[b]].T).tolist()
            assert abs(got[a, b].item() - naive_ti(s, tw, vw)) < 1e-12


def test_matched_pairs_equal_the_diagonal_of_all_pairs():
    t, v, tm, vm = _random_batch(bt=4, bv=4)
    for inter in ("ti", "wti"):
        sim = Similarity(SimilarityConfig(inter, False, False), 8).double()
        full = sim.plain(t, tm, v, vm)
        paired = sim.plain(t, tm, v, vm, pairwise=False)
        assert torch.allclose(full.diagonal(), paired, atol=1e-12)


def test_padding_never_changes_a_score():
    """Extra padded words/frames, filled with garbage, leave every score unchanged (TI, WTI)."""
    t, v, tm, vm = _random_batch(seed=2)
    t_pad = torch.cat([t, 50 * torch.randn(3, 2, 8, dtype=torch.float64)], 1)
    v_pad = torch.cat([v, -50 * torch.randn(4, 3, 8, dtype=torch.float64)], 1)
    tm_pad = torch.cat([tm, torch.zeros(3, 2, dtype=torch.bool)], 1)
    vm_pad = torch.cat([vm, torch.zeros(4, 3, dtype=torch.bool)], 1)
    t[~tm] = 7.0  # garbage in already-padded slots too
    for inter in ("ti", "wti"):
        sim = Similarity(SimilarityConfig(inter, False, False), 8).double()
        assert torch.allclose(sim.plain(t, tm, v, vm), sim.plain(t_pad, tm_pad, v_pad, vm_pad), atol=1e-12)


def test_padding_matters_with_negative_scores():
    """DRL's multiply-by-mask lets a padded 0 win the max when all real similarities are negative; ours not."""
    s = torch.tensor([[-0.5, 0.0]])
    got = token_interaction(s, torch.tensor([True]), torch.tensor([True, False]))
    assert torch.isclose(got, torch.tensor(-0.5))


def test_token_weights_are_masked_softmax():
    w = TokenWeights(4)
    x = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    tw = w.text(x, mask)
    assert torch.allclose(tw.sum(-1), torch.ones(2))
    assert (tw[~mask] == 0).all()
    assert torch.allclose(tw[1, 0], torch.tensor(1.0))


def test_cosine_tokens_shapes():
    a, b = torch.randn(2, 3, 4), torch.randn(5, 6, 4)
    assert cosine_tokens(a, b, pairwise=True).shape == (2, 5, 3, 6)
    assert cosine_tokens(a, b[:2, :, :], pairwise=False).shape == (2, 3, 6)


def test_gradcheck_ti_and_wti():
    t, v, tm, vm = _random_batch(m=5, n=4, d=4)
    t.requires_grad_(True)
    v.requires_grad_(True)
    for inter in ("ti", "wti"):
        sim = Similarity(SimilarityConfig(inter, False, False), 4).double()
        assert torch.autograd.gradcheck(lambda a, b, s=sim: s.plain(a, tm, b, vm), (t, v))


def test_text_input_slices_field_by_field():
    t = TextInput(torch.zeros(3, 2), torch.zeros(3, 4, 2), torch.ones(3, 4, dtype=torch.bool))
    rows = map_fields(lambda x: x[1:], t)  # how the evaluator takes a chunk of captions
    assert rows.t_cls.shape == (2, 2) and rows.t_tokens.shape == (2, 4, 2) and rows.w_pos is None


def test_all_pairs_equals_the_broadcast_formulation_with_empty_rows():
    """The fused all-pairs path (one matmul, padding filled with copies) against token_interaction on the broadcast
    (B_t, B_v, M, N) tensor: same scores and same gradients, also for a caption with no real word and a video
    with no real frame (their maxima count as 0, not -inf or NaN)."""
    t, v, tm, vm = _random_batch(bt=4, bv=5, seed=3)
    tm[3] = False
    vm[4] = False
    g = torch.Generator().manual_seed(4)
    tw = torch.softmax(torch.randn(4, 6, generator=g, dtype=torch.float64), -1) * tm
    vw = torch.softmax(torch.randn(5, 5, generator=g, dtype=torch.float64), -1) * vm
    for weights in ((None, None), (tw, vw)):
        ta, va = t.clone().requires_grad_(True), v.clone().requires_grad_(True)
        tb, vb = t.clone().requires_grad_(True), v.clone().requires_grad_(True)
        fused = all_pairs_token_interaction(ta, tm, va, vm, *weights)
        w_t, w_v = (None, None) if weights[0] is None else (weights[0][:, None], weights[1][None])
        broadcast = token_interaction(cosine_tokens(tb, vb, pairwise=True), tm[:, None], vm[None], w_t, w_v)
        assert fused.shape == (4, 5)
        assert torch.allclose(fused, broadcast, atol=1e-12)
        assert (fused[3] == 0).all() and (fused[:, 4] == 0).all()
        fused.pow(2).sum().backward()
        broadcast.pow(2).sum().backward()
        assert torch.isfinite(ta.grad).all() and torch.isfinite(va.grad).all()
        assert torch.allclose(ta.grad, tb.grad, atol=1e-12) and torch.allclose(va.grad, vb.grad, atol=1e-12)


def test_fill_padding_copies_the_first_real_token_and_zeroes_empty_rows():
    tokens = torch.arange(24, dtype=torch.float64).view(3, 4, 2)
    mask = torch.tensor([[False, True, True, False], [True, True, True, True], [False] * 4])
    out = fill_padding(tokens, mask)
    expected = tokens.clone()
    expected[0, 0] = expected[0, 3] = tokens[0, 1]  # row 0's first real token is slot 1
    expected[2] = 0.0  # no real token
    assert torch.equal(out, expected)


def test_padded_slots_holding_garbage_change_nothing():
    """Padding is removed by masks, never by arithmetic on the padded values: NaN or inf there (an encoder's
    output at positions it was told to ignore) leaves every score and gradient as with zeros there."""
    t, v, tm, vm = _random_batch(seed=5)
    clean = all_pairs_token_interaction(t, tm, v, vm)
    t_bad, v_bad = t.clone(), v.clone()
    t_bad[~tm] = float("nan")
    v_bad[~vm] = float("inf")
    t_bad.requires_grad_(True)
    got = all_pairs_token_interaction(t_bad, tm, v_bad, vm)
    assert torch.equal(got, clean)
    got.sum().backward()
    assert torch.isfinite(t_bad.grad).all() and (t_bad.grad[~tm] == 0).all()


def _naive_mixed_ti(t, tm, v, vm, mix, a, b):
    """One pair by hand: S (real words x real frames) times W_VA restricted to the real frames, then TI."""
    s = torch.nn.functional.normalize(t[a][tm[a]], dim=-1) @ torch.nn.functional.normalize(v[b][vm[b]], dim=-1).T
    if s.numel() == 0:
        return torch.zeros((), dtype=t.dtype)
    s = s @ mix[b][vm[b]][:, vm[b]]
    return 0.5 * (s.amax(1).mean() + s.amax(0).mean())


def test_frame_mix_matches_naive_per_pair_loop_with_gradients():
    """S . W_VA (Eq. 3) inside the fused path, with padded frames (W_VA zero in their rows and columns), a
    caption with no real word and a video with no real frame: scores and gradients (tokens and W_VA) equal a
    per-pair loop over the real tokens only."""
    t, v, tm, vm = _random_batch(bt=4, bv=5, seed=6)
    tm[3] = False
    vm[4] = False
    g = torch.Generator().manual_seed(7)
    mix = torch.rand(5, 5, 5, generator=g, dtype=torch.float64) * vm[:, :, None] * vm[:, None, :]
    args = [x.clone().requires_grad_(True) for x in (t, v, mix)]
    fused = all_pairs_token_interaction(args[0], tm, args[1], vm, frame_mix=args[2])
    naive_args = [x.clone().requires_grad_(True) for x in (t, v, mix)]
    nt, nv, nmix = naive_args
    naive = torch.stack([torch.stack([_naive_mixed_ti(nt, tm, nv, vm, nmix, a, b) for b in range(5)])
                         for a in range(4)])
    assert torch.allclose(fused, naive, atol=1e-12)
    fused.pow(2).sum().backward()
    naive.pow(2).sum().backward()
    for got, want in zip(args[:2], naive_args[:2], strict=True):
        assert torch.allclose(got.grad, want.grad, atol=1e-12)
    # W_VA's padded rows and columns are zero by contract (visual_attention masks them, so their gradient stops
    # there): compare the real entries
    real = vm[:, :, None] & vm[:, None, :]
    assert torch.allclose(args[2].grad[real], nmix.grad[real], atol=1e-12)
