"""Training curves and run comparison, read back from metrics.jsonl files written here with known values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from dmae_tpm.compare import main as compare_main
from dmae_tpm.compare import markdown_table, run_rows
from dmae_tpm.curves import curve_series, plot_curves
from dmae_tpm.run_records import RunFolderError, read_records


def _result(r1: float, rsum: float) -> dict:
    direction = {"R@1": r1, "R@5": r1 + 20, "R@10": r1 + 30, "MdR": 7.0, "MeanR": 20.25, "rsum": 3 * r1 + 50}
    return {"t2v": direction, "v2t": {**direction, "R@1": r1 - 1}, "rsum_total": rsum}


def _run(folder: Path, evals: list[tuple[int, float, float]], broken_tail: bool = False) -> Path:
    folder.mkdir(parents=True)
    lines = [{"step": s, "loss": 3.0 / s, "loss_contrastive": 2.0 / s, "lr": {"clip": 1e-7 * s, "other": 1e-4 * s},
              "clips_per_s": 100.0 + s, "epoch": 0} for s in (10, 20, 30)]
    lines += [{"step": s, "eval": _result(r1, rsum), "epoch": 1} for s, r1, rsum in evals]
    text = "\n".join(json.dumps(x) for x in lines) + "\n"
    (folder / "metrics.jsonl").write_text(text + ('{"step": 40, "loss": 1.' if broken_tail else ""))
    return folder


def test_curve_series_are_the_records(tmp_path, caplog):
    run = _run(tmp_path / "r", [(30, 12.5, 150.0), (60, 14.0, 160.0)], broken_tail=True)
    panels = curve_series(read_records(run))
    assert "skipped 1 unreadable line" in caplog.text  # a killed run's partial last line
    assert panels["loss"]["loss"] == ([10, 20, 30], [0.3, 0.15, 0.1])
    assert panels["lr"]["other"] == ([10, 20, 30], [1e-3, 2e-3, 3e-3])
    assert panels["throughput"]["clips_per_s"] == ([10, 20, 30], [110.0, 120.0, 130.0])
    assert panels["recall"]["t2v R@1"] == ([30, 60], [12.5, 14.0])
    assert panels["recall"]["v2t R@1"] == ([30, 60], [11.5, 13.0])
    assert panels["rsum"]["rsum (t2v + v2t)"] == ([30, 60], [150.0, 160.0])


def test_curves_png_has_its_size_and_content(tmp_path):
    out = plot_curves(_run(tmp_path / "r", [(30, 12.5, 150.0)]), dpi=50)
    assert out == tmp_path / "r" / "curves.png"
    image = imread(out)[..., :3]
    assert image.shape[:2] == (400, 600)  # 12 x 8 inches at 50 dpi
    assert image.std() > 0.05 and len(np.unique(image.reshape(-1, 3), axis=0)) > 50


def test_compare_rows_and_markdown_are_the_runs_metrics(tmp_path, capsys):
    a = _run(tmp_path / "a", [(30, 12.5, 150.0), (60, 11.0, 170.0)])  # best t2v R@1 is not the final one
    b = _run(tmp_path / "b", [(60, 14.0, 160.0)])
    rows = run_rows(a) + run_rows(b)
    assert [(r["run"], r["which"], r["step"]) for r in rows] == [
        ("a", "final", 60), ("a", "best t2v.R@1", 30), ("b", "final", 60)]
    assert [r["which"] for r in run_rows(a, "rsum_total")] == ["final"]  # final is also the best rsum
    table = markdown_table(rows).splitlines()
    assert table[2] == "| a | final | 60 | 11.0 | 31.0 | 41.0 | 7.0 | 20.2 | 10.0 | 31.0 | 41.0 | 7.0 | 20.2 | 170.0 |"
    assert table[3].startswith("| a | best t2v.R@1 | 30 | 12.5 | 32.5 |")
    out = tmp_path / "cmp.md"
    compare_main([str(a), str(b), "--out", str(out)])
    assert out.read_text().splitlines() == table
    assert "| b | final | 60 | 14.0" in capsys.readouterr().out


def test_compare_and_curves_errors_are_clear(tmp_path, capsys):
    with pytest.raises(RunFolderError, match="no metrics.jsonl"):
        read_records(tmp_path)
    no_eval = _run(tmp_path / "n", [])
    with pytest.raises(SystemExit):
        compare_main([str(no_eval)])
    assert "no evaluation yet" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare_main([str(no_eval), "--metric", "t2v.R@2"])
    assert "unknown metric" in capsys.readouterr().err
