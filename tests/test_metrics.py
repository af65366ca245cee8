"""Retrieval metrics and inference post-processing against hand-worked matrices and naive Python loops.

The references below use loops over plain floats and `math`, sharing no code with the implementation. Random
matrices are drawn from a few integer levels so that ties are frequent.
"""

import math

import numpy as np
import pytest
import torch

from dmae_tpm.metrics import (
    format_table,
    ranks,
    ranks_from_mask,
    recall_metrics,
    retrieval_metrics,
    ties,
    ties_from_mask,
)
from dmae_tpm.postprocess import dual_softmax, querybank_norm

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def _tied(q, v, seed, levels=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (q, v), generator=g).double() / levels


# ---------------------------------------------------------------------------------------------------------
# Naive references
# ---------------------------------------------------------------------------------------------------------


def naive_rank(row, positives):
    """1 + number of incorrect candidates scoring >= the best correct one."""
    best = max(row[p] for p in positives)
    return 1 + sum(1 for j, x in enumerate(row) if j not in positives and x >= best)


def naive_tied(row, positives):
    """True when the best correct score equals (==) the score of some incorrect candidate."""
    best = max(row[p] for p in positives)
    return any(x == best for j, x in enumerate(row) if j not in positives)


def naive_median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def naive_v2t(sim, caption_video, n_vid, mode, stat=naive_rank):
    """Video-to-text ranks (or, with stat=naive_tied, ties) with explicit loops over videos, groups and captions."""
    out = []
    for j in range(n_vid):
        col = [sim[c][j] for c in range(len(sim))]
        own = {c for c, v in enumerate(caption_video) if v == j}
        if mode == "any_caption":
            out.append(stat(col, own))
        else:
            groups = [max(col[c] for c, v in enumerate(caption_video) if v == k) for k in range(n_vid)]
            out.append(stat(groups, {j}))
    return out


def without_tied(direction: dict) -> dict:
    """The recall_metrics part of a retrieval_metrics direction (everything but the tie count)."""
    return {k: v for k, v in direction.items() if k != "tied"}


def naive_dsl(sim, temperature):
    """sim[i][j] * exp(sim[i][j] / T) / sum_i' exp(sim[i'][j] / T), the softmax over captions i."""
    q, v = len(sim), len(sim[0])
    out = [[0.0] * v for _ in range(q)]
    for j in range(v):
        z = sum(math.exp(sim[i][j] / temperature) for i in range(q))
        for i in range(q):
            out[i][j] = sim[i][j] * math.exp(sim[i][j] / temperature) / z
    return out


def naive_qbnorm(sim, bank, beta, k):
    """The reference algorithm in the exp domain: (normalised?, row) per test query."""
    v = len(sim[0])
    active = set()
    for row in bank:
        order = sorted(range(v), key=lambda j: (-row[j], j))
        active.update(order[:k])
    z = [sum(math.exp(beta * row[j]) for row in bank) for j in range(v)]
    out = []
    for row in sim:
        top1 = max(range(v), key=lambda j: (row[j], -j))
        if top1 in active:
            out.append((True, [math.exp(beta * row[j]) / z[j] for j in range(v)]))
        else:
            out.append((False, list(row)))
    return out


# ---------------------------------------------------------------------------------------------------------
# ranks / ranks_from_mask
# ---------------------------------------------------------------------------------------------------------


def test_ranks_hand_pessimistic_ties():
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.5],  # correct 0.9, nobody >= it          -> rank 1
            [0.2, 0.8, 0.8],  # correct 0.8 tied with candidate 2  -> rank 2
            [0.3, 0.3, 0.3],  # constant row: both others tie      -> rank 3 = V
            [0.7, 0.1, 0.4],  # correct 0.4, only 0.7 above        -> rank 2
        ]
    )
    assert ranks(sim, torch.tensor([0, 1, 2, 2])).tolist() == [1, 2, 3, 2]


def test_ranks_constant_matrix_is_worst():
    assert ranks(torch.full((5, 7), 0.25), torch.arange(5)).tolist() == [7] * 5


@pytest.mark.parametrize("dtype", DTYPES)
def test_ranks_match_naive_loop_with_ties(dtype):
    sim = _tied(20, 9, seed=0)  # values k/4 are exact in every dtype
    gt = torch.randint(0, 9, (20,), generator=torch.Generator().manual_seed(1))
    got = ranks(sim.to(dtype), gt)
    assert got.dtype == torch.long
    assert got.tolist() == [naive_rank(r, {g}) for r, g in zip(sim.tolist(), gt.tolist(), strict=True)]


def test_ranks_from_mask_hand_and_naive():
    sim = torch.tensor(
        [
            [0.5, 0.9, 0.9, 0.1],  # positives {0, 3}: best 0.5, 0.9 and 0.9 above -> rank 3
            [0.4, 0.9, 0.2, 0.9],  # positives {1, 3}: best 0.9, no negative >= it  -> rank 1
        ]
    )
    mask = torch.tensor([[True, False, False, True], [False, True, False, True]])
    assert ranks_from_mask(sim, mask).tolist() == [3, 1]

    sim = _tied(15, 11, seed=2)
    mask = torch.rand(15, 11, generator=torch.Generator().manual_seed(3)) < 0.3
    mask[torch.arange(15), torch.arange(15) % 11] = True  # at least one positive per row
    want = [
        naive_rank(r, {j for j, m in enumerate(mr) if m}) for r, mr in zip(sim.tolist(), mask.tolist(), strict=True)
    ]
    assert ranks_from_mask(sim, mask).tolist() == want


def test_infinities_are_ordinary_values():
    inf = float("inf")
    sim = torch.tensor(
        [
            [0.3, -inf, 0.1],  # -inf padding never outranks a finite correct score -> 1
            [inf, inf, 0.0],  # tied +inf                                          -> 2
            [-inf, -inf, -inf],  # padded correct score: everyone ties             -> 3
        ]
    )
    assert ranks(sim, torch.tensor([0, 0, 2])).tolist() == [1, 2, 3]


def test_nan_is_an_error_naming_count_and_first_query():
    sim = torch.zeros(4, 3)
    sim[2, 1] = sim[3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"2 NaN entries \(first in query row 2\)"):
        ranks(sim, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(sim, torch.tensor([0, 1, 2, 0]))


def test_bad_indices_and_masks_raise():
    with pytest.raises(ValueError, match=r"gt\[1\] = 3 is outside \[0, 3\)"):
        ranks(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="query 1 has no correct candidate"):
        ranks_from_mask(torch.zeros(2, 3), torch.tensor([[True, False, False], [False] * 3]))


# ---------------------------------------------------------------------------------------------------------
# recall_metrics
# ---------------------------------------------------------------------------------------------------------


def test_recall_metrics_hand_even_and_odd():
    # ranks 1, 2, 6, 11: R@1 1/4, R@5 2/4, R@10 3/4; median (2 + 6) / 2 = 4; mean 20 / 4 = 5
    m = recall_metrics(torch.tensor([6, 1, 11, 2]))
    assert m == {"R@1": 25.0, "R@5": 50.0, "R@10": 75.0, "MdR": 4.0, "MeanR": 5.0, "rsum": 150.0, "n": 4}
    # ranks 3, 1, 2: odd count, median 2 (torch.median would agree here, not in the even case above)
    m = recall_metrics(torch.tensor([3, 1, 2]))
    assert m["MdR"] == 2.0 and m["MeanR"] == 2.0 and m["R@1"] == pytest.approx(100 / 3)


def test_recall_metrics_match_numpy_on_random_ranks():
    for n in (40, 41):
        r = torch.randint(1, 30, (n,), generator=torch.Generator().manual_seed(n))
        m = recall_metrics(r)
        a = r.numpy()
        assert m["MdR"] == float(np.median(a)) == naive_median(r.tolist())
        assert m["MeanR"] == pytest.approx(a.mean())
        for k in (1, 5, 10):
            assert m[f"R@{k}"] == pytest.approx(100 * (a <= k).mean())
        assert m["rsum"] == pytest.approx(m["R@1"] + m["R@5"] + m["R@10"])


# ---------------------------------------------------------------------------------------------------------
# retrieval_metrics
# ---------------------------------------------------------------------------------------------------------


def test_one_caption_per_video_v2t_is_the_transpose():
    sim = _tied(6, 6, seed=4)
    caption_video = torch.tensor([3, 0, 5, 1, 4, 2])  # a permutation: caption c describes video caption_video[c]
    inverse = torch.argsort(caption_video)  # video j's only caption
    for mode in ("group_max", "any_caption"):
        out = retrieval_metrics(sim, caption_video, v2t_mode=mode)
        assert without_tied(out["t2v"]) == recall_metrics(ranks(sim, caption_video))
        assert without_tied(out["v2t"]) == recall_metrics(ranks(sim.t(), inverse))
        assert out["t2v"]["tied"] == int(ties(sim, caption_video).sum()) > 0
        assert out["v2t"]["tied"] == int(ties(sim.t(), inverse).sum()) > 0
        assert out["rsum_total"] == out["t2v"]["rsum"] + out["v2t"]["rsum"]


def test_multi_caption_modes_differ_on_hand_example():
    # captions c0, c1 describe video 0, caption c2 video 1
    sim = torch.tensor(
        [
            [0.6, 0.9],
            [0.2, 0.8],
            [0.5, 0.7],
        ]
    )
    caption_video = torch.tensor([0, 0, 1])
    # t2v: c0 0.6 < 0.9 -> 2; c1 0.2 < 0.8 -> 2; c2 0.7 > 0.5 -> 1
    # v2t video 0, column (0.6, 0.2 | 0.5): group max 0.6 vs 0.5 -> 1; any caption: only c2 (0.5) incorrect -> 1
    # v2t video 1, column (0.9, 0.8 | 0.7): group max 0.9 vs 0.7 -> 2; any caption: c0 and c1 both >= 0.7 -> 3
    g = retrieval_metrics(sim, caption_video, v2t_mode="group_max")
    a = retrieval_metrics(sim, caption_video, v2t_mode="any_caption")
    assert without_tied(g["t2v"]) == without_tied(a["t2v"]) == recall_metrics(torch.tensor([2, 2, 1]))
    assert without_tied(g["v2t"]) == recall_metrics(torch.tensor([1, 2]))
    assert without_tied(a["v2t"]) == recall_metrics(torch.tensor([1, 3]))
    assert g["t2v"]["tied"] == g["v2t"]["tied"] == a["v2t"]["tied"] == 0  # all scores distinct
    assert (g["v2t"]["MdR"], a["v2t"]["MdR"]) == (1.5, 2.0)


def test_multi_caption_matches_naive_loops():
    g = torch.Generator().manual_seed(5)
    n_vid = 7
    caption_video = torch.cat([torch.arange(n_vid), torch.randint(0, n_vid, (20,), generator=g)])
    sim = _tied(len(caption_video), n_vid, seed=6, levels=5)
    s, cv = sim.tolist(), caption_video.tolist()
    t2v = [naive_rank(row, {v}) for row, v in zip(s, cv, strict=True)]
    for mode in ("group_max", "any_caption"):
        out = retrieval_metrics(sim.float(), caption_video, v2t_mode=mode)
        assert without_tied(out["t2v"]) == recall_metrics(torch.tensor(t2v))
        assert without_tied(out["v2t"]) == recall_metrics(torch.tensor(naive_v2t(s, cv, n_vid, mode)))
        assert out["t2v"]["tied"] == sum(naive_tied(row, {v}) for row, v in zip(s, cv, strict=True))
        assert out["v2t"]["tied"] == sum(naive_v2t(s, cv, n_vid, mode, stat=naive_tied))
    # a group outranks the best correct caption iff one of its captions does, so R@1 never depends on the mode
    assert (
        retrieval_metrics(sim, caption_video, "group_max")["v2t"]["R@1"]
        == retrieval_metrics(sim, caption_video, "any_caption")["v2t"]["R@1"]
    )


def test_video_without_caption_and_bad_arguments_raise():
    with pytest.raises(ValueError, match="video 2 has no caption"):
        retrieval_metrics(torch.zeros(3, 4), torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="outside"):
        retrieval_metrics(torch.zeros(2, 2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="shape"):
        retrieval_metrics(torch.zeros(3, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="v2t_mode"):
        retrieval_metrics(torch.zeros(2, 2), torch.tensor([0, 1]), v2t_mode="mean")


def test_format_table():
    out = retrieval_metrics(torch.eye(4), torch.arange(4))
    table = format_table(out, title="MSR-VTT 1k-A")
    lines = table.splitlines()
    assert lines[0] == "MSR-VTT 1k-A"
    assert lines[1].split() == ["R@1", "R@5", "R@10", "MdR", "MeanR", "rsum"]
    assert lines[2].split() == ["Text-to-Video", "100.0", "100.0", "100.0", "1.0", "1.0", "300.0"]
    assert lines[3].startswith("Video-to-Text")
    assert lines[4].endswith("600.0")
    assert lines[5] == "tied queries (correct score == a wrong one's, counted against it): t2v 0 of 4, v2t 0 of 4"
    assert format_table(retrieval_metrics(torch.ones(3, 3), torch.arange(3))).splitlines()[-1].endswith(
        "t2v 3 of 3, v2t 3 of 3"
    )


# ---------------------------------------------------------------------------------------------------------
# tie counts
# ---------------------------------------------------------------------------------------------------------


def test_tied_hand_counts_one_caption_per_video():
    sim = torch.tensor(
        [
            [0.5, 0.5, 0.1, 0.0],  # gt 0 ties with video 1: tied, rank 2
            [0.2, 0.9, 0.9, 0.9],  # gt 1 ties with videos 2 and 3: one tied query, rank 3
            [0.8, 0.1, 0.1, 0.3],  # gt 2 ties with video 1 below the top: tied, rank 4
            [0.3, 0.3, 0.1, 0.7],  # gt 3 on top; the wrong 0.3s tie only with each other: not tied, rank 1
        ]
    )
    gt = torch.arange(4)
    assert ties(sim, gt).tolist() == [True, True, True, False]
    assert ranks(sim, gt).tolist() == [2, 3, 4, 1]
    out = retrieval_metrics(sim, gt)
    # v2t queries are the columns: only column 2 (own caption 0.1, captions 0 and 3 also 0.1) is tied
    assert (out["t2v"]["tied"], out["v2t"]["tied"]) == (3, 1)
    s = sim.tolist()
    assert out["t2v"]["tied"] == sum(naive_tied(s[q], {q}) for q in range(4))
    assert out["v2t"]["tied"] == sum(naive_tied([s[c][j] for c in range(4)], {j}) for j in range(4))


def test_tied_multi_caption_follows_each_v2t_mode():
    # captions c0, c1 describe video 0, caption c2 video 1
    sim = torch.tensor(
        [
            [0.4, 0.9],
            [0.6, 0.5],
            [0.6, 0.5],
        ]
    )
    caption_video = torch.tensor([0, 0, 1])
    # video 0, column (0.4, 0.6 | 0.6): best own 0.6 == c2's 0.6 and == group 1's max 0.6: tied in both modes.
    # video 1, column (0.9, 0.5 | 0.5): own 0.5 == c1's 0.5 (any_caption: tied), but group 0's max is 0.9, so
    # group_max ranks it second with no tie.
    g = retrieval_metrics(sim, caption_video, v2t_mode="group_max")
    a = retrieval_metrics(sim, caption_video, v2t_mode="any_caption")
    assert (g["v2t"]["tied"], a["v2t"]["tied"]) == (1, 2)
    assert g["t2v"]["tied"] == a["t2v"]["tied"] == 0
    own = torch.arange(2)[:, None] == caption_video[None, :]  # (V, C)
    assert ties_from_mask(sim.t(), own).tolist() == [True, True]
    s, cv = sim.tolist(), caption_video.tolist()
    for mode, out in (("group_max", g), ("any_caption", a)):
        assert out["v2t"]["tied"] == sum(naive_v2t(s, cv, 2, mode, stat=naive_tied))


def test_tied_exact_equality_and_infinities():
    assert ties(torch.tensor([[float("-inf"), float("-inf"), 0.0]]), torch.tensor([0])).tolist() == [True]
    assert ties(torch.tensor([[0.5, 0.5 + 1e-7]]), torch.tensor([0])).tolist() == [False]  # no tolerance
    # bf16 rounding makes distinct fp32 scores equal: the symptom the count is there to show
    close = torch.tensor([[0.3001, 0.3002, 0.3003]])
    assert ties(close, torch.tensor([0])).tolist() == [False]
    assert ties(close.bfloat16(), torch.tensor([0])).tolist() == [True]


def test_tied_is_not_a_selectable_metric():
    from dmae_tpm.metric_names import check_metric_name

    with pytest.raises(ValueError, match="unknown metric 't2v.tied'"):
        check_metric_name("t2v.tied")


# ---------------------------------------------------------------------------------------------------------
# dual_softmax
# ---------------------------------------------------------------------------------------------------------


def test_dsl_hand_2x2_demotes_a_hub_video():
    # video 1 scores 2.5 with both captions (a hub); temperature 1.
    # column 0 softmax over captions: e^2 / (e^2 + 1) = 0.880797, 1 / (e^2 + 1) = 0.119203
    # column 1: (0.5, 0.5).  DSL = [[2 * 0.880797, 2.5 * 0.5], [0 * 0.119203, 2.5 * 0.5]]
    sim = torch.tensor([[2.0, 2.5], [0.0, 2.5]], dtype=torch.float64)
    out = dual_softmax(sim, temperature=1.0)
    assert out.flatten().tolist() == pytest.approx([1.761594, 1.25, 0.0, 1.25], abs=1e-6)
    gt = torch.tensor([0, 1])
    assert ranks(sim, gt).tolist() == [2, 1] and ranks(out, gt).tolist() == [1, 1]


def test_dsl_hand_3x3_scale_convention():
    # temperature 0.01 on cosines == TS2-Net's softmax(logits, axis=0) on logits = 100 * cosine, output / 100.
    # Column 0 of cos: (0.02, 0, 0) -> logits (2, 0, 0), softmax e^2 / (e^2 + 2) = 0.786986, others 0.106507.
    cos = torch.tensor([[0.02, 0.0, 0.01], [0.0, 0.01, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    out = dual_softmax(cos)
    assert out[0, 0].item() == pytest.approx(0.02 * 0.786986, abs=1e-8)
    assert out[1:, 0].tolist() == [0.0, 0.0]
    assert torch.allclose(out, dual_softmax(100 * cos, temperature=1.0) / 100)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dsl_matches_naive_loop(dtype):
    sim = (torch.randn(5, 4, generator=torch.Generator().manual_seed(7)) * 0.3).to(dtype)
    got = dual_softmax(sim, temperature=0.05)
    assert got.shape == sim.shape and got.dtype == torch.promote_types(dtype, torch.float32)
    want = naive_dsl(sim.double().tolist(), 0.05)
    assert got.double().tolist() == [pytest.approx(r, rel=1e-5, abs=1e-6) for r in want]
    assert torch.equal(got, dual_softmax(sim, temperature=0.05))  # deterministic
    assert torch.allclose(dual_softmax(sim.t(), 0.05, dim=1), got.t())  # dim=1 is the transposed prior


def test_dsl_rejects_non_finite():
    with pytest.raises(ValueError, match="1 NaN/inf entries"):
        dual_softmax(torch.tensor([[0.0, float("-inf")], [0.0, 0.0]]))


# ---------------------------------------------------------------------------------------------------------
# querybank_norm
# ---------------------------------------------------------------------------------------------------------

# both bank queries have video 0 (a hub) as top-1: A = {0} for k = 1
BANK = torch.tensor([[0.9, 0.1], [0.8, 0.2]], dtype=torch.float64)
# beta = 20: log Z_0 = log(e^18 + e^16) = 18 + log(1 + e^-2) = 18.126928; log Z_1 = log(e^2 + e^4) = 4.126928
L = math.log1p(math.exp(-2))


def test_qbnorm_hand_activation_changes_ranking():
    sim = torch.tensor(
        [
            [0.5, 0.45],  # top-1 is video 0, in A: normalised -> (10 - 18.126928, 9 - 4.126928)
            [0.3, 0.6],  # top-1 is video 1, not in A: raw scores kept
        ],
        dtype=torch.float64,
    )
    out = querybank_norm(sim, BANK, beta=20.0, k=1)
    assert out[0].tolist() == pytest.approx([-8 - L, 5 - L])
    assert out[1].tolist() == [0.3, 0.6]
    assert sim[0].tolist() == [0.5, 0.45]  # the reference code normalises in place; this returns a new tensor
    gt = torch.tensor([0, 1])
    assert ranks(sim, gt).tolist() == [1, 1] and ranks(out, gt).tolist() == [2, 1]  # the hub lost query 0


def test_qbnorm_hand_activation_leaves_ranking():
    # k = 2 puts video 1 in A too, so query 1 is normalised: (6 - 18.126928, 12 - 4.126928), same order as raw
    sim = torch.tensor([[0.3, 0.6]], dtype=torch.float64)
    out = querybank_norm(sim, BANK, beta=20.0, k=2)
    assert out[0].tolist() == pytest.approx([-12 - L, 8 - L])
    assert ranks(out, torch.tensor([1])).tolist() == ranks(sim, torch.tensor([1])).tolist() == [1]


@pytest.mark.parametrize("k", [1, 3])
def test_qbnorm_matches_naive_loop(k):
    g = torch.Generator().manual_seed(8 + k)
    sim = torch.randn(12, 6, generator=g, dtype=torch.float64) * 0.2
    bank = torch.randn(30, 6, generator=g, dtype=torch.float64) * 0.2
    bank[:, 5] -= 1.0  # video 5 is never in a bank top-k, so some queries stay raw
    sim[:3, 5] += 2.0  # ... and these three queries have it as their top-1
    sim[3:, 5] -= 2.0  # ... and the others do not
    out = querybank_norm(sim, bank, beta=20.0, k=k)
    normalised = []
    for got, (norm, want) in zip(out.tolist(), naive_qbnorm(sim.tolist(), bank.tolist(), 20.0, k), strict=True):
        normalised.append(norm)
        assert (list(map(math.exp, got)) if norm else got) == pytest.approx(want, rel=1e-9)
    assert normalised[:3] == [False] * 3 and any(normalised[3:])
    gt = torch.arange(12) % 6
    want_ranks = [
        naive_rank(row, {g})
        for (_, row), g in zip(naive_qbnorm(sim.tolist(), bank.tolist(), 20.0, k), gt.tolist(), strict=True)
    ]
    assert ranks(out, gt).tolist() == want_ranks
    assert torch.equal(out, querybank_norm(sim, bank, beta=20.0, k=k))  # deterministic


def test_qbnorm_half_precision_and_errors():
    sim = torch.tensor([[0.5, 0.45], [0.3, 0.6]])
    out = querybank_norm(sim.half(), BANK.float(), beta=20.0)
    assert out.dtype == torch.float32 and out.shape == (2, 2)
    with pytest.raises(ValueError, match="gallery columns"):
        querybank_norm(sim, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="k must be"):
        querybank_norm(sim, BANK, k=3)


def test_metric_score_signs_lower_is_better_ranks_and_rejects_unknown_names():
    from dmae_tpm.metrics import metric_score

    res = {"t2v": {"R@1": 40.0, "MdR": 2.0, "MeanR": 9.5, "rsum": 150.0}, "v2t": {"R@1": 38.0}, "rsum_total": 290.0}
    assert metric_score(res, "t2v.R@1") == (40.0, 40.0)
    assert metric_score(res, "t2v.MdR") == (2.0, -2.0)
    assert metric_score(res, "t2v.MeanR") == (9.5, -9.5)
    assert metric_score(res, "rsum_total") == (290.0, 290.0)
    with pytest.raises(ValueError, match="t2v.R@1"):
        metric_score(res, "R1")
    from dmae_tpm.config import TrainerConfig

    with pytest.raises(ValueError, match="unknown metric 't2v.R@2'"):
        TrainerConfig(best_metric="t2v.R@2")


def test_format_table_says_how_many_test_videos_were_dropped():
    """Issue 11 item 14: with data.eval_skip_bad_videos=true the table gave no sign that the protocol shrank."""
    out = {**retrieval_metrics(torch.eye(4), torch.arange(4)), "dropped_videos": 2, "videos": 4}
    assert format_table(out).splitlines()[-1].startswith("DROPPED 2 of 6 test videos")
    assert "DROPPED" not in format_table({**out, "dropped_videos": 0})
