"""The pruning rules (docs/design.md, 'Policies'), checked as pure functions of scores and epoch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bls.kmeans1d import kmeans_1d
from bls.policies import (
    InfoBatchPolicy,
    Policy,
    RandomPolicy,
    SeTaPolicy,
    StaticPolicy,
    is_pruning_epoch,
    keep_ratio_of,
)


def rng(epoch: int = 0, seed: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, epoch])


@pytest.mark.parametrize(
    ("num_epochs", "delta", "last_pruning"),
    [(200, 0.875, 174), (10, 0.875, 7), (10, 1.0, 9), (10, 0.0, -1), (3, 0.5, 0)],
)
def test_schedule_boundary(num_epochs: int, delta: float, last_pruning: int) -> None:
    pruning = [e for e in range(num_epochs) if is_pruning_epoch(e, num_epochs, delta)]
    assert pruning == list(range(last_pruning + 1))


@pytest.mark.parametrize(("ratio", "keep"), [(0.0, 1.0), (0.3, 0.7), (0.95, 0.1), (0.9, 0.1)])
def test_keep_ratio_clamped(ratio: float, keep: float) -> None:
    assert keep_ratio_of(ratio) == pytest.approx(keep)


class TestInfoBatch:
    def test_equal_scores_keep_everything(self) -> None:
        plan = InfoBatchPolicy(0.5).plan(np.full(100, 3.0, np.float32), 0, True, rng())
        assert sorted(plan.indices.tolist()) == list(range(100))
        assert plan.upweighted.size == 0

    @pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7, 0.95])
    def test_keeps_floor_of_well_learned_with_rescaled_weight(self, ratio: float) -> None:
        scores = np.random.default_rng(1).gamma(1.0, 1.0, 1000).astype(np.float32)
        plan = InfoBatchPolicy(ratio).plan(scores, 3, True, rng(3))
        well_learned = np.flatnonzero(scores < scores.astype(np.float64).mean())
        keep_ratio = min(max(1 - ratio, 0.1), 1.0)
        kept = set(plan.indices.tolist())
        assert len(kept) == plan.indices.size  # no duplicates
        # Every sample at or above the mean is kept.
        assert set(np.flatnonzero(scores >= scores.astype(np.float64).mean()).tolist()) <= kept
        kept_well_learned = kept & set(well_learned.tolist())
        assert len(kept_well_learned) == math.floor(keep_ratio * well_learned.size)
        assert set(plan.upweighted.tolist()) == kept_well_learned
        assert plan.up_weight == pytest.approx(1.0 / keep_ratio)

    def test_annealing_is_full_and_unweighted(self) -> None:
        scores = np.random.default_rng(1).random(500).astype(np.float32)
        plan = InfoBatchPolicy(0.5).plan(scores, 9, False, rng(9))
        assert sorted(plan.indices.tolist()) == list(range(500))
        assert plan.upweighted.size == 0

    def test_same_inputs_same_plan_and_shuffled(self) -> None:
        scores = np.random.default_rng(2).random(300).astype(np.float32)
        a = InfoBatchPolicy(0.5).plan(scores, 4, True, rng(4))
        b = InfoBatchPolicy(0.5).plan(scores, 4, True, rng(4))
        c = InfoBatchPolicy(0.5).plan(scores, 5, True, rng(5))
        assert np.array_equal(a.indices, b.indices)
        assert not np.array_equal(a.indices, c.indices)
        assert not np.array_equal(np.sort(a.indices), a.indices)

    def test_subset_is_uniform(self) -> None:
        # Each well-learned sample is kept with probability keep_ratio: a chi-square-free check
        # that the empirical frequency of every sample is within 5 sigma over 400 epochs.
        scores = np.concatenate((np.zeros(20), np.ones(20))).astype(np.float32)
        counts = np.zeros(40)
        for epoch in range(400):
            plan = InfoBatchPolicy(0.5).plan(scores, epoch, True, rng(epoch))
            counts[plan.indices] += 1
        assert np.all(counts[20:] == 400)
        sigma = math.sqrt(400 * 0.5 * 0.5)
        assert np.all(np.abs(counts[:20] - 200) < 5 * sigma)


def seta_window(groups: int, window_scale: float, t: int) -> range:
    """docs/design.md, 'SeTa', written out independently: the groups kept at pruning epoch t."""
    if t == 0:
        return range(groups)
    w = round(groups * window_scale)
    s = groups - w
    start = t % (s + 1)
    return range(start, start + w)


class TestSeTa:
    @pytest.mark.parametrize(
        ("groups", "scale"), [(10, 0.5), (5, 0.9), (4, 0.25), (7, 0.3), (3, 1.0), (6, 0.5)]
    )
    def test_window_walks_groups(self, groups: int, scale: float) -> None:
        size = 2000
        scores = np.random.default_rng(5).gamma(2.0, 1.0, size).astype(np.float32)
        policy = SeTaPolicy(prune_ratio=0.1, num_group=groups, window_scale=scale)
        for t in range(9):
            plan = policy.plan(scores, t, True, rng(t))
            # Rebuild the subset and the groups independently from the same generator draws.
            check = rng(t)
            keys = check.random(size)
            subset = np.argpartition(keys, math.floor(0.9 * size) - 1)[: math.floor(0.9 * size)]
            grouping = kmeans_1d(scores[subset], groups, seed=t)
            labels = np.searchsorted(grouping.thresholds, scores[subset], side="right")
            window = seta_window(groups, scale, t)
            expected = subset[np.isin(labels, list(window))]
            assert sorted(plan.indices.tolist()) == sorted(expected.tolist())
            assert plan.details["window_start"] == window.start
            assert plan.upweighted.size == 0  # SeTa never rescales

    def test_groups_are_ordered_easy_to_hard(self) -> None:
        scores = np.concatenate([np.full(100, float(v)) for v in (5, 1, 3, 2, 4)]).astype(
            np.float32
        )
        plan = SeTaPolicy(prune_ratio=0.0, num_group=5, window_scale=0.2).plan(
            scores, 1, True, rng()
        )
        # t=1, w=1, s=4: start 1, the second-easiest group (score 2).
        assert set(scores[plan.indices].tolist()) == {2.0}

    def test_equal_scores_split_into_equal_chunks(self) -> None:
        plan = SeTaPolicy(prune_ratio=0.0, num_group=4, window_scale=0.5).plan(
            np.zeros(100, np.float32), 1, True, rng(1)
        )
        assert plan.indices.size == 50  # two of four equal chunks

    @pytest.mark.parametrize("size", [1, 2, 3, 5, 10])
    def test_tiny_subsets_never_fail(self, size: int) -> None:
        scores = np.arange(size, dtype=np.float32)
        policy = SeTaPolicy(prune_ratio=0.0, num_group=10, window_scale=0.5)
        for t in range(4):
            plan = policy.plan(scores, t, True, rng(t))
            assert 1 <= plan.indices.size <= size
            assert set(plan.indices.tolist()) <= set(range(size))

    def test_annealing_is_partial(self) -> None:
        scores = np.random.default_rng(0).random(1000).astype(np.float32)
        plan = SeTaPolicy(prune_ratio=0.3).plan(scores, 50, False, rng(50))
        assert plan.indices.size == math.floor(0.7 * 1000)
        assert np.unique(plan.indices).size == plan.indices.size


class TestBaselines:
    def test_static_subset_never_changes(self) -> None:
        scores = np.random.default_rng(0).random(101).astype(np.float32)
        policy = StaticPolicy(prune_ratio=0.4, seed=3)
        plans = [policy.plan(scores * e, e, e < 5, rng(e)) for e in range(8)]
        first = set(plans[0].indices.tolist())
        assert len(first) == math.floor(0.6 * 101)
        assert all(set(p.indices.tolist()) == first for p in plans)
        assert (
            set(StaticPolicy(prune_ratio=0.4, seed=4).plan(scores, 0, True, rng()).indices.tolist())
            != first
        )

    def test_random_fresh_subset_then_full(self) -> None:
        scores = np.zeros(200, np.float32)
        policy = RandomPolicy(prune_ratio=0.5)
        a = policy.plan(scores, 0, True, rng(0))
        b = policy.plan(scores, 1, True, rng(1))
        assert a.indices.size == b.indices.size == 100
        assert set(a.indices.tolist()) != set(b.indices.tolist())
        assert sorted(policy.plan(scores, 9, False, rng(9)).indices.tolist()) == list(range(200))

    def test_full(self) -> None:
        assert sorted(
            Policy().plan(np.zeros(50, np.float32), 0, True, rng()).indices.tolist()
        ) == list(range(50))


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.floats(0, 10, allow_nan=False, width=32), min_size=1, max_size=200),
    ratio=st.floats(0, 0.99),
    epoch=st.integers(0, 20),
    pruning=st.booleans(),
    groups=st.integers(1, 12),
    scale=st.floats(0.05, 1.0),
)
def test_property_plans_are_valid(
    scores: list[float], ratio: float, epoch: int, pruning: bool, groups: int, scale: float
) -> None:
    """Every plan is a duplicate-free subset of the data set, the same for the same inputs."""
    values = np.asarray(scores, dtype=np.float32)
    policies: list[Policy] = [InfoBatchPolicy(ratio), RandomPolicy(ratio), StaticPolicy(ratio)]
    if round(groups * scale) >= 1:
        policies.append(SeTaPolicy(ratio, groups, scale))
    for policy in policies:
        plan = policy.plan(values, epoch, pruning, rng(epoch))
        assert plan.indices.dtype.kind == "i"
        assert 1 <= plan.indices.size <= values.size
        assert np.unique(plan.indices).size == plan.indices.size
        assert plan.indices.min() >= 0 and plan.indices.max() < values.size
        again = policy.plan(values, epoch, pruning, rng(epoch))
        assert np.array_equal(plan.indices, again.indices)
        if isinstance(policy, InfoBatchPolicy) and pruning:
            well = np.flatnonzero(values < values.astype(np.float64).mean())
            expected = values.size - well.size + math.floor(keep_ratio_of(ratio) * well.size)
            assert plan.indices.size == expected
