"""Retrieval metrics as reported in the paper's tables: R@1, R@5, R@10, MdR, MeanR and rsum.

Conventions, chosen so that a number can never look better than the scores justify:

* Ranks are 1-based and pessimistic about ties: rank = 1 + the number of *incorrect* candidates whose score
  is >= the best correct one's. argsort-based evaluators (CLIP4Clip, TS2-Net) break ties by sort order, so
  a degenerate model (constant scores) can reach R@1 = 100 there; here it gets rank V for every query.
* NaN is an error (it compares False with everything, so it would silently move ranks); +inf and -inf are
  ordinary values, -inf being the padding value of the multi-caption evaluators.
* Everything is computed in float32 or better (float16/bfloat16 scores are upcast, float64 is kept).
* MdR is numpy.median of the ranks (mean of the two middle ones for an even count), which is what CLIP4Clip's
  ``np.median(ind) + 1`` on 0-based ranks gives.
* Video-to-text with several captions per video (MSVD) has two conventions, see `retrieval_metrics`.
* Every direction also reports ``tied``: the number of queries whose correct candidate's score is exactly equal
  to that of at least one wrong candidate. Each such query's rank is worse than an argsort would make it, so a
  large count means the scores were rounded too coarsely (e.g. computed in bf16) to rank the candidates.
"""

from __future__ import annotations

import torch

from .metric_names import COLUMNS, LOWER_IS_BETTER, check_metric_name, metric_score  # noqa: F401 (re-exported)

TOP_K = (1, 5, 10)


def _scores(sim: torch.Tensor, name: str = "sim") -> torch.Tensor:
    """A 2-D score matrix in float32 or better, rejecting NaN with the first offending row."""
    sim = torch.as_tensor(sim)
    if sim.dim() != 2:
        raise ValueError(f"{name} must be 2-D (queries, candidates), got shape {tuple(sim.shape)}")
    sim = sim.to(torch.promote_types(sim.dtype, torch.float32))
    nan = sim.isnan()  # (Q, V)
    if nan.any():
        first = int(nan.any(1).nonzero()[0, 0])
        raise ValueError(
            f"{name} has {int(nan.sum())} NaN entries (first in query row {first}); "
            "NaN compares False with everything and would silently change ranks"
        )
    return sim


def _indices(idx: torch.Tensor, length: int, upper: int, name: str) -> torch.Tensor:
    """A (length,) long tensor of indices in [0, upper)."""
    idx = torch.as_tensor(idx)
    if idx.dtype == torch.bool or idx.is_floating_point() or idx.is_complex():
        raise ValueError(f"{name} must hold integer indices, got dtype {idx.dtype}")
    if idx.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {tuple(idx.shape)}")
    bad = (idx < 0) | (idx >= upper)  # (length,)
    if bad.any():
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"{name}[{i}] = {int(idx[i])} is outside [0, {upper})")
    return idx.long()


def ranks_from_mask(sim: torch.Tensor, positive_mask: torch.Tensor) -> torch.Tensor:
    """1-based rank of each query's best-ranked correct candidate, ties counted against the query.

    sim (Q, V) scores, positive_mask (Q, V) bool, True where the candidate is correct (at least one per row).
    rank = 1 + #{incorrect j : sim[q, j] >= max over correct j' of sim[q, j']}. Returns (Q,) long.
    """
    return _ranks_and_ties(sim, positive_mask)[0]


def ties_from_mask(sim: torch.Tensor, positive_mask: torch.Tensor) -> torch.Tensor:
    """(Q,) bool: True where the best correct score of row q equals (exactly) the score of an incorrect candidate.

    These are the queries whose pessimistic rank (`ranks_from_mask`) counts at least one tie against them.
    """
    return _ranks_and_ties(sim, positive_mask)[1]


def ties(sim: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(Q,) bool: True where sim[q, gt[q]] == sim[q, j] for some j != gt[q]."""
    return _ranks_and_ties(sim, _gt_mask(sim, gt))[1]


def _gt_mask(sim: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    sim = _scores(sim)  # (Q, V)
    gt = _indices(gt, sim.shape[0], sim.shape[1], "gt").to(sim.device)  # (Q,)
    return torch.zeros_like(sim, dtype=torch.bool).scatter_(1, gt[:, None], True)  # (Q, V)


def _ranks_and_ties(sim: torch.Tensor, positive_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ranks (Q,) long, tied (Q,) bool) of `ranks_from_mask` and `ties_from_mask`."""
    sim = _scores(sim)  # (Q, V)
    mask = torch.as_tensor(positive_mask, device=sim.device)
    if mask.dtype != torch.bool or mask.shape != sim.shape:
        raise ValueError(
            f"positive_mask must be a bool tensor of shape {tuple(sim.shape)}, got {mask.dtype} {tuple(mask.shape)}"
        )
    empty = ~mask.any(1)  # (Q,)
    if empty.any():
        raise ValueError(f"query {int(empty.nonzero()[0, 0])} has no correct candidate, its rank is undefined")
    best = sim.masked_fill(~mask, float("-inf")).amax(1, keepdim=True)  # (Q, 1)
    # `>=` is the pessimistic tie rule; a correct candidate at -inf is passed by every incorrect one.
    ahead = ((sim >= best) & ~mask).sum(1)  # (Q,)
    tied = ((sim == best) & ~mask).any(1)  # (Q,) exact equality, -inf == -inf included
    return ahead + 1, tied


def ranks(sim: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """1-based rank of candidate gt[q] in row q of sim (Q, V): 1 + #{j != gt[q] : sim[q, j] >= sim[q, gt[q]]}.

    A constant matrix gives rank V everywhere. Returns (Q,) long.
    """
    return ranks_from_mask(sim, _gt_mask(sim, gt))


def _median(x: torch.Tensor) -> float:
    """numpy.median: torch.median returns the lower middle value for an even count, numpy their mean."""
    s = x.sort().values
    mid = s.numel() // 2
    return float(s[mid]) if s.numel() % 2 else float((s[mid - 1] + s[mid]) / 2)


def recall_metrics(ranks: torch.Tensor) -> dict[str, float]:
    """R@1/5/10 (percent), MdR, MeanR, rsum = R@1 + R@5 + R@10 (the paper's tables) and n, from 1-based ranks."""
    r = torch.as_tensor(ranks)
    if r.dim() != 1 or r.numel() == 0 or r.is_floating_point() or r.dtype == torch.bool:
        raise ValueError(f"ranks must be a non-empty 1-D integer tensor, got {r.dtype} {tuple(r.shape)}")
    if (r < 1).any():
        raise ValueError("ranks are 1-based; got a rank < 1")
    r = r.double()
    out = {f"R@{k}": 100.0 * float((r <= k).double().mean()) for k in TOP_K}
    out["MdR"] = _median(r)
    out["MeanR"] = float(r.mean())
    out["rsum"] = sum(out[f"R@{k}"] for k in TOP_K)
    out["n"] = r.numel()
    return out


def _group_max(sim: torch.Tensor, caption_video: torch.Tensor, n_videos: int) -> torch.Tensor:
    """G[k, j] = max over the captions c of video k of sim[c, j]: one score per caption group."""
    index = caption_video[:, None].expand_as(sim)  # (C, V)
    init = torch.full((n_videos, sim.shape[1]), float("-inf"), dtype=sim.dtype, device=sim.device)
    return init.scatter_reduce(0, index, sim, reduce="amax")  # (V groups, V videos)


def retrieval_metrics(
    sim: torch.Tensor, caption_video: torch.Tensor, v2t_mode: str = "group_max", keep_ranks: bool = False
) -> dict:
    """Text-to-video and video-to-text metrics from a caption x video score matrix.

    sim (C, V), caption_video (C,) long: the video of each caption; every video needs at least one caption.
    t2v: each caption is a query over the V videos. v2t: each video is a query, and with several captions per
    video (MSVD) the candidates depend on `v2t_mode`:

    * ``"group_max"`` (CLIP4Clip / TS2-Net, default): the captions of a video form one candidate whose score is
      their max; video j is ranked against the V caption groups, its own group being correct.
    * ``"any_caption"``: video j is ranked against all C captions; its rank is that of its best correct caption,
      with every incorrect caption scoring >= it counted against it.

    Both modes give the same R@1 (a group beats the best correct caption iff one of its captions does), and
    both reduce to ranking the transpose when every video has exactly one caption.
    Returns {"t2v": recall_metrics + tied, "v2t": recall_metrics + tied, "rsum_total": t2v rsum + v2t rsum};
    `keep_ranks` adds each direction's per-query ranks (1 = best) as a list under "ranks" (for bootstrap intervals).
    ``tied`` counts the queries of that direction whose correct candidate ties (exact equality) with a wrong one,
    over the candidates the ranks use: videos for t2v; for v2t the caption groups' max scores (``group_max``, a
    tie between the own group's max and another group's) or the captions (``any_caption``, the best correct
    caption against every incorrect caption).
    """
    if v2t_mode not in ("group_max", "any_caption"):
        raise ValueError(f"v2t_mode must be 'group_max' or 'any_caption', got {v2t_mode!r}")
    sim = _scores(sim)  # (C, V)
    n_cap, n_vid = sim.shape
    caption_video = _indices(caption_video, n_cap, n_vid, "caption_video").to(sim.device)  # (C,)
    counts = torch.bincount(caption_video, minlength=n_vid)  # (V,)
    if (counts == 0).any():
        j = int((counts == 0).nonzero()[0, 0])
        raise ValueError(f"video {j} has no caption, so its video-to-text rank is undefined")

    t2v = _ranks_and_ties(sim, _gt_mask(sim, caption_video))  # (C,), (C,)
    own = torch.arange(n_vid, device=sim.device)  # (V,)
    if v2t_mode == "group_max":
        groups = _group_max(sim, caption_video, n_vid).t()  # (V videos, V groups)
        v2t = _ranks_and_ties(groups, _gt_mask(groups, own))  # (V,), (V,)
    else:
        v2t = _ranks_and_ties(sim.t(), own[:, None] == caption_video[None, :])  # (V,), (V,) over (V, C)

    out = {
        "t2v": {**recall_metrics(t2v[0]), "tied": int(t2v[1].sum())},
        "v2t": {**recall_metrics(v2t[0]), "tied": int(v2t[1].sum())},
    }
    out["rsum_total"] = out["t2v"]["rsum"] + out["v2t"]["rsum"]
    if keep_ranks:
        out["t2v"]["ranks"], out["v2t"]["ranks"] = t2v[0].tolist(), v2t[0].tolist()
    return out


def format_table(results: dict, title: str | None = None) -> str:
    """Plain-text table in the layout of the paper's Table 1, one decimal everywhere."""
    names = {"t2v": "Text-to-Video", "v2t": "Video-to-Text"}
    lines = [title] if title else []
    lines.append(f"{'':<15}" + "".join(f"{c:>8}" for c in COLUMNS))
    for key, name in names.items():
        if key in results:
            lines.append(f"{name:<15}" + "".join(f"{results[key][c]:>8.1f}" for c in COLUMNS))
    if "rsum_total" in results:
        lines.append(f"rsum (t2v + v2t): {results['rsum_total']:.1f}")
    tied = [f"{key} {results[key]['tied']} of {results[key]['n']}" for key in names if "tied" in results.get(key, {})]
    if tied:
        lines.append(f"tied queries (correct score == a wrong one's, counted against it): {', '.join(tied)}")
    if results.get("dropped_videos"):  # data.eval_skip_bad_videos=true: not the benchmark's full protocol
        dropped = results["dropped_videos"]
        lines.append(f"DROPPED {dropped} of {dropped + results['videos']} test videos that failed to decode, with "
                     "their captions: these figures are not comparable with full-test-set results")
    return "\n".join(lines)
