"""TPM-CL: our matched-pairs TPMCL against the authors' all-pairs formulation, blocked as their code runs it and
unblocked (the literal B x B batch); plus the factorised token-weight predictor against the concatenated form.

All get the same random features at MSR-VTT / ViT-B/32 shapes (12 frames x 50 tokens, 32 words, D = 512) fed to
the TPMCL module directly (no backbone); v_h is the temporal encoder's output on the full video, computed once
outside the timed region (the model computes it anyway for the contrastive loss). Measured: forward + backward of
the TPM loss, median wall time, and peak tensor memory (see _common.py for the method), plus the loss values and
gradients of every form (they must agree). The forms of one batch size are timed in interleaved rounds (ours,
blocked, unblocked, ours, ...), so their ratios are same-run ratios.

All-pairs, as the authors' `get_partial_similarity` / `_get_partial_output` / `_get_partial_loss` compute it
(alipay/Ant-Multi-Modal-Framework, prj/dmae_vtp/roi_univl/univl/model/dmae_utils.py): for every (text i, video j)
of the batch, predict the token weights (Eqs. 10-11), select and mask the tokens (Eqs. 12-14), build t_g, t_g^p
(Eqs. 15-16) and v_h^p (the temporal encoder over the partial video), score the five B x B matrices and keep their
diagonals for the margin loss (Eqs. 17-18).
* blocked (the authors' code as it runs): the B x B grid in blocks of 8 texts x 16 videos (their `step_size` and
  `vis_step_size`), each block's pairs computed together, the blocks' score matrices concatenated into B x B, the
  loss on the diagonals and ONE backward at the end -- so every block's autograd graph is alive at the backward:
  the blocks bound the forward's transient tensors, not the activations saved for backward;
* unblocked (the literal all-pairs formulation): all B^2 pairs in one batch. Where it does not fit in memory it is
  not run, and its peak is extrapolated (per-pair peak at the largest unblocked size x B^2), labelled as such.
Both are written here with the library's modules (pair_terms below); two liberties, both in the reference's
favour: the masks use the library's vectorised `informative_token_mask`, and the video token-weight predictor runs
without autograd as in TPMCL.partial_samples (its output only feeds the discrete mask; docs/fidelity.md D14) and
with the library's factorised first layer; the authors' code also builds the unused visual-global scores
(t2vg, t2vgh), which are left out. The ratios therefore measure the matched-pairs formulation alone.

Token-weight predictor (CrossModalTokenWeightPredictor): on the video side (one query, t_cls) the library's first
layer is factorised (LayerNorm statistics from each half's sums, the first Linear split; the (B, T, 2D) joint of
Eq. 21 is never built); the text side keeps the joint (factorising it measured no faster), so its "factorised"
row is the library's path and should equal the concatenated one. At
ViT-B/32 sizes (B = 32, D = 512; video side: 600 tokens, 1 query, under no_grad as TPMCL runs it; text side:
32 words, 12 frames, forward + backward) it is timed interleaved against the concatenated form written here
(joint = [tokens; mix @ queries], then predictor.mlp, then the masked softmax), with the max abs difference of the
weights and whether the Adaptive Token Selector's masks (informative_token_mask, tau 0.6) are identical. At B = 32
the parts of TPMCL.forward (the predictors, the temporal pass over the partial video) are timed alone on the same
inputs, interleaved with the forward, for their share of it.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from dmae_tpm.features import TextFeatures, VideoFeatures  # noqa: E402
from dmae_tpm.methods.dmae_tpm.adaptive_token_selector import informative_token_mask  # noqa: E402
from dmae_tpm.methods.dmae_tpm.dmae import Similarity, SimilarityConfig  # noqa: E402
from dmae_tpm.methods.dmae_tpm.token_weight_predictor import (  # noqa: E402
    text_token_weights,
    video_token_weights,
    weighted_global,
)
from dmae_tpm.methods.dmae_tpm.tpm_cl import TPMCL, TPMConfig, triplet_partial_margin  # noqa: E402
from dmae_tpm.temporal_encoder import TemporalConfig, TemporalEncoder  # noqa: E402
from dmae_tpm.token_interaction import masked_softmax  # noqa: E402

TOPIC = "tpm_cl"
D, M, N, K1 = 512, 32, 12, 50  # ViT-B/32: 49 patches + [CLS] per frame; MSR-VTT: 32 words, 12 frames
TEXT_BLOCK, VIDEO_BLOCK = 8, 16  # get_partial_similarity: step_size (texts) x vis_step_size (videos)
KINDS = ("ours", "blocked", "unblocked")
LABELS = {
    "ours": "ours (matched pairs)",
    "blocked": "all-pairs, blocked (authors' code as it runs)",
    "unblocked": "all-pairs, unblocked (literal B x B batch)",
}


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


def _amp(leaves, amp: bool):
    return C.autocast(leaves["v_h"].device) if amp else contextlib.nullcontext()


def _values(terms: dict) -> dict:
    out = {k: float(terms[k].detach()) for k in ("trpl1", "trpl2", "trpl3")}
    out["loss"] = out["trpl1"] + out["trpl2"] + out["trpl3"]
    return out


def matched_pairs(tpm, temporal, score, leaves, t_mask, frame_mask, amp: bool = True) -> dict:
    """Ours: TPMCL.forward + backward on the B matched pairs."""
    text, video = features(leaves, t_mask, frame_mask)
    with _amp(leaves, amp):
        out = tpm(text, video, leaves["v_h"], temporal, score)
    out["loss"].backward()
    return _values(out)


def pair_terms(tpm, temporal, score, text, video, v_h, ti, vj) -> dict:
    """Eqs. 10-17 for the pairs (text ti[p], video vj[p]), each pair on its own: the token weights of the pair, its
    masks, t_g, t_g^p and v_h^p, and the five scores. Returns term -> (full, partial) scores, each (P,)."""
    tau = tpm.cfg.threshold
    fm = video.frame_mask[vj]
    t_tok, t_msk = text.t_tokens[ti], text.t_mask[ti]
    w_t = tpm.text_predictor(video.f_cls[vj], fm, t_tok, t_msk)  # (P, M)  Eq. 10 for every pair
    v_tok = video.v_tokens[vj]  # (P, N*K1, D)
    with torch.no_grad():  # as TPMCL.partial_samples: w_v only feeds the discrete mask (fidelity.md D14)
        ones = torch.ones(len(ti), 1, dtype=torch.bool, device=ti.device)
        w_v = tpm.video_predictor(text.t_cls[ti][:, None], ones, v_tok, video.v_mask[vj])  # (P, N*K1)  Eq. 11
    b_t, b_v = informative_token_mask(w_t, tau), informative_token_mask(w_v, tau)  # Eq. 14
    words = t_tok if tpm.cfg.text_global_norm == "both" else F.normalize(t_tok, dim=-1)  # as partial_samples
    vt_p = v_tok * b_v[..., None]  # Eq. 13
    partial = {
        "t_g": weighted_global(words, w_t),  # Eq. 15
        "t_g_p": weighted_global(words * b_t[..., None], w_t),  # Eqs. 12, 16
        "v_h_p": temporal(VideoFeatures(vt_p[:, ::K1], vt_p, fm)),  # (P, N, D) v_h^p of every pair
    }
    return tpm.eq17_pairs(text.t_cls[ti], partial, v_h[vj], fm, score)  # the library's scoring of Eq. 17


def _grid(terms: dict, rows: int, cols: int) -> dict:
    return {k: (full.reshape(rows, cols), part.reshape(rows, cols)) for k, (full, part) in terms.items()}


def _diagonal_loss(mats: dict, margin: float) -> dict:
    """_get_partial_loss: the margin loss on the diagonals of the B x B (full, partial) matrices (Eqs. 17-18)."""
    return {k: triplet_partial_margin(full.diagonal(), part.diagonal(), margin) for k, (full, part) in mats.items()}


def all_pairs_unblocked(tpm, temporal, score, leaves, t_mask, frame_mask, amp: bool = True) -> dict:
    """The literal all-pairs formulation: all B^2 pairs in one batch, the diagonals, one backward."""
    b = leaves["t_cls"].shape[0]
    dev = t_mask.device
    text, video = features(leaves, t_mask, frame_mask)
    ti = torch.arange(b, device=dev).repeat_interleave(b)  # pair p = (i, j), i-major
    vj = torch.arange(b, device=dev).repeat(b)
    with _amp(leaves, amp):
        mats = _grid(pair_terms(tpm, temporal, score, text, video, leaves["v_h"], ti, vj), b, b)
        terms = _diagonal_loss(mats, tpm.cfg.margin)
    (terms["trpl1"] + terms["trpl2"] + terms["trpl3"]).backward()  # Eq. 18
    return _values(terms)


def all_pairs_blocked(
    tpm, temporal, score, leaves, t_mask, frame_mask, amp: bool = True, blocks=(TEXT_BLOCK, VIDEO_BLOCK), max_rows=None
) -> dict:
    """The authors' get_partial_similarity as it runs: blocks of `blocks` = (texts, videos) pairs, each block's
    score matrices concatenated along the videos, the rows along the texts, the margin loss on the diagonals of the
    B x B result and one backward at the end (the graph of every block is alive until then).

    max_rows: only the first max_rows rows of blocks (text blocks, each against every video block) run, and the
    loss is that of their diagonal entries: the same work per block, for a timing / peak to scale from."""
    b = leaves["t_cls"].shape[0]
    dev = t_mask.device
    text, video = features(leaves, t_mask, frame_mask)
    t_step, v_step = blocks
    with _amp(leaves, amp):
        rows = []
        for t0 in list(range(0, b, t_step))[:max_rows]:
            ts = torch.arange(t0, min(b, t0 + t_step), device=dev)
            row = []
            for v0 in range(0, b, v_step):
                vs = torch.arange(v0, min(b, v0 + v_step), device=dev)
                ti, vj = ts.repeat_interleave(len(vs)), vs.repeat(len(ts))  # the block's pairs, text-major
                terms = pair_terms(tpm, temporal, score, text, video, leaves["v_h"], ti, vj)
                row.append(_grid(terms, len(ts), len(vs)))
            rows.append({k: tuple(torch.cat([blk[k][i] for blk in row], dim=1) for i in (0, 1)) for k in row[0]})
        mats = {k: tuple(torch.cat([r[k][i] for r in rows], dim=0) for i in (0, 1)) for k in rows[0]}  # (B, B)
        terms = _diagonal_loss(mats, tpm.cfg.margin)
    (terms["trpl1"] + terms["trpl2"] + terms["trpl3"]).backward()  # Eq. 18, one backward for every block
    return _values(terms)


FORMS = {"ours": matched_pairs, "blocked": all_pairs_blocked, "unblocked": all_pairs_unblocked}


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


def check_equal(tpm, temporal, sim, device, kind: str, b: int, blocks) -> dict:
    """Same inputs through ours and `kind` (fp32): loss terms and every input/parameter gradient must agree."""
    leaves, t_mask, fm = make_inputs(b, temporal, device, seed=1)
    score, mods = pair_score(sim), (tpm, temporal, sim)
    zero(leaves, mods)
    ours = matched_pairs(tpm, temporal, score, leaves, t_mask, fm, amp=False)
    g_ours = grads_of(leaves, mods)
    zero(leaves, mods)
    extra = {"blocks": blocks} if kind == "blocked" else {}
    theirs = FORMS[kind](tpm, temporal, score, leaves, t_mask, fm, amp=False, **extra)
    g_theirs = grads_of(leaves, mods)
    zero(leaves, mods)
    loss_diff = max(abs(ours[k] - theirs[k]) for k in ours)
    grad_diff = max(float((a - c).abs().max()) for a, c in zip(g_ours, g_theirs, strict=True))
    grad_scale = max(float(a.abs().max()) for a in g_ours)
    print(
        f"  {kind} B={b}: loss ours {ours['loss']:.6f} {kind} {theirs['loss']:.6f}  max |diff| loss {loss_diff:.2e}"
        f"  grads {grad_diff:.2e} (max |grad| {grad_scale:.2e})",
        flush=True,
    )
    assert loss_diff < 1e-4, f"matched-pairs and {kind} all-pairs TPM-CL losses differ by {loss_diff}"
    assert grad_diff < 1e-4 * max(1.0, grad_scale), f"gradients of ours and {kind} differ by {grad_diff}"
    return {
        "kind": kind,
        "batch": b,
        "blocks": list(blocks) if kind == "blocked" else None,
        "loss_ours": ours["loss"],
        "loss_ref": theirs["loss"],
        "max_abs_diff_loss": loss_diff,
        "max_abs_diff_grad": grad_diff,
        "max_abs_grad": grad_scale,
    }


def measure_batch(
    b, kinds, tpm, temporal, sim, device, repeats, blocks, single_from: int, blocked_rows=None
) -> list[dict]:
    """Forward + backward of each form in `kinds` at batch b on the same inputs, in interleaved rounds (ours,
    blocked, unblocked, ours, ...). An all-pairs form at b >= single_from (tens of seconds a call) runs once, in
    the first round, with no warm-up; ours and the cheap forms get a warm-up call and `repeats` rounds. Then
    one (untimed) run of each for its peak memory. blocked_rows: the blocked form runs only its first
    blocked_rows rows of blocks (all_pairs_blocked's max_rows); its time is then scaled by rows / blocked_rows
    (every row is the same work) and marked extrapolated, its peak is that of the rows run (see run_setting)."""
    leaves, t_mask, fm = make_inputs(b, temporal, device)
    score, mods = pair_score(sim), (tpm, temporal, sim)
    last: dict[str, dict] = {}
    rows_total = math.ceil(b / blocks[0])
    rows_run = rows_total if blocked_rows is None else min(rows_total, blocked_rows)

    def step(kind):
        zero(leaves, mods)
        extra = {"blocks": blocks, "max_rows": rows_run} if kind == "blocked" else {}
        last[kind] = FORMS[kind](tpm, temporal, score, leaves, t_mask, fm, **extra)

    single = {k: k != "ours" and b >= single_from for k in kinds}
    for k in kinds:
        if not single[k]:
            step(k)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(repeats):
        for k in kinds:
            if single[k] and r > 0:
                continue
            C.sync(device)
            t0 = time.perf_counter()
            step(k)
            C.sync(device)
            times[k].append(time.perf_counter() - t0)
    out = []
    for k in kinds:
        part = k == "blocked" and rows_run < rows_total
        scale = rows_total / rows_run if part else 1.0
        row = {
            "kind": k,
            "batch": b,
            "pairs": b if k == "ours" else b * b,
            "seconds_measured": C.median(times[k]),
            "seconds": C.median(times[k]) * scale,
            "time_extrapolated": part,
            "times": times[k],
            "single": single[k],
            "loss": None if part else last[k]["loss"],
        }
        if k == "blocked":
            per_row = math.ceil(b / blocks[1])
            row.update(
                blocks=list(blocks),
                n_blocks=rows_total * per_row,
                blocks_run=rows_run * per_row,
                pairs_run=min(b, rows_run * blocks[0]) * b,
            )
        row["peak_bytes"] = C.peak_bytes(lambda k=k: step(k), device)  # of what ran (the rows run, if a subset)
        note = f" ({rows_run} of {rows_total} rows of blocks run, time x{scale:.0f})" if part else ""
        print(f"  {k:9s} B={b:4d}: {row['seconds']:.3f} s  peak {C.mib(row['peak_bytes'])} MiB{note}", flush=True)
        out.append(row)
    zero(leaves, mods)
    return out


def forward_shares(tpm, temporal, sim, device, b: int, repeats: int) -> dict:
    """TPMCL.forward on B matched pairs (no backward) and its parts timed alone on the same inputs, interleaved."""
    leaves, t_mask, fm = make_inputs(b, temporal, device)
    text, video = features(leaves, t_mask, fm)
    score = pair_score(sim)
    with torch.no_grad():
        p = tpm.partial_samples(text, video, temporal)
    vt_p = video.v_tokens * p["b_v"][..., None]
    partial_video = VideoFeatures(vt_p[:, ::K1].detach(), vt_p.detach(), fm)

    def video_predictor():
        with torch.no_grad():
            return video_token_weights(tpm.video_predictor, text.t_cls, video.v_tokens, video.v_mask)

    parts = {
        "TPMCL.forward": lambda: tpm(text, video, leaves["v_h"], temporal, score),
        "video token-weight predictor (600 tokens, no_grad as in partial_samples)": video_predictor,
        "text token-weight predictor (32 words)": lambda: text_token_weights(
            tpm.text_predictor, video.f_cls, fm, text.t_tokens, text.t_mask
        ),
        "temporal encoder over the partial video (v_h^p)": lambda: temporal(partial_video),
    }
    times = {k: [] for k in parts}
    with C.autocast(device):
        for fn in parts.values():
            fn()
        for _ in range(repeats):
            for k, fn in parts.items():
                C.sync(device)
                t0 = time.perf_counter()
                fn()
                C.sync(device)
                times[k].append(time.perf_counter() - t0)
    med = {k: C.median(v) for k, v in times.items()}
    total = med["TPMCL.forward"]
    rows = [{"part": k, "seconds": s, "share": s / total, "times": times[k]} for k, s in med.items()]
    for r in rows:
        print(f"  forward share B={b}: {r['part']}: {1e3 * r['seconds']:.1f} ms ({100 * r['share']:.0f}%)")
    zero(leaves, (tpm, temporal, sim))
    return {"batch": b, "repeats": repeats, "rows": rows}


# ----- token-weight predictor: factorised (library) against the concatenated joint ------------------------------


def concatenated_weights(predictor, queries, query_mask, tokens, token_mask) -> torch.Tensor:
    """The predictor with the (B, T, 2D) joint of Eq. 21 built: [tokens; mix @ queries] -> mlp -> masked softmax."""
    assert predictor.normalize == "softmax"
    t_len, q_len = tokens.shape[1], queries.shape[1]
    queries = queries * query_mask.unsqueeze(-1).to(queries.dtype)
    mixed = torch.einsum("tq,bqd->btd", predictor.mix[:t_len, :q_len], queries)  # Eq. 20
    joint = torch.cat([tokens, mixed], dim=-1)  # (B, T, 2D)  Eq. 21
    return masked_softmax(predictor.mlp(joint).squeeze(-1), token_mask.bool())


def factorised_weights(predictor, queries, query_mask, tokens, token_mask) -> torch.Tensor:
    return predictor(queries, query_mask, tokens, token_mask)  # the library (first_layer)


PREDICTOR_FORMS = {"factorised": factorised_weights, "concatenated": concatenated_weights}


def predictor_bench(device, b: int, repeats: int, tau: float = 0.6) -> dict:
    """Both sides' predictors at ViT-B/32 sizes, both forms on the same inputs, interleaved rounds."""
    torch.manual_seed(0)
    tpm = TPMCL(TPMConfig(), D, M, N, K1).to(device)
    with torch.no_grad():  # LayerNorm affine away from (1, 0), so that its split halves are exercised
        for pred in (tpm.text_predictor, tpm.video_predictor):
            pred.mlp[0].weight.normal_(1.0, 0.1)
            pred.mlp[0].bias.normal_(0.0, 0.1)
    g = torch.Generator().manual_seed(3)
    n_words = torch.randint(4, M - 2, (b,), generator=g)
    t_mask = (torch.arange(M)[None] >= 1) & (torch.arange(M)[None] <= n_words[:, None])
    frame_mask = torch.ones(b, N, dtype=torch.bool)
    frame_mask[::5, 8:] = False  # every fifth video 8 real frames of 12
    v_mask = frame_mask.repeat_interleave(K1, dim=1)
    sides = {
        "video": dict(  # Eq. 11: t_cls (1 query) over the 600 visual tokens; TPMCL runs it under no_grad
            predictor=tpm.video_predictor,
            queries=torch.randn(b, 1, D, generator=g),
            query_mask=torch.ones(b, 1, dtype=torch.bool),
            tokens=torch.randn(b, N * K1, D, generator=g),
            token_mask=v_mask,
            grad=False,
        ),
        "text": dict(  # Eq. 10: the 12 frames' f_cls over the 32 words; trained (forward + backward)
            predictor=tpm.text_predictor,
            queries=torch.randn(b, N, D, generator=g),
            query_mask=frame_mask,
            tokens=torch.randn(b, M, D, generator=g),
            token_mask=t_mask,
            grad=True,
        ),
    }
    out = {"batch": b, "tau": tau, "repeats": repeats, "sides": []}
    for side, spec in sides.items():
        rec = _predictor_side(side, spec, device, repeats, tau, torch.randn(b, spec["tokens"].shape[1], generator=g))
        out["sides"].append(rec)
        f, c = rec["rows"]
        print(
            f"  predictor {side}: factorised {1e3 * f['seconds']:.2f} ms peak {C.mib(f['peak_bytes'])} MiB, "
            f"concatenated {1e3 * c['seconds']:.2f} ms peak {C.mib(c['peak_bytes'])} MiB; max |dw| "
            f"{rec['max_abs_diff_weights']:.1e}; masks identical {rec['masks_identical']} "
            f"({rec['mask_entries_differing']} of {rec['mask_entries']} differ)",
            flush=True,
        )
    return out


def _predictor_side(side: str, spec: dict, device, repeats: int, tau: float, probe: torch.Tensor) -> dict:
    pred = spec["predictor"]
    q, qm = spec["queries"].to(device), spec["query_mask"].to(device)
    tok, tm = spec["tokens"].to(device), spec["token_mask"].to(device)
    probe = probe.to(device)  # backward of <weights, probe>: a random direction through every weight
    if spec["grad"]:
        q.requires_grad_(True)
        tok.requires_grad_(True)
    weights: dict[str, torch.Tensor] = {}
    grads: dict[str, list[torch.Tensor]] = {}

    def call(form):
        with contextlib.nullcontext() if spec["grad"] else torch.no_grad(), C.autocast(device):
            w = PREDICTOR_FORMS[form](pred, q, qm, tok, tm)
        if spec["grad"]:
            q.grad = tok.grad = None
            pred.zero_grad(set_to_none=True)
            (w.float() * probe).sum().backward()
            grads[form] = [q.grad, tok.grad, *(p.grad for p in pred.parameters())]
        weights[form] = w.detach().float()

    for form in PREDICTOR_FORMS:
        call(form)  # warm-up
    times: dict[str, list[float]] = {form: [] for form in PREDICTOR_FORMS}
    for _ in range(repeats):
        for form in PREDICTOR_FORMS:
            C.sync(device)
            t0 = time.perf_counter()
            call(form)
            C.sync(device)
            times[form].append(time.perf_counter() - t0)
    rows = [
        {
            "form": form,
            "seconds": C.median(times[form]),
            "times": times[form],
            "peak_bytes": C.peak_bytes(lambda form=form: call(form), device),
        }
        for form in PREDICTOR_FORMS
    ]
    w_f, w_c = weights["factorised"], weights["concatenated"]
    m_f, m_c = informative_token_mask(w_f, tau), informative_token_mask(w_c, tau)
    real = float(tm.sum())
    rec = {
        "side": side,
        "queries": q.shape[1],
        "tokens": tok.shape[1],
        "grad": spec["grad"],
        "rows": rows,
        "max_abs_diff_weights": float((w_f - w_c).abs().max()),
        "max_abs_weight": float(w_c.abs().max()),
        "masks_identical": bool(torch.equal(m_f, m_c)),
        "mask_entries_differing": int((m_f != m_c).sum()),
        "mask_entries": int(m_f.numel()),
        "real_tokens": int(real),
        "masked_frac": float(((1 - m_f) * tm).sum() / real),
    }
    if spec["grad"]:
        rec["max_abs_diff_grad"] = max(
            float((a - c).abs().max())
            for a, c in zip(grads["factorised"], grads["concatenated"], strict=True)
            if a is not None and c is not None
        )
    return rec


# ----- one setting, the bar, the rendering ----------------------------------------------------------------------


def run_setting(
    name,
    temporal_input,
    layers,
    batches,
    blocked,
    unblocked,
    checks,
    device,
    repeats,
    blocks=(TEXT_BLOCK, VIDEO_BLOCK),
    single_from=10**9,
    shares_b=None,
    blocked_subset=None,
) -> dict:
    """blocked_subset {B: rows}: at those batches the blocked form runs only its first `rows` rows of blocks (its
    whole graph would not fit in memory); its full-grid peak is then extrapolated (see below)."""
    print(f"[{name}] temporal seqTransf over {temporal_input}, {layers} layers; blocks {blocks[0]} x {blocks[1]}")
    tpm, temporal, sim = build(temporal_input, layers, device)
    equality = [check_equal(tpm, temporal, sim, device, kind, b, blocks) for kind, b in checks]
    blocked_subset = blocked_subset or {}
    rows = []
    for b in batches:
        on = {"ours": True, "blocked": b in blocked or b in blocked_subset, "unblocked": b in unblocked}
        kinds = [k for k in KINDS if on[k]]
        rows += measure_batch(
            b, kinds, tpm, temporal, sim, device, repeats, blocks, single_from, blocked_subset.get(b)
        )
    # the blocked peak where only some rows of blocks ran: every further block keeps its saved activations until the
    # one backward, so the full-grid peak = the peak of the rows run + (pairs not run) x the growth per pair of the
    # blocked peaks measured on whole grids at the two largest such batches (labelled extrapolated)
    whole = sorted((r for r in rows if r["kind"] == "blocked" and not r["time_extrapolated"]), key=lambda r: r["batch"])
    for r in rows:
        if r["kind"] == "blocked" and r["time_extrapolated"]:
            if len(whole) >= 2 and whole[-1]["pairs"] > whole[-2]["pairs"]:
                a, c = whole[-2], whole[-1]
                per_pair = (c["peak_bytes"] - a["peak_bytes"]) / (c["pairs"] - a["pairs"])
                r["peak_bytes_run"] = r["peak_bytes"]
                r["peak_bytes"] = r["peak_bytes_run"] + per_pair * (r["pairs"] - r["pairs_run"])
                r["peak_extrapolated"] = {"per_pair_bytes": per_pair, "from_batches": [a["batch"], c["batch"]]}
            else:
                r["peak_bytes_run"], r["peak_bytes"] = r["peak_bytes"], None
    # the unblocked peak where it was not run: per-pair peak at the largest unblocked size x B^2 (labelled)
    ran = [r for r in rows if r["kind"] == "unblocked"]
    extrapolated = []
    if ran:
        ref = max(ran, key=lambda r: r["batch"])
        per_pair = ref["peak_bytes"] / ref["batch"] ** 2
        for b in batches:
            if b not in unblocked and b > ref["batch"]:
                extrapolated.append({"batch": b, "peak_bytes": per_pair * b * b, "from_batch": ref["batch"]})
    shares = forward_shares(tpm, temporal, sim, device, shares_b, max(3, repeats)) if shares_b else None
    return {
        "name": name,
        "temporal_input": temporal_input,
        "layers": layers,
        "blocks": list(blocks),
        "equality": equality,
        "rows": rows,
        "unblocked_extrapolated": extrapolated,
        "forward_shares": shares,
    }


def _by_kind(s: dict) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {k: {} for k in KINDS}
    for r in s["rows"]:
        out[r["kind"]][r["batch"]] = r
    return out


def _ratio(ref, ours, key):
    return ref[key] / ours[key] if ref and ours and ref.get(key) and ours.get(key) else None


def bar(setting: dict, b: int = 128) -> dict:
    """The bar (50x time and memory at B = 128) against the authors' code as it runs (blocked); the unblocked
    memory ratio beside it (measured where it ran, else extrapolated). Extrapolated figures are flagged."""
    k = _by_kind(setting)
    o, bl = k["ours"].get(b), k["blocked"].get(b)
    if o is None or bl is None:
        return {"met": None, "text": f"B={b} not measured against the blocked form in this run"}
    t_ratio, m_ratio = _ratio(bl, o, "seconds"), _ratio(bl, o, "peak_bytes")
    un = k["unblocked"].get(b)
    ext = next((e for e in setting["unblocked_extrapolated"] if e["batch"] == b), None)
    un_mem = un["peak_bytes"] if un else (ext["peak_bytes"] if ext else None)
    return {
        "met": bool(t_ratio and m_ratio and t_ratio >= 50 and m_ratio >= 50),
        "batch": b,
        "time_ratio_blocked": t_ratio,
        "memory_ratio_blocked": m_ratio,
        "time_blocked_extrapolated": bool(bl.get("time_extrapolated")),
        "memory_blocked_extrapolated": "peak_extrapolated" in bl,
        "memory_ratio_blocked_rows_run": _ratio({"peak_bytes": bl.get("peak_bytes_run")}, o, "peak_bytes"),
        "time_ratio_unblocked": _ratio(un, o, "seconds") if un else None,
        "memory_ratio_unblocked": un_mem / o["peak_bytes"] if un_mem and o.get("peak_bytes") else None,
        "memory_unblocked_extrapolated": un is None and ext is not None,
    }


def exponent(rows: list[dict], key: str = "seconds") -> float | None:
    """Log-log slope of `key` against the batch between the smallest and largest batch: 1 linear, 2 quadratic."""
    rows = sorted((r for r in rows if r.get(key)), key=lambda r: r["batch"])
    if len(rows) < 2:
        return None
    a, b = rows[0], rows[-1]
    return math.log(b[key] / a[key]) / math.log(b["batch"] / a["batch"])


def _fmt(x):
    return "–" if x is None else f"{x:.2f}"


def _x(x, note: str = "") -> str:
    return "–" if x is None else f"{C.fmt(float(x))}x{note}"


def _mib(x) -> str:
    return C.fmt(C.mib(x))


def render_setting(s: dict, ram_gib: float | None = None) -> list[str]:
    out = [f"**{s['title']}**\n"]
    tb, vb = s["blocks"]
    for e in s["equality"]:
        what = (
            f"blocked ({e['blocks'][0]} x {e['blocks'][1]} blocks)" if e["kind"] == "blocked" else "unblocked all-pairs"
        )
        out.append(
            f"Same inputs, fp32, ours against {what} at B = {e['batch']}: loss ours {e['loss_ours']:.6f}, "
            f"all-pairs {e['loss_ref']:.6f}, max abs diff {e['max_abs_diff_loss']:.1e} (loss terms), "
            f"{e['max_abs_diff_grad']:.1e} (every input and parameter gradient)."
        )
    out.append("")
    k = _by_kind(s)
    ext = {e["batch"]: e for e in s["unblocked_extrapolated"]}
    ext_mark = " *extrapolated*"
    rows = []
    for b in sorted(k["ours"]):
        o, bl, un = k["ours"][b], k["blocked"].get(b), k["unblocked"].get(b)
        bl_s = bl_mem = bl_t_ratio = bl_m_ratio = None
        if bl is not None:
            if bl["time_extrapolated"]:
                bl_s = (
                    f"{C.fmt(bl['seconds'])}{ext_mark} ({bl['blocks_run']} of {bl['n_blocks']} blocks run in "
                    f"{C.fmt(bl['seconds_measured'])} s, x{bl['n_blocks'] / bl['blocks_run']:.0f})"
                )
            else:
                bl_s = f"{C.fmt(bl['seconds'])} ({bl['n_blocks']} block{'s' if bl['n_blocks'] > 1 else ''})"
            if "peak_bytes_run" in bl:
                bl_mem = (
                    (f"{_mib(bl['peak_bytes'])}{ext_mark} " if bl["peak_bytes"] else "")
                    + f"({_mib(bl['peak_bytes_run'])} measured for the {bl['blocks_run']} blocks run)"
                )
            else:
                bl_mem = _mib(bl["peak_bytes"])
            bl_t_ratio = _x(_ratio(bl, o, "seconds"), ext_mark if bl["time_extrapolated"] else "")
            bl_m_ratio = _x(_ratio(bl, o, "peak_bytes"), ext_mark if "peak_extrapolated" in bl else "")
        un_s = un_mem = un_t_ratio = un_m_ratio = None
        if un is not None:
            un_s, un_mem = C.fmt(un["seconds"]), _mib(un["peak_bytes"])
            un_t_ratio, un_m_ratio = _x(_ratio(un, o, "seconds")), _x(_ratio(un, o, "peak_bytes"))
        elif b in ext:
            fits = ram_gib is None or ext[b]["peak_bytes"] < 0.8 * ram_gib * 2**30
            un_s = "not run" if fits else "not run (does not fit in RAM)"
            un_mem = f"{_mib(ext[b]['peak_bytes'])}{ext_mark}"
            un_m_ratio = _x(ext[b]["peak_bytes"] / o["peak_bytes"], ext_mark)
        rows.append(
            [b, o["seconds"], C.mib(o["peak_bytes"]), bl_s, bl_mem, un_s, un_mem, bl_t_ratio, bl_m_ratio, un_t_ratio,
             un_m_ratio]
        )
    out.append(
        C.table(
            [
                "B",
                "ours s (fwd+bwd)",
                "ours peak MiB",
                f"blocked s ({tb} x {vb} blocks)",
                "blocked peak MiB",
                "unblocked s",
                "unblocked peak MiB",
                "time blocked / ours",
                "memory blocked / ours",
                "time unblocked / ours",
                "memory unblocked / ours",
            ],
            rows,
        )
    )
    out.append("")
    notes = [
        "*blocked* = the authors' `get_partial_similarity` as it runs: blocks of "
        f"{tb} texts x {vb} videos, each block's pairs computed together, the blocks' score matrices concatenated "
        "into B x B and one backward at the end, so every block's autograd graph is alive at the backward (the "
        "blocks bound the forward's transient tensors, not the activations saved for backward); at "
        f"B <= {min(tb, vb)} the whole grid is one block. *unblocked* = all B^2 pairs in one batch."
    ]
    singles = sorted(r["batch"] for r in s["rows"] if r["kind"] != "ours" and r.get("single"))
    if singles:
        notes.append(
            "All-pairs times at B = " + ", ".join(map(str, sorted(set(singles)))) + " are a single call each."
        )
    for r in sorted(k["blocked"].values(), key=lambda r: r["batch"]):
        if r["time_extrapolated"]:
            whole = r.get("peak_bytes")
            why = (
                "the blocked form's whole graph does not fit in this machine's memory"
                if ram_gib is None or whole is None or whole > 0.8 * ram_gib * 2**30
                else "the blocked form is not run whole in this run"
            )
            text = (
                f"At B = {r['batch']} {why}: only "
                f"its first {r['blocks_run']} of {r['n_blocks']} blocks ({r['pairs_run']:,} of {r['pairs']:,} pairs, "
                "whole rows of blocks, one backward) run, so its time is the measured time x "
                f"{r['n_blocks'] / r['blocks_run']:.0f} (every block is the same work) and *extrapolated*"
            )
            if "peak_extrapolated" in r:
                pe = r["peak_extrapolated"]
                text += (
                    ", and its peak is the measured peak of the blocks run + the pairs not run x "
                    f"{pe['per_pair_bytes'] / 2**20:.2f} MiB per pair (the growth of the blocked peak measured on "
                    f"whole grids from B = {pe['from_batches'][0]} to {pe['from_batches'][1]}: the activations each "
                    "pair keeps for the backward), also *extrapolated*"
                )
            notes.append(text + ".")
    if ext:
        e = next(iter(ext.values()))
        notes.append(
            "Unblocked peaks marked *extrapolated* were not measured (the unblocked batch was not run there): they "
            f"are the per-pair peak measured at B = {e['from_batch']} x B^2."
        )
    out.append(" ".join(notes) + "\n")
    bb = s.get("bar")
    if bb and bb.get("met") is not None:
        ex = [
            what
            for what, on in (
                ("the blocked time", bb.get("time_blocked_extrapolated")),
                ("the blocked peak", bb.get("memory_blocked_extrapolated")),
            )
            if on
        ]
        basis = (
            f"{' and '.join(ex)} *extrapolated* as the table says" if ex else "both measured"
        )
        mem = "–" if bb["memory_ratio_blocked"] is None else f"{bb['memory_ratio_blocked']:.0f}x"
        text = (
            f"at B = {bb['batch']} ours is {bb['time_ratio_blocked']:.0f}x faster and needs {mem} less memory than "
            f"the authors' blocked code ({basis}; bar: 50x each)."
        )
        if bb.get("memory_ratio_blocked_rows_run"):
            text += (
                f" Against the blocks actually run at that batch the measured memory ratio is "
                f"{bb['memory_ratio_blocked_rows_run']:.1f}x."
            )
        if bb.get("memory_ratio_unblocked"):
            text += (
                f" Against the unblocked formulation the memory ratio is {bb['memory_ratio_unblocked']:.0f}x"
                + (" (*extrapolated*: the unblocked batch was not run)" if bb["memory_unblocked_extrapolated"] else "")
                + "."
            )
        out.append(C.bar_line(bb["met"], text) + "\n")
    elif bb:
        both = [b for b in sorted(k["ours"]) if b in k["unblocked"] or b in k["blocked"]]
        if both:
            b = both[-1]
            ref = k["blocked"].get(b) or k["unblocked"][b]
            o = k["ours"][b]
            out.append(
                "Not judged against the bar (B = 128 is out of reach for the all-pairs form with this encoder on "
                f"2 cores): at B = {b} ours is already {_ratio(ref, o, 'seconds'):.1f}x faster and "
                f"{_ratio(ref, o, 'peak_bytes'):.1f}x smaller, and the gap grows linearly with B.\n"
            )
        else:
            out.append(f"bar: {bb['text']}\n")
    measured = {kind: [r for r in k[kind].values() if not r.get("time_extrapolated")] for kind in KINDS}
    out.append(
        "Growth with the batch (log-log slope between the smallest and largest batch, 1 = linear, 2 = quadratic): "
        + "; ".join(
            f"{kind} time {_fmt(exponent(measured[kind]))}, memory {_fmt(exponent(measured[kind], 'peak_bytes'))}"
            for kind in KINDS
            if len(measured[kind]) >= 2
        )
        + " (measured sizes only).\n"
    )
    sh = s.get("forward_shares")
    if sh:
        out.append(
            f"Parts of `TPMCL.forward` at B = {sh['batch']} (matched pairs, this setting, no backward), each timed "
            f"alone on the same inputs, interleaved with the forward ({sh['repeats']} rounds, medians):\n"
        )
        out.append(
            C.table(
                ["part", "ms", "share of TPMCL.forward"],
                [[r["part"], 1e3 * r["seconds"], f"{100 * r['share']:.0f}%"] for r in sh["rows"]],
            )
        )
        out.append("")
    return out


def render_predictor(p: dict) -> list[str]:
    out = [
        f"**Token-weight predictor at ViT-B/32 sizes (B = {p['batch']}, D = {D}): the library's path (\"factorised\": "
        "`CrossModalTokenWeightPredictor.first_layer` on the video side; the text side keeps the joint, which "
        "factorised measured no faster) against the concatenated joint (`[tokens; mix @ queries]`, then `mlp`, then "
        "the masked softmax; written in the benchmark)**\n",
        f"Both forms on the same inputs and weights (LayerNorm affine drawn away from 1 / 0), interleaved rounds "
        f"({p['repeats']}, medians), fp32 on the CPU (bf16 autocast on CUDA).\n",
    ]
    rows = []
    for s in p["sides"]:
        what = (
            f"video (Eq. 11): {s['queries']} query x {s['tokens']} tokens, forward under no_grad"
            if s["side"] == "video"
            else f"text (Eq. 10): {s['queries']} frames x {s['tokens']} words, forward + backward"
        )
        f, c = s["rows"]
        rows.append([what, f["form"], 1e3 * f["seconds"], C.mib(f["peak_bytes"]), "1x", "1x"])
        rows.append(
            [
                what,
                c["form"],
                1e3 * c["seconds"],
                C.mib(c["peak_bytes"]),
                _x(c["seconds"] / f["seconds"]),
                _x(c["peak_bytes"] / f["peak_bytes"]) if f["peak_bytes"] else None,
            ]
        )
    out.append(
        C.table(["side", "form", "ms", "peak MiB", "time / factorised", "memory / factorised"], rows)
    )
    out.append("")
    for s in p["sides"]:
        masks = (
            "identical"
            if s["masks_identical"]
            else f"NOT identical: {s['mask_entries_differing']} of {s['mask_entries']} entries differ"
        )
        grad = f", gradients {s['max_abs_diff_grad']:.1e}" if "max_abs_diff_grad" in s else ""
        out.append(
            f"- {s['side']} side: weights max abs diff {s['max_abs_diff_weights']:.1e} (largest weight "
            f"{s['max_abs_weight']:.2g}){grad}; Adaptive Token Selector masks (informative_token_mask, tau "
            f"{p['tau']}) {masks} ({100 * s['masked_frac']:.0f}% of the real tokens masked)."
        )
    out.append("")
    return out


def render(data: dict) -> str:
    out = [C.machine_line(data)]
    for s in data["settings"]:
        out += render_setting(s, data["machine"].get("ram_gib"))
    if data.get("predictor"):
        out += render_predictor(data["predictor"])
    return "\n".join(out)


def main(argv=None) -> int:
    args = C.parser(__doc__.splitlines()[0]).parse_args(argv)
    device = C.device_of(args)
    torch.manual_seed(0)
    if args.quick:
        plan = [
            dict(
                name="f_cls",
                title="quick: temporal encoder over the frames' [CLS], 1 layer; blocks of 2 x 4 to exercise the loop",
                temporal_input="f_cls",
                layers=1,
                batches=[4, 8, 12],
                blocked=[4, 8],
                blocked_subset={12: 2},
                unblocked=[4],
                blocks=(2, 4),
                checks=[("unblocked", 4), ("blocked", 6)],
                shares_b=8,
            )
        ]
        repeats = args.repeats or 1
        predictor_b, predictor_repeats = 4, 2
    else:
        plan = [
            dict(
                name="f_cls",
                temporal_input="f_cls",
                layers=4,
                batches=[8, 16, 32, 64, 128],
                blocked=[8, 16, 32, 64],
                blocked_subset={128: 4},  # 4 of 16 rows of blocks (32 of 128 blocks): the whole graph is ~36 GB
                unblocked=[8, 16, 32],
                checks=[("unblocked", 8), ("blocked", 20)],
                single_from=32,
                shares_b=32,
                title="Temporal encoder over the frames' [CLS] (seqTransf, 4 layers, `temporal.input=f_cls`); "
                "token weight predictors over all 32 words / 600 visual tokens",
            ),
            dict(
                name="v_tokens",
                temporal_input="v_tokens",
                layers=4,
                batches=[2, 4, 8, 16],
                blocked=[],
                unblocked=[2, 4],
                checks=[("unblocked", 3)],
                title="MSR-VTT's temporal encoder (seqTransf, 4 layers, over all 600 tokens of the 12 frames, "
                "`temporal.input=v_tokens`): every partial video goes through it, so this dominates; "
                "smaller batches (2 CPU cores; at B <= 8 the blocked form is one block, i.e. the unblocked one)",
            ),
        ]
        if device.type == "cuda":
            plan[0].update(unblocked=[8, 16, 32, 64], blocked=[8, 16, 32, 64, 128], blocked_subset=None)
            plan[1].update(batches=[16, 32, 64, 128], blocked=[16, 32], unblocked=[4, 8, 16], single_from=32)
        repeats = args.repeats or 3
        predictor_b, predictor_repeats = 32, args.repeats or 9
    settings = []
    for p in plan:
        title = p.pop("title")
        s = run_setting(device=device, repeats=repeats, **p)
        s["title"] = title
        s["bar"] = bar(s, 128 if not args.quick else 12)
        settings.append(s)
    print("[token-weight predictor: factorised against concatenated]")
    predictor = predictor_bench(device, predictor_b, predictor_repeats)
    data = C.result(
        TOPIC,
        args.quick,
        str(device),
        repeats,
        shapes={"D": D, "words": M, "frames": N, "tokens_per_frame": K1},
        settings=settings,
        predictor=predictor,
    )
    C.write_json(C.default_out(TOPIC, args), data)
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
