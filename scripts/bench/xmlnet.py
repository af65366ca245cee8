"""X-MLNet evaluation scoring: caption x video S through dmae_tpm.evaluate.similarity_chunked on random features.

The scorer is `methods.xmlnet.similarity.MultiLevelSimilarity` (heads 8, identity init, alpha 0.8) in eval mode,
wrapped so that similarity_chunked's `model.score(text_chunk, video_chunk)` is `sim(text, video, full=...)`:
* full S (`full=True`, the library's default `eval_score=full`): 1/2 (s_vs + s_fw) + alpha s_s2f + (1 - alpha) s_v2w,
  i.e. both cross-attention levels, which build a D-wide embedding for every (caption, video) pair;
* the public code's test-time form (`full=False`, `eval_score=global_fine`): 1/2 (s_vs + s_fw), no cross-attention.
Shapes: MSR-VTT 1k-A (1,000 captions x 1,000 videos), 32 words, 12 frames, D = 512 (ViT-B/32); random
L2-normalised features, padded words (each caption 8-30 real words) and padded frames (every fifth video 8 of 12).

(a) Wall time of both at 1k x 1k in 256 x 256 chunks (the evaluator's on CUDA; `evaluate.chunk_sizes`), timed
    interleaved (full, global_fine, full, ...) in the same run, so the ratio full / global_fine is a same-run ratio.
    On the CPU one round (a full S at 1k x 1k takes minutes there), 3 on CUDA.
(b) Peak tensor memory (and time, one call) of the full S against the chunk size (square chunks 32 ... 256),
    256 captions x 512 videos on the CPU (1,000 on CUDA): beyond one chunk the peak depends on the chunk, not on
    the number of pairs, but for the (C, V) result; the scores are checked to be the same at every chunk size.
(c) What dominates: each level of `MultiLevelSimilarity.levels` (s_vs, s_fw, s_s2f, s_v2w) timed alone on one
    default chunk (3 repeats), with its FLOPs (torch.utils.flop_counter) and peak memory.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from dmae_tpm.evaluate import MAX_CHUNK, fp32_scoring, similarity_chunked  # noqa: E402
from dmae_tpm.features import map_fields  # noqa: E402
from dmae_tpm.methods.xmlnet.cross_attention import sentence_to_frames, video_to_words  # noqa: E402
from dmae_tpm.methods.xmlnet.similarity import MultiLevelSimilarity, XText, XVideo, combine, pooled_video  # noqa: E402

TOPIC = "xmlnet"
D, WORDS, FRAMES = 512, 32, 12
CAPTIONS = VIDEOS = 1000  # MSR-VTT 1k-A
FORMS = {"full": True, "global_fine": False}
FORM_LABELS = {
    "full": "full S (`full=True`, `eval_score=full`)",
    "global_fine": "1/2 (s_vs + s_fw) (`full=False`, `eval_score=global_fine`: the public code's test-time score)",
}
LEVELS = {  # name: what it is
    "s_vs": "sentence-video: one (C, D) x (D, V) matmul",
    "s_fw": "word-frame: X-CLIP's attention over the (C, L, V, F) word-frame tensor",
    "s_s2f": "sentence -> frames cross-attention block, a (C, V, D) embedding",
    "s_v2w": "video -> words cross-attention block, a (V, C, D) embedding",
}


class Scorer:
    """What similarity_chunked calls on the model: X-MLNet's score is `self.sim(text, video, full=self.full)`."""

    def __init__(self, sim: MultiLevelSimilarity, full: bool):
        self.sim, self.full = sim, full

    def score(self, text: XText, video: XVideo) -> torch.Tensor:
        return self.sim(text, video, full=self.full)


def make_similarity(device) -> MultiLevelSimilarity:
    torch.manual_seed(0)
    sim = MultiLevelSimilarity(D, WORDS, FRAMES, heads=8, dropout=0.3, init="identity", alpha=0.8)
    return sim.to(device).eval()


def make_features(captions: int, videos: int, device, dtype, seed=0) -> tuple[XText, XVideo]:
    """Random L2-normalised features (fp16 on CUDA, as eval.half stores them; fp32 on CPU; scoring is fp32 either
    way), padded positions zero: each caption 8-30 real words of 32, every fifth video 8 real frames of 12."""
    g = torch.Generator().manual_seed(seed)
    n_words = torch.randint(max(1, WORDS // 4), WORDS - 1, (captions,), generator=g)
    word_mask = torch.arange(WORDS)[None] < n_words[:, None]
    frame_mask = torch.ones(videos, FRAMES, dtype=torch.bool)
    frame_mask[::5, 8:] = False
    words = F.normalize(torch.randn(captions, WORDS, D, generator=g), dim=-1) * word_mask[..., None]
    frames = F.normalize(torch.randn(videos, FRAMES, D, generator=g), dim=-1) * frame_mask[..., None]
    s = F.normalize(torch.randn(captions, D, generator=g), dim=-1)
    v = pooled_video(frames, frame_mask)
    text = XText(s.to(device, dtype), words.to(device, dtype), word_mask.to(device))
    video = XVideo(v.to(device, dtype), frames.to(device, dtype), frame_mask.to(device))
    return text, video


def chunked(scorer: Scorer, text: XText, video: XVideo, chunk: tuple[int, int], keep: dict | None = None):
    def call():
        out = similarity_chunked(scorer, text, video, chunk[0], chunk[1])
        if keep is not None:
            keep["sim"] = out
        return out

    return call


def time_forms(sim, text, video, chunk, device, repeats) -> dict:
    """Full S and global_fine at `chunk`, `repeats` rounds (full, global_fine), after one untimed call of each
    unless the call is >= 100k pairs (as in similarity.py: its many chunks amortise first-call effects)."""
    calls = {name: chunked(Scorer(sim, full), text, video, chunk) for name, full in FORMS.items()}
    warmup = text.s.shape[0] * video.v.shape[0] < 100_000
    for call in calls.values():
        C.time_call(call, device, 0, warmup=int(warmup))
    times: dict[str, list[float]] = {name: [] for name in FORMS}
    for _ in range(repeats):
        for name, call in calls.items():
            times[name] += C.time_call(call, device, 1, warmup=0)
    pairs = text.s.shape[0] * video.v.shape[0]
    rows = []
    for name, ts in times.items():
        t = C.median(ts)
        rows.append({"form": name, "full": FORMS[name], "captions": text.s.shape[0], "videos": video.v.shape[0],
                     "text_chunk": chunk[0], "video_chunk": chunk[1], "seconds": t, "times": ts,
                     "pairs_per_s": pairs / t})
        print(f"  {name:12s} {text.s.shape[0]}x{video.v.shape[0]} chunk {chunk[0]}x{chunk[1]}: {t:.2f} s  "
              f"{pairs / t:,.0f} pairs/s")
    per_round = [a / b for a, b in zip(times["full"], times["global_fine"], strict=True)]
    ratio = {"full_over_global_fine": rows[0]["seconds"] / rows[1]["seconds"],
             "median_per_round": C.median(per_round), "per_round": per_round}
    print(f"  full / global_fine: {ratio['full_over_global_fine']:.2f}x "
          f"(median per round {ratio['median_per_round']:.2f}x)")
    return {"rows": rows, "ratio": ratio, "warmup": warmup}


def chunk_sweep(sim, text, video, chunks, ref_chunk, device, repeats) -> dict:
    """Peak memory and time of the full S against the (square) chunk size; global_fine at the default chunk. The
    scores at every chunk size are compared with those at the default chunk (or the largest one measured)."""
    pairs = text.s.shape[0] * video.v.shape[0]
    rows, sims = [], []
    for form, c in [("full", (k, k)) for k in chunks] + [("global_fine", ref_chunk)]:
        keep: dict = {}
        call = chunked(Scorer(sim, FORMS[form]), text, video, c, keep)
        ts = C.time_call(call, device, repeats, warmup=0)
        peak = C.peak_bytes(call, device)
        rows.append({"form": form, "captions": text.s.shape[0], "videos": video.v.shape[0], "text_chunk": c[0],
                     "video_chunk": c[1], "seconds": C.median(ts), "times": ts, "pairs_per_s": pairs / C.median(ts),
                     "peak_bytes": peak, "result_bytes": pairs * 4, "max_abs_diff_vs_default_chunk": None})
        sims.append(keep["sim"])
        print(f"  {form:12s} chunk {c[0]}x{c[1]}: {rows[-1]['seconds']:.2f} s  peak {C.mib(peak)} MiB")
    full = [i for i, r in enumerate(rows) if r["form"] == "full"]
    ref = next((i for i in full if [rows[i]["text_chunk"], rows[i]["video_chunk"]] == list(ref_chunk)), full[-1])
    for i in full:
        rows[i]["max_abs_diff_vs_default_chunk"] = (sims[i] - sims[ref]).abs().max().item()
    print("  max abs diff vs chunk " + str(rows[ref]["text_chunk"]) + ": "
          + ", ".join(f"{rows[i]['max_abs_diff_vs_default_chunk']:.1e}" for i in full))
    return {"rows": rows, "default_chunk": [rows[ref]["text_chunk"], rows[ref]["video_chunk"]]}


def level_calls(sim: MultiLevelSimilarity, text: XText, video: XVideo) -> dict:
    """Each level of MultiLevelSimilarity.levels, as a call of its own (the same expressions)."""
    return {
        "s_vs": lambda: text.s @ video.v.t(),
        "s_fw": lambda: sim.word_frame(text.words, text.word_mask, video.frames, video.frame_mask),
        "s_s2f": lambda: sentence_to_frames(sim.s2f, text.s, video.frames, video.frame_mask),
        "s_v2w": lambda: video_to_words(sim.v2w, video.v, text.words, text.word_mask),
    }


def levels(sim, text, video, chunk, device, repeats) -> dict:
    """Time, FLOPs and peak memory of each level alone on one chunk (the first chunk of captions x videos)."""
    t = XText(*(x[: chunk[0]].float() if x.is_floating_point() else x[: chunk[0]]
                for x in (text.s, text.words, text.word_mask)))
    v = XVideo(*(x[: chunk[1]].float() if x.is_floating_point() else x[: chunk[1]]
                 for x in (video.v, video.frames, video.frame_mask)))
    with torch.no_grad(), fp32_scoring(device):
        diff = (combine(**sim.levels(t, v), alpha=sim.alpha) - sim(t, v, full=True)).abs().max().item()
        assert diff < 1e-5, diff
        rows = []
        for name, call in level_calls(sim, t, v).items():
            # after (a) and (b) every op has run; a 256 x 256 chunk is seconds long: no separate warm-up on the CPU
            ts = C.time_call(call, device, repeats, warmup=1 if device.type == "cuda" else 0)
            counter = FlopCounterMode(display=False)
            with counter:
                call()
            rows.append({"level": name, "what": LEVELS.get(name, ""), "seconds": C.median(ts), "times": ts,
                         "flops": counter.get_total_flops(), "peak_bytes": C.peak_bytes(call, device)})
            print(f"  {name:6s} {1e3 * rows[-1]['seconds']:.1f} ms  {rows[-1]['flops'] / 1e9:.2f} GFLOP  "
                  f"peak {C.mib(rows[-1]['peak_bytes'])} MiB")
    return {"chunk": [t.s.shape[0], v.v.shape[0]], "repeats": repeats, "rows": rows,
            "max_abs_diff_levels_vs_forward": diff}


def render(data: dict) -> str:
    lines = [C.machine_line(data)]
    a = data["forms"]
    r0 = a["rows"][0]
    lines.append(f"Time of the whole evaluation scoring, {r0['captions']:,} captions x {r0['videos']:,} videos, "
                 f"chunks {r0['text_chunk']} x {r0['video_chunk']} (the evaluator's on CUDA), full and global_fine "
                 f"interleaved in the same run ("
                 + ("a single round" if data["repeats"] == 1 else f"{data['repeats']} rounds, medians") + "):\n")
    lines.append(C.table(
        ["score", "similarity_chunked(...) s", "pairs/s"],
        [[FORM_LABELS[r["form"]], r["seconds"], f"{r['pairs_per_s']:,.0f}"] for r in a["rows"]],
    ))
    ra = a["ratio"]
    lines.append(f"\nfull / global_fine: {ra['full_over_global_fine']:.2f}x time"
                 + (f" (median of the per-round ratios {ra['median_per_round']:.2f}x)" if data["repeats"] > 1 else "")
                 + ".\n")
    b = data["chunks"]
    rb = b["rows"][0]
    lines.append(f"Peak memory of similarity_chunked against the chunk size, {rb['captions']:,} captions x "
                 f"{rb['videos']:,} videos (one timed call each, then one profiled for the peak; the scores at every "
                 f"chunk size are compared with those at {b['default_chunk'][0]} x {b['default_chunk'][1]}):\n")
    lines.append(C.table(
        ["score", "chunk (text x video)", "s", "pairs/s", "peak MiB", "of which result MiB", "max abs diff"],
        [[r["form"], f"{r['text_chunk']} x {r['video_chunk']}", r["seconds"], f"{r['pairs_per_s']:,.0f}",
          C.mib(r["peak_bytes"]), C.mib(r["result_bytes"]),
          "–" if r["max_abs_diff_vs_default_chunk"] is None else f"{r['max_abs_diff_vs_default_chunk']:.1e}"]
         for r in b["rows"]],
    ))
    c = data["levels"]
    rows = c["rows"]
    total = sum(r["seconds"] for r in rows)
    lines.append(f"\nWhat dominates: each level of `MultiLevelSimilarity.levels` alone on one {c['chunk'][0]} x "
                 f"{c['chunk'][1]} chunk ({c['repeats']} repeats, medians; FLOPs counted by "
                 f"torch.utils.flop_counter; the levels combined equal the forward to "
                 f"{c['max_abs_diff_levels_vs_forward']:.1e}):\n")
    lines.append(C.table(
        ["level", "what", "ms", "share of the four", "GFLOP", "peak MiB"],
        [[f"`{r['level']}`", r["what"], 1e3 * r["seconds"], f"{100 * r['seconds'] / total:.0f}%", r["flops"] / 1e9,
          C.mib(r["peak_bytes"])] for r in rows],
    ))
    by = {r["level"]: r for r in rows}
    cross = by["s_s2f"]["seconds"] + by["s_v2w"]["seconds"]
    lines.append(f"\nThe two cross-attention levels take {100 * cross / total:.0f}% of the four levels' time, the "
                 f"word-frame term {100 * by['s_fw']['seconds'] / total:.0f}%, the sentence-video matmul "
                 f"{100 * by['s_vs']['seconds'] / total:.0f}%.")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=None,
                   help=f"captions = videos of the timing (default {CAPTIONS}; --quick 64)")
    args = p.parse_args(argv)
    device = C.device_of(args)
    feat_dtype = torch.float16 if device.type == "cuda" else torch.float32  # eval.half storage on CUDA
    default = (MAX_CHUNK, MAX_CHUNK)  # the evaluator's chunks on CUDA (no memory budget there)
    if args.quick:
        n, repeats = args.size or 64, args.repeats or 1
        sweep_q, sweep_v, chunks = min(n, 64), n, [16, 32, 64]
        level_chunk = (min(n, 64), min(n, 64))
    else:
        n = args.size or CAPTIONS
        # 2-core CPU: one full S at 1k x 1k is minutes, so one round (the doc's "single run" case); GPU: 3
        repeats = args.repeats or (3 if device.type == "cuda" else 1)
        sweep_q, sweep_v, chunks = min(n, 256), min(n, 1000 if device.type == "cuda" else 512), [32, 64, 128, 256]
        level_chunk = (min(n, default[0]), min(n, default[1]))
    sim = make_similarity(device)
    text, video = make_features(n, n, device, feat_dtype)
    print(f"(a) full and global_fine at {n} x {n}, chunk {default[0]} x {default[1]}")
    forms = time_forms(sim, text, video, default, device, repeats)
    print(f"(b) full S against the chunk size, {sweep_q} x {sweep_v}")
    rows_of = (lambda n: lambda x: x[:n])  # noqa: E731 -- the first n captions / videos, field by field
    sweep = chunk_sweep(sim, map_fields(rows_of(sweep_q), text), map_fields(rows_of(sweep_v), video), chunks, default,
                        device, 1)
    print(f"(c) levels on one {level_chunk[0]} x {level_chunk[1]} chunk")
    lv = levels(sim, text, video, level_chunk, device, max(3, repeats))
    data = C.result(
        TOPIC,
        args.quick,
        str(device),
        repeats,
        shape={"captions": n, "videos": n, "words": WORDS, "frames": FRAMES, "dim": D},
        feature_dtype=str(feat_dtype),
        similarity={"heads": 8, "dropout": 0.3, "init": "identity", "alpha": sim.alpha, "mode": "eval"},
        forms=forms,
        chunks=sweep,
        levels=lv,
    )
    C.write_json(C.default_out(TOPIC, args), data)
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
