"""What a trained run's temporal encoder and TPM-CL do on its test set: one line of statistics per run.

    python scripts/inspect_vh.py outputs/study_A_s1 outputs/study_E_s1

For the last step checkpoint of each run: how far v_h has moved from CLIP's frame features (cosine, length ratio),
how similar a video's frames are before and after the temporal encoder, and, where the run trains TPM-CL, the
Eq. 17 gaps S(full) - S(partial) on the matched test pairs with the masked fractions (model in eval mode).
With --rescore, the same encoded test set is also scored with each reading of Eq. 3 (TA, VA and the sentence term
on; a TI run's checkpoint has every weight those need), to see what a reading does to a fixed set of features.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from dmae_tpm import checkpoint
from dmae_tpm.config import to_run_config
from dmae_tpm.data import loaders
from dmae_tpm.evaluate import similarity_chunked
from dmae_tpm.features import TextFeatures, VideoFeatures
from dmae_tpm.methods.dmae_tpm.dmae import Similarity, SimilarityConfig, TextInput, VideoInput
from dmae_tpm.metrics import retrieval_metrics
from dmae_tpm.model import build_model


def _off_diagonal_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean cosine between the distinct real frames of each video. x (V, N, D), mask (V, N)."""
    s = F.normalize(x, dim=-1) @ F.normalize(x, dim=-1).transpose(1, 2)  # (V, N, N)
    pair = mask[:, :, None] & mask[:, None, :] & ~torch.eye(x.shape[1], dtype=torch.bool)
    return float(s[pair].mean())


@torch.no_grad()
def encode(model, run, cfg):
    loaders.prepare(cfg.data, model.backbone.image_size, cfg.model.max_frames)
    split, captions, videos = loaders.eval_datasets(cfg.data, model.backbone, cfg.model.max_words, cfg.model.max_frames)
    ld = loaders.eval_loaders(cfg.data, captions, videos, 1, 0)
    parts = {"f_cls": [], "v_tokens": [], "frame_mask": [], "v_h": [], "t_cls": [], "t_tokens": [], "t_mask": [],
             "w_pos": [], "w_freq": []}
    for batch in ld["videos"]:
        video, v_h = model.encode_video(batch["frames"], batch["frame_mask"])
        for k in ("f_cls", "v_tokens", "frame_mask"):
            parts[k].append(getattr(video, k))
        parts["v_h"].append(v_h)
    for batch in ld["captions"]:
        text = model.encode_text(batch["tokens"])
        for k in ("t_cls", "t_tokens", "t_mask"):
            parts[k].append(getattr(text, k))
        parts["w_pos"].append(batch["w_pos"])
        parts["w_freq"].append(batch["w_freq"])
    return {k: torch.cat(v) for k, v in parts.items()}, torch.tensor(split.caption_video)


@torch.no_grad()
def tpm_gaps(model, f, caption_video) -> dict:
    text = TextFeatures(f["t_cls"], f["t_tokens"], f["t_mask"])
    idx = caption_video
    video = VideoFeatures(f["f_cls"][idx], f["v_tokens"][idx], f["frame_mask"][idx])
    v_h, fm = f["v_h"][idx], video.frame_mask
    out = model.tpm(text, video, v_h, model.temporal, model.pair_score)
    p = model.tpm.partial_samples(text, video, model.temporal)
    s = model.pair_score
    return {
        "trpl1": float(out["trpl1"]), "trpl2": float(out["trpl2"]), "trpl3": float(out["trpl3"]),
        "gap_cls_video": float((s(text.t_cls, v_h, fm) - s(text.t_cls, p["v_h_p"], fm)).mean()),
        "masked_text": float(out["masked_text_frac"]), "masked_video": float(out["masked_video_frac"]),
        "top_text_weight": float(out["top_text_weight"]), "kept_text_weight": float(out["kept_text_weight"]),
    }


@torch.no_grad()
def rescore(model, f, caption_video) -> dict:
    """t2v R@1 / rsum of the encoded test set under the run's own similarity and under each reading of Eq. 3."""
    text = TextInput(f["t_cls"], f["t_tokens"], f["t_mask"], f["w_pos"], f["w_freq"])
    out = {}
    base = model.similarity.cfg
    readings = {"own": base, **{v: SimilarityConfig(base.interaction, True, True, v) for v in ("word", "pooled",
                                                                                           "official")}}
    for name, cfg in readings.items():
        sim = Similarity(cfg, model.backbone.embed_dim)
        if model.similarity.weights is not None:
            sim.weights = model.similarity.weights
        m = retrieval_metrics(similarity_chunked(_Scorer(sim), text, VideoInput(f["v_h"], f["frame_mask"]), 256, 256),
                              caption_video)["t2v"]
        out[f"rescore_{name}"] = f"{m['R@1']:.1f} / {m['rsum']:.1f}"
    return out


class _Scorer:
    def __init__(self, similarity):
        self.similarity = similarity

    def score(self, text, video):
        return self.similarity(text, video.v_h, video.frame_mask)


def inspect(run: Path, with_rescore: bool = False) -> dict:
    last = sorted((run / "checkpoints").glob("step_*.pt"))[-1]
    state = checkpoint.load(last)
    cfg = to_run_config(state["config"])
    model = build_model(cfg.model, load_pretrained=False)
    model.load_state_dict(checkpoint.model_state(state))
    model.eval()
    f, caption_video = encode(model, run, cfg)
    real = f["frame_mask"]
    out = {
        "run": run.name, "checkpoint": last.name,
        "cos_vh_fcls": float(F.cosine_similarity(f["v_h"], f["f_cls"], dim=-1)[real].mean()),
        "len_vh_over_fcls": float((f["v_h"].norm(dim=-1) / f["f_cls"].norm(dim=-1).clamp_min(1e-12))[real].mean()),
        "frame_cos_fcls": _off_diagonal_mean(f["f_cls"], real),
        "frame_cos_vh": _off_diagonal_mean(f["v_h"], real),
    }
    if model.tpm is not None:
        out.update(tpm_gaps(model, f, caption_video))
    if with_rescore:
        out.update(rescore(model, f, caption_video))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--rescore", action="store_true", help="also score the test set with every reading of Eq. 3")
    ap.add_argument("--out", type=Path, help="append the JSON lines here too")
    args = ap.parse_args()
    for run in args.runs:
        line = json.dumps(inspect(run, args.rescore))
        print(line, flush=True)
        if args.out:
            with args.out.open("a") as fh:
                fh.write(line + "\n")


if __name__ == "__main__":
    main()
