"""One training step (forward + backward of DMAETPM.forward's loss): the full method against the baseline.

full: ModelConfig defaults -- DMAE (textual + visual attention, Eq. 3 as written), NegNCE and TPM-CL.
baseline: TI + InfoNCE, both attentions off, TPM-CL disabled. Both on the same backbone with the same weights
where they share them, the same batch of random uint8 frames (normalised on the model's device by the backbone,
as the data pipeline's batches are) and real tokenised captions (12 frames, 32 words).

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
from dmae_tpm.methods.dmae_tpm.dmae import SimilarityConfig  # noqa: E402
from dmae_tpm.methods.dmae_tpm.objective import LossConfig  # noqa: E402
from dmae_tpm.methods.dmae_tpm.tpm_cl import TPMConfig  # noqa: E402
from dmae_tpm.model import ModelConfig, build_model  # noqa: E402
from dmae_tpm.temporal_encoder import TemporalConfig  # noqa: E402

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
        cfg.similarity = SimilarityConfig(textual_attention=False, visual_attention=False, sentence_term=False)
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
    frames = torch.randint(0, 256, (batch, n, 3, h, w), generator=g, dtype=torch.uint8)  # as the loader ships them
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


class _GlobalOnly:
    """Stands in for FlopCounterMode's ModuleTracker, whose hooks fail on a module called under torch.no_grad with
    inputs that require grad (TPMCL's video predictor); only the global total is needed here."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def flop_counter() -> FlopCounterMode:
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    return counter


def timed_step(model, batch, device) -> tuple[float, float]:
    """(forward seconds, backward seconds) of one step."""
    model.zero_grad(set_to_none=True)
    C.sync(device)
    t0 = C.time.perf_counter()
    loss = fwd(model, batch, device)
    C.sync(device)
    t1 = C.time.perf_counter()
    loss.backward()
    C.sync(device)
    return t1 - t0, C.time.perf_counter() - t1


def measure_pair(models: dict, batches: dict, device, repeats) -> list[dict]:
    """Baseline and full timed in alternating blocks (b x k, f x k, b x k, f x k, ...), each block after one
    untimed step, so that drift of a shared machine hits both alike while each model runs several steps in a
    row, as in a training loop. On the 2-core CPU VM the full tiny step is noisy (0.37-0.62 s within one block,
    the baseline 0.21-0.28 s), and the order matters: one check gave 1.36x for separate runs and 1.80x for
    single-step alternation of the same pair; docs/performance.md reports the range."""
    times = {m: [] for m in models}
    rounds = max(1, min(3, repeats))
    per_block = max(1, -(-repeats // rounds))
    for _ in range(rounds):
        for m in models:
            timed_step(models[m], batches[m], device)  # block warm-up
            for _ in range(per_block):
                times[m].append(timed_step(models[m], batches[m], device))
    rows = []
    for m, model in models.items():
        batch = batches[m]

        def step(model=model, batch=batch):
            model.zero_grad(set_to_none=True)
            fwd(model, batch, device).backward()

        with flop_counter() as counter:
            step()
        peak = C.peak_bytes(step, device)
        fw = [t[0] for t in times[m]]
        bw = [t[1] for t in times[m]]
        steps = [a + b for a, b in times[m]]
        b = batch["tokens"].shape[0]
        row = {
            "method": m,
            "batch": b,
            "forward_s": C.median(fw),
            "backward_s": C.median(bw),
            "step_s": C.median(steps),
            "step_times": steps,
            "clips_per_s": b / C.median(steps),
            "peak_bytes": peak,
            "flops": counter.get_total_flops(),
            "params": sum(p.numel() for p in model.parameters()),
        }
        print(
            f"  {m:8s} B={b}: fwd {row['forward_s']:.3f} s  bwd {row['backward_s']:.3f} s  "
            f"step {row['step_s']:.3f} s  {row['clips_per_s']:.1f} clips/s  peak {C.mib(peak)} MiB  "
            f"{row['flops'] / 1e9:.1f} GFLOP",
            flush=True,
        )
        rows.append(row)
    pair = [f / b for b, f in zip(rows[0]["step_times"], rows[1]["step_times"], strict=True)]
    rows[1]["paired_ratio_median"] = C.median(pair)
    return rows


def all_positions_temporal(temporal):
    """The library's TemporalEncoder before its last layer ran on the [CLS] queries only (commit 11a8246), patched
    onto one instance as the "before" side of that change: the stock nn.TransformerEncoder over every position,
    then the [CLS] positions read off. Same output (checked by the caller); returns an undo."""
    orig = temporal.forward
    if temporal.cfg.type != "seqTransf":
        return lambda: None

    def forward(video):
        if temporal.cfg.input == "f_cls":
            x, mask, per = video.f_cls, video.frame_mask.bool(), 1
        else:
            x, mask, per = video.v_tokens, video.v_mask.bool(), video.tokens_per_frame
        frame_idx = torch.arange(x.shape[1] // per, device=x.device).repeat_interleave(per)
        mask = mask.clone()
        mask[~mask.any(1), 0] = True
        y = temporal.transformer(x + temporal.frame_position(frame_idx), src_key_padding_mask=~mask)
        return (y + x)[:, ::per]

    temporal.forward = forward
    return lambda: delattr(temporal, "forward") if temporal.forward is not orig else None


def before_temporal(backbone, temporal_layers, b, device, repeats) -> dict:
    """Baseline and full with the library's temporal encoder against the previous all-positions one, one block of
    steps each."""
    models = {m: build(m, backbone, temporal_layers, device) for m in ("baseline", "full")}
    data = {m: make_batch(models[m], b, device) for m in models}
    with torch.no_grad():  # same loss either way (same weights, same batch)
        ref = {m: fwd(models[m], data[m], device).item() for m in models}
        undo = [all_positions_temporal(models[m].temporal) for m in models]
        got = {m: fwd(models[m], data[m], device).item() for m in models}
        for u in undo:
            u()
    diff = max(abs(ref[m] - got[m]) for m in models)
    assert diff < 1e-4, f"the CLS-query last layer changes the loss by {diff}"
    times = {}
    for before in (False, True):
        undo = [all_positions_temporal(models[m].temporal) for m in models] if before else []
        for m in models:  # one block per model and variant (see measure_pair on alternating single steps)
            timed_step(models[m], data[m], device)
            times[(m, before)] = [sum(timed_step(models[m], data[m], device)) for _ in range(repeats)]
        for u in undo:
            u()
    out = {f"{m}{'_before' if p else ''}_s": C.median(t) for (m, p), t in times.items()}
    for before in (False, True):
        undo = [all_positions_temporal(models[m].temporal) for m in models] if before else []
        for m in models:
            with flop_counter() as counter:
                fwd(models[m], data[m], device).backward()
            out[f"{m}{'_before' if before else ''}_gflop"] = counter.get_total_flops() / 1e9
        for u in undo:
            u()
    out.update(batch=b, temporal_layers=temporal_layers, max_abs_loss_diff=diff)
    print(f"  library temporal encoder vs before (all positions): {out}")
    return out


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
    models = {m: build(m, backbone, temporal_layers, device) for m in ("baseline", "full")}
    image_size = list(models["baseline"].backbone.image_size)
    for b in batches:
        data = {m: make_batch(models[m], b, device) for m in models}  # same seed: the same batch
        for row in measure_pair(models, data, device, repeats):
            row["mfu"] = row["flops"] / row["step_s"] / rate["flops_per_s"]
            rows.append(row)
    if do_breakdown:
        for m, model in models.items():
            parts[m] = breakdown(model, make_batch(model, batches[0], device), device)
    del models
    by = {(r["method"], r["batch"]): r for r in rows}
    ratios = {str(b): by[("full", b)]["step_s"] / by[("baseline", b)]["step_s"] for b in batches}
    paired = {str(b): by[("full", b)]["paired_ratio_median"] for b in batches}
    mem_ratios = {str(b): by[("full", b)]["peak_bytes"] / by[("baseline", b)]["peak_bytes"] for b in batches}
    return {
        "backbone": backbone,
        "temporal_layers": temporal_layers if temporal_layers is not None else 4,
        "image_size": image_size,
        "rows": rows,
        "time_ratio": ratios,
        "paired_time_ratio": paired,
        "memory_ratio": mem_ratios,
        "breakdown": parts,
    }


def render(data: dict) -> str:
    out = [
        C.machine_line(data),
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
            f"B={b}: {t:.2f}x time (median of the per-round ratios {cfg['paired_time_ratio'][b]:.2f}x), "
            f"{cfg['memory_ratio'][b]:.2f}x memory"
            for b, t in cfg["time_ratio"].items()
        )
        flops = {(r["method"], str(r["batch"])): r["flops"] for r in cfg["rows"]}
        floor = ", ".join(f"B={b}: {flops[('full', b)] / flops[('baseline', b)]:.2f}x" for b in cfg["time_ratio"])
        out.append(f"\nfull / baseline: {ratios}. FLOP ratio (torch.utils.flop_counter): {floor}.\n")
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
    for pt in data.get("before_temporal") or []:
        base, full = pt["baseline_s"], pt["full_s"]
        bbase, bfull = pt["baseline_before_s"], pt["full_before_s"]
        layers = pt["temporal_layers"] or "4 (ModelConfig default)"
        out.append(
            f"The temporal encoder's last layer on the [CLS] queries only (library) against the stock "
            f"`nn.TransformerEncoder` over every position (before; same loss, max abs diff "
            f"{pt['max_abs_loss_diff']:.1e}). dmae-tiny, temporal layers {layers}, B = {pt['batch']}, fwd+bwd "
            "medians, one block of steps each:\n"
        )
        out.append(
            C.table(
                ["method", "before s", "library s", "speed-up", "before GFLOP", "library GFLOP"],
                [
                    ["baseline", bbase, base, f"{bbase / base:.2f}x", pt["baseline_before_gflop"],
                     pt["baseline_gflop"]],
                    ["full", bfull, full, f"{bfull / full:.2f}x", pt["full_before_gflop"], pt["full_gflop"]],
                ],
            )
        )
        out.append(f"\nfull / baseline in this block: {bfull / bbase:.2f}x before, {full / base:.2f}x now.\n")
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
        repeats = args.repeats or 9
    rate = matmul_rate(device, repeats)
    print(f"  matmul {rate['flops_per_s'] / 1e9:.0f} GFLOP/s ({rate['dtype']})")
    configs = []
    for cfg in plan:
        reps = repeats if cfg["backbone"] == "dmae-tiny" or device.type == "cuda" else max(1, min(repeats, 3))
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
    before = []
    if not args.quick and device.type != "cuda":
        print("[the temporal encoder before its last layer ran on the [CLS] queries only]")
        for p0 in plan[:2]:
            before.append(before_temporal(p0["backbone"], p0["temporal_layers"], p0["batches"][0], device, repeats))
    main_cfg = configs[0]
    bar = {
        "met": main_cfg["time_ratio"][str(main_cfg["bar_batch"])] <= 1.3,
        "ratio": main_cfg["time_ratio"][str(main_cfg["bar_batch"])],
    }
    data = C.result(
        TOPIC,
        args.quick,
        str(device),
        repeats,
        matmul=rate,
        configs=configs,
        before_temporal=before,
        bar=bar,
    )
    C.write_json(C.default_out(TOPIC, args), data)
    print(render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
