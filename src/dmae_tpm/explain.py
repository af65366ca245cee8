"""``dmae-explain``: the paper's Fig. 6 for one (caption, video) pair, as one PNG, with the model of a checkpoint.

    dmae-explain checkpoint=PATH caption="a man is cooking" video=FILE.mp4 [out=explain.png] [overrides]
    dmae-explain checkpoint=PATH entry=N [out=explain.png] [data=... overrides]

The figure shows, for DMAE-TPM: the caption's tokens with TPM-CL's masked ones struck through (b_t = 0, Eq. 14)
beside their predicted weights w_t (Eq. 10) and their Textual Attention weights (Eq. 1); the frames with the
visual token weights w_v (Eq. 11) over their patches and the masked patches (b_v = 0) hatched; Visual Attention's
frame-frame matrix S(v_h, v_h) with the entries W_VA keeps (Eq. 2); and the full / partial scores of Eq. 17's
three terms, scored as `TPMCL.forward` scores them, with the pair's similarity sim(t, v).

`entry=N` takes caption N of ``data.test_split`` and its ground-truth video, with the Algorithm 1 weights that
dmae-eval gives that query; a free caption gets `query_text.query_batch`'s (the same rule).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from .methods.dmae_tpm.dmae import TextInput, VideoInput
from .methods.dmae_tpm.textual_attention import textual_attention
from .methods.dmae_tpm.tpm_cl import triplet_partial_margin
from .methods.dmae_tpm.visual_attention import frame_self_similarity, visual_attention
from .tool_args import ToolArgsError, exit_with, explain_main

PROG = "dmae-explain"
FIGSIZE, DPI = (16.0, 10.0), 100  # the PNG is FIGSIZE * DPI pixels
MAX_SHOWN, FRAME_COLUMNS = 12, 6  # frames drawn (evenly spaced over the real ones), per row
EQ17_TERMS = {  # Eq. 17's three terms: (full, partial) labels
    "trpl1": ("S(t_cls, v_h)", "S(t_cls, v_h^p)"),
    "trpl2": ("S(t_g, v_h)", "S(t_g, v_h^p)"),
    "trpl3": ("S(t_g, v_h)", "S(t_g^p, v_h)"),
}


# -- what the model computes for the pair (no drawing) -----------------------------------------------------------
def require_dmae(model) -> None:
    """Only DMAE-TPM has token weights, masks, W_TA and W_VA to show."""
    from .methods.dmae_tpm.model import DMAETPM

    if not isinstance(model, DMAETPM):
        method = getattr(getattr(model, "cfg", None), "method", type(model).__name__)
        raise ValueError(f"{PROG} explains DMAE-TPM checkpoints (model.method=dmae_tpm); this one is "
                         f"model.method={method}, which has no TPM-CL token weights or DMAE attention to draw")


@torch.no_grad()
def explanation(model, batch: dict[str, torch.Tensor]) -> dict:
    """Everything the figure shows for one pair, from the model's own modules, on the CPU.

    batch: tokens (1, L), w_pos / w_freq (1, L), frames (1, N, 3, H, W), frame_mask (1, N) bool.
    """
    require_dmae(model)
    if batch["tokens"].shape[0] != 1:
        raise ValueError(f"explanation takes one (caption, video) pair, got {batch['tokens'].shape[0]} captions")
    text = model.encode_text(batch["tokens"])
    video, v_h = model.encode_video(batch["frames"], batch["frame_mask"])  # v_h: (1, N, D)
    text_in = TextInput.of(text, batch)
    sim_cfg = model.similarity.cfg
    out = {
        "tokens": batch["tokens"][0], "t_mask": text.t_mask[0], "frame_mask": video.frame_mask[0],
        "grid": tuple(int(g) for g in model.backbone.clip.visual.grid_size),
        "score": model.score(text_in, VideoInput(v_h, video.frame_mask))[0, 0].item(),  # sim(t, v)
        "variant": sim_cfg.variant, "interaction": sim_cfg.interaction,
    }
    out.update(_textual(sim_cfg, text_in), **_visual(sim_cfg, v_h, video.frame_mask))
    out.update(_tpm(model, text, video, v_h))
    return {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in out.items()}


def _textual(cfg, text: TextInput) -> dict:
    """The weight each text position takes in the words' average: W_TA (Eq. 1), or w_pos o w_freq for the authors'
    reading, which weights the words by the product itself; None when Textual Attention is off."""
    if not cfg.textual_attention:
        return {"w_ta": None, "w_ta_label": "Textual Attention off"}
    if cfg.variant == "official":  # dmae.Similarity.official_dmae's word_weight
        return {"w_ta": (text.w_pos * text.w_freq * text.t_mask)[0], "w_ta_label": "w_pos o w_freq (official)"}
    return {"w_ta": textual_attention(text.w_pos, text.w_freq, text.t_mask)[0], "w_ta_label": "W_TA (Eq. 1)"}


def _visual(cfg, v_h: torch.Tensor, frame_mask: torch.Tensor) -> dict:
    """S(v_h, v_h) and, when Visual Attention is on, W_VA (Eq. 2): (N, N) each."""
    w_va = visual_attention(v_h, frame_mask, cfg.topk)[0] if cfg.visual_attention else None  # Eq. (2)
    return {"frame_sim": frame_self_similarity(v_h)[0], "w_va": w_va}


def _tpm(model, text, video, v_h) -> dict:
    """TPM-CL's token weights and masks (text (M,), video (N, K+1)) and Eq. 17's scores; None when it is off."""
    if model.tpm is None:
        return {"w_t": None, "b_t": None, "w_v": None, "b_v": None, "eq17": None, "margin": None,
                "text_global_norm": None}
    p = model.tpm.partial_samples(text, video, model.temporal)
    frames = video.frame_mask.shape[1]
    return {
        "w_t": p["w_t"][0], "b_t": p["b_t"][0],  # (M,)  Eqs. (10), (14)
        "w_v": p["w_v"][0].view(frames, -1), "b_v": p["b_v"][0].view(frames, -1),  # (N, K+1)  Eqs. (11), (14)
        "eq17": eq17_scores(model.tpm, p, text.t_cls, v_h, video.frame_mask, model.pair_score),
        "margin": model.tpm.cfg.margin,
        "text_global_norm": model.tpm.cfg.text_global_norm,
    }


def eq17_scores(tpm, p: dict, t_cls, v_h, frame_mask, score) -> dict[str, dict[str, float]]:
    """{term: {full, partial, hinge}} of Eq. 17 for one pair, scored by `TPMCL.eq17_pairs` as training scores."""
    pairs = tpm.eq17_pairs(t_cls, p, v_h, frame_mask, score)
    return {k: {"full": full.item(), "partial": part.item(),
                "hinge": triplet_partial_margin(full, part, tpm.cfg.margin).item()}  # Eq. (17)
            for k, (full, part) in pairs.items()}


# -- the figure ------------------------------------------------------------------------------------------------
def word_labels(tokenizer, tokens: torch.Tensor, t_mask: torch.Tensor) -> list[str]:
    """One label per real text position (t_mask): the BPE piece decoded, or [BOS] / [EOS] for the specials."""
    special = {tokenizer.sot_token_id: "[BOS]", tokenizer.eot_token_id: "[EOS]"}
    ids = tokens[t_mask.bool()].tolist()
    return [special.get(i) or tokenizer.decode([i]).strip() or "?" for i in ids]


def word_rows(expl: dict, words: list[str]) -> list[dict]:
    """The text panel's rows: {word, w_t, w_ta, struck} per real position; struck = TPM-CL masks it (b_t = 0)."""
    real = expl["t_mask"].bool()
    if len(words) != int(real.sum()):
        raise ValueError(f"{len(words)} words for {int(real.sum())} real text positions (use word_labels)")
    def at_words(x, absent):  # (M,) -> one value per real position
        return [absent] * len(words) if x is None else x[real].tolist()

    w_t, b_t, w_ta = at_words(expl["w_t"], None), at_words(expl["b_t"], 1.0), at_words(expl["w_ta"], None)
    return [{"word": w, "w_t": a, "w_ta": c, "struck": b == 0}
            for w, a, b, c in zip(words, w_t, b_t, w_ta, strict=True)]


def shown_frames(frame_mask: torch.Tensor) -> list[int]:
    """The real frames drawn: all of them, or MAX_SHOWN evenly spaced."""
    real = frame_mask.nonzero().flatten()
    if len(real) <= MAX_SHOWN:
        return real.tolist()
    return real[torch.linspace(0, len(real) - 1, MAX_SHOWN).round().long()].tolist()


def draw(expl: dict, frames_uint8: torch.Tensor, words: list[str], out_path, title: str | None = None) -> Path:
    """Write the figure of `explanation` to `out_path` (PNG, FIGSIZE * DPI pixels). frames_uint8: (N, 3, h, w)."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 3, width_ratios=(1.25, 2.6, 1.35), height_ratios=(1.75, 1.0),
                            left=0.08, right=0.98, top=0.9, bottom=0.06, wspace=0.3, hspace=0.3)
    labels = _draw_words(fig, grid[:, 0], word_rows(expl, words), expl)
    _draw_frames(fig, grid[0, 1], frames_uint8, expl)
    _draw_frame_matrix(fig.add_subplot(grid[0, 2]), expl)
    _draw_scores(fig.add_subplot(grid[1, 1:]), expl)
    title = title or " ".join(w for w in words if not w.startswith("["))
    fig.suptitle(title if len(title) <= 150 else title[:147] + "...", fontsize=14)
    fig.text(0.5, 0.935, f"sim(t, v) = {expl['score']:.4f}   (similarity.variant={expl['variant']}, "
             f"interaction={expl['interaction']})", ha="center", fontsize=10)
    _strike(fig, labels)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=DPI)
    return out_path


def _draw_words(fig, cell, rows: list[dict], expl: dict) -> list:
    """Two bar charts sharing the token axis: w_t (TPM-CL) and the Textual Attention weight. Returns the tick
    labels to strike through."""
    left, right = (fig.add_subplot(c) for c in cell.subgridspec(1, 2, wspace=0.08))
    y = list(range(len(rows)))
    _bars(left, y, [r["w_t"] for r in rows], "tab:orange", "w_t (Eq. 10)",
          None if expl["w_t"] is not None else "TPM-CL off")
    _bars(right, y, [r["w_ta"] for r in rows], "tab:blue", expl["w_ta_label"],
          None if expl["w_ta"] is not None else "off")
    right.set_yticks(y, [""] * len(y))
    size = max(5, min(10, 300 // max(len(rows), 1)))
    left.set_yticks(y, [r["word"] for r in rows], fontsize=size)
    for axis in (left, right):
        axis.set_ylim(len(rows) - 0.5, -0.5)  # first token on top
    ticks = left.get_yticklabels()
    for tick, row in zip(ticks, rows, strict=True):
        tick.set_color("tab:red" if row["struck"] else "black")
    if expl["b_t"] is not None:
        fig.text(0.01, 0.012, "red, struck through: masked by TPM-CL's Adaptive Token Selector (b_t = 0, Eq. 14)",
                 fontsize=8, color="tab:red")
    return [t for t, r in zip(ticks, rows, strict=True) if r["struck"]]


def _bars(axis, y, values, colour, label, off: str | None) -> None:
    axis.set_title(label, fontsize=10)
    axis.tick_params(axis="x", labelsize=7)
    if off is not None:
        axis.text(0.5, 0.5, off, transform=axis.transAxes, ha="center", va="center", fontsize=12, color="grey")
        axis.set_xticks([])
        return
    axis.barh(y, values, color=colour)
    axis.set_xlim(0, max(max(values), 1e-12) * 1.15)


def _strike(fig, labels) -> None:
    """A line through each label, placed where the renderer put it (the layout is fixed: savefig keeps it)."""
    if not labels:
        return
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    to_fig = fig.transFigure.inverted()
    for label in labels:
        box = label.get_window_extent(renderer)
        (x0, y0), (x1, y1) = to_fig.transform([(box.x0, box.y0), (box.x1, box.y1)])
        mid = 0.5 * (y0 + y1)
        fig.add_artist(Line2D([x0, x1], [mid, mid], color="tab:red", linewidth=1.2, transform=fig.transFigure))


def _draw_frames(fig, cell, frames_uint8: torch.Tensor, expl: dict) -> None:
    """Each shown frame with w_v over its patches (one colour scale for all) and its masked patches hatched."""
    shown = shown_frames(expl["frame_mask"])
    cols = max(1, min(FRAME_COLUMNS, len(shown)))
    sub = cell.subgridspec(max(1, math.ceil(len(shown) / cols)), cols, wspace=0.08, hspace=0.3)
    gh, gw = expl["grid"]
    w_v = expl["w_v"]
    vmax = float(w_v[shown, 1:].max()) if w_v is not None and shown else 1.0
    image, axes = None, []
    for i, n in enumerate(shown):
        axis = fig.add_subplot(sub[i // cols, i % cols])
        axes.append(axis)
        axis.imshow(frames_uint8[n].permute(1, 2, 0).numpy(), extent=(0, gw, gh, 0))
        axis.set_xticks([]), axis.set_yticks([])
        if w_v is None:
            axis.set_title(f"frame {n}", fontsize=8)
            continue
        image = axis.imshow(w_v[n, 1:].view(gh, gw).numpy(), extent=(0, gw, gh, 0), cmap="magma", alpha=0.45,
                            vmin=0.0, vmax=vmax, interpolation="nearest")
        for k in (expl["b_v"][n, 1:] == 0).nonzero().flatten().tolist():
            axis.add_patch(Rectangle((k % gw, k // gw), 1, 1, fill=False, edgecolor="cyan", hatch="xx",
                                     linewidth=0.5, alpha=0.8))
        cls = "masked" if expl["b_v"][n, 0] == 0 else "kept"
        axis.set_title(f"frame {n}\n[CLS] {w_v[n, 0]:.2g}, {cls}", fontsize=6)
    head = axes[0] if axes else fig.add_subplot(cell)
    note = ("w_v (Eq. 11) over the patches; hatched: masked (b_v = 0, Eq. 14)" if w_v is not None else
            "TPM-CL off in this checkpoint's config: no visual token weights")
    if len(shown) < int(expl["frame_mask"].sum()):
        note += f"; {len(shown)} of {int(expl['frame_mask'].sum())} frames shown"
    head.text(0.0, 1.35, note, transform=head.transAxes, fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes, fraction=0.025, pad=0.01).ax.tick_params(labelsize=7)


def _draw_frame_matrix(axis, expl: dict) -> None:
    """S(v_h, v_h) over the real frames; the entries W_VA keeps (top-k per column, Eq. 2) outlined."""
    real = expl["frame_mask"].nonzero().flatten()
    sim = expl["frame_sim"][real][:, real]  # (N_real, N_real)
    image = axis.imshow(sim.numpy(), cmap="viridis", vmin=min(0.0, float(sim.min())), vmax=1.0)
    names = [str(n) for n in real.tolist()]
    step = max(1, len(names) // 12)
    axis.set_xticks(range(0, len(names), step), names[::step], fontsize=7)
    axis.set_yticks(range(0, len(names), step), names[::step], fontsize=7)
    axis.set_xlabel("frame j (column)", fontsize=8)
    axis.set_ylabel("frame i", fontsize=8)
    if expl["w_va"] is None:
        axis.set_title("S(v_h, v_h); Visual Attention off", fontsize=10)
    else:
        kept = expl["w_va"][real][:, real] != 0
        for i, j in kept.nonzero().tolist():
            axis.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.2))
        axis.set_title("S(v_h, v_h); red: kept in W_VA (Eq. 2)", fontsize=10)
    if len(names) <= 12:
        for i, row in enumerate(sim.tolist()):
            for j, value in enumerate(row):
                axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                          color="black" if value > 0.5 else "white")
    axis.figure.colorbar(image, ax=axis, fraction=0.046, pad=0.02).ax.tick_params(labelsize=7)


def _draw_scores(axis, expl: dict) -> None:
    """Eq. 17's three terms: the full and the partial score side by side, with the hinge each gives."""
    if expl["eq17"] is None:
        axis.axis("off")
        axis.text(0.5, 0.5, "TPM-CL off in this checkpoint's config (tpm.enabled=false): no token weights, masks "
                  "or partial scores (Eq. 17)", ha="center", va="center", fontsize=12, color="grey")
        return
    terms = list(EQ17_TERMS)
    full = [expl["eq17"][t]["full"] for t in terms]
    part = [expl["eq17"][t]["partial"] for t in terms]
    x = torch.arange(len(terms)).float()
    axis.bar((x - 0.2).tolist(), full, 0.38, color="tab:green", label="full")
    axis.bar((x + 0.2).tolist(), part, 0.38, color="tab:purple", label="partial")
    axis.set_xticks(x.tolist(), [f"{t}: {EQ17_TERMS[t][0]} vs {EQ17_TERMS[t][1]}" for t in terms], fontsize=9)
    top = max(full + part + [0.0])
    for i, t in enumerate(terms):
        axis.text(i, top * 1.05 + 0.02, f"{full[i]:.3f} vs {part[i]:.3f}\nhinge {expl['eq17'][t]['hinge']:.3f}",
                  ha="center", va="bottom", fontsize=8)
    axis.set_ylim(min(full + part + [0.0]) * 1.2, top * 1.35 + 0.1)
    axis.axhline(0.0, color="black", linewidth=0.5)
    axis.legend(fontsize=8, loc="lower right")
    axis.set_title(f"Eq. 17: full vs partial, hinge max(0, partial - full + delta), delta = {expl['margin']} "
                   f"(tpm.text_global_norm={expl['text_global_norm']})", fontsize=10)


# -- the command -----------------------------------------------------------------------------------------------
def _free_input(cfg, model, model_cfg, caption: str, video: str):
    """(caption, text batch, uint8 frames (N, 3, h, w), mask (N,)) of a free caption and a video file."""
    from .data.video import FrameSamplingConfig, read_frames, resize_crop
    from .query_text import query_batch

    text = query_batch(model.backbone, cfg.data, [caption], model_cfg.max_words)
    sampling = FrameSamplingConfig(fps=cfg.data.fps, max_frames=model_cfg.max_frames)
    frames, mask = read_frames(video, sampling, resize_crop(model.backbone.image_size))
    return caption, text, frames, mask


def _entry_input(cfg, model, model_cfg, entry: str):
    """The same for caption N of the test split and its ground-truth video, with dmae-eval's query weights."""
    from .data import loaders

    loaders.prepare(cfg.data, model.backbone.image_size, model_cfg.max_frames)
    split = loaders.read(cfg.data, cfg.data.test_split)
    try:
        n = int(entry)
    except ValueError:
        raise ToolArgsError(f"entry must be a caption index, got {entry!r}") from None
    if not 0 <= n < len(split.captions):
        raise ToolArgsError(f"entry={n}: {cfg.data.name}/{split.split} has captions 0..{len(split.captions) - 1}")
    table = loaders.text_table(cfg.data, split, model.backbone, model_cfg.max_words, queries=True)
    text = {k: v[None] for k, v in table.item(n).items() if k in ("tokens", "w_pos", "w_freq")}
    source = loaders.video_source(cfg.data, split, model.backbone, model_cfg.max_frames)
    frames, mask = source(split.video_ids[split.caption_video[n]])
    return split.captions[n], text, frames, mask


def run_configured(cfg, tool: dict) -> Path:
    from . import runtime as rt

    runtime = rt.setup(cfg.trainer)  # the device as the trainer and dmae-eval pick it
    try:
        return _explain(cfg, tool, runtime.device)
    finally:
        rt.teardown()


def _explain(cfg, tool: dict, device: torch.device) -> Path:
    from .evaluate import load_model

    model, model_cfg = load_model(cfg, device, tool["checkpoint"])
    require_dmae(model)
    if tool["mode"] == "free":
        caption, text, frames, mask = _free_input(cfg, model, model_cfg, tool["caption"], tool["video"])
    else:
        caption, text, frames, mask = _entry_input(cfg, model, model_cfg, tool["entry"])
    batch = {**text, "frames": frames[None], "frame_mask": mask[None]}
    expl = explanation(model, {k: v.to(device) for k, v in batch.items()})
    words = word_labels(model.backbone.tokenizer, expl["tokens"], expl["t_mask"])
    return draw(expl, frames.cpu(), words, tool.get("out", "outputs/explain.png"), title=caption)


def execute(cfg, tool: dict) -> None:
    """The console script after `tool_args.explain_main` has read the keys and checked the config."""
    from hydra.errors import HydraException

    from .checkpoint import CorruptCheckpointError, ModelMismatchError
    from .data.video import VideoDecodeError

    try:
        out = run_configured(cfg, tool)
    except (ValueError, OSError, HydraException, VideoDecodeError, CorruptCheckpointError,
            ModelMismatchError) as err:
        exit_with(PROG, err)
    print(f"wrote {out}")


main = explain_main

if __name__ == "__main__":
    main()
