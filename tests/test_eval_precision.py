"""The evaluator scores in float32 (docs/fidelity.md D22): the encoders may run under bf16 autocast, but the
similarity, the post-processing and the ranks never do, whatever autocast the caller passes or runs under.

On CPU, torch.autocast("cpu", dtype=torch.bfloat16) stands in for the GPU's bf16 autocast; the contrast cases
show that running the same similarity inside it changes the scores and creates ties, so the guard matters.
"""

from __future__ import annotations

import pytest
import torch

from dmae_tpm import evaluate
from dmae_tpm.backbone import BackboneConfig
from dmae_tpm.config import EvalConfig
from dmae_tpm.evaluate import evaluate_model, postprocess, similarity_chunked
from dmae_tpm.methods.dmae_tpm.dmae import TextInput, VideoInput
from dmae_tpm.metrics import retrieval_metrics
from dmae_tpm.model import ModelConfig, build_model
from dmae_tpm.runtime import Runtime
from dmae_tpm.temporal_encoder import TemporalConfig

N, WORDS, FRAMES = 24, 12, 4
COLOURS, THINGS = ["red", "blue", "green", "big", "small", "old"], ["ball", "cube", "dog", "man", "car", "cat"]
VERBS, PLACES = ["rolls", "jumps", "runs", "sits"], ["grass", "table", "road"]
CAPTIONS = [f"a {COLOURS[i % 6]} {THINGS[i % 6]} {VERBS[i % 4]} on the {PLACES[i % 3]}" for i in range(N)]


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone=BackboneConfig(name="dmae-tiny"),
        temporal=TemporalConfig("seqTransf", "v_tokens", layers=1, max_frames=FRAMES),
        max_words=WORDS,
        max_frames=FRAMES,
    )
    return build_model(cfg).eval()


@pytest.fixture(scope="module")
def inputs(model):
    g = torch.Generator().manual_seed(0)
    h, w = model.backbone.image_size
    frame_mask = torch.ones(N, FRAMES, dtype=torch.bool)
    frame_mask[::5, 2:] = False
    return {
        "tokens": model.backbone.tokenize(CAPTIONS, context_length=WORDS),
        "w_pos": torch.randint(1, 3, (N, WORDS), generator=g).float(),
        "w_freq": torch.randint(0, 2, (N, WORDS), generator=g).float(),
        "frames": torch.randn(N, FRAMES, 3, h, w, generator=g),
        "frame_mask": frame_mask,
    }


def encode(model, inputs, autocast=None):
    """Features as the evaluator stores them: encoders under `autocast` (if any), outputs in float32."""
    with torch.no_grad(), (autocast() if autocast else torch.autocast("cpu", enabled=False)):
        text = model.encode_text(inputs["tokens"])
        _, v_h = model.encode_video(inputs["frames"], inputs["frame_mask"])
    t = TextInput(text.t_cls.float(), text.t_tokens.float(), text.t_mask, inputs["w_pos"], inputs["w_freq"])
    return t, v_h.float()


def tied(sim) -> int:
    return retrieval_metrics(sim, torch.arange(N))["t2v"]["tied"]


def test_chunked_scoring_ignores_bf16_autocast_and_equals_fp32(model, inputs):
    text, v_h = encode(model, inputs)
    mask = inputs["frame_mask"]
    with torch.no_grad():
        ref = model.similarity_matrix(text, v_h, mask)  # (N, N) plain fp32, one chunk
        with bf16():  # what the evaluator did before: the similarity inside the bf16 autocast
            old = model.similarity_matrix(text, v_h, mask).float()
    got = similarity_chunked(model, text, VideoInput(v_h, mask), 5, 7)  # uneven chunks
    with bf16():  # an autocast around the whole call is switched off as well
        outer = similarity_chunked(model, text, VideoInput(v_h, mask), 5, 7)
    assert ref.dtype == got.dtype == outer.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)
    assert torch.equal(outer, got)
    # the guard matters: under bf16 the same similarity moves by far more than fp32 rounding and ties up queries
    assert (old - ref).abs().max() > 1e-3
    assert old.unique().numel() < ref.unique().numel() == N * N
    assert tied(ref) == tied(got) == 0 < tied(old)


def test_half_storage_is_scored_in_fp32(model, inputs):
    """eval.half stores the encoder outputs in fp16; their scores are the fp32 scores of those stored values."""
    text, v_h = encode(model, inputs)
    half = TextInput(text.t_cls.half(), text.t_tokens.half(), text.t_mask, text.w_pos.half(), text.w_freq.half())
    got = similarity_chunked(model, half, VideoInput(v_h.half(), inputs["frame_mask"]), 8, 8)
    with torch.no_grad():
        as_fp32 = TextInput(*(x.float() if x.is_floating_point() else x for x in (
            half.t_cls, half.t_tokens, half.t_mask, half.w_pos, half.w_freq)))
        ref = model.similarity_matrix(as_fp32, v_h.half().float(), inputs["frame_mask"])
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)


def test_evaluate_model_under_a_bf16_runtime_scores_in_fp32(model, inputs, monkeypatch):
    """The whole evaluator with a bf16 runtime: encoders in bf16, the metrics those of fp32 scoring of their
    outputs; ``tied`` is reported per direction."""
    runtime = Runtime(torch.device("cpu"), rank=0, world=1, local_rank=0, amp_dtype=torch.bfloat16)
    captions = [{k: inputs[k][i : i + 10] for k in ("tokens", "w_pos", "w_freq")} for i in range(0, N, 10)]
    videos = [
        {"frames": inputs["frames"][i : i + 10], "frame_mask": inputs["frame_mask"][i : i + 10],
         "ok": torch.ones(len(range(i, min(i + 10, N))), dtype=torch.bool)}
        for i in range(0, N, 10)
    ]
    seen = []  # the (C, V) matrix evaluate_model hands to the metrics
    metrics = evaluate._metrics
    monkeypatch.setattr(evaluate, "_metrics", lambda sim, *a: seen.append(sim) or metrics(sim, *a))
    result = evaluate_model(model, {"captions": captions, "videos": videos}, torch.arange(N), runtime, EvalConfig())

    text, v_h = encode(model, inputs, runtime.autocast)  # the encoders under bf16, outputs stored in fp32
    with torch.no_grad():
        ref = model.similarity_matrix(text, v_h, inputs["frame_mask"])
        with bf16():
            old = model.similarity_matrix(text, v_h, inputs["frame_mask"]).float()
    (sim,) = seen
    assert sim.dtype == torch.float32
    torch.testing.assert_close(sim, ref, rtol=1e-6, atol=1e-7)
    want = retrieval_metrics(ref, torch.arange(N), keep_ranks=True)
    assert result["t2v"] == want["t2v"] and result["v2t"] == want["v2t"]
    assert result["t2v"]["tied"] == 0 and "tied" in result["v2t"]
    assert tied(old) > 0  # bf16 scoring of the very same features would have tied queries up


@pytest.mark.parametrize("kind", ["dsl", "qbnorm"])
def test_postprocess_runs_in_fp32_under_autocast(kind):
    g = torch.Generator().manual_seed(3)
    sim, bank = torch.rand(6, 5, generator=g), torch.rand(9, 5, generator=g)
    cfg = EvalConfig(postprocess=kind)
    ref = postprocess(sim, cfg, bank)
    with bf16():
        got = postprocess(sim.bfloat16(), cfg, bank.bfloat16())  # bf16 inputs are upcast, autocast is off
    want = postprocess(sim.bfloat16().float(), cfg, bank.bfloat16().float())
    for key in ("t2v", "v2t"):
        assert got[key].dtype == ref[key].dtype == torch.float32
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)


def test_half_storage_is_opt_in():
    assert EvalConfig().half is False


def test_chunk_sizes_fit_the_budget_from_the_shapes():
    """eval.text_chunk / video_chunk null: the largest square chunk (<= 256) whose fp32 C x M x V x N token
    similarity fits chunk_mib (16 MiB on CPU); explicit sizes win; a budget applies on any device."""
    from dmae_tpm.config import EvalConfig
    from dmae_tpm.evaluate import chunk_sizes

    def shapes(words, frames, d=4):
        text = TextInput(torch.zeros(2, d), torch.zeros(2, words, d), torch.ones(2, words, dtype=torch.bool))
        return text, VideoInput(torch.zeros(3, frames, d), torch.ones(3, frames, dtype=torch.bool))

    msrvtt, anet = shapes(32, 12), shapes(64, 64)
    assert chunk_sizes(EvalConfig(), *msrvtt) == (104, 104)  # 104^2 x 32 x 12 x 4 B = 15.8 MiB <= 16 < 105^2 ...
    assert 104**2 * 32 * 12 * 4 <= 16 * 2**20 < 105**2 * 32 * 12 * 4
    assert chunk_sizes(EvalConfig(), *anet) == (32, 32)
    assert chunk_sizes(EvalConfig(chunk_mib=1e6), *anet) == (256, 256)  # capped at the old default
    assert chunk_sizes(EvalConfig(chunk_mib=1e-9), *anet) == (1, 1)
    assert chunk_sizes(EvalConfig(text_chunk=7), *msrvtt) == (7, 104)
    assert chunk_sizes(EvalConfig(text_chunk=5, video_chunk=9), *anet) == (5, 9)
    for bad in ({"text_chunk": 0}, {"video_chunk": -1}, {"chunk_mib": 0.0}):
        with pytest.raises(ValueError, match="must be > 0 or null"):
            EvalConfig(**bad)
