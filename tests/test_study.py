"""benchmarks/study.py: the quick profile runs end to end and writes well-formed outputs."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import study  # noqa: E402
from _study_tasks import build_task  # noqa: E402

METHODS = {"Full", study.SHORT_FULL, *study.PRUNING_METHODS}


def test_paired_interval_and_verdict_follow_the_stated_rule() -> None:
    # d = [1, 2, 3]: mean 2, sd 1, t(0.975, 2) = 4.303 -> 2 +- 4.303 / sqrt(3)
    mean, low, high = study.paired_interval([1.0, 2.0, 3.0])
    half = 4.303 / math.sqrt(3.0)
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert study.verdict(-0.9, 0.5) == "lossless"
    assert study.verdict(-0.9, -0.1) == "lossless"  # within the margin, even if lower
    assert study.verdict(-1.5, -0.2) == "lossy"
    assert study.verdict(-1.5, 0.4) == "inconclusive"
    assert study.verdict(math.nan, math.nan) == "inconclusive"


def test_tasks_have_the_documented_structure() -> None:
    task = build_task("noisy16", scale=0.05)
    images, labels = task.train.tensors
    assert images.shape == (400, 1, 16, 16) and labels.shape == (400,)
    assert int(labels.min()) >= 0 and int(labels.max()) <= 9
    assert 0.03 < float(task.label_noise.float().mean()) < 0.2  # 10% label noise
    assert set(task.difficulty.tolist()) <= {0, 1, 2}
    digits = build_task("digits")
    assert len(digits.train) == 1347 and len(digits.test) == 450
    with pytest.raises(ValueError, match="task: unknown task"):
        build_task("cifar")


def test_quick_study_writes_well_formed_outputs(tmp_path: Path) -> None:
    doc = tmp_path / "results.md"
    assert study.main(["--quick", "--out", str(tmp_path), "--doc", str(doc)]) == 0

    payload = json.loads((tmp_path / "runs.json").read_text())
    profile = study.QUICK
    configs = 2 + len(study.PRUNING_METHODS) * len(profile.prune_ratios)
    assert len(payload["runs"]) == len(profile.tasks) * configs * profile.seeds
    sweep_runs = len(profile.sweep_batch_sizes) * profile.sweep_seeds
    assert len(payload["sweep_runs"]) == sweep_runs * (1 + len(profile.sweep_alphas))
    assert payload["machine"]["torch"] and payload["machine"]["cores"] >= 1
    for run in payload["runs"]:
        assert 0.0 <= run["test_accuracy"] <= 1.0
        assert 0.0 <= run["saved_ratio"] < 1.0
        epochs = profile.epochs[run["task"]]
        if run["method"] == study.SHORT_FULL:
            epochs = round(study.SHORT_SHARE * epochs)
        assert len(run["accuracy_by_epoch"]) == epochs
        if run["method"] == "Full":
            assert run["saved_ratio"] == 0.0
        if run["method"] == study.SHORT_FULL:  # 2 of 3 epochs in the quick profile
            assert run["saved_ratio"] == pytest.approx(1 / 3)
        assert run["cpu_time_s"] > 0.0
        if run["method"] in study.SCORED_METHODS:
            assert all(-1.0 <= rho <= 1.0 for rho in run["spearman_by_epoch"])

    with (tmp_path / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(profile.tasks) * configs
    assert {row["method"] for row in rows} == METHODS
    for row in rows:
        assert row["verdict"] in {"baseline", "lossless", "lossy", "inconclusive"}
        assert (row["verdict"] == "baseline") == (row["method"] == "Full")
        assert 0.0 <= float(row["accuracy_mean"]) <= 100.0
        low, high = float(row["diff_ci_low_pp"]), float(row["diff_ci_high_pp"])
        if row["method"] != "Full":
            assert low <= float(row["diff_mean_pp"]) <= high
    with (tmp_path / "sweep.csv").open() as handle:
        sweep = list(csv.DictReader(handle))
    assert {row["score"] for row in sweep} == {"BLS", "per-sample"}
    assert all(-1.0 <= float(row["spearman_mean"]) <= 1.0 for row in sweep)

    for picture in ("accuracy_vs_saved.png", "alpha_sweep.png"):
        assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = doc.read_text()
    # --report-only rebuilds the same page from runs.json without training
    first = text
    assert study.main(["--report-only", "--out", str(tmp_path), "--doc", str(doc)]) == 0
    assert doc.read_text() == first
    for needle in (
        "python benchmarks/study.py --quick",
        "Machine:",
        "Lossless rule",
        "### digits",
        "### noisy16",
        "| BLS_InfoBatch | 0.5 |",
        "alpha = 0.90",
        "accuracy_vs_saved.png)",
    ):
        assert needle in text, needle
