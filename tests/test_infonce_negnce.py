"""InfoNCE (Eq. 4) and NegNCE (Eqs. 5-9, paper and official variants) against independent naive loops.

Every reference here is written with Python loops and `math` over plain floats, so it shares no code
with the implementation (no softmax / cross-entropy / masking helpers).
"""

import math
from decimal import Decimal, localcontext

import pytest
import torch

from dmae_tpm.infonce import InfoNCE
from dmae_tpm.methods.dmae_tpm.negnce import (
    NegNCE,
    NegNCEConfig,
    hard_negative_mask,
    log1m_softmax,
    marginal_similarity,
    negative_terms,
)

F64 = torch.float64


def _rand_sim(b, seed, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, b, generator=g, dtype=F64) * scale).clamp(-1, 1)


def _tolist(x):
    return x.detach().double().tolist()


# ---------------------------------------------------------------------------------------------------------
# Naive references
# ---------------------------------------------------------------------------------------------------------

def naive_infonce(s, tau, ignore=None):
    """Eq. 4 with double loops; `ignore[i][j]` True removes pair (i, j) from every softmax."""
    b = len(s)
    keep = [[not (ignore is not None and ignore[i][j]) for j in range(b)] for i in range(b)]
    t2v = v2t = 0.0
    for i in range(b):
        den_row = sum(math.exp(tau * s[i][j]) for j in range(b) if keep[i][j])
        den_col = sum(math.exp(tau * s[j][i]) for j in range(b) if keep[j][i])
        t2v -= math.log(math.exp(tau * s[i][i]) / den_row)
        v2t -= math.log(math.exp(tau * s[i][i]) / den_col)
    return t2v / b, v2t / b


def naive_hard_set(s, xi, ignore=None):
    """Eq. 5: (t_i, v_j) in N iff i != j and max(0, s_ij - s_ii + xi) + max(0, s_ji - s_ii + xi) > 0."""
    b = len(s)
    out = []
    for i in range(b):
        for j in range(b):
            if i == j or (ignore is not None and ignore[i][j]):
                continue
            m = max(0.0, s[i][j] - s[i][i] + xi) + max(0.0, s[j][i] - s[i][i] + xi)
            if m > 0:
                out.append((i, j))
    return out


def naive_negnce(s, tau, gamma1=1.0, gamma2=0.5, xi=0.0, ignore=None):
    """Eqs. 5-9 exactly as typeset: p^{t2v}_ij is the softmax over k of row i (texts t_i vs videos v_k),
    p^{v2t}_ij the softmax over k of column j (texts t_k vs video v_j); L_n averaged over H = |N|."""
    b = len(s)
    keep = [[not (ignore is not None and ignore[i][j]) for j in range(b)] for i in range(b)]
    lp_t2v, lp_v2t = naive_infonce(s, tau, ignore)
    hard = naive_hard_set(s, xi, ignore)
    h = len(hard)
    ln_t2v = ln_v2t = 0.0
    for i, j in hard:
        p_t2v = math.exp(tau * s[i][j]) / sum(math.exp(tau * s[i][k]) for k in range(b) if keep[i][k])
        p_v2t = math.exp(tau * s[i][j]) / sum(math.exp(tau * s[k][j]) for k in range(b) if keep[k][j])
        ln_t2v -= math.log(1 - p_t2v)
        ln_v2t -= math.log(1 - p_v2t)
    if h:
        ln_t2v /= h
        ln_v2t /= h
    l_t2v = gamma1 * lp_t2v + gamma2 * ln_t2v
    l_v2t = gamma1 * lp_v2t + gamma2 * ln_v2t
    return {"loss": 0.5 * (l_t2v + l_v2t), "loss_p_t2v": lp_t2v, "loss_p_v2t": lp_v2t,
            "loss_n_t2v": ln_t2v, "loss_n_v2t": ln_v2t, "num_hard": float(h)}


def naive_official_one_direction(x, gamma1, gamma2, margin, scale=100.0, eps=1e-6):
    """The authors' released NegNCE (dmae_utils.py), restated: rows of x are the queries, probabilities
    softmax(scale * x) per row clamped to [eps, 1 - eps]; the hard set compares x_ij with x_ii AND x_jj."""
    b = len(x)
    p = []
    for i in range(b):
        den = sum(math.exp(scale * x[i][k]) for k in range(b))
        p.append([min(max(math.exp(scale * x[i][j]) / den, eps), 1 - eps) for j in range(b)])
    loss_p = -sum(math.log(p[i][i]) for i in range(b)) / b
    negs = [-math.log(1 - p[i][j]) for i in range(b) for j in range(b)
            if i != j and max(0.0, margin + x[i][j] - x[i][i]) + max(0.0, margin + x[i][j] - x[j][j]) > 0]
    if negs:
        return gamma1 * loss_p + gamma2 * sum(negs) / len(negs)
    return gamma1 * loss_p


def naive_official(s, gamma1, gamma2, margin):
    """Their training step applies NegNCE to S and to S^T and averages the two."""
    st = [list(r) for r in zip(*s, strict=True)]
    return 0.5 * (naive_official_one_direction(s, gamma1, gamma2, margin)
                  + naive_official_one_direction(st, gamma1, gamma2, margin))


# ---------------------------------------------------------------------------------------------------------
# InfoNCE, Eq. 4
# ---------------------------------------------------------------------------------------------------------

HAND_3x3 = [[0.9, 0.2, -0.1], [0.3, 0.7, 0.5], [0.0, 0.6, 0.4]]


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("which", ["hand3", "rand6"])
def test_infonce_matches_naive(which, as_tensor):
    sim = torch.tensor(HAND_3x3, dtype=F64) if which == "hand3" else _rand_sim(6, seed=1)
    tau = 7.5
    out = InfoNCE()(sim, torch.tensor(tau, dtype=F64) if as_tensor else tau)
    t2v, v2t = naive_infonce(_tolist(sim), tau)
    assert out["loss_p_t2v"].item() == pytest.approx(t2v, rel=1e-12)
    assert out["loss_p_v2t"].item() == pytest.approx(v2t, rel=1e-12)
    assert out["loss"].item() == pytest.approx(0.5 * (t2v + v2t), rel=1e-12)


def test_infonce_directions_differ_and_swap_under_transpose():
    sim = torch.tensor(HAND_3x3, dtype=F64)
    a, b = InfoNCE()(sim, 5.0), InfoNCE()(sim.t(), 5.0)
    assert not torch.isclose(a["loss_p_t2v"], a["loss_p_v2t"])  # the 3x3 is not symmetric
    torch.testing.assert_close(a["loss_p_t2v"], b["loss_p_v2t"], rtol=1e-14, atol=0)
    torch.testing.assert_close(a["loss_p_v2t"], b["loss_p_t2v"], rtol=1e-14, atol=0)


def test_infonce_tensor_tau_gets_gradient():
    tau = torch.tensor(4.0, dtype=F64, requires_grad=True)
    InfoNCE()(_rand_sim(5, seed=2), tau)["loss"].backward()
    assert tau.grad is not None and torch.isfinite(tau.grad) and tau.grad != 0


def test_infonce_ignore_matches_naive():
    sim = _rand_sim(5, seed=3)
    ignore = torch.zeros(5, 5, dtype=torch.bool)
    ignore[0, 1] = ignore[1, 0] = True  # two captions of one video, say
    out = InfoNCE()(sim, 10.0, ignore)
    t2v, v2t = naive_infonce(_tolist(sim), 10.0, ignore.tolist())
    assert out["loss_p_t2v"].item() == pytest.approx(t2v, rel=1e-12)
    assert out["loss_p_v2t"].item() == pytest.approx(v2t, rel=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Hard-negative set, Eq. 5
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("xi", [0.0, 0.05, -0.05])
def test_marginal_similarity_matches_naive(xi):
    sim = _rand_sim(6, seed=4)
    s = _tolist(sim)
    got = marginal_similarity(sim, xi)
    want = [[max(0.0, s[i][j] - s[i][i] + xi) + max(0.0, s[j][i] - s[i][i] + xi) for j in range(6)]
            for i in range(6)]
    torch.testing.assert_close(got, torch.tensor(want, dtype=F64), rtol=0, atol=1e-15)


@pytest.mark.parametrize("xi", [0.0, 0.1])
def test_hard_set_matches_naive_and_excludes_diagonal(xi):
    sim = _rand_sim(6, seed=5)
    hard = hard_negative_mask(sim, xi)
    want = torch.zeros(6, 6, dtype=torch.bool)
    for i, j in naive_hard_set(_tolist(sim), xi):
        want[i, j] = True
    assert torch.equal(hard, want)
    assert not hard.diagonal().any()
    if xi > 0:  # Eq. 5 alone would put every positive (t_i, v_i) in N: sim^m_ii = 2 xi > 0
        assert (marginal_similarity(sim, xi).diagonal() > 0).all()


def test_hard_set_is_a_no_grad_mask():
    sim = _rand_sim(5, seed=6).requires_grad_(True)
    hard = hard_negative_mask(sim, 0.0)
    assert hard.dtype == torch.bool and not hard.requires_grad and hard.grad_fn is None
    ignore = torch.zeros(5, 5, dtype=torch.bool)
    ignore[hard.nonzero()[0, 0], hard.nonzero()[0, 1]] = True
    assert hard_negative_mask(sim, 0.0, ignore).sum() == hard.sum() - 1


# ---------------------------------------------------------------------------------------------------------
# NegNCE, paper variant (Eqs. 5-9)
# ---------------------------------------------------------------------------------------------------------

def _check_against(out, want, rel=1e-11):
    for k, v in want.items():
        assert out[k].item() == pytest.approx(v, rel=rel, abs=1e-13), k


@pytest.mark.parametrize("gamma1,gamma2,xi,tau", [(1.0, 0.5, 0.0, 10.0), (0.7, 1.3, 0.05, 4.0),
                                                  (1.0, 0.5, -0.1, 20.0), (2.0, 0.25, 0.2, 1.0)])
@pytest.mark.parametrize("seed", [7, 8])
def test_negnce_paper_matches_naive(gamma1, gamma2, xi, tau, seed):
    sim = _rand_sim(6, seed=seed)
    cfg = NegNCEConfig(gamma1=gamma1, gamma2=gamma2, margin=xi, variant="paper")
    out = NegNCE(cfg)(sim, tau)
    want = naive_negnce(_tolist(sim), tau, gamma1, gamma2, xi)
    assert want["num_hard"] > 0
    _check_against(out, want)


def test_negnce_paper_hand_worked_2x2():
    # S = [[0.5, 0.7], [0.1, 0.8]], tau = 10 -> logits [[5, 7], [1, 8]].
    # Eq. 5: sim^m_01 = max(0, .7 - .5) + max(0, .1 - .5) = 0.2 > 0 -> (t_0, v_1) in N;
    #        sim^m_10 = max(0, .1 - .8) + max(0, .7 - .8) = 0      -> not.   H = 1.
    # Eq. 4: L_p^{t2v} = [log(1 + e^2) + log(1 + e^-7)] / 2 = (2.1269280 + 0.0009115) / 2 = 1.0639197
    #        L_p^{v2t} = [log(1 + e^-4) + log(1 + e^-1)] / 2 = (0.0181499 + 0.3132617) / 2 = 0.1657058
    # Eq. 7: p^{t2v}_01 = e^7 / (e^5 + e^7) = 1 / (1 + e^-2) = 0.8807971  (row 0)
    #        p^{v2t}_01 = e^7 / (e^7 + e^8) = 1 / (1 + e)    = 0.2689414  (column 1)
    # Eq. 6: L_n^{t2v} = -log(1 - 0.8807971) = log(1 + e^2) = 2.1269280
    #        L_n^{v2t} = -log(1 - 0.2689414) = log(1 + e^-1) = 0.3132617
    # Eq. 8 (gamma = 1, 0.5): L^{t2v} = 1.0639197 + 0.5 * 2.1269280 = 2.1273837
    #                         L^{v2t} = 0.1657058 + 0.5 * 0.3132617 = 0.3223367
    # Eq. 9: L = (2.1273837 + 0.3223367) / 2 = 1.2248602
    sim = torch.tensor([[0.5, 0.7], [0.1, 0.8]], dtype=F64)
    out = NegNCE(NegNCEConfig(gamma1=1.0, gamma2=0.5))(sim, 10.0)
    l1p = math.log1p
    want = {"loss_p_t2v": (l1p(math.exp(2)) + l1p(math.exp(-7))) / 2,
            "loss_p_v2t": (l1p(math.exp(-4)) + l1p(math.exp(-1))) / 2,
            "loss_n_t2v": l1p(math.exp(2)), "loss_n_v2t": l1p(math.exp(-1)), "num_hard": 1.0}
    _check_against(out, want, rel=1e-13)
    assert out["loss"].item() == pytest.approx(1.2248602, abs=1e-7)
    assert out["loss"].item() == pytest.approx(naive_negnce(_tolist(sim), 10.0)["loss"], rel=1e-13)


@pytest.mark.parametrize("gamma1", [1.0, 0.7])
def test_negnce_no_hard_negatives_is_gamma1_infonce(gamma1):
    b = 5
    sim = (0.9 * torch.eye(b, dtype=F64) + 0.1).requires_grad_(True)  # s_ii = 1.0 > s_ij = 0.1: H = 0
    out = NegNCE(NegNCEConfig(gamma1=gamma1, gamma2=0.5))(sim, 10.0)
    assert out["num_hard"].item() == 0
    assert out["loss_n_t2v"].item() == 0 and out["loss_n_v2t"].item() == 0
    info = InfoNCE()(sim, 10.0)["loss"]
    torch.testing.assert_close(out["loss"], gamma1 * info, rtol=1e-14, atol=0)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert torch.isfinite(sim.grad).all()


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_negnce_without_hard_negatives_is_finite_when_pairs_are_ignored(variant):
    """Issue 11: no hard negative and a pair left out by data.mask_same_video made the vanishing L_n a
    `logits.sum() * 0` over -inf logits, i.e. NaN. The issue's 3 x 3 case."""
    sim = torch.tensor([[0.9, 0.1, 0.2], [0.1, 0.9, 0.0], [0.2, 0.0, 0.9]], dtype=F64, requires_grad=True)
    ignore = torch.zeros(3, 3, dtype=torch.bool)
    ignore[0, 2] = ignore[2, 0] = True
    out = NegNCE(NegNCEConfig(variant=variant))(sim, 10.0, ignore)
    assert out["num_hard"].item() == 0 and torch.isfinite(out["loss"])
    info = InfoNCE()(sim, 10.0, ignore)["loss"] if variant == "paper" else out["loss_p_t2v"]
    if variant == "paper":
        torch.testing.assert_close(out["loss"], info, rtol=1e-14, atol=0)
    out["loss"].backward()
    assert torch.isfinite(sim.grad).all()


def test_negnce_gamma2_zero_is_exactly_infonce():
    sim = _rand_sim(6, seed=9)
    out = NegNCE(NegNCEConfig(gamma1=1.0, gamma2=0.0))(sim, 10.0)
    assert out["num_hard"].item() > 0  # the hard term exists but is switched off (paper Tab. 6 remark)
    assert torch.equal(out["loss"], InfoNCE()(sim, 10.0)["loss"])


def test_negnce_paper_tensor_tau_and_gradient_finite():
    sim = _rand_sim(6, seed=10).requires_grad_(True)
    tau = torch.tensor(12.0, dtype=F64, requires_grad=True)
    out = NegNCE(NegNCEConfig())(sim, tau)
    assert out["loss"].item() == pytest.approx(naive_negnce(_tolist(sim), 12.0)["loss"], rel=1e-11)
    out["loss"].backward()
    assert torch.isfinite(sim.grad).all() and torch.isfinite(tau.grad)


def test_negnce_paper_gradcheck():
    # Off-diagonal entries are multiples of 0.1 plus a distinct offset, diagonal 0.45 / 0.05 apart: every
    # s_ij - s_ii and s_ji - s_ii is at least 0.02 away from 0, so the discrete set N cannot change under the
    # finite-difference perturbation and the loss is smooth there.
    sim = torch.tensor([[0.45, 0.61, 0.12, 0.33],
                        [0.28, 0.50, 0.72, 0.07],
                        [0.53, 0.19, 0.40, 0.84],
                        [0.02, 0.38, 0.66, 0.55]], dtype=F64)
    s = sim.tolist()
    gaps = [abs(v) for i in range(4) for j in range(4) if i != j
            for v in (s[i][j] - s[i][i], s[j][i] - s[i][i])]
    assert min(gaps) > 0.01
    assert 0 < hard_negative_mask(sim, 0.0).sum() < 12
    loss = NegNCE(NegNCEConfig(gamma1=0.8, gamma2=0.6))
    tau = torch.tensor(6.0, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, t: loss(x, t)["loss"], (sim.requires_grad_(True), tau))


# ---------------------------------------------------------------------------------------------------------
# log(1 - softmax) without cancellation
# ---------------------------------------------------------------------------------------------------------

def _hp_log1m_softmax(row):
    """log(1 - softmax(row)) in 60-digit decimal arithmetic (exact binary inputs)."""
    with localcontext() as ctx:
        ctx.prec = 60
        e = [Decimal(x).exp() for x in row]
        z = sum(e)
        return [float((1 - v / z).ln()) for v in e]


def test_log1m_softmax_matches_float64_reference_on_moderate_logits():
    x = torch.randn(5, 7, generator=torch.Generator().manual_seed(11), dtype=F64) * 3
    for dim in (0, 1):
        want = torch.log(1 - torch.softmax(x, dim=dim))
        torch.testing.assert_close(log1m_softmax(x, dim=dim), want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_log1m_softmax_extreme_logits(dtype):
    # Row 0: p_top = 1 / (1 + e^-27.631) ~ 1 - 1e-12. Row 1: p_small = e^-69.078 ~ 1e-30, p_top ~ 1 - 1e-30
    # (naive float64 log(1 - p_top) = log(0) = -inf). Row 2: a near tie, p ~ 0.5. Row 3: three tiny entries.
    rows = [[0.0, -27.631021, -40.0],
            [3.0, 3.0 - 69.077553, -100.0],
            [1.0, 1.0 + 1e-9, -5.0],
            [50.0, -30.0, -31.0]]
    x = torch.tensor(rows, dtype=dtype, requires_grad=True)
    got = log1m_softmax(x, dim=1)
    want = torch.tensor([_hp_log1m_softmax(r) for r in torch.tensor(rows, dtype=dtype).double().tolist()],
                        dtype=F64)
    assert torch.isfinite(got).all()
    rtol = 1e-12 if dtype == torch.float64 else 2e-6
    atol = 0.0 if dtype == torch.float64 else 1e-38  # float32 underflows e^-103 to 0: that is fine
    torch.testing.assert_close(got.double(), want, rtol=rtol, atol=atol)
    # the two regimes the brief names, spelled out
    assert got[0, 0].item() == pytest.approx(math.log(1e-12), rel=1e-4)
    assert got[1, 1].item() == pytest.approx(-1e-30, rel=1e-4)
    assert got[1, 0].item() == pytest.approx(-69.077553, rel=1e-6)
    got.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_log1m_softmax_extreme_gradient_matches_high_precision():
    # d/dx_k sum_j log(1 - p_j) by a 1e-25 finite difference in 60-digit arithmetic, on the p ~ 1 - 1e-12 row.
    row = [0.0, -27.631021, -40.0]
    x = torch.tensor([row], dtype=F64, requires_grad=True)
    log1m_softmax(x, dim=1).sum().backward()
    with localcontext() as ctx:
        ctx.prec = 60
        h = Decimal("1e-25")

        def f(vals):
            e = [v.exp() for v in vals]
            z = sum(e)
            return sum((1 - v / z).ln() for v in e)
        base = [Decimal(v) for v in row]
        want = [float((f([b + (h if k == j else 0) for j, b in enumerate(base)]) - f(base)) / h)
                for k in range(3)]
    torch.testing.assert_close(x.grad[0], torch.tensor(want, dtype=F64), rtol=1e-9, atol=1e-12)


def test_log1m_softmax_ignored_entries_are_finite():
    x = torch.tensor([[2.0, float("-inf"), 0.5, float("-inf")],
                      [float("-inf"), float("-inf"), 7.0, float("-inf")]], dtype=F64, requires_grad=True)
    got = log1m_softmax(x, dim=1)
    assert torch.isfinite(got).all()
    assert got[0, 1].item() == 0.0 and got[0, 3].item() == 0.0  # p = 0 -> log 1
    assert got[0, 0].item() == pytest.approx(math.log(1 - 1 / (1 + math.exp(-1.5))), rel=1e-12)
    got[0].sum().backward()
    assert torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------------------------------------------
# `ignore` masks never produce NaN
# ---------------------------------------------------------------------------------------------------------

def _ignore_mask(b):
    ignore = torch.zeros(b, b, dtype=torch.bool)
    for i, j in [(0, 1), (1, 0), (2, 3), (3, 2), (2, 4), (4, 2)]:
        ignore[i, j] = True
    return ignore


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_negnce_ignore_never_nan(variant):
    b = 6
    ignore = _ignore_mask(b)
    sim = _rand_sim(b, seed=12)
    sim[0, 1] = sim[2, 3] = sim[4, 2] = 0.99  # ignored pairs that would be the hardest negatives
    sim.requires_grad_(True)
    out = NegNCE(NegNCEConfig(variant=variant, margin=0.05))(sim, 20.0, ignore)
    for v in out.values():
        assert torch.isfinite(v).all()
    out["loss"].backward()
    assert torch.isfinite(sim.grad).all()
    if variant == "paper":
        _check_against(out, naive_negnce(_tolist(sim), 20.0, 1.0, 0.5, 0.05, ignore.tolist()))


def test_negnce_ignore_whole_row_never_nan():
    """Every negative of text 0 ignored: its row softmax has one entry, p_00 = 1."""
    b = 4
    ignore = torch.zeros(b, b, dtype=torch.bool)
    ignore[0, 1:] = True
    ignore[1:, 0] = True
    sim = _rand_sim(b, seed=13).requires_grad_(True)
    for variant in ("paper", "official"):
        out = NegNCE(NegNCEConfig(variant=variant))(sim, 30.0, ignore)
        assert torch.isfinite(out["loss"])
        (g,) = torch.autograd.grad(out["loss"], sim)
        assert torch.isfinite(g).all()
    out = InfoNCE()(sim, 30.0, ignore)
    assert torch.isfinite(out["loss"])


def test_negative_terms_direct_with_ignore():
    b = 5
    ignore = _ignore_mask(b)
    sim = _rand_sim(b, seed=14)
    logits = (sim * 15.0).masked_fill(ignore, float("-inf")).requires_grad_(True)
    hard = hard_negative_mask(sim, 0.0, ignore)
    ln_t2v, ln_v2t = negative_terms(logits, hard)
    want = naive_negnce(_tolist(sim), 15.0, ignore=ignore.tolist())
    assert ln_t2v.item() == pytest.approx(want["loss_n_t2v"], rel=1e-11)
    assert ln_v2t.item() == pytest.approx(want["loss_n_v2t"], rel=1e-11)
    (ln_t2v + ln_v2t).backward()
    assert torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------------------------------------------------
# NegNCE, official variant
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma1,gamma2,margin", [(1.0, 0.5, 0.0), (0.8, 1.2, 0.05), (1.0, 0.5, -0.05)])
@pytest.mark.parametrize("seed", [15, 16])
def test_negnce_official_matches_naive_restatement(gamma1, gamma2, margin, seed):
    sim = _rand_sim(6, seed=seed, scale=0.1)  # at scale 100 several probabilities hit the 1e-6 clamp
    cfg = NegNCEConfig(gamma1=gamma1, gamma2=gamma2, margin=margin, variant="official")
    want = naive_official(_tolist(sim), gamma1, gamma2, margin)
    for passed_scale in (3.0, torch.tensor(50.0, dtype=F64)):  # the learned tau is ignored
        out = NegNCE(cfg)(sim, passed_scale)
        assert out["loss"].item() == pytest.approx(want, rel=1e-11)


def test_negnce_official_clamp_is_exercised():
    sim = _rand_sim(6, seed=15, scale=0.1)
    p = torch.softmax(100.0 * sim, dim=-1)
    assert (p < 1e-6).any()  # so the test above really checks the clamp


def test_negnce_official_hard_set_differs_from_paper():
    # S = [[0.5, 0.1], [0.7, 0.8]].
    # Paper (Eq. 5): sim^m_01 = max(0, s_01 - s_00) + max(0, s_10 - s_00) = 0 + 0.2 > 0 -> (t_0, v_1) in N
    #   (flagged through s_10, although s_01 = 0.1 itself is low); sim^m_10 = max(0, -.1) + max(0, -.7) = 0.
    # Official: (1, 0) is hard on S since s_10 = 0.7 > s_00 = 0.5; (0, 1) is not (0.1 < 0.5 and < 0.8).
    #   On S^T the same pair shows up transposed, so it is counted once per direction.
    sim = torch.tensor([[0.5, 0.1], [0.7, 0.8]], dtype=F64)
    assert hard_negative_mask(sim, 0.0).tolist() == [[False, True], [False, False]]
    out = NegNCE(NegNCEConfig(variant="official"))(sim, 1.0)
    assert out["num_hard"].item() == 2
    assert out["loss"].item() == pytest.approx(naive_official(sim.tolist(), 1.0, 0.5, 0.0), rel=1e-12)
    # the official loss on S penalises p_10 (row 1 softmax at scale 100), not p_01
    p_row = torch.softmax(100 * sim, dim=-1).clamp(1e-6, 1 - 1e-6)
    p_col = torch.softmax(100 * sim.t(), dim=-1).clamp(1e-6, 1 - 1e-6)
    l_rows = -torch.log(p_row.diagonal()).mean() - 0.5 * torch.log(1 - p_row[1, 0])
    l_cols = -torch.log(p_col.diagonal()).mean() - 0.5 * torch.log(1 - p_col[0, 1])
    assert out["loss"].item() == pytest.approx((0.5 * (l_rows + l_cols)).item(), rel=1e-12)


def test_negnce_official_gradient_finite():
    sim = _rand_sim(6, seed=17, scale=0.1).requires_grad_(True)
    NegNCE(NegNCEConfig(variant="official"))(sim, 1.0)["loss"].backward()
    assert torch.isfinite(sim.grad).all()


def test_negnce_config_rejects_unknown_variant():
    with pytest.raises(ValueError):
        NegNCEConfig(variant="nope")
