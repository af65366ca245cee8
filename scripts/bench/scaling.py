"""Scaling: evaluation time and memory against the number of queries and of videos, and training step time and
memory against the batch size; plots docs/scaling_eval.png and docs/scaling_train.png.

Evaluation: `dmae_tpm.evaluate.similarity_chunked` (chunks 256 x 256) on random MSR-VTT-shaped features
(32 words, 12 frames, D = 512), baseline TI and the full method's TI + DMAE. Training: forward + backward of the
tiny model (as train_step.py), baseline and full, batch 8 ... 64.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import similarity as S  # noqa: E402
import train_step as T  # noqa: E402

from dmae_tpm.evaluate import similarity_chunked  # noqa: E402
from dmae_tpm.methods.dmae_tpm.dmae import VideoInput  # noqa: E402

TOPIC = "scaling"
DOCS = C.ROOT / "docs"


def eval_point(variant, queries, videos, device, repeats, chunk) -> dict:
    _, _, words, frames = S.SHAPES["msrvtt"]
    text, v_h, fm = S.make_features(
        queries, videos, words, frames, device, torch.float16 if device.type == "cuda" else torch.float32
    )
    scorer = S.make_scorer(variant, device)

    def call():
        return similarity_chunked(scorer, text, VideoInput(v_h, fm), chunk, chunk)

    t = C.median(C.time_call(call, device, repeats, warmup=0 if repeats == 1 else 1))
    peak = C.peak_bytes(call, device)
    print(f"  eval {variant:8s} {queries:5d} x {videos:5d}: {t:.2f} s  peak {C.mib(peak)} MiB")
    return {
        "variant": variant,
        "queries": queries,
        "videos": videos,
        "seconds": t,
        "peak_bytes": peak,
        "result_bytes": queries * videos * 4,
    }


def train_point(method, model, b, device, repeats) -> dict:
    batch = T.make_batch(model, b, device)

    def step():
        model.zero_grad(set_to_none=True)
        T.fwd(model, batch, device).backward()

    t = C.median(C.time_call(step, device, repeats, warmup=1))
    peak = C.peak_bytes(step, device)
    print(f"  train {method:8s} B={b:3d}: {t:.3f} s  peak {C.mib(peak)} MiB")
    return {"method": method, "batch": b, "seconds": t, "peak_bytes": peak}


def plot(data: dict) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -c constraints/ci.txt -e .): no plots")
        return []
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    def ticks(ax, xs):  # label the measured sizes only, plainly (log axes otherwise label 2x10^2 ...)
        ax.xaxis.set_major_locator(FixedLocator(sorted(set(xs))))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(ScalarFormatter())

    written = []
    machine = data["machine"]
    where = f"{data['device']}: {C.describe_cpu(machine) if data['device'] == 'cpu' else machine['gpu']}"
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    for col, (sweep, xlabel) in enumerate(
        (("queries", "captions scored (videos fixed)"), ("videos", "videos scored (captions fixed)"))
    ):
        pts = data["eval"][sweep]
        fixed = "videos" if sweep == "queries" else "queries"
        for variant in dict.fromkeys(p["variant"] for p in pts):
            vs = [p for p in pts if p["variant"] == variant]
            xs = [p[sweep] for p in vs]
            axes[0, col].plot(xs, [p["seconds"] for p in vs], "o-", label=variant)
            axes[1, col].plot(xs, [p["peak_bytes"] / 2**20 for p in vs], "o-", label=f"{variant} peak")
        vs = [p for p in pts if p["variant"] == pts[0]["variant"]]
        axes[1, col].plot(
            [p[sweep] for p in vs], [p["result_bytes"] / 2**20 for p in vs], "k--", label="(C, V) result itself"
        )
        axes[0, col].set(
            xscale="log", yscale="log", xlabel=xlabel, ylabel="seconds", title=f"time, {fixed} = {pts[0][fixed]}"
        )
        axes[1, col].set(
            xscale="log", xlabel=xlabel, ylabel="peak MiB", title=f"peak tensor memory, {fixed} = {pts[0][fixed]}"
        )
        axes[1, col].set_ylim(bottom=0)
        for ax in axes[:, col]:
            ticks(ax, [p[sweep] for p in pts])
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(
        f"Evaluation scoring (similarity_chunked, chunks {data['eval']['chunk']}, MSR-VTT shapes)\n{where}", fontsize=10
    )
    fig.tight_layout()
    sfx = "_cuda" if data["device"].startswith("cuda") else ""
    path = DOCS / f"scaling_eval{sfx}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(str(path))

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    pts = data["train"]["points"]
    for method in ("baseline", "full"):
        vs = [p for p in pts if p["method"] == method]
        xs = [p["batch"] for p in vs]
        axes[0].plot(xs, [p["seconds"] for p in vs], "o-", label=method)
        axes[1].plot(xs, [p["peak_bytes"] / 2**20 for p in vs], "o-", label=method)
    xs = sorted({p["batch"] for p in pts})
    base = [p for p in pts if p["method"] == "baseline"]
    axes[0].plot(xs, [base[0]["seconds"] * x / xs[0] for x in xs], "k:", label="linear in B")
    axes[0].set(
        xscale="log", yscale="log", xlabel="batch", ylabel="seconds (forward + backward)", title="training step time"
    )
    axes[1].set(xscale="log", yscale="log", xlabel="batch", ylabel="peak MiB", title="training step peak memory")
    for ax in axes:
        ticks(ax, xs)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Training step, {data['train']['model']}\n{where}", fontsize=10)
    fig.tight_layout()
    path = DOCS / f"scaling_train{sfx}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(str(path))
    for w in written:
        print(f"wrote {w}")
    return written


def render(data: dict) -> str:
    out = [C.machine_line(data)]
    for sweep in ("queries", "videos"):
        rows = [
            [
                p["variant"],
                p["queries"],
                p["videos"],
                p["seconds"],
                f"{p['queries'] * p['videos'] / p['seconds']:,.0f}",
                C.mib(p["peak_bytes"]),
                C.mib(p["result_bytes"]),
            ]
            for p in data["eval"][sweep]
        ]
        out.append(C.table(["similarity", "captions", "videos", "s", "pairs/s", "peak MiB", "result MiB"], rows))
        out.append("")
    rows = [
        [p["method"], p["batch"], p["seconds"], p["batch"] / p["seconds"], C.mib(p["peak_bytes"])]
        for p in data["train"]["points"]
    ]
    out.append(f"Training step ({data['train']['model']}):\n")
    out.append(C.table(["method", "B", "fwd+bwd s", "clips/s", "peak MiB"], rows))
    out.append("")
    for p in data.get("plots") or []:
        name = Path(p).name
        out.append(f"![{name}]({name})\n")
    return "\n".join(out)


def main(argv=None) -> int:
    args = C.parser(__doc__.splitlines()[0]).parse_args(argv)
    device = C.device_of(args)
    if args.quick:
        qs, vs, fixed_v, fixed_q, bs, chunk, repeats = [16, 32, 64], [16, 32, 64], 32, 32, [2, 4, 8], 32, 1
    elif device.type == "cuda":
        qs, vs, fixed_v, fixed_q, bs, chunk, repeats = (
            [1000, 4000, 16000, 27000],
            [1000, 2000, 5000, 10000],
            1000,
            1000,
            [16, 32, 64],
            256,
            args.repeats or 3,
        )
    else:
        qs, vs, fixed_v, fixed_q, bs, chunk, repeats = (
            [128, 256, 512, 1024],
            [125, 250, 500, 1000, 2000],
            1000,
            256,
            [8, 16, 32, 64],
            256,
            args.repeats or 3,
        )
    ev = {"chunk": f"{chunk} x {chunk}", "queries": [], "videos": []}
    for variant in ("TI", "TI+DMAE"):
        reps = 1 if (variant == "TI" and device.type == "cpu") else repeats
        ev["queries"] += [eval_point(variant, q, fixed_v, device, reps, chunk) for q in qs]
        ev["videos"] += [eval_point(variant, fixed_q, v, device, reps, chunk) for v in vs]
    backbone = "ViT-B-32" if device.type == "cuda" else "dmae-tiny"
    pts = []
    for method in ("baseline", "full"):
        model = T.build(method, backbone, None, device)
        pts += [train_point(method, model, b, device, repeats) for b in bs]
        del model
    model_desc = (
        "ViT-B/32 random weights, 224 px, bf16 autocast"
        if backbone == "ViT-B-32"
        else "dmae-tiny, ModelConfig defaults, 12 frames, fp32"
    )
    data = C.result(
        TOPIC,
        args.quick,
        str(device),
        repeats,
        eval=ev,
        train={"model": model_desc, "points": pts},
    )
    if not args.quick:
        data["plots"] = plot(data)
    C.write_json(C.default_out(TOPIC, args), data)
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
