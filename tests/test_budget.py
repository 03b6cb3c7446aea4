"""Budget-first pruning: ``target_saving`` fixes the run's saving and every epoch's length.

docs/design.md, 'Budget-first pruning': each budget epoch (the pruning epochs, from epoch 1 on
for the score-based policies, from epoch 0 for random pruning) prunes
``round(target * N * E / P)`` samples; which ones still follows the policy's own ranking.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from _data import IndexedDataset, sample_loss
from torch.utils.data import DataLoader

from bls import BLS, BudgetWarning, Full, InfoBatch, RandomPrune, SeTa
from bls.policies import budget_epochs

N, E, DELTA, BATCH = 1000, 10, 0.875, 32
MAKERS = {
    "InfoBatch": lambda t, **kw: InfoBatch(
        IndexedDataset(N), E, delta=DELTA, target_saving=t, **kw
    ),
    "SeTa": lambda t, **kw: SeTa(IndexedDataset(N), E, delta=DELTA, target_saving=t, **kw),
    "Random": lambda t, **kw: RandomPrune(IndexedDataset(N), E, delta=DELTA, target_saving=t, **kw),
}


def _train(handler, *, bls: bool, drop_last: bool = False, scheduler=None):
    """Run all epochs; returns the batches per epoch and the scores before each decision."""
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=BATCH, drop_last=drop_last)
    batches, scores_before = [], []
    lrs: list[float] = []
    for epoch in range(E):
        scores_before.append(handler.scores.clone())
        handler.sampler.set_epoch(epoch)
        count = 0
        for _, index in loader:
            losses = sample_loss(index.double(), epoch).float()
            handler.update(losses.mean() if bls else losses)
            if scheduler is not None:
                lrs.append(scheduler.optimizer.param_groups[0]["lr"])  # this step's rate
                scheduler.step()
            count += 1
        batches.append(count)
    handler.end_epoch()
    if scheduler is not None:
        return batches, lrs
    return batches, scores_before


@pytest.mark.filterwarnings("ignore::bls.BudgetWarning")  # 0.5 needs more than W holds
@pytest.mark.parametrize("bls", [False, True], ids=["per_sample", "bls"])
@pytest.mark.parametrize("policy", sorted(MAKERS))
@pytest.mark.parametrize("target", [0.2, 0.35, 0.5])
def test_the_run_saves_the_target_and_total_steps_is_known_before(policy, bls, target) -> None:
    handler = MAKERS[policy](target)
    if bls:
        handler = BLS(handler, alpha=0.7).proxy()
    planned = handler.total_steps(BATCH)
    batches, _ = _train(handler, bls=bls)
    assert abs(handler.saved_ratio - target) <= 0.01
    assert sum(batches) == planned
    first = 0 if policy == "Random" else 1
    epochs = budget_epochs(E, DELTA, first)
    count = round(target * N * E / len(epochs))
    for record in handler.history:
        if record["epoch"] in epochs:  # fixed before training, whatever the scores did
            assert N - count - 1 <= record["kept"] <= N - count  # (-1: no batch of one)
        else:
            assert record["kept"] == N


@pytest.mark.parametrize("drop_last", [False, True])
def test_a_stock_one_cycle_schedule_ends_exactly_at_its_final_learning_rate(drop_last) -> None:
    handler = BLS(InfoBatch(IndexedDataset(N), E, target_saving=0.3), alpha=0.7).proxy()
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    total = handler.total_steps(BATCH, drop_last)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=total)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        warnings.simplefilter("ignore", BudgetWarning)
        batches, lrs = _train(handler, bls=True, drop_last=drop_last, scheduler=schedule)
    assert sum(batches) == total
    final = 0.1 / (25.0 * 1e4)  # max_lr / (div_factor * final_div_factor), the defaults
    assert lrs[-1] == pytest.approx(final, rel=1e-9)  # the last batch trains at the final rate
    assert max(lrs) == pytest.approx(0.1, rel=1e-3)
    with pytest.raises(ValueError, match="Tried to step"):
        schedule.step()  # one step more than planned: the plan was exact


def test_total_steps_over_ranks_follows_the_sharding_rules() -> None:
    # N=1000, E=10, delta=0.875: epochs 1..7 prune round(0.3 * 10000 / 7) = 429 samples, so
    # they keep 571, which 2 ranks cut to 570 (285 each: 9 batches of 32); the other three
    # epochs run 500 each (16 batches).
    handler = InfoBatch(IndexedDataset(N), E, target_saving=0.3)
    assert handler.total_steps(BATCH, world_size=2) == 7 * 9 + 3 * 16
    assert handler.total_steps(BATCH, True, world_size=2) == 7 * 8 + 3 * 15
    assert Full(IndexedDataset(N), E).total_steps(BATCH) == E * math.ceil(N / BATCH)


def test_infobatch_prunes_only_well_learned_samples_when_there_are_enough() -> None:
    # Epoch 3 decided from the scores of epochs 0-2: everything pruned scored below the mean.
    handler = InfoBatch(IndexedDataset(N), E, delta=DELTA, target_saving=0.2)
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=BATCH)
    for epoch in range(3):
        handler.sampler.set_epoch(epoch)
        for _, index in loader:
            handler.update(sample_loss(index.double(), epoch).float())
    scores = handler.scores.numpy().copy()
    handler.sampler.set_epoch(3)
    pruned = np.setdiff1d(np.arange(N), handler._run.decided)
    assert pruned.size == round(0.2 * N * E / 7)
    assert (scores[pruned] < scores.mean(dtype=np.float64)).all()
    up = handler.weights.numpy()
    well = scores < scores.mean(dtype=np.float64)
    # The kept well-learned samples carry |W| / (|W| - pruned): the expected gradient holds.
    assert up[~well].tolist() == [1.0] * int((~well).sum())
    kept_well = np.intersect1d(np.flatnonzero(well), handler._run.decided)
    assert up[kept_well] == pytest.approx(well.sum() / kept_well.size)


def test_seta_keeps_a_run_of_the_score_order() -> None:
    handler = SeTa(IndexedDataset(N), E, delta=DELTA, target_saving=0.3)
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=BATCH)
    for epoch in range(4):
        scores = handler.scores.numpy().copy()
        handler.sampler.set_epoch(epoch)
        if epoch >= 1:
            kept = handler._run.decided
            assert kept.size == N - round(0.3 * N * E / 7)
            low, high = scores[kept].min(), scores[kept].max()
            outside = np.setdiff1d(np.arange(N), kept)
            assert not ((scores[outside] > low) & (scores[outside] < high)).any()
        for _, index in loader:
            handler.update(sample_loss(index.double(), epoch).float())


def test_too_few_well_learned_samples_prunes_the_lowest_others_and_warns_once() -> None:
    handler = InfoBatch(IndexedDataset(N), E, delta=DELTA, target_saving=0.4)
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=BATCH)
    for _, index in loader:  # epoch 0: one sample far below, all others equal
        handler.update(torch.where(index == 7, 0.0, 1.0))
    count = round(0.4 * N * E / 7)
    with pytest.warns(BudgetWarning, match=rf"prunes {count} samples per epoch but only 1 "):
        handler.sampler.set_epoch(1)
    record = handler.history[-1]
    assert record["kept"] == N - count and record["beyond_well_learned"] == count
    # InfoBatch keeps at least 10% of the well-learned set: here its one member, unweighted.
    assert 7 in set(handler._run.decided.tolist()) and float(handler.weights[7]) == 1.0
    for _, index in loader:
        handler.update(torch.where(index == 7, 0.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetWarning)  # once per run
        handler.sampler.set_epoch(2)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: InfoBatch(IndexedDataset(N), 4, delta=0.5, target_saving=0.9),
            r"target_saving: 0.9 would prune .* allowed: at most 0.2497",
        ),
        (
            lambda: InfoBatch(IndexedDataset(N), 1, target_saving=0.1),
            "target_saving: 0.1 needs pruning epochs",
        ),
        (lambda: SeTa(IndexedDataset(N), 4, target_saving=1.0), "target_saving"),
        (lambda: RandomPrune(IndexedDataset(N), 4, target_saving=-0.1), "target_saving"),
    ],
    ids=["unreachable", "no-epoch", "one", "negative"],
)
def test_unreachable_or_invalid_targets_are_refused(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_total_steps_without_a_budget_says_why_not() -> None:
    with pytest.raises(ValueError, match="total_steps: epoch lengths are known before"):
        InfoBatch(IndexedDataset(N), E, prune_ratio=0.5).total_steps(BATCH)


def test_the_reference_args_style_takes_target_saving() -> None:
    handler = InfoBatch(IndexedDataset(N), {"epochs": E, "delta": DELTA, "target_saving": 0.25})
    assert handler.policy.prune_count == round(0.25 * N * E / 7)


def test_the_training_engine_takes_target_saving() -> None:
    from bls.app.train import RunConfig, build_handler

    data = IndexedDataset(N)
    handler = build_handler(data, RunConfig(method="BLS_SeTa", epochs=E, target_saving=0.3))
    assert handler.policy.prune_count == round(0.3 * N * E / 7)
    assert handler.score_source.name == "bls"
    with pytest.raises(ValueError, match="target_saving: method 'Static' has no budget"):
        build_handler(data, RunConfig(method="Static", epochs=E, target_saving=0.3))


def _scored(handler, epochs: int = 3):
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=BATCH)
    for epoch in range(epochs):
        handler.sampler.set_epoch(epoch)
        for _, index in loader:
            losses = sample_loss(index.double(), epoch).float()
            handler.update(losses if handler.score_source.per_sample else losses.mean())
    return handler


def test_coreset_keeps_the_hard_samples_by_infobatchs_ranking() -> None:
    handler = _scored(InfoBatch(IndexedDataset(N), E, prune_ratio=0.5))
    scores = handler.scores.numpy()
    subset = handler.coreset(0.7)
    assert subset.dtype == np.int64 and subset.size == 700
    assert (np.diff(subset) > 0).all()  # sorted, no repeats
    below = scores < scores.mean(dtype=np.float64)
    # 300 go, all from the well-learned set (it has more than 300 / 0.9 members).
    assert below.sum() * 0.9 >= 300
    assert set(np.flatnonzero(~below)) <= set(subset.tolist())
    assert np.array_equal(subset, handler.coreset(0.7))  # seeded: reproducible


def test_coreset_of_seta_is_a_run_of_the_score_order() -> None:
    handler = _scored(BLS(SeTa(IndexedDataset(N), E), alpha=0.7).proxy())
    scores = handler.scores.numpy()
    subset = handler.coreset(0.4)
    low, high = scores[subset].min(), scores[subset].max()
    outside = np.setdiff1d(np.arange(N), subset)
    assert subset.size == 400
    assert not ((scores[outside] > low) & (scores[outside] < high)).any()


@pytest.mark.parametrize(
    ("make", "fraction", "message"),
    [
        (lambda: RandomPrune(IndexedDataset(N), E), 0.5, "the Random policy does not rank"),
        (lambda: InfoBatch(IndexedDataset(N), E), 0.0, r"fraction"),
        (lambda: InfoBatch(IndexedDataset(N), E), 1.5, r"fraction"),
    ],
    ids=["random", "zero", "above-one"],
)
def test_coreset_refuses_what_it_cannot_answer(make, fraction, message) -> None:
    with pytest.raises(ValueError, match=message):
        make().coreset(fraction)
