"""Evaluation scoring: caption x video similarity through dmae_tpm.evaluate.similarity_chunked on random features.

Variants: TI and WTI, each plain (the baseline: both attentions and the sentence term off) and with DMAE (Eq. 3 on
the word x frame matrix, `similarity.variant=word`, the default), plus the literal 1 x N reading
(`variant=pooled`) and the authors' DMAE (`variant=official`) where time allows.
Shapes: MSR-VTT 1k-A (1,000 captions x 1,000 videos, 32 words, 12 frames), MSVD test (27,000 x 670, 32 x 12)
and ActivityNet val (5,000 x 5,000, 64 words x 64 frames), D = 512 (ViT-B/32), the evaluator's default chunks
(256 captions x 256 videos). On a CPU the large shapes run on a fixed leading fraction (the first text chunks
against the first videos), and the figure is throughput, pairs/s, which does not depend on the fraction.

Throughput is also given as a fraction of the machine's dense matmul rate measured in the same run and dtype: the
scoring's nominal work is the token similarity matrix, 2 x M_words x N_frames x D FLOPs per pair, and the
reference is one (chunk_t x M, D) x (D, chunk_v x N) matmul, the product one chunk needs. DMAE (pooled) folds the
words before the product and needs far fewer FLOPs; its "fraction" is an effective rate against the same
nominal work, so it can exceed 100%.

Memory: peak tensor memory of similarity_chunked against the number of videos (fixed chunks: flat but for the
(C, V) result itself) and against the chunk size.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from dmae_tpm.config import EvalConfig  # noqa: E402
from dmae_tpm.evaluate import chunk_sizes, similarity_chunked  # noqa: E402
from dmae_tpm.methods.dmae_tpm.dmae import Similarity, SimilarityConfig, TextInput, VideoInput  # noqa: E402
from dmae_tpm.token_interaction import (  # noqa: E402
    cosine_tokens,
    finite_or_zero,
    neg_inf_bias,
    token_interaction,
    uniform_weights,
)

TOPIC = "similarity"
D = 512
SHAPES = {  # name: captions, videos, words, frames
    "msrvtt": (1000, 1000, 32, 12),
    "msvd": (27000, 670, 32, 12),
    "activitynet": (5000, 5000, 64, 64),
}
VARIANTS = {  # name: interaction, dmae on, variant
    "TI": ("ti", False, "word"),
    "WTI": ("wti", False, "word"),
    "TI+DMAE": ("ti", True, "word"),
    "WTI+DMAE": ("wti", True, "word"),
    "TI+DMAE(pooled)": ("ti", True, "pooled"),
    "TI+DMAE(official)": ("ti", True, "official"),
}

BEFORE = "TI, before the fused path"
PREVIOUS = "TI, before issue 16"  # the fused path in its (C, M, V, N) layout with -inf passes, 256 x 256 chunks
AT_256 = "TI, 256 x 256 chunks"  # the library's TI in the chunks the evaluator used before issue 16


class Scorer:
    """What similarity_chunked calls on the model: DMAETPM.score is `self.similarity(text, v_h, frame_mask)`."""

    def __init__(self, similarity: Similarity):
        self.similarity = similarity

    def similarity_matrix(self, text, v_h, frame_mask):
        return self.similarity(text, v_h, frame_mask)

    def score(self, text, video: VideoInput):
        return self.similarity_matrix(text, video.v_h, video.frame_mask)


class BroadcastTIScorer:
    """The library's plain TI before the fused all-pairs path (commit 11a8246), kept here as the "before" side of
    that change: `cosine_tokens(pairwise=True)` (an einsum that returns a permuted (C, V, M, N) view) and
    `token_interaction` with masks broadcast to (C, V, M, N), whose masked maxima copy the product twice."""

    def similarity_matrix(self, text, v_h, frame_mask):
        sim = cosine_tokens(text.t_tokens, v_h, pairwise=True)  # (C, V, M, N)
        return token_interaction(sim, text.t_mask.bool()[:, None], frame_mask.bool()[None])

    def score(self, text, video: VideoInput):
        return self.similarity_matrix(text, video.v_h, video.frame_mask)


class PreviousFusedTIScorer:
    """The library's fused TI before issue 16 (commit 3c5aaea), kept here as the "before" side of that change:
    the product in its (C, M, V, N) layout, padding removed by two -inf passes over it, the max over the frames
    along the innermost axis, and -inf maxima mapped to 0."""

    def similarity_matrix(self, text, v_h, frame_mask):
        t_tokens, t_mask = text.t_tokens, text.t_mask
        (c, m, d), (v, n, _) = t_tokens.shape, v_h.shape
        t_hat = torch.nn.functional.normalize(t_tokens, dim=-1).reshape(c * m, d)
        v_hat = torch.nn.functional.normalize(v_h, dim=-1).reshape(v * n, d)
        s = (t_hat @ v_hat.T).view(c, m, v, n)  # (C, M, V, N)
        s += neg_inf_bias(t_mask, s.dtype)[:, :, None, None]
        s += neg_inf_bias(frame_mask, s.dtype)[None, None]
        t2v = finite_or_zero(s.amax(3))  # (C, M, V)
        v2t = finite_or_zero(s.amax(1))  # (C, V, N)
        t2v_score = torch.einsum("cmv,cm->cv", t2v, uniform_weights(t_mask, s.dtype))
        v2t_score = torch.einsum("cvn,vn->cv", v2t, uniform_weights(frame_mask, s.dtype))
        return 0.5 * (t2v_score + v2t_score)

    def score(self, text, video: VideoInput):
        return self.similarity_matrix(text, video.v_h, video.frame_mask)


def make_scorer(variant: str, device):
    if variant == BEFORE:
        return BroadcastTIScorer()
    if variant == PREVIOUS:
        return PreviousFusedTIScorer()
    if variant == AT_256:
        variant = "TI"
    interaction, dmae, kind = VARIANTS[variant]
    torch.manual_seed(0)
    cfg = SimilarityConfig(interaction=interaction, textual_attention=dmae, visual_attention=dmae, variant=kind,
                           sentence_term=dmae)
    return Scorer(Similarity(cfg, D).to(device).eval())


def make_features(captions: int, videos: int, words: int, frames: int, device, dtype, seed=0):
    """Random encoded features (fp16 on CUDA, as eval.half stores them; fp32 on CPU). Scoring is fp32 either way."""
    g = torch.Generator().manual_seed(seed)
    n_words = torch.randint(max(1, words // 4), words - 1, (captions,), generator=g)
    pos = torch.arange(words)
    t_mask = (pos[None] >= 1) & (pos[None] <= n_words[:, None])
    w_pos = torch.where(torch.rand(captions, words, generator=g) < 0.4, 2.0, 1.0)
    w_freq = (torch.rand(captions, words, generator=g) > 0.2).float()
    text = TextInput(
        torch.randn(captions, D, generator=g).to(device, dtype),
        torch.randn(captions, words, D, generator=g).to(device, dtype),
        t_mask.to(device),
        w_pos.to(device, dtype),
        w_freq.to(device, dtype),
    )
    v_h = torch.randn(videos, frames, D, generator=g).to(device, dtype)
    frame_mask = torch.ones(videos, frames, dtype=torch.bool, device=device)
    return text, v_h, frame_mask


class MatmulRef:
    """The dense matmul reference of one shape: a (chunk_t x M, D) x (D, chunk_v x N) product, sampled repeatedly
    between the measurements (a shared VM drifts); the rate used is the median of all samples."""

    def __init__(self, m: int, k: int, n: int, device, dtype):
        self.a = torch.randn(m, k, device=device, dtype=dtype)
        self.b = torch.randn(k, n, device=device, dtype=dtype)
        self.shape, self.device, self.dtype = [m, k, n], device, dtype
        self.rates: list[float] = []
        C.time_call(self.mm, device, 1, warmup=1)

    def mm(self):
        return self.a @ self.b

    def sample(self, k: int = 3) -> None:
        flops = 2 * self.shape[0] * self.shape[1] * self.shape[2]
        self.rates += [flops / t for t in C.time_call(self.mm, self.device, k, warmup=0)]

    @property
    def rate(self) -> float:
        return C.median(self.rates)

    def summary(self) -> dict:
        return {
            "shape": self.shape,
            "dtype": str(self.dtype).replace("torch.", ""),
            "flops_per_s": self.rate,
            "samples": len(self.rates),
            "min_flops_per_s": min(self.rates),
            "max_flops_per_s": max(self.rates),
        }


def prepare(name, variant, device, feat_dtype, queries, videos, chunk=None):
    """(the timed call, the row's fixed fields); chunk None: the evaluator's own choice for these features on this
    device (`chunk_sizes`)."""
    captions, n_videos, words, frames = SHAPES[name]
    text, v_h, fm = make_features(queries, videos, words, frames, device, feat_dtype)
    scorer = make_scorer(variant, device)
    text_chunk, video_chunk = chunk or chunk_sizes(EvalConfig(), text, VideoInput(v_h, fm))

    def call():
        return similarity_chunked(scorer, text, VideoInput(v_h, fm), text_chunk, video_chunk)

    pairs = queries * videos
    return call, {
        "shape": name,
        "variant": variant,
        "queries": queries,
        "videos": videos,
        "captions_total": captions,
        "videos_total": n_videos,
        "fraction": pairs / (captions * n_videos),
        "chunk": [text_chunk, video_chunk],
        "flops": 2 * words * frames * D * pairs,
    }


def finish_row(row: dict, times: list[float], ref) -> dict:
    t = C.median(times)
    pairs = row["queries"] * row["videos"]
    row.update({
        "seconds": t,
        "times": times,
        "pairs_per_s": pairs / t,
        "nominal_flops_per_s": row["flops"] / t,
        "matmul_fraction": row["flops"] / t / ref.rate,  # recomputed at the end with all reference samples
        "projected_full_seconds": row["captions_total"] * row["videos_total"] / (pairs / t),
    })
    print(
        f"  {row['shape']:12s} {row['variant']:24s} {row['queries']}x{row['videos']} chunk "
        f"{row['chunk'][0]}x{row['chunk'][1]}: {t:.2f} s  {pairs / t:,.0f} pairs/s  "
        f"{100 * row['matmul_fraction']:.0f}% of matmul"
    )
    return row


def run_shape(name, variant, device, feat_dtype, repeats, queries, videos, ref, chunk=None) -> dict:
    call, row = prepare(name, variant, device, feat_dtype, queries, videos, chunk)
    # a call of >= 100k pairs runs many chunks, which amortises first-call effects: no separate warm-up there
    warmup = 1 if (repeats > 1 and queries * videos < 100_000) else 0
    ref.sample()
    times = C.time_call(call, device, repeats, warmup=warmup)
    ref.sample()
    return finish_row(row, times, ref)


def interleaved(variants: list[tuple[str, tuple[int, int] | None]], device, feat_dtype, rounds, q, v, ref) -> list:
    """Rows timed in rounds, each round calling every variant once (the VM's speed drifts by 1.5x over minutes;
    sequential rows caught different moments of it). Each row also keeps its per-round time ratio to the last."""
    prepared = [prepare("msrvtt", name, device, feat_dtype, q, v, chunk) for name, chunk in variants]
    for call, _ in prepared:
        call()  # warm-up
    times = [[] for _ in prepared]
    for _ in range(rounds):
        ref.sample(1)
        for (call, _), ts in zip(prepared, times, strict=True):
            ts += C.time_call(call, device, 1, warmup=0)
    rows = [finish_row(row, ts, ref) for (_, row), ts in zip(prepared, times, strict=True)]
    for row in rows:
        row["per_round_speedup_vs_last"] = [b / a for a, b in zip(row["times"], rows[-1]["times"], strict=True)]
    return rows


def memory_sweeps(device, feat_dtype, quick: bool) -> dict:
    """Peak memory of similarity_chunked (TI, MSR-VTT shapes): against the number of videos at fixed chunks,
    and against the chunk size at a fixed number of videos. 256 queries (one text chunk)."""
    _, _, words, frames = SHAPES["msrvtt"]
    scorer = make_scorer("TI", device)

    def peak(text, v_h, fm, chunk, scorer=scorer):
        return C.peak_bytes(lambda: similarity_chunked(scorer, text, VideoInput(v_h, fm), chunk, chunk), device)

    q = 64 if quick else 256
    out = {"videos": [], "chunk": []}
    for v in [64, 128, 256] if quick else [250, 500, 1000, 2000, 4000]:
        text, v_h, fm = make_features(q, v, words, frames, device, feat_dtype)
        out["videos"].append(
            {
                "queries": q,
                "videos": v,
                "text_chunk": 256,
                "video_chunk": 256,
                "peak_bytes": peak(text, v_h, fm, 256),
                "result_bytes": q * v * 4,
            }
        )
    text, v_h, fm = make_features(q, 1000 if not quick else 128, words, frames, device, feat_dtype)
    for c in [32, 64] if quick else [32, 64, 128, 256, 512]:
        out["chunk"].append(
            {
                "queries": q,
                "videos": v_h.shape[0],
                "text_chunk": c,
                "video_chunk": c,
                "peak_bytes": peak(text, v_h, fm, c),
                "result_bytes": q * v_h.shape[0] * 4,
            }
        )
    c = 64 if quick else 256
    out["before"] = {"queries": q, "videos": v_h.shape[0], "chunk": c,
                     "peak_bytes": peak(text, v_h, fm, c, BroadcastTIScorer()),
                     "library_peak_bytes": peak(text, v_h, fm, c)}
    return out


def _folds_words(variant: str) -> bool:
    return "pooled" in variant


def render(data: dict) -> str:
    rate = data["matmul"]
    lines = [
        C.machine_line(data),
        f"Dense matmul reference ({rate['dtype']}, sampled 3 times before and after every measurement of the run; "
        "median, with the range of the samples): "
        + ", ".join(
            f"{k}: ({r['shape'][0]} x {r['shape'][1]}) x ({r['shape'][1]} x {r['shape'][2]}) "
            f"{r['flops_per_s'] / 1e9:,.0f} GFLOP/s"
            + (
                f" ({r['min_flops_per_s'] / 1e9:,.0f}–{r['max_flops_per_s'] / 1e9:,.0f}, {r['samples']} samples)"
                if "samples" in r
                else ""
            )
            for k, r in rate["by_shape"].items()
        )
        + ".\n"
    ]
    rows = []
    for r in data["rows"]:
        frac = ""
        if r["fraction"] < 0.999:
            frac = f" ({100 * r['fraction']:.1f}% of {r['captions_total']:,} x {r['videos_total']:,})"
        rows.append(
            [
                r["shape"],
                r["variant"],
                f"{r['queries']:,} x {r['videos']:,}{frac}",
                " x ".join(map(str, r["chunk"])),
                r["seconds"],
                f"{r['pairs_per_s']:,.0f}",
                r["nominal_flops_per_s"] / 1e9,
                f"{100 * r['matmul_fraction']:.0f}%" + ("†" if _folds_words(r["variant"]) else ""),
                r["projected_full_seconds"],
            ]
        )
    lines.append(
        C.table(
            [
                "shape",
                "similarity",
                "pairs measured",
                "chunk",
                "s (median)",
                "pairs/s",
                "nominal GFLOP/s",
                "of matmul rate",
                "full eval s (projected)",
            ],
            rows,
        )
    )
    lines.append(
        '\n"full eval s (projected)" = all caption x video pairs of the benchmark / pairs/s: a projection '
        "from the measured throughput, not a measurement. † DMAE's literal 1 x N reading (`variant=pooled`) folds the "
        "words with W_TA before the product and never forms the M x N word-frame matrix, so it does far less than "
        "the nominal 2 M N D FLOPs per pair; its percentage is an effective rate against that nominal work, not "
        "an efficiency.\n"
    )
    mem = data["memory"]
    lines.append("Peak memory of similarity_chunked (TI, MSR-VTT shapes, one text chunk of queries):\n")
    rows = [
        [
            m["queries"],
            m["videos"],
            f"{m['text_chunk']} x {m['video_chunk']}",
            C.mib(m["peak_bytes"]),
            C.mib(m["result_bytes"]),
        ]
        for m in mem["videos"] + mem["chunk"]
    ]
    lines.append(C.table(["queries", "videos", "chunk (text x video)", "peak MiB", "of which result MiB"], rows))
    if "before" in mem:
        bm = mem["before"]
        lines.append(
            f"\nSame call at {bm['queries']} x {bm['videos']}, chunk {bm['chunk']}: the fused TI peaks at "
            f"{C.mib(bm['library_peak_bytes'])} MiB, TI before the fused path at {C.mib(bm['peak_bytes'])} MiB."
        )
    lines.append("")
    b = data["bar"]
    lines.append(
        C.bar_line(
            b["met"], f"TI at MSR-VTT shapes runs at {100 * b['fraction']:.0f}% of the dense matmul rate (bar: >= 50%)."
        )
    )
    if "before_fraction" in b:
        lines.append(
            f'\nThe row "{BEFORE}" is the library\'s previous plain TI (broadcast formulation, kept in the '
            f"benchmark as `BroadcastTIScorer`), measured in the same run on the same features: "
            f"{100 * b['before_fraction']:.0f}% of the matmul rate; the library's fused TI is "
            f"{b['speedup_vs_before']:.2f}x faster, same scores (max abs diff {b['max_abs_diff']:.1e})."
        )
    if data.get("comparison"):
        lines.append(_comparison(data["comparison"], b["previous_max_abs_diff"]))
    return "\n".join(lines)


def _comparison(rows: list, max_diff: float) -> str:
    n = len(rows[0]["times"])
    table = C.table(
        ["TI", "chunk", "s (median)", "of matmul rate", "speed-up vs before issue 16: median of rounds (range)"],
        [[r["variant"], " x ".join(map(str, r["chunk"])), r["seconds"], f"{100 * r['matmul_fraction']:.0f}%",
          f"{C.median(r['per_round_speedup_vs_last']):.2f}x ({min(r['per_round_speedup_vs_last']):.2f}-"
          f"{max(r['per_round_speedup_vs_last']):.2f})"] for r in rows],
    )
    return (
        f"\nIssue 16, same run, MSR-VTT shapes at {rows[0]['queries']:,} x {rows[0]['videos']:,}, {n} interleaved "
        "rounds (each round calls the three "
        f"once; the rows above are sequential and catch the VM's drift). \"{PREVIOUS}\" is the fused TI as it was "
        "(`PreviousFusedTIScorer`: the product in (C, M, V, N) layout, two -inf passes, the max over frames along "
        "the innermost axis) in the 256 x 256 chunks the evaluator then used; \"TI\" is the library in the "
        f"chunks the evaluator now picks. Same scores (max abs diff {max_diff:.1e}).\n\n" + table
    )


def main(argv=None) -> int:
    args = C.parser(__doc__.splitlines()[0]).parse_args(argv)
    device = C.device_of(args)
    cuda = device.type == "cuda"
    feat_dtype = torch.float16 if cuda else torch.float32  # eval.half storage on CUDA (off by default)
    mm_dtype = C.compute_dtype(device)
    tc = vc = 256
    if args.quick:
        plan = {"msrvtt": (128, 256, ["TI", "TI+DMAE"]), "activitynet": (32, 64, ["TI"])}
        repeats, tc = args.repeats or 1, 64
        vc = 64
    elif cuda:
        plan = {n: (SHAPES[n][0], SHAPES[n][1], list(VARIANTS)) for n in SHAPES}
        repeats = args.repeats or 3
    else:  # 2-core CPU: fixed leading fractions of the big ones
        plan = {
            "msrvtt": (1000, 1000, list(VARIANTS)),
            "msvd": (512, 670, ["TI", "WTI", "TI+DMAE", "WTI+DMAE"]),
            "activitynet": (256, 512, ["TI", "WTI", "TI+DMAE", "WTI+DMAE"]),
        }
        repeats = args.repeats or 3
    refs = {}
    for name in plan:
        _, _, words, frames = SHAPES[name]
        refs[name] = MatmulRef(tc * words, D, vc * frames, device, mm_dtype)
        refs[name].sample(max(3, repeats))
        print(f"  matmul {name}: {refs[name].rate / 1e9:.0f} GFLOP/s")
    rows = []
    for name, (q, v, variants) in plan.items():
        for variant in variants:
            reps = repeats if (args.quick or cuda or (name == "msrvtt" and "official" not in variant)) else 1
            rows.append(run_shape(name, variant, device, feat_dtype, reps, q, v, refs[name]))
    # the library's TI before the fused path, side by side: same values, then its throughput at MSR-VTT shapes
    q, v, _ = plan["msrvtt"]
    text, v_h, fm = make_features(min(q, 64), min(v, 64), 32, 12, device, feat_dtype, seed=3)
    fm[::5, 8:] = False  # some padded frames
    with torch.no_grad(), C.autocast(device):
        diff = (
            (
                make_scorer("TI", device).similarity_matrix(text, v_h, fm).float()
                - BroadcastTIScorer().similarity_matrix(text, v_h, fm).float()
            )
            .abs()
            .max()
            .item()
        )
    print(f"  TI before the fused path vs Similarity.plain: max abs diff {diff:.1e}")
    assert diff < (1e-4 if not cuda else 5e-2), diff
    # issue 16: the library's TI in the old fixed chunks, and its previous fused form there, on the same features
    previous = PreviousFusedTIScorer().similarity_matrix(text, v_h, fm)
    prev_diff = (previous - make_scorer("TI", device).similarity_matrix(text, v_h, fm)).abs().max().item()
    print(f"  TI before issue 16 vs Similarity.plain: max abs diff {prev_diff:.1e}")
    assert prev_diff < (1e-5 if not cuda else 5e-2), prev_diff
    rows.append(run_shape("msrvtt", BEFORE, device, feat_dtype, repeats, q, v, refs["msrvtt"], (tc, vc)))
    rows[-1]["max_abs_diff_vs_library"] = diff
    rounds = args.repeats or (3 if args.quick else 7)
    comparison = interleaved([("TI", None), (AT_256, (tc, vc)), (PREVIOUS, (tc, vc))], device, feat_dtype, rounds,
                             q, v, refs["msrvtt"])
    memory = memory_sweeps(device, feat_dtype, args.quick)
    by_shape = {name: ref.summary() for name, ref in refs.items()}
    for r in rows + comparison:  # every fraction against the median of all samples of its shape's reference
        r["matmul_fraction"] = r["nominal_flops_per_s"] / refs[r["shape"]].rate
    ti = next(r for r in rows if r["shape"] == "msrvtt" and r["variant"] == "TI")
    before = rows[-1]
    data = C.result(
        TOPIC,
        args.quick,
        str(device),
        repeats,
        chunks=[tc, vc],
        feature_dtype=str(feat_dtype),
        matmul={"dtype": str(mm_dtype).replace("torch.", ""), "by_shape": by_shape},
        rows=rows,
        memory=memory,
        bar={
            "met": ti["matmul_fraction"] >= 0.5,
            "fraction": ti["matmul_fraction"],
            "before_fraction": before["matmul_fraction"],
            "speedup_vs_before": ti["pairs_per_s"] / before["pairs_per_s"],
            "max_abs_diff": diff,
            "previous_max_abs_diff": prev_diff,
        },
        comparison=comparison,
    )
    C.write_json(C.default_out(TOPIC, args), data)
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
