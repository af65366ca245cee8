"""One training step (forward + backward of DMAETPM.forward's loss): the full method against the baseline.

full: ModelConfig defaults -- DMAE (textual + visual attention, Eq. 3 as written), NegNCE and TPM-CL.
baseline: TI + InfoNCE, both attentions off, TPM-CL disabled. Both on the same backbone with the same weights
where they share them, the same batch of random frames and real tokenised captions (12 frames, 32 words).

Reported per step: forward time, backward time, their sum (medians), peak tensor memory (see _common.py), the
FLOPs torch.utils.flop_counter counts (matmuls / convolutions / attention) and the resulting model-FLOPs
utilisation against the machine's dense matmul rate in the same dtype, measured in the same run. A
torch.profiler breakdown gives the forward time of each part of the model and the top ops of a whole step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from dmae_tpm.backbone import BackboneConfig  # noqa: E402
from dmae_tpm.dmae import SimilarityConfig  # noqa: E402
from dmae_tpm.model import ModelConfig, build_model  # noqa: E402
from dmae_tpm.objective import LossConfig  # noqa: E402
from dmae_tpm.temporal_encoder import TemporalConfig  # noqa: E402
from dmae_tpm.tpm_cl import TPMConfig  # noqa: E402

TOPIC = "train_step"
WORDS = (
    "a red circle moves left then a blue square bounces quickly on a dark background while the green "
    "triangle spins slowly and small yellow star appears near the top of the frame"
).split()


def model_config(method: str, backbone: str, temporal_layers: int | None) -> ModelConfig:
    cfg = ModelConfig(backbone=BackboneConfig(name=backbone, pretrained=None), max_words=32, max_frames=12)
    if temporal_layers is not None:
        cfg.temporal = TemporalConfig(layers=temporal_layers)
    if method == "baseline":
        cfg.similarity = SimilarityConfig(textual_attention=False, visual_attention=False)
        cfg.loss = LossConfig(name="infonce")
        cfg.tpm = TPMConfig(enabled=False)
    return cfg


def build(method: str, backbone: str, temporal_layers: int | None, device):
    torch.manual_seed(0)  # same seed: the parts both methods have get the same initial weights
    model = build_model(model_config(method, backbone, temporal_layers)).to(device)
    model.train()
    return model


def make_batch(model, batch: int, device, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    captions = []
    for _ in range(batch):
        n = int(torch.randint(6, 24, (1,), generator=g))
        idx = torch.randint(len(WORDS), (n,), generator=g).tolist()
        captions.append(" ".join(WORDS[i] for i in idx))
    tokens = model.backbone.tokenize(captions, context_length=model.cfg.max_words)
    h, w = model.backbone.image_size
    n = model.cfg.max_frames
    frames = torch.randn(batch, n, 3, h, w, generator=g)
    return {
        "tokens": tokens.to(device),
        "frames": frames.to(device),
        "frame_mask": torch.ones(batch, n, dtype=torch.bool, device=device),
        "w_pos": torch.where(torch.rand(batch, tokens.shape[1], generator=g) < 0.4, 2.0, 1.0).to(device),
        "w_freq": (torch.rand(batch, tokens.shape[1], generator=g) > 0.2).float().to(device),
    }


def fwd(model, batch, device):
    with C.autocast(device):
        return model(batch)["loss"]


def measure(method, model, batch, device, repeats) -> dict:
    def step():
        model.zero_grad(set_to_none=True)
        fwd(model, batch, device).backward()

    # forward and backward timed separately on the same calls
    fw, bw = [], []
    for i in range(repeats + 1):
        model.zero_grad(set_to_none=True)
        C.sync(device)
        t0 = C.time.perf_counter()
        loss = fwd(model, batch, device)
        C.sync(device)
        t1 = C.time.perf_counter()
        loss.backward()
        C.sync(device)
        t2 = C.time.perf_counter()
        if i:  # the first call is warm-up
            fw.append(t1 - t0)
            bw.append(t2 - t1)
    steps = [a + b for a, b in zip(fw, bw, strict=True)]
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    peak = C.peak_bytes(step, device)
    b = batch["tokens"].shape[0]
    row = {
        "method": method,
        "batch": b,
        "forward_s": C.median(fw),
        "backward_s": C.median(bw),
        "step_s": C.median(steps),
        "step_times": steps,
        "clips_per_s": b / C.median(steps),
        "peak_bytes": peak,
        "flops": flops,
        "params": sum(p.numel() for p in model.parameters()),
    }
    print(
        f"  {method:8s} B={b}: fwd {row['forward_s']:.3f} s  bwd {row['backward_s']:.3f} s  "
        f"step {row['step_s']:.3f} s  {row['clips_per_s']:.1f} clips/s  peak {C.mib(peak)} MiB  "
        f"{flops / 1e9:.1f} GFLOP"
    )
    return row


PARTS = {  # label: attribute path of the module (or bound method) whose forward is labelled
    "text encoder": ("backbone", "encode_text"),
    "video encoder (ViT)": ("backbone", "encode_video"),
    "temporal encoder": ("temporal", "forward"),
    "similarity (B x B)": ("similarity", "forward"),
    "contrastive loss": ("contrastive", "forward"),
    "TPM-CL (incl. its temporal pass)": ("tpm", "forward"),
}


def _label(model):
    """Wrap the parts' forwards in record_function on the instances (no library change); returns an undo."""
    undo = []
    for label, (attr, meth) in PARTS.items():
        obj = getattr(model, attr, None)
        if obj is None:
            continue
        orig = getattr(obj, meth)

        def wrapped(*a, _orig=orig, _label=label, **k):
            with record_function(_label):
                return _orig(*a, **k)

        setattr(obj, meth, wrapped)
        undo.append((obj, meth))
    return lambda: [delattr(o, m) for o, m in undo]


def breakdown(model, batch, device, top: int = 12) -> dict:
    """Forward time per part (the temporal encoder's calls from inside TPM-CL count under both labels) and
    the top ops of one forward + backward by self time."""
    undo = _label(model)
    try:
        model.zero_grad(set_to_none=True)
        fwd(model, batch, device).backward()  # warm
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        model.zero_grad(set_to_none=True)
        with profile(activities=acts) as prof:
            with record_function("forward"):
                loss = fwd(model, batch, device)
            with record_function("backward"):
                loss.backward()
            C.sync(device)
    finally:
        undo()
    events = prof.key_averages()
    key = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    self_key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    by_name = {e.key: e for e in events}
    parts = {}
    for label in ["forward", "backward", *PARTS]:
        e = by_name.get(label)
        if e is not None:
            parts[label] = {
                "ms": getattr(e, key) / 1e3 if device.type == "cuda" else e.cpu_time_total / 1e3,
                "calls": e.count,
            }
    ops = sorted((e for e in events if e.key not in parts), key=lambda e: getattr(e, self_key), reverse=True)
    total = sum(getattr(e, self_key) for e in events if e.key not in parts)
    top_ops = [
        {
            "op": e.key,
            "self_ms": getattr(e, self_key) / 1e3,
            "share": getattr(e, self_key) / max(total, 1),
            "calls": e.count,
        }
        for e in ops[:top]
    ]
    return {"parts": parts, "top_ops": top_ops}


def matmul_rate(device, repeats) -> dict:
    n = 8192 if device.type == "cuda" else 2048
    dtype = C.compute_dtype(device)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    t = C.median(C.time_call(lambda: a @ b, device, max(3, repeats), warmup=1))
    return {"shape": [n, n, n], "dtype": str(dtype).replace("torch.", ""), "flops_per_s": 2 * n**3 / t}


def run_config(backbone, temporal_layers, batches, device, repeats, do_breakdown, rate) -> dict:
    rows, parts = [], {}
    for method in ("baseline", "full"):
        model = build(method, backbone, temporal_layers, device)
        image_size = list(model.backbone.image_size)
        for b in batches:
            batch = make_batch(model, b, device)
            row = measure(method, model, batch, device, repeats)
            row["mfu"] = row["flops"] / row["step_s"] / rate["flops_per_s"]
            rows.append(row)
        if do_breakdown:
            parts[method] = breakdown(model, make_batch(model, batches[0], device), device)
        del model
    by = {(r["method"], r["batch"]): r for r in rows}
    ratios = {str(b): by[("full", b)]["step_s"] / by[("baseline", b)]["step_s"] for b in batches}
    mem_ratios = {str(b): by[("full", b)]["peak_bytes"] / by[("baseline", b)]["peak_bytes"] for b in batches}
    return {
        "backbone": backbone,
        "temporal_layers": temporal_layers if temporal_layers is not None else 4,
        "image_size": image_size,
        "rows": rows,
        "time_ratio": ratios,
        "memory_ratio": mem_ratios,
        "breakdown": parts,
    }


def render(data: dict) -> str:
    out = [
        f"Dense matmul reference ({data['matmul']['dtype']}, {data['matmul']['shape'][0]}^3, same run): "
        f"{data['matmul']['flops_per_s'] / 1e9:,.0f} GFLOP/s.\n"
    ]
    for cfg in data["configs"]:
        out.append(f"**{cfg['title']}**\n")
        rows = []
        for r in cfg["rows"]:
            rows.append(
                [
                    r["method"],
                    r["batch"],
                    r["forward_s"],
                    r["backward_s"],
                    r["step_s"],
                    r["clips_per_s"],
                    C.mib(r["peak_bytes"]),
                    r["flops"] / 1e9,
                    f"{100 * r['mfu']:.1f}%",
                ]
            )
        out.append(
            C.table(
                ["method", "B", "forward s", "backward s", "fwd+bwd s", "clips/s", "peak MiB", "GFLOP/step", "MFU"],
                rows,
            )
        )
        ratios = ", ".join(
            f"B={b}: {t:.2f}x time, {cfg['memory_ratio'][b]:.2f}x memory" for b, t in cfg["time_ratio"].items()
        )
        out.append(f"\nfull / baseline: {ratios}.\n")
        if cfg.get("bar_batch") is not None:
            t = cfg["time_ratio"][str(cfg["bar_batch"])]
            met = t <= 1.3
            extra = "" if met else f", over by {100 * (t / 1.3 - 1):.0f}%"
            out.append(
                C.bar_line(met, f"full = {t:.2f}x baseline step time at B = {cfg['bar_batch']} (bar: <= 1.3x{extra}).")
                + "\n"
            )
        for method, bd in cfg["breakdown"].items():
            p = bd["parts"]
            fw = p.get("forward", {}).get("ms")
            items = [
                f"{k} {v['ms']:.0f} ms" + (f" ({100 * v['ms'] / fw:.0f}%)" if fw else "")
                for k, v in p.items()
                if k not in ("forward", "backward")
            ]
            bw = p.get("backward", {}).get("ms", 0)
            out.append(
                f"*{method}*, profiled step: forward {fw:.0f} ms, backward {bw:.0f} ms; forward by part: "
                + "; ".join(items)
                + ".\n"
            )
            out.append(
                C.table(
                    ["top op (fwd+bwd, by self time)", "self ms", "share", "calls"],
                    [[o["op"], o["self_ms"], f"{100 * o['share']:.0f}%", o["calls"]] for o in bd["top_ops"]],
                )
            )
            out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--backbone", default=None, help="override: e.g. ViT-B-32 (random weights) or dmae-tiny")
    p.add_argument("--batches", type=int, nargs="+", default=None)
    args = p.parse_args(argv)
    device = C.device_of(args)
    if args.quick:
        plan = [dict(backbone="dmae-tiny", temporal_layers=None, batches=[8], title="quick", bar_batch=8)]
        repeats = args.repeats or 1
    elif device.type == "cuda":
        plan = [
            dict(
                backbone=args.backbone or "ViT-B-32",
                temporal_layers=None,
                batches=args.batches or [16, 32, 64],
                title="ViT-B/32 (random weights), 224 px, 12 frames, 32 words, bf16 autocast",
                bar_batch=32,
            )
        ]
        repeats = args.repeats or 5
    else:
        plan = [
            dict(
                backbone="dmae-tiny",
                temporal_layers=None,
                batches=args.batches or [32],
                bar_batch=32,
                title="dmae-tiny (2-layer, 64-wide CLIP, 32 px), `ModelConfig` defaults (temporal encoder: "
                "seqTransf, 4 layers, over all frame tokens), 12 frames, 32 words, fp32",
            ),
            dict(
                backbone="dmae-tiny",
                temporal_layers=1,
                batches=[32],
                bar_batch=None,
                title="dmae-tiny as configs/model/tiny.yaml trains it (temporal encoder 1 layer)",
            ),
            dict(
                backbone="ViT-B-32",
                temporal_layers=None,
                batches=[4],
                bar_batch=None,
                title="ViT-B/32 (random weights), 224 px, 12 frames, batch 4, fp32 on the CPU: the paper's "
                "backbone, for a representative full / baseline ratio",
            ),
        ]
        if args.backbone:
            plan = [dict(plan[0], backbone=args.backbone, title=args.backbone)]
        repeats = args.repeats or 5
    rate = matmul_rate(device, repeats)
    print(f"  matmul {rate['flops_per_s'] / 1e9:.0f} GFLOP/s ({rate['dtype']})")
    configs = []
    for cfg in plan:
        reps = repeats if cfg["backbone"] == "dmae-tiny" or device.type == "cuda" else max(1, min(repeats, 2))
        print(f"[{cfg['title']}]")
        res = run_config(
            cfg["backbone"],
            cfg["temporal_layers"],
            cfg["batches"],
            device,
            reps,
            do_breakdown=(cfg is plan[0] or device.type == "cuda"),
            rate=rate,
        )
        res.update(title=cfg["title"], bar_batch=cfg["bar_batch"], repeats=reps)
        configs.append(res)
    main_cfg = configs[0]
    bar = {
        "met": main_cfg["time_ratio"][str(main_cfg["bar_batch"])] <= 1.3,
        "ratio": main_cfg["time_ratio"][str(main_cfg["bar_batch"])],
    }
    data = {
        "topic": TOPIC,
        "quick": args.quick,
        "device": str(device),
        "machine": C.machine_info(),
        "repeats": repeats,
        "matmul": rate,
        "configs": configs,
        "bar": bar,
    }
    C.write_json(C.default_out(TOPIC, args), data)
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
