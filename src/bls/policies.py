"""Pruning policies: pure functions from scores, epoch and a generator to an epoch plan.

A policy holds only its hyper-parameters. :meth:`Policy.plan` reads the current scores (a
NumPy array on the host, one value per sample), the epoch and a generator seeded from
``(seed, epoch)``, and returns the epoch's index order and the samples whose loss is
re-weighted. It never mutates its inputs, so the same scores, epoch and seed always give the
same plan: that is what makes DDP ranks agree and resumed runs repeat themselves.

The rules are written out in docs/design.md, 'Policies'; every array operation is vectorised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from bls.kmeans1d import kmeans_1d

__all__ = [
    "EpochPlan",
    "InfoBatchPolicy",
    "Policy",
    "RandomPolicy",
    "SeTaPolicy",
    "StaticPolicy",
    "budget_epochs",
    "budget_prune_count",
    "coreset_of",
    "is_pruning_epoch",
    "keep_ratio_of",
]


def is_pruning_epoch(epoch: int, num_epochs: int, delta: float) -> bool:
    """Epoch ``e`` prunes iff ``e + 1 <= delta * num_epochs``; later epochs anneal."""
    return epoch + 1 <= delta * num_epochs


def budget_epochs(num_epochs: int, delta: float, first: int) -> list[int]:
    """The epochs a budget prunes: the pruning epochs from ``first`` on.

    Score-based policies start at epoch 1 (at epoch 0 every score is the initial one, so
    there is nothing to rank by); random pruning starts at epoch 0.
    """
    return [e for e in range(first, num_epochs) if is_pruning_epoch(e, num_epochs, delta)]


def budget_prune_count(
    target_saving: float, num_samples: int, num_epochs: int, delta: float, first: int
) -> int:
    """Samples each budget epoch prunes so that the run saves ``target_saving``.

    ``round(target_saving * N * E / P)`` with ``P`` the budget epochs
    (:func:`budget_epochs`): the run's saved share is then within ``P / (2 N E)`` of the
    target (plus the few indices sharding trims).

    Raises:
        ValueError: the target needs more than ``N - 1`` samples pruned per budget epoch, or
            there is no budget epoch.
    """
    epochs = len(budget_epochs(num_epochs, delta, first))
    if target_saving == 0.0:
        return 0
    if epochs == 0:
        raise ValueError(
            f"target_saving: {target_saving} needs pruning epochs, but with num_epochs="
            f"{num_epochs} and delta={delta} no epoch from epoch {first} on prunes; allowed: "
            "0, or more epochs / a larger delta"
        )
    count = round(target_saving * num_samples * num_epochs / epochs)
    most = (num_samples - 1) * epochs / (num_samples * num_epochs)
    if count > num_samples - 1:
        raise ValueError(
            f"target_saving: {target_saving} would prune {count} of {num_samples} samples in "
            f"each of the {epochs} pruning epochs; allowed: at most {most:.4f} with "
            f"num_epochs={num_epochs} and delta={delta}"
        )
    return count


def coreset_of(
    policy: Policy, scores: np.ndarray, kept: int, epoch: int, rng: np.random.Generator
) -> np.ndarray:
    """The ``kept`` samples a budget epoch of ``policy`` would keep from ``scores``, sorted.

    The static subset a pruned run points to (``handler.coreset``): InfoBatch's budget rule
    (well-learned samples pruned first), or SeTa's window at ``epoch``.

    Raises:
        ValueError: the policy does not rank by score (random, static or no pruning).
    """
    size = scores.size
    if isinstance(policy, InfoBatchPolicy):
        chosen = InfoBatchPolicy._plan_budget(scores, size - kept, rng).indices
    elif isinstance(policy, SeTaPolicy):
        chosen = policy._plan_budget(scores, max(epoch, 1), kept, rng).indices
    else:
        raise ValueError(
            f"coreset: the {policy.name} policy does not rank samples by score, so its scores "
            "point to no subset; use InfoBatch or SeTa (with or without BLS)"
        )
    return np.sort(chosen.astype(np.int64))


def keep_ratio_of(prune_ratio: float) -> float:
    """InfoBatch and SeTa keep at least 10% of the candidates: ``clamp(1 - r, 0.1, 1.0)``."""
    return min(max(1.0 - prune_ratio, 0.1), 1.0)


@dataclass(frozen=True)
class EpochPlan:
    """What one epoch trains on.

    Attributes:
        indices: int64 sample indices in the order the epoch visits them (no duplicates).
        upweighted: int64 indices whose loss weight is ``up_weight`` this epoch; every other
            sample has weight 1.
        up_weight: the weight of ``upweighted`` (``1 / keep_ratio`` for InfoBatch).
        details: small, JSON-friendly facts about the decision (kept per group, thresholds).
    """

    indices: np.ndarray
    upweighted: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    up_weight: float = 1.0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    """Base class: the full data set, shuffled, every epoch."""

    name: ClassVar[str] = "Full"
    #: Initial score of every sample under per-sample scoring.
    initial_score: ClassVar[float] = 3.0
    #: The first epoch a budget (``target_saving``) may prune (see :func:`budget_epochs`).
    budget_from: ClassVar[int] = 0

    def kept_count(self, num_samples: int, epoch: int, pruning: bool) -> int | None:
        """Samples epoch ``epoch`` keeps, when known before its scores are (a budget)."""
        count = getattr(self, "prune_count", None)
        if count is None:
            return num_samples if type(self) is Policy else None
        return num_samples - count if pruning and epoch >= self.budget_from else num_samples

    def plan(
        self, scores: np.ndarray, epoch: int, pruning: bool, rng: np.random.Generator
    ) -> EpochPlan:
        return EpochPlan(rng.permutation(scores.size))


@dataclass(frozen=True)
class InfoBatchPolicy(Policy):
    """InfoBatch: drop a random share of the well-learned samples and up-weight the rest.

    The well-learned set is ``W = {i : score[i] < mean(score)}`` (strict, so equal scores,
    as at epoch 0, keep everything). ``floor(keep_ratio * |W|)`` members of ``W`` are kept,
    uniformly at random, with weight ``1 / keep_ratio``, which keeps the expected gradient
    unbiased; all other samples are kept with weight 1.
    """

    name: ClassVar[str] = "InfoBatch"
    budget_from: ClassVar[int] = 1
    prune_ratio: float = 0.5
    #: Budget-first pruning (``target_saving``): samples pruned in each budget epoch.
    prune_count: int | None = None

    def plan(
        self, scores: np.ndarray, epoch: int, pruning: bool, rng: np.random.Generator
    ) -> EpochPlan:
        if not pruning or (self.prune_count is not None and epoch < self.budget_from):
            return EpochPlan(rng.permutation(scores.size), details={"well_learned": 0})
        if self.prune_count is not None:
            return self._plan_budget(scores, self.prune_count, rng)
        keep_ratio = keep_ratio_of(self.prune_ratio)
        # float64 mean: a float32 running sum over 10^8 scores loses digits.
        well_learned_mask = scores < scores.mean(dtype=np.float64)
        well_learned = np.flatnonzero(well_learned_mask)
        num_kept = math.floor(keep_ratio * well_learned.size)
        kept_well_learned = _sample_without_replacement(well_learned, num_kept, rng)
        kept = np.concatenate((np.flatnonzero(~well_learned_mask), kept_well_learned))
        return EpochPlan(
            indices=rng.permutation(kept),
            upweighted=kept_well_learned,
            up_weight=1.0 / keep_ratio,
            details={"well_learned": int(well_learned.size)},
        )

    @staticmethod
    def _plan_budget(scores: np.ndarray, count: int, rng: np.random.Generator) -> EpochPlan:
        """Prune exactly ``count`` samples, well-learned ones first.

        As many as possible come from the well-learned set ``W`` (uniformly, keeping at least
        10% of ``W``, as the keep-ratio clamp does); the kept members of ``W`` get weight
        ``|W| / (|W| - pruned)``, which keeps the expected gradient unbiased. Should ``W`` be
        too small, the lowest-scoring other samples make up the count, with no re-weighting
        (``beyond_well_learned`` in the details; the handler warns once).
        """
        well_learned_mask = scores < scores.mean(dtype=np.float64)
        well_learned = np.flatnonzero(well_learned_mask)
        rest = np.flatnonzero(~well_learned_mask)
        from_well_learned = min(count, math.floor(0.9 * well_learned.size))
        beyond = min(count - from_well_learned, rest.size)
        from_well_learned = count - beyond  # past the clamp only when nothing else is left
        kept_well_learned = _sample_without_replacement(
            well_learned, well_learned.size - from_well_learned, rng
        )
        if beyond:
            shuffled = rng.permutation(rest)  # ties between equal scores broken at random
            rest = shuffled[np.argsort(scores[shuffled], kind="stable")][beyond:]
        up_weight = well_learned.size / kept_well_learned.size if from_well_learned else 1.0
        return EpochPlan(
            indices=rng.permutation(np.concatenate((rest, kept_well_learned))),
            upweighted=kept_well_learned if from_well_learned else kept_well_learned[:0],
            up_weight=up_weight,
            details={
                "well_learned": int(well_learned.size),
                "budget_pruned": count,
                "beyond_well_learned": int(beyond),
            },
        )


@dataclass(frozen=True)
class SeTaPolicy(Policy):
    """SeTa: random subset, k-means groups by score, a window sliding from easy to hard.

    At pruning epoch ``t`` (0, 1, ...) a random ``floor(keep_ratio * N)`` subset is grouped
    into ``num_group`` score groups ordered easy to hard; ``t = 0`` keeps every group,
    later epochs keep ``w = round(num_group * window_scale)`` consecutive groups starting at
    ``t mod (num_group - w + 1)``. Annealing epochs keep a random ``floor(keep_ratio * N)``.

    Where k-means leaves groups empty (fewer distinct scores than groups, as in BLS's first
    epochs), ``num_group`` is reduced to the non-empty groups and ``w`` to
    ``max(1, round(groups * window_scale))``, so a window never selects only empty groups.
    """

    name: ClassVar[str] = "SeTa"
    budget_from: ClassVar[int] = 1
    prune_ratio: float = 0.0
    num_group: int = 10
    window_scale: float = 0.5
    #: Budget-first pruning (``target_saving``): samples pruned in each budget epoch.
    prune_count: int | None = None

    def plan(
        self, scores: np.ndarray, epoch: int, pruning: bool, rng: np.random.Generator
    ) -> EpochPlan:
        size = scores.size
        if self.prune_count is not None:
            if not pruning or epoch < self.budget_from:
                return EpochPlan(rng.permutation(size))
            return self._plan_budget(scores, epoch, size - self.prune_count, rng)
        subset_size = math.floor(keep_ratio_of(self.prune_ratio) * size)
        subset = _sample_without_replacement(np.arange(size), subset_size, rng)
        if not pruning:
            return EpochPlan(_at_least_one(rng.permutation(subset), size, rng))
        groups = self.num_group if subset.size > self.num_group else max(1, subset.size - 1)
        labels, centers = _group_by_score(scores[subset], groups, epoch)
        if centers.size < groups:
            # Fewer distinct scores than groups (BLS's first epochs give a whole batch one
            # score): the window walks the groups that exist rather than empty ones.
            groups = centers.size
        window = max(1, round(groups * self.window_scale))
        if epoch == 0:
            start, window = 0, groups
        else:
            start = epoch % (groups - window + 1)
        chosen = subset[(labels >= start) & (labels < start + window)]
        details = {
            "groups": groups,
            "window_start": start,
            "window": window,
            "group_centers": [float(c) for c in centers],
        }
        return EpochPlan(_at_least_one(rng.permutation(chosen), size, rng), details=details)

    def _plan_budget(
        self, scores: np.ndarray, epoch: int, kept: int, rng: np.random.Generator
    ) -> EpochPlan:
        """Keep exactly ``kept`` samples: a run of the score order where the window starts.

        The groups and the window's start group are SeTa's (over all samples, no random
        pre-selection); the epoch keeps the ``kept`` samples that follow, in ascending
        score, the first sample of the start group (moved back when fewer follow), so the
        window slides from easy to hard with a fixed length.
        """
        size = scores.size
        groups = self.num_group if size > self.num_group else max(1, size - 1)
        labels, centers = _group_by_score(scores, groups, epoch)
        groups = min(groups, centers.size)
        window = max(1, round(groups * self.window_scale))
        start_group = epoch % (groups - window + 1)
        shuffled = rng.permutation(size)  # ties between equal scores broken at random
        order = shuffled[np.argsort(scores[shuffled], kind="stable")]
        start = min(int(np.count_nonzero(labels < start_group)), size - kept)
        details = {
            "groups": groups,
            "window_start": start_group,
            "window": window,
            "group_centers": [float(c) for c in centers],
            "budget_pruned": size - kept,
        }
        return EpochPlan(rng.permutation(order[start : start + kept]), details=details)


@dataclass(frozen=True)
class StaticPolicy(Policy):
    """A fixed random subset of ``floor((1 - prune_ratio) * N)`` samples, drawn once."""

    name: ClassVar[str] = "Static"
    prune_ratio: float = 0.5
    seed: int = 0

    def plan(
        self, scores: np.ndarray, epoch: int, pruning: bool, rng: np.random.Generator
    ) -> EpochPlan:
        size = scores.size
        subset_rng = np.random.default_rng([self.seed, 0x5747])  # the same subset every epoch
        subset = _sample_without_replacement(
            np.arange(size), math.floor((1.0 - self.prune_ratio) * size), subset_rng
        )
        return EpochPlan(_at_least_one(rng.permutation(subset), size, rng))


@dataclass(frozen=True)
class RandomPolicy(Policy):
    """A fresh uniform ``floor((1 - prune_ratio) * N)`` samples every pruning epoch."""

    name: ClassVar[str] = "Random"
    budget_from: ClassVar[int] = 0
    prune_ratio: float = 0.5
    #: Budget-first pruning (``target_saving``): samples pruned in each budget epoch.
    prune_count: int | None = None

    def plan(
        self, scores: np.ndarray, epoch: int, pruning: bool, rng: np.random.Generator
    ) -> EpochPlan:
        size = scores.size
        if not pruning:
            return EpochPlan(rng.permutation(size))
        if self.prune_count is None:
            kept = math.floor((1.0 - self.prune_ratio) * size)
        else:
            kept = size - self.prune_count
        subset = _sample_without_replacement(np.arange(size), kept, rng)
        return EpochPlan(_at_least_one(rng.permutation(subset), size, rng))


def _sample_without_replacement(
    population: np.ndarray, count: int, rng: np.random.Generator
) -> np.ndarray:
    """A uniform random ``count``-subset of ``population`` (order unspecified), O(n)."""
    if count >= population.size:
        return population
    if count <= 0:
        return population[:0]
    # Partitioning random keys is O(n); a full permutation would be O(n log n) in practice.
    keys = rng.random(population.size)
    chosen = np.argpartition(keys, count - 1)[:count]
    return population[chosen]


def _group_by_score(
    subset_scores: np.ndarray, groups: int, epoch: int
) -> tuple[np.ndarray, np.ndarray]:
    """Label scores by k-means group (0 = lowest mean), dropping empty groups.

    Returns ``(labels, centers)`` with ``centers.size`` the number of non-empty groups. Equal
    scores everywhere: ``groups`` equal chunks of the (random) order instead.
    """
    if groups == 1 or subset_scores.size == 0:
        return np.zeros(subset_scores.size, dtype=np.int64), np.array([0.0])
    if subset_scores.min() == subset_scores.max():
        # No information to group by: split the (already random) order into equal chunks.
        labels = (np.arange(subset_scores.size) * groups) // subset_scores.size
        return labels, np.full(groups, float(subset_scores[0]))
    grouping = kmeans_1d(subset_scores, groups, seed=epoch)
    labels = _bucketize(subset_scores, grouping.thresholds)
    occupied = grouping.sizes > 0
    if not occupied.all():  # renumber the non-empty groups 0, 1, ... in the same order
        labels = (np.cumsum(occupied) - 1)[labels]
    return labels, grouping.centers[occupied]


def _bucketize(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``searchsorted(thresholds, values, side="right")``: how many thresholds are ``<= v``.

    For the few thresholds of a grouping, one vectorised comparison per threshold is several
    times faster than ``searchsorted`` over millions of float32 values against float64
    thresholds (which converts and binary-searches value by value); the comparisons are made
    in float64, so the labels are identical.
    """
    if thresholds.size > 64:
        return np.searchsorted(thresholds, values, side="right")
    wide = values.astype(np.float64, copy=False)
    labels: np.ndarray = np.zeros(values.size, dtype=np.int8)
    for threshold in thresholds:
        np.add(labels, wide >= threshold, out=labels)
    return labels


def _at_least_one(indices: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """An epoch must visit something: keep one random sample when a rule keeps none."""
    if indices.size:
        return indices
    return np.array([rng.integers(size)], dtype=np.int64)
