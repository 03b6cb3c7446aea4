"""bls.diagnostics: ranks, Spearman, prune overlap, true per-sample losses and the tracker."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch.utils.data import DataLoader, TensorDataset

from bls import BLS, InfoBatch
from bls.diagnostics import (
    ScoreTracker,
    hard_recall,
    per_sample_losses,
    prune_overlap,
    random_overlap,
    rank,
    spearman,
)


def test_rank_gives_ties_their_average_rank() -> None:
    assert rank([10.0, 20.0, 20.0, 5.0]).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert rank(torch.tensor([3.0, 3.0, 3.0])).tolist() == [2.0, 2.0, 2.0]


def test_spearman_matches_a_hand_computed_example_with_ties() -> None:
    # a = [1, 2, 2, 4, 5] -> ranks [1, 2.5, 2.5, 4, 5]
    # b = [5, 6, 9, 7, 8] -> ranks [1, 2, 5, 3, 4]
    # both rank vectors have mean 3; centred: ra = [-2, -.5, -.5, 1, 2], rb = [-2, -1, 2, 0, 1]
    # sum(ra*rb) = 4 + .5 - 1 + 0 + 2 = 5.5; sum(ra^2) = 4 + .25 + .25 + 1 + 4 = 9.5;
    # sum(rb^2) = 4 + 1 + 4 + 0 + 1 = 10  ->  rho = 5.5 / sqrt(95)
    a = [1.0, 2.0, 2.0, 4.0, 5.0]
    b = [5.0, 6.0, 9.0, 7.0, 8.0]
    assert spearman(a, b) == pytest.approx(5.5 / math.sqrt(95.0), abs=1e-12)
    # without ties the textbook formula 1 - 6 sum(d^2) / (n (n^2 - 1)) applies: d = [0,1,1,0]
    assert spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(1 - 6 * 2 / (4 * 15))


@pytest.mark.parametrize("size,levels", [(7, None), (200, None), (300, 5), (50, 2)])
def test_spearman_matches_scipy(size: int, levels: int | None) -> None:
    generator = np.random.default_rng(size)
    a = generator.normal(size=size)
    b = a + generator.normal(size=size)
    if levels is not None:  # many ties
        a, b = np.round(a * levels / 3), np.round(b * levels / 3)
    expected = spearmanr(a, b).statistic
    assert spearman(a, b) == pytest.approx(expected, abs=1e-12)
    assert spearman(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(
        spearmanr(np.float32(a), np.float32(b)).statistic, abs=1e-6
    )


def test_spearman_extremes_and_constant_input() -> None:
    x = np.arange(10.0)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert math.isnan(spearman(x, np.ones(10)))


def test_spearman_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="b: expected the same length as a"):
        spearman([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2"):
        spearman([1.0], [2.0])
    with pytest.raises(ValueError, match="a: expected finite"):
        spearman([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="1-D"):
        spearman(np.ones((2, 2)), np.ones((2, 2)))


def test_prune_overlap_is_the_jaccard_index_of_the_lowest_sets() -> None:
    a = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]  # prunes {0, 1, 2} at ratio 0.5
    b = [0.1, 0.9, 0.3, 0.2, 0.8, 0.7]  # prunes {0, 3, 2}
    assert prune_overlap(a, b, 0.5) == pytest.approx(2 / 4)  # shared {0, 2}, union of 4
    assert prune_overlap(a, a, 0.5) == 1.0
    assert prune_overlap(a, [-v for v in a], 0.5) == 0.0
    assert prune_overlap(a, b, 0.1) == 1.0  # floor(0.6) = 0 samples: both prune nothing
    # ties break by index: all-equal scores prune the first k
    assert prune_overlap([1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 2.0, 3.0], 0.5) == 1.0


def test_prune_overlap_of_unrelated_scores_is_near_chance() -> None:
    generator = np.random.default_rng(0)
    values = [prune_overlap(generator.random(5000), generator.random(5000), 0.3) for _ in range(5)]
    assert np.mean(values) == pytest.approx(random_overlap(0.3), abs=0.01)


def test_prune_overlap_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="prune_ratio"):
        prune_overlap([1.0, 2.0], [1.0, 2.0], 1.0)
    with pytest.raises(ValueError, match="scores_b: expected the same length"):
        prune_overlap([1.0, 2.0], [1.0], 0.5)


def test_hard_recall_counts_the_shared_hardest_samples() -> None:
    losses = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]  # hardest 2: {9, 8}
    assert hard_recall([0, 0, 0, 0, 0, 0, 0, 0, 5, 6], losses, 0.2) == 1.0
    assert hard_recall([0, 0, 0, 0, 0, 0, 0, 0, 5, -1], losses, 0.2) == 0.5  # top 2: {8, 0}
    assert hard_recall([-v for v in losses], losses, 0.2) == 0.0
    assert hard_recall(losses, losses, 0.01) == 1.0  # k is at least 1
    with pytest.raises(ValueError, match="fraction"):
        hard_recall(losses, losses, 0.0)
    with pytest.raises(ValueError, match="losses: expected the same length"):
        hard_recall(losses, losses[:3], 0.2)


def _toy_problem() -> tuple[TensorDataset, torch.nn.Module]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(50, 4, generator=generator)
    targets = torch.randint(0, 3, (50,), generator=generator)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3)
    )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return TensorDataset(inputs, targets), model


def test_per_sample_losses_equals_a_direct_forward_pass_and_keeps_state() -> None:
    dataset, model = _toy_problem()
    model.train()
    torch_state, numpy_state, random_state = (
        torch.get_rng_state(),
        np.random.get_state(),
        random.getstate(),
    )
    losses = per_sample_losses(model, dataset, batch_size=7)
    assert model.training  # mode restored
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist()
    assert random.getstate() == random_state
    model.eval()
    inputs, targets = dataset.tensors
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(inputs), targets, reduction="none")
    assert losses.shape == (50,)
    torch.testing.assert_close(losses, expected, rtol=1e-5, atol=1e-6)


def test_per_sample_losses_rejects_a_reduced_loss() -> None:
    dataset, model = _toy_problem()
    with pytest.raises(ValueError, match="loss_fn: expected one loss per sample"):
        per_sample_losses(model, dataset, loss_fn=torch.nn.functional.cross_entropy)
    with pytest.raises(ValueError, match="batch_size"):
        per_sample_losses(model, dataset, batch_size=0)


def test_score_tracker_records_every_epoch_against_true_losses() -> None:
    dataset, model = _toy_problem()
    handler = BLS(InfoBatch(dataset, num_epochs=3, prune_ratio=0.5), alpha=0.5).proxy()
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    tracker = ScoreTracker(prune_ratios=(0.2, 0.5), batch_size=16)
    for epoch in range(3):
        for inputs, targets in loader:
            loss = handler.update(torch.nn.functional.cross_entropy(model(inputs), targets))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        tracker(epoch, handler, model)
    assert [r.epoch for r in tracker.records] == [0, 1, 2]
    true_losses = per_sample_losses(model, dataset)
    last = tracker.records[-1]
    assert last.spearman == pytest.approx(spearmanr(handler.scores, true_losses).statistic)
    assert last.overlap[0.5] == prune_overlap(handler.scores, true_losses, 0.5)
    assert last.hard_recall == hard_recall(handler.scores, true_losses, 0.1)
    assert last.kept == handler.history[-1]["kept"]
    assert last.mean_loss == pytest.approx(float(true_losses.mean()))
    assert tracker.mean_spearman(first_epoch=2) == pytest.approx(last.spearman)
    assert set(last.to_dict()["overlap"]) == {"0.2", "0.5"}
