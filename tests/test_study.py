"""benchmarks/study.py (and study_report.py): both quick profiles run end to end and write
well-formed outputs; the residual score of benchmarks/_score_variants.py follows its rule."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import study  # noqa: E402
import study_report  # noqa: E402
from _score_variants import BatchResidual, ScorePanel  # noqa: E402
from _study_tasks import build_task  # noqa: E402

from bls import BLS, InfoBatch  # noqa: E402
from bls.scores import BatchLossEMA  # noqa: E402


def test_paired_interval_and_verdict_follow_the_stated_rule() -> None:
    # d = [1, 2, 3]: mean 2, sd 1, t(0.975, 2) = 4.303 -> 2 +- 4.303 / sqrt(3)
    mean, low, high = study_report.paired_interval([1.0, 2.0, 3.0])
    half = 4.303 / math.sqrt(3.0)
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert study_report.verdict(-0.9, 0.5) == "lossless"
    assert study_report.verdict(-0.9, -0.1) == "lossless"  # within the margin, even if lower
    assert study_report.verdict(-1.5, -0.2) == "lossy"
    assert study_report.verdict(-1.5, 0.4) == "inconclusive"
    assert study_report.verdict(math.nan, math.nan) == "inconclusive"


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


# ----------------------------------------------------------------------------- residual score
def _replay_residual(size: int, eta: float, batches: list[tuple[list[int], float]]) -> np.ndarray:
    """Independent float64 replay: one batch at a time, in order, a plain Python loop."""
    scores = np.zeros(size, dtype=np.float64)
    for indices, loss in batches:
        if not math.isfinite(loss):
            continue
        mean = sum(scores[i] for i in indices) / len(indices)
        new = {i: scores[i] + eta * (loss - mean) for i in indices}
        for i, value in new.items():
            scores[i] = value
    return scores


def test_residual_record_matches_a_float64_replay_on_hand_made_batches() -> None:
    source = BatchResidual(eta=0.3)
    steps = [  # (rows of indices, one loss per row); rows of one step share no index
        ([[0, 1, 2], [3, 4, 5]], [2.0, 1.0]),
        ([[0, 3, 6]], [0.5]),
        ([[1, 1, 7]], [4.0]),  # a repeated index: counted twice in the mean, updated once
        ([[2, 5, 6]], [float("nan")]),  # non-finite: the row keeps its scores
        ([[7, 0, 4], [6, 2, 1]], [1.5, 3.0]),
    ]
    scores = torch.zeros(8, dtype=torch.float32)
    skipped = 0
    replay_batches: list[tuple[list[int], float]] = []
    for rows, losses in steps:
        indices = torch.tensor(rows, dtype=torch.int64)
        measurement = torch.tensor(losses, dtype=torch.float32).unsqueeze(1)
        skipped += int(source.record(scores, indices, measurement))
        replay_batches += list(zip(rows, losses, strict=True))
    expected = _replay_residual(8, 0.3, replay_batches)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-6, atol=1e-5)
    assert skipped == 1
    # the rule's invariants: eta = 1 makes the batch's mean score its loss ...
    exact = torch.tensor([1.0, -2.0, 0.5, 3.0])
    BatchResidual(eta=1.0).record(exact, torch.tensor([[0, 1, 2]]), torch.tensor([[4.0]]))
    assert float(exact[:3].mean()) == pytest.approx(4.0)
    # ... and every eta keeps the differences within the batch
    assert float(exact[0] - exact[1]) == pytest.approx(3.0)
    assert float(exact[3]) == 3.0
    with pytest.raises(ValueError, match="eta: expected a number in"):
        BatchResidual(eta=0.0)
    # many batches at once, as (ranks, batches, batch) with one loss per batch: the same rule
    block = torch.zeros(8)
    source.record(block, torch.tensor([[[0, 1], [2, 3]]]), torch.tensor([[[1.0], [2.0]]]))
    np.testing.assert_allclose(block.numpy()[:4], [0.3, 0.3, 0.6, 0.6], rtol=1e-6)
    with pytest.raises(ValueError, match="indices: expected"):
        source.record(scores, torch.tensor([0, 1]), torch.tensor([1.0, 1.0]))


def test_residual_source_in_a_handler_matches_the_replay() -> None:
    # Through the handler's own route (order route, deferred folding): the dataset yields its
    # indices, so the test knows every batch; each batch's "loss" is a hand-made number.
    size, batch_size, eta = 22, 4, 0.25
    handler = BLS(InfoBatch(TensorDataset(torch.arange(size)), num_epochs=3, prune_ratio=0.5))
    handler = handler.proxy()
    handler.use_score_source(BatchResidual(eta=eta))
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=batch_size)
    generator = torch.Generator().manual_seed(7)
    seen: list[tuple[list[int], float]] = []
    for epoch in range(3):
        handler.sampler.set_epoch(epoch)
        for (indices,) in loader:
            loss = float(torch.rand((), generator=generator) * 3)
            handler.update(torch.tensor(loss))
            seen.append((indices.tolist(), loss))
    np.testing.assert_allclose(
        handler.scores.numpy(), _replay_residual(size, eta, seen), rtol=1e-6, atol=1e-5
    )
    assert handler.history[-1]["score"] == "bls-residual"
    assert sum(h["kept"] for h in handler.history) < 3 * size  # it pruned on these scores


def test_panel_members_equal_their_own_runs() -> None:
    # Without pruning the training does not depend on the scores: a panel's EMA member holds
    # exactly the scores the library's BLS gives alone, and the handler follows the first.
    size, batch_size = 18, 5
    batches = [
        (torch.randperm(size, generator=torch.Generator().manual_seed(e)), e) for e in range(3)
    ]
    panel = ScorePanel(members=(("ema", BatchLossEMA(alpha=0.7)), ("res", BatchResidual(eta=0.5))))
    alone = torch.zeros(size)
    panel_scores = torch.zeros(size)
    residual = torch.zeros(size)
    for order, epoch in batches:
        rows = [order[i : i + batch_size] for i in range(0, size, batch_size)]
        for k, row in enumerate(rows):
            value = torch.tensor([[1.0 + epoch + 0.1 * k]])
            BatchLossEMA(alpha=0.7).record(alone, row.unsqueeze(0), value)
            BatchResidual(eta=0.5).record(residual, row.unsqueeze(0), value)
            panel.record(panel_scores, row.unsqueeze(0), value)
    assert torch.equal(panel.scores_of("ema", size), alone)
    assert torch.equal(panel_scores, alone)
    assert torch.equal(panel.scores_of("res", size), residual)


# ----------------------------------------------------------------------------- the profiles
def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_quick_default_study_writes_well_formed_outputs(tmp_path: Path) -> None:
    doc = tmp_path / "results.md"
    assert study.main(["--quick", "--out", str(tmp_path), "--doc", str(doc)]) == 0

    payload = json.loads((tmp_path / "runs.json").read_text())
    profile = study.QUICK
    per_seed = 2 + len(profile.methods) + len(profile.ratio_methods)
    assert len(payload["runs"]) == len(profile.tasks) * per_seed * profile.seeds
    panel = 2 * len(profile.sweep_alphas)  # the EMA and the residual at each alpha
    sweep_runs = len(profile.sweep_epochs) * len(profile.sweep_batch_sizes) * profile.sweep_seeds
    assert len(payload["sweep_runs"]) == sweep_runs * (1 + panel)
    assert payload["machine"]["torch"] and payload["machine"]["cores"] >= 1
    t = profile.target_saving
    for run in payload["runs"]:
        assert 0.0 <= run["test_accuracy"] <= 1.0
        epochs = profile.epochs[run["task"]][0]
        assert run["run_epochs"] == epochs
        if run["method"] == study.SHORT_FULL:
            assert len(run["accuracy_by_epoch"]) == study.short_epochs(epochs, t)
            assert run["saved_ratio"] == pytest.approx(1 - study.short_epochs(epochs, t) / epochs)
        else:
            assert len(run["accuracy_by_epoch"]) == epochs
        if run["method"] == "Full":
            assert run["saved_ratio"] == 0.0 and run["score_source"] == "none"
        elif run["group"] == "target" and run["method"] != study.SHORT_FULL:
            assert run["saved_ratio"] == pytest.approx(t, abs=0.02)  # equal saving
        if run["method"].startswith("BLSres_"):
            assert run["score_source"] == "bls-residual" and run["eta"] == profile.eta
        elif run["method"].startswith("BLS_"):
            assert run["score_source"] == "bls"
        if run["method"] in study.SCORED_METHODS:
            assert all(-1.0 <= rho <= 1.0 for rho in run["spearman_by_epoch"])
            assert len(run["visits_spearman_by_epoch"]) == epochs
        assert run["cpu_time_s"] > 0.0

    rows = _read_csv(tmp_path / "summary.csv")
    assert len(rows) == len(profile.tasks) * per_seed
    assert {r["method"] for r in rows if r["group"] == "target"} == {
        study.SHORT_FULL,
        *profile.methods,
    }
    assert {r["method"] for r in rows if r["group"] == "ratio"} == set(profile.ratio_methods)
    for row in rows:
        assert row["verdict"] in {"baseline", "lossless", "lossy", "inconclusive"}
        assert (row["verdict"] == "baseline") == (row["method"] == "Full")
        low, high = float(row["diff_ci_low_pp"]), float(row["diff_ci_high_pp"])
        if row["method"] != "Full":
            assert low <= float(row["diff_mean_pp"]) <= high
    sweep = _read_csv(tmp_path / "sweep.csv")
    assert {row["score"] for row in sweep} == {"per-sample", "ema", "residual"}
    assert all(-1.0 <= float(row["spearman_mean"]) <= 1.0 for row in sweep)

    for picture in ("equal_saving.png", "alpha_sweep.png", "spearman_by_epoch.png"):
        assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = doc.read_text()
    # --report-only rebuilds the same page from runs.json without training
    assert study.main(["--report-only", "--out", str(tmp_path), "--doc", str(doc)]) == 0
    assert doc.read_text() == text
    for needle in (
        "python benchmarks/study.py --quick",
        "Machine:",
        "Lossless rule",
        "target_saving=0.4",
        "### digits, 4 epochs",
        "### noisy16, 4 epochs",
        "| BLSres_InfoBatch | target_saving |",
        "| Static | prune_ratio = t |",
        "## At prune ratio 0.5 (savings differ)",
        "| BLS_InfoBatch | 0.5 |",
        "| BLS EMA, alpha = 0.9 |",
        "| residual, eta = 0.1 |",
        "### Spearman by epoch",
        "equal_saving.png)",
        "results_long.md",
    ):
        assert needle in text, needle


def test_quick_long_study_compares_run_lengths(tmp_path: Path) -> None:
    doc = tmp_path / "results_long.md"
    argv = ["--profile", "long", "--quick", "--out", str(tmp_path), "--doc", str(doc)]
    assert study.main(argv) == 0

    profile = study.LONG_QUICK
    payload = json.loads((tmp_path / "runs.json").read_text())
    assert payload["profile"]["name"] == "long-quick"
    lengths = profile.epochs["noisy16"]
    per_seed = 2 + len(profile.methods)
    assert len(payload["runs"]) == len(lengths) * per_seed * profile.seeds
    assert {r["run_epochs"] for r in payload["runs"]} == set(lengths)
    assert {r["epochs"] for r in payload["sweep_runs"]} == set(profile.sweep_epochs)
    for run in payload["sweep_runs"]:
        assert len(run["spearman_by_epoch"]) == run["epochs"]
    rows = _read_csv(tmp_path / "summary.csv")
    baselines = [r for r in rows if r["group"] == "baseline"]
    assert sorted(int(r["run_epochs"]) for r in baselines) == sorted(lengths)  # one per length

    text = doc.read_text()
    assert (
        study.main(
            ["--profile", "long", "--report-only", "--out", str(tmp_path), "--doc", str(doc)]
        )
        == 0
    )
    assert doc.read_text() == text
    for needle in (
        "python benchmarks/study.py --profile long --quick",
        "# The long profile",
        "### noisy16, 4 epochs",
        "### noisy16, 6 epochs",
        "## Verdicts by run length",
        "4 epochs: Δ pp [95% CI], verdict, rho",
        "| BLSres_InfoBatch |",
        "| after 1 | after 6 |",
        "### By run length",
        "| B = 32, 4 epochs | B = 32, 6 epochs |",
    ):
        assert needle in text, needle
    assert "## At prune ratio" not in text  # the long profile compares at equal saving only
