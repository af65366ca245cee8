"""TPM-CL: our matched-pairs TPMCL against the authors' all-pairs formulation (B x B pairs, then the diagonal).

Both get the same random features at MSR-VTT / ViT-B/32 shapes (12 frames x 50 tokens, 32 words, D = 512) fed
to the TPMCL module directly (no backbone); v_h is the temporal encoder's output on the full video, computed
once outside the timed region (the model computes it anyway for the contrastive loss). Measured: forward +
backward of the TPM loss, median wall time, and peak tensor memory (see _common.py for the method), plus the
loss values of both (they must agree).

The all-pairs reference follows the authors' `_get_partial_loss` as tests/test_tpm_cl.py's `all_pairs_tpm`
does: for every (text i, video j) of the batch, predict the token weights (Eqs. 10-11), select and mask the
tokens (Eqs. 12-14), build t_g, t_g^p (Eqs. 15-16) and v_h^p (the temporal encoder over the partial video), score
the five B x B matrices and keep their diagonals for the margin loss (Eqs. 17-18). Two liberties, both in the
reference's favour: the masks use the library's vectorised `informative_token_mask` (tested equal to the per-row
loop) rather than a Python loop over B^2 rows, and the video token-weight predictor runs without autograd as
in TPMCL.partial_samples (its output only feeds the discrete mask; docs/fidelity.md D14), so that the ratios
measure the matched-pairs formulation alone.

When the unchunked all-pairs batch does not fit in memory, it runs in row blocks of `pair_chunk` pairs (rows of
the B x B grid), each block's loss share back-propagated before the next: the same computation and the same
gradients, so its time is measured (or, with `chunk_pairs_measured`, measured on the leading blocks and scaled
by the number of blocks -- every block is the same work -- and labelled extrapolated), but its peak memory is the
block's. The unchunked peak at those sizes is then an extrapolation (per-pair peak at the largest unchunked size
x B^2), always labelled as such.
"""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from dmae_tpm.features import TextFeatures, VideoFeatures  # noqa: E402
from dmae_tpm.methods.dmae_tpm.adaptive_token_selector import informative_token_mask  # noqa: E402
from dmae_tpm.methods.dmae_tpm.dmae import Similarity, SimilarityConfig  # noqa: E402
from dmae_tpm.methods.dmae_tpm.tpm_cl import TPMCL, TPMConfig, triplet_partial_margin  # noqa: E402
from dmae_tpm.temporal_encoder import TemporalConfig, TemporalEncoder  # noqa: E402

TOPIC = "tpm_cl"
D, M, N, K1 = 512, 32, 12, 50  # ViT-B/32: 49 patches + [CLS] per frame; MSR-VTT: 32 words, 12 frames


def build(temporal_input: str, layers: int, device):
    torch.manual_seed(0)
    tpm = TPMCL(TPMConfig(), D, M, N, K1)
    temporal = TemporalEncoder(TemporalConfig(type="seqTransf", input=temporal_input, layers=layers, max_frames=N), D)
    sim = Similarity(SimilarityConfig(interaction="ti"), D)
    return tpm.to(device), temporal.to(device), sim.to(device)


def pair_score(similarity):
    """S(q, v_h) of Eq. 17 for matched pairs, exactly as DMAETPM.pair_score."""

    def score(q, v_h, frame_mask):
        one = torch.ones(q.shape[0], 1, dtype=torch.bool, device=q.device)
        return similarity.plain(q.unsqueeze(1), one, v_h, frame_mask.bool(), pairwise=False)

    return score


def make_inputs(b: int, temporal, device, seed: int = 0):
    """Random leaves: t_cls, t_tokens, v_tokens (f_cls is v_tokens' [CLS] slot) and v_h = temporal(video)."""
    g = torch.Generator().manual_seed(seed)
    t_cls = torch.randn(b, D, generator=g)
    t_tokens = torch.randn(b, M, D, generator=g)
    v_tokens = torch.randn(b, N * K1, D, generator=g)
    n_words = torch.randint(4, M - 2, (b,), generator=g)
    pos = torch.arange(M)
    t_mask = (pos[None] >= 1) & (pos[None] <= n_words[:, None])  # [BOS] words [EOS] padding
    frame_mask = torch.ones(b, N, dtype=torch.bool)
    leaves = {
        k: v.to(device).requires_grad_(True)
        for k, v in (("t_cls", t_cls), ("t_tokens", t_tokens), ("v_tokens", v_tokens))
    }
    t_mask, frame_mask = t_mask.to(device), frame_mask.to(device)
    with torch.no_grad():
        v_h = temporal(VideoFeatures(leaves["v_tokens"][:, ::K1], leaves["v_tokens"], frame_mask))
    leaves["v_h"] = v_h.detach().requires_grad_(True)
    return leaves, t_mask, frame_mask


def features(leaves, t_mask, frame_mask):
    text = TextFeatures(leaves["t_cls"], leaves["t_tokens"], t_mask)
    video = VideoFeatures(leaves["v_tokens"][:, ::K1], leaves["v_tokens"], frame_mask)
    return text, video


def matched_pairs(tpm, temporal, score, leaves, t_mask, frame_mask, amp: bool = True) -> dict:
    """Ours: TPMCL.forward + backward on the B matched pairs."""
    text, video = features(leaves, t_mask, frame_mask)
    with C.autocast(leaves["v_h"].device) if amp else contextlib.nullcontext():
        out = tpm(text, video, leaves["v_h"], temporal, score)
    out["loss"].backward()
    return {k: out[k].item() for k in ("trpl1", "trpl2", "trpl3", "loss")}


def all_pairs(
    tpm, temporal, score, leaves, t_mask, frame_mask, rows_per_chunk=None, amp: bool = True, max_blocks=None
) -> dict:
    """The authors' formulation: everything for all B x B pairs, margin loss on the diagonals; forward + backward.

    rows_per_chunk: run the B x B grid in row blocks (text i in a block, every video j), back-propagating each
    block's share of the loss before the next (identical loss and gradients, bounded memory)."""
    b = leaves["t_cls"].shape[0]
    rows = b if rows_per_chunk is None else rows_per_chunk
    totals = {"trpl1": 0.0, "trpl2": 0.0, "trpl3": 0.0}
    for r0 in list(range(0, b, rows))[:max_blocks]:
        r1 = min(b, r0 + rows)
        with C.autocast(leaves["v_h"].device) if amp else contextlib.nullcontext():
            terms = _all_pairs_block(tpm, temporal, score, leaves, t_mask, frame_mask, r0, r1)
        (terms["trpl1"] + terms["trpl2"] + terms["trpl3"]).backward()  # Eq. 18
        for k, v in terms.items():
            totals[k] += v.item()
    totals["loss"] = totals["trpl1"] + totals["trpl2"] + totals["trpl3"]
    return totals


def _all_pairs_block(tpm, temporal, score, leaves, t_mask, frame_mask, r0: int, r1: int) -> dict:
    """Texts r0..r1-1 against every video of the batch: the rows r0..r1-1 of the B x B matrices."""
    b = leaves["t_cls"].shape[0]
    delta, tau = tpm.cfg.margin, tpm.cfg.threshold
    dev = t_mask.device
    text, video = features(leaves, t_mask, frame_mask)
    ti = torch.arange(r0, r1, device=dev).repeat_interleave(b)  # pair p = (i, j), i-major
    vj = torch.arange(b, device=dev).repeat(r1 - r0)
    fm = video.frame_mask[vj]
    t_tok, t_msk = text.t_tokens[ti], text.t_mask[ti]
    w_t = tpm.text_predictor(video.f_cls[vj], fm, t_tok, t_msk)  # (P, M)  Eq. 10 for every pair
    ones = torch.ones(len(ti), 1, dtype=torch.bool, device=dev)
    v_tok = video.v_tokens[vj]
    with torch.no_grad():  # as TPMCL.partial_samples: w_v only feeds the discrete mask (fidelity.md D14)
        w_v = tpm.video_predictor(text.t_cls[ti][:, None], ones, v_tok, video.v_mask[vj])  # (P, N*K1)  Eq. 11
    b_t, b_v = informative_token_mask(w_t, tau), informative_token_mask(w_v, tau)  # Eq. 14
    t_g = torch.einsum("pmd,pm->pd", t_tok, w_t)  # Eq. 15
    t_g_p = torch.einsum("pmd,pm->pd", t_tok * b_t[..., None], w_t)  # Eqs. 12, 16
    vt_p = v_tok * b_v[..., None]  # Eq. 13
    v_h_p = temporal(VideoFeatures(vt_p[:, ::K1], vt_p, fm))  # (P, N, D) v_h^p of every pair
    v_h = leaves["v_h"][vj]
    t_cls = text.t_cls[ti]

    def mat(q, vh):
        return score(q, vh, fm).reshape(r1 - r0, b)  # [i - r0, j] = S(text i, video j)

    s1, s1p = mat(t_cls, v_h), mat(t_cls, v_h_p)
    s2, s2p = mat(t_g, v_h), mat(t_g, v_h_p)
    s3p = mat(t_g_p, v_h)
    diag = (torch.arange(r1 - r0, device=dev), torch.arange(r0, r1, device=dev))  # this block's matched pairs
    share = (r1 - r0) / b  # triplet_partial_margin averages over its pairs; the block holds this share
    return {
        "trpl1": triplet_partial_margin(s1[diag], s1p[diag], delta) * share,  # Eq. 17
        "trpl2": triplet_partial_margin(s2[diag], s2p[diag], delta) * share,
        "trpl3": triplet_partial_margin(s2[diag], s3p[diag], delta) * share,
    }


def grads_of(leaves, modules) -> list[torch.Tensor]:
    out = [leaves[k].grad.clone() for k in sorted(leaves)]
    for m in modules:
        out += [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in m.parameters()]
    return out


def zero(leaves, modules):
    for v in leaves.values():
        v.grad = None
    for m in modules:
        m.zero_grad(set_to_none=True)


def check_equal(tpm, temporal, sim, device, b: int) -> dict:
    """Same inputs through both: loss terms and every gradient must agree."""
    leaves, t_mask, fm = make_inputs(b, temporal, device, seed=1)
    score, mods = pair_score(sim), (tpm, temporal, sim)
    zero(leaves, mods)
    ours = matched_pairs(tpm, temporal, score, leaves, t_mask, fm, amp=False)
    g_ours = grads_of(leaves, mods)
    zero(leaves, mods)
    theirs = all_pairs(tpm, temporal, score, leaves, t_mask, fm, amp=False)
    g_theirs = grads_of(leaves, mods)
    zero(leaves, mods)
    loss_diff = max(abs(ours[k] - theirs[k]) for k in ours)
    grad_diff = max(float((a - c).abs().max()) for a, c in zip(g_ours, g_theirs, strict=True))
    grad_scale = max(float(a.abs().max()) for a in g_ours)
    print(
        f"  B={b}: loss ours {ours['loss']:.6f} all-pairs {theirs['loss']:.6f}  max |diff| loss {loss_diff:.2e}"
        f"  grads {grad_diff:.2e} (max |grad| {grad_scale:.2e})"
    )
    assert loss_diff < 1e-4, f"matched-pairs and all-pairs TPM-CL losses differ by {loss_diff}"
    assert grad_diff < 1e-4 * max(1.0, grad_scale), f"gradients differ by {grad_diff}"
    return {
        "batch": b,
        "loss_ours": ours["loss"],
        "loss_all_pairs": theirs["loss"],
        "max_abs_diff_loss": loss_diff,
        "max_abs_diff_grad": grad_diff,
        "max_abs_grad": grad_scale,
    }


def measure(kind, b, tpm, temporal, sim, device, repeats, rows_per_chunk=None, max_blocks=None) -> dict:
    """Median time and peak memory of one forward + backward. All-pairs in row blocks: with max_blocks, only
    the first max_blocks blocks run and the time is scaled by blocks / max_blocks (every block is the same
    work: rows_per_chunk texts against all B videos); that time is then marked extrapolated."""
    leaves, t_mask, fm = make_inputs(b, temporal, device)
    score, mods = pair_score(sim), (tpm, temporal, sim)
    blocks = 1 if rows_per_chunk is None else math.ceil(b / rows_per_chunk)
    run_blocks = blocks if max_blocks is None else min(blocks, max_blocks)
    last = {}

    def step(n_blocks=run_blocks):
        zero(leaves, mods)
        if kind == "ours":
            last.update(matched_pairs(tpm, temporal, score, leaves, t_mask, fm))
        else:
            last.update(all_pairs(tpm, temporal, score, leaves, t_mask, fm, rows_per_chunk, max_blocks=n_blocks))

    cheap = kind == "ours" or b <= 16
    times = C.time_call(step, device, repeats if cheap else 1, warmup=1 if cheap else 0)
    measured = C.median(times)
    row = {
        "kind": kind,
        "batch": b,
        "pairs": b if kind == "ours" else b * b,
        "rows_per_chunk": rows_per_chunk,
        "blocks_total": blocks,
        "blocks_measured": run_blocks,
        "seconds_measured": measured,
        "seconds": measured * blocks / run_blocks,
        "time_extrapolated": run_blocks < blocks,
        "times": times,
        "loss": last["loss"] if run_blocks == blocks else None,
    }
    # peak memory: one more run (a single block suffices when chunked: every block has the same peak)
    row["peak_bytes"] = C.peak_bytes(lambda: step(1 if rows_per_chunk is not None else run_blocks), device)
    chunk = "" if rows_per_chunk is None else f" (blocks of {rows_per_chunk} rows, {run_blocks}/{blocks} run)"
    print(f"  {kind:9s} B={b:4d}{chunk}: {row['seconds']:.3f} s  peak {C.mib(row['peak_bytes'])} MiB", flush=True)
    zero(leaves, mods)
    return row


def run_setting(
    name,
    temporal_input,
    layers,
    batches,
    all_pairs_full,
    all_pairs_chunked,
    pair_chunk,
    device,
    repeats,
    check_b,
    chunk_pairs_measured=None,
) -> dict:
    print(f"[{name}] temporal seqTransf over {temporal_input}, {layers} layers")
    tpm, temporal, sim = build(temporal_input, layers, device)
    check = check_equal(tpm, temporal, sim, device, check_b)
    rows = [measure("ours", b, tpm, temporal, sim, device, repeats) for b in batches]
    ap = [measure("all_pairs", b, tpm, temporal, sim, device, repeats) for b in all_pairs_full]
    for b in all_pairs_chunked:
        rows_per_chunk = max(1, pair_chunk // b)
        max_blocks = None if chunk_pairs_measured is None else max(1, chunk_pairs_measured // (rows_per_chunk * b))
        ap.append(measure("all_pairs", b, tpm, temporal, sim, device, 1, rows_per_chunk, max_blocks))
    # extrapolate the unchunked peak where only a chunked run was possible: per-pair peak at the largest
    # unchunked size x B^2 (labelled "extrapolated" wherever shown)
    full = [r for r in ap if r["rows_per_chunk"] is None and "peak_bytes" in r]
    if full:
        ref = max(full, key=lambda r: r["batch"])
        per_pair = ref["peak_bytes"] / ref["batch"] ** 2
        for r in ap:
            if r["rows_per_chunk"] is not None:
                r["peak_bytes_unchunked_extrapolated"] = per_pair * r["batch"] ** 2
                r["extrapolated_from_batch"] = ref["batch"]
    return {
        "name": name,
        "temporal_input": temporal_input,
        "layers": layers,
        "equality": check,
        "ours": rows,
        "all_pairs": ap,
    }


def bar(setting: dict, b: int = 128) -> dict:
    ours = {r["batch"]: r for r in setting["ours"]}
    ap = {r["batch"]: r for r in setting["all_pairs"]}
    if b not in ours or b not in ap:
        return {"met": None, "text": f"B={b} not measured in this run"}
    o, a = ours[b], ap[b]
    t_ratio = a["seconds"] / o["seconds"]
    a_mem = a.get("peak_bytes") if a["rows_per_chunk"] is None else a.get("peak_bytes_unchunked_extrapolated")
    m_ratio = a_mem / o["peak_bytes"] if a_mem and o.get("peak_bytes") else None
    m_chunk_ratio = a["peak_bytes"] / o["peak_bytes"] if a["rows_per_chunk"] is not None else None
    growth = exponent(setting["ours"])
    met = t_ratio >= 50 and (m_ratio is not None and m_ratio >= 50)
    return {
        "met": met,
        "batch": b,
        "time_ratio": t_ratio,
        "memory_ratio": m_ratio,
        "memory_ratio_measured_chunked": m_chunk_ratio,
        "memory_ratio_extrapolated": a["rows_per_chunk"] is not None,
        "time_extrapolated": bool(a.get("time_extrapolated")),
        "ours_time_exponent": growth,
    }


def exponent(rows: list[dict], key: str = "seconds") -> float | None:
    """Log-log slope of `key` against the batch between the smallest and largest batch: 1 linear, 2 quadratic."""
    rows = sorted((r for r in rows if r.get(key)), key=lambda r: r["batch"])
    if len(rows) < 2:
        return None
    a, b = rows[0], rows[-1]
    return math.log(b[key] / a[key]) / math.log(b["batch"] / a["batch"])


def render(data: dict) -> str:
    out = []
    for s in data["settings"]:
        eq = s["equality"]
        out.append(f"**{s['title']}**\n")
        out.append(
            f"Same inputs at B = {eq['batch']}: loss ours {eq['loss_ours']:.6f}, all-pairs "
            f"{eq['loss_all_pairs']:.6f}, max abs diff {eq['max_abs_diff_loss']:.1e} (loss terms), "
            f"{eq['max_abs_diff_grad']:.1e} (every input and parameter gradient).\n"
        )
        ours = {r["batch"]: r for r in s["ours"]}
        ap = {r["batch"]: r for r in s["all_pairs"]}
        rows = []
        for b in sorted(set(ours) | set(ap)):
            o, a = ours.get(b), ap.get(b)
            a_note = ""
            a_mem = None
            if a is not None:
                if a["rows_per_chunk"] is None:
                    a_mem = C.mib(a.get("peak_bytes"))
                else:
                    a_note = f" (blocks of {a['rows_per_chunk']} x {b} pairs"
                    if a.get("time_extrapolated"):
                        a_note += (
                            f"; {a['blocks_measured']} of {a['blocks_total']} blocks run in "
                            f"{a['seconds_measured']:.3g} s, time x{a['blocks_total'] / a['blocks_measured']:.0f}"
                            " *extrapolated*"
                        )
                    a_note += ")"
                    a_mem = (
                        f"{C.mib(a['peak_bytes_unchunked_extrapolated']):,.0f} *extrapolated* "
                        f"({C.mib(a['peak_bytes']):,.0f} measured chunked)"
                    )
            rows.append(
                [
                    b,
                    None if o is None else o["seconds"],
                    None if o is None else C.mib(o.get("peak_bytes")),
                    None if a is None else f"{a['seconds']:.3g}{a_note}",
                    a_mem,
                    None if (a is None or o is None) else a["seconds"] / o["seconds"],
                    None
                    if (a is None or o is None or not o.get("peak_bytes"))
                    else (
                        (a.get("peak_bytes") if a["rows_per_chunk"] is None else a["peak_bytes_unchunked_extrapolated"])
                        / o["peak_bytes"]
                    ),
                ]
            )
        out.append(
            C.table(
                [
                    "B",
                    "ours s (fwd+bwd)",
                    "ours peak MiB",
                    "all-pairs s",
                    "all-pairs peak MiB",
                    "time ratio",
                    "memory ratio",
                ],
                rows,
            )
        )
        out.append("")
        bb = s.get("bar")
        if bb and bb.get("met") is not None:
            mem = f"{bb['memory_ratio']:.0f}x" if bb["memory_ratio"] else "–"
            notes = []
            if bb["memory_ratio_extrapolated"]:
                notes.append(
                    "the unchunked all-pairs memory at this batch is extrapolated (against the chunked run actually "
                    f"measured the ratio is {bb['memory_ratio_measured_chunked']:.1f}x)"
                )
            if bb.get("time_extrapolated"):
                notes.append("the all-pairs time at this batch is extrapolated from the row blocks run (see the table)")
            text = (
                f"at B = {bb['batch']} ours is {bb['time_ratio']:.0f}x faster and needs {mem} less memory "
                "(bar: 50x each)." + "".join(f" Note: {n}." for n in notes)
            )
            out.append(C.bar_line(bb["met"], text) + "\n")
        elif bb:
            common = sorted({r["batch"] for r in s["ours"]} & {r["batch"] for r in s["all_pairs"]})
            if common:
                b = common[-1]
                o = next(r for r in s["ours"] if r["batch"] == b)
                a = next(r for r in s["all_pairs"] if r["batch"] == b)
                out.append(
                    f"Not judged against the bar (B = 128 is out of reach for the all-pairs form with this encoder "
                    f"on 2 cores): at B = {b} ours is already {a['seconds'] / o['seconds']:.1f}x faster and "
                    f"{a['peak_bytes'] / o['peak_bytes']:.1f}x smaller, and the gap grows linearly with B.\n"
                )
            else:
                out.append(f"bar: {bb['text']}\n")
        unchunked = [r for r in s["all_pairs"] if r["rows_per_chunk"] is None]
        out.append(
            f"Growth with the batch (log-log slope between the smallest and largest batch, 1 = linear, "
            f"2 = quadratic): ours time {_fmt(exponent(s['ours']))}, memory "
            f"{_fmt(exponent(s['ours'], 'peak_bytes'))}; all-pairs time {_fmt(exponent(s['all_pairs']))}, "
            f"memory {_fmt(exponent(unchunked, 'peak_bytes'))} (unchunked sizes only).\n"
        )
    return "\n".join(out)


def _fmt(x):
    return "–" if x is None else f"{x:.2f}"


def main(argv=None) -> int:
    args = C.parser(__doc__.splitlines()[0]).parse_args(argv)
    device = C.device_of(args)
    torch.manual_seed(0)
    if args.quick:
        plan = [
            dict(
                name="f_cls",
                title="quick",
                temporal_input="f_cls",
                layers=1,
                batches=[4, 8],
                all_pairs_full=[4],
                all_pairs_chunked=[8],
                pair_chunk=16,
                chunk_pairs_measured=32,
                check_b=4,
            )
        ]
        repeats = args.repeats or 1
    else:
        plan = [
            dict(
                name="f_cls",
                temporal_input="f_cls",
                layers=4,
                batches=[8, 16, 32, 64, 128],
                all_pairs_full=[8, 16, 32],
                all_pairs_chunked=[64, 128],
                pair_chunk=256,
                chunk_pairs_measured=4096,
                check_b=8,
                title="Temporal encoder over the frames' [CLS] (seqTransf, 4 layers, `temporal.input=f_cls`); "
                "token weight predictors over all 32 words / 600 visual tokens",
            ),
            dict(
                name="v_tokens",
                temporal_input="v_tokens",
                layers=4,
                batches=[2, 4, 8, 16],
                all_pairs_full=[2, 4],
                all_pairs_chunked=[],
                pair_chunk=0,
                check_b=3,
                title="MSR-VTT's temporal encoder (seqTransf, 4 layers, over all 600 tokens of the 12 frames, "
                "`temporal.input=v_tokens`): every partial video goes through it, so this dominates; "
                "smaller batches (2 CPU cores)",
            ),
        ]
        if device.type == "cuda":
            plan[0]["all_pairs_full"], plan[0]["all_pairs_chunked"] = [8, 16, 32, 64], [128]
            plan[1].update(
                batches=[16, 32, 64, 128], all_pairs_full=[4, 8, 16], all_pairs_chunked=[32, 128], pair_chunk=256
            )
        repeats = args.repeats or 3
    settings = []
    for p in plan:
        title = p.pop("title")
        s = run_setting(device=device, repeats=repeats, **p)
        s["title"] = title
        s["bar"] = bar(s, 128 if not args.quick else 8)
        settings.append(s)
    data = C.result(
        TOPIC,
        args.quick,
        str(device),
        repeats,
        shapes={"D": D, "words": M, "frames": N, "tokens_per_frame": K1},
        settings=settings,
    )
    C.write_json(C.default_out(TOPIC, args), data)
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
