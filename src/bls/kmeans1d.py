"""One-dimensional k-means, fast enough to regroup ten million scores every epoch.

In one dimension every k-means cluster is an interval of the sorted values, so a Lloyd step
needs no distance matrix: the boundaries are the midpoints between neighbouring centres (one
``searchsorted``) and the new centres come from prefix sums. After the ``O(n log n)`` sort each
step costs ``O(k log n)``, so several restarts are free and the best of them is kept. The result
is at least as good as scikit-learn's ``KMeans`` (k-means++ initialisation) on the data sets in
``tests/test_kmeans1d.py`` and ``benchmarks/``, without depending on scikit-learn.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Grouping", "kmeans_1d"]

_MAX_STEPS = 300


class Grouping(NamedTuple):
    """The result of :func:`kmeans_1d`.

    Attributes:
        thresholds: ``(k - 1,)`` ascending values; a value ``v`` belongs to group
            ``searchsorted(thresholds, v, side="right")``.
        centers: ``(k,)`` group means, ascending (easy to hard for loss scores).
        sizes: ``(k,)`` number of values in each group.
        inertia: within-group sum of squared deviations (float64).
    """

    thresholds: np.ndarray
    centers: np.ndarray
    sizes: np.ndarray
    inertia: float


def kmeans_1d(values: np.ndarray, k: int, *, seed: int = 0) -> Grouping:
    """Cluster 1-D ``values`` into ``k`` groups ordered by mean.

    Args:
        values: any 1-D float array (it is not modified). Must hold more than ``k`` values.
        k: number of groups, ``1 <= k < len(values)``.
        seed: seeds the k-means++ restart (a private generator; global state is untouched).

    Returns:
        A :class:`Grouping`; groups may be empty only when there are fewer distinct values
        than ``k``.
    """
    x = np.asarray(values)
    if x.ndim != 1:
        raise ValueError(f"values: expected a 1-D array, got shape {x.shape}")
    if not 1 <= k < x.size:
        raise ValueError(f"k: expected 1 <= k < len(values) = {x.size}, got {k}")
    x = np.sort(x.astype(np.float64, copy=False))
    # Centring before the prefix sums keeps sum(x^2) - sum(x)^2/n free of cancellation.
    offset = float(x[x.size // 2])
    x = x - offset
    prefix = np.concatenate(([0.0], np.cumsum(x)))
    prefix_sq = np.concatenate(([0.0], np.cumsum(x * x)))

    best_cuts = None
    best_inertia = np.inf
    for centers in _initial_centers(x, prefix, prefix_sq, k, seed):
        cuts = _lloyd(x, prefix, centers)
        inertia = _inertia(prefix, prefix_sq, cuts)
        if inertia < best_inertia:
            best_cuts, best_inertia = cuts, inertia
    assert best_cuts is not None
    sizes = np.diff(best_cuts)
    sums = prefix[best_cuts[1:]] - prefix[best_cuts[:-1]]
    centers = np.where(sizes > 0, sums / np.maximum(sizes, 1), np.nan) + offset
    # A threshold sits between the last value of one group and the first of the next.
    inner = best_cuts[1:-1]
    lower = x[np.clip(inner - 1, 0, x.size - 1)]
    upper = x[np.clip(inner, 0, x.size - 1)]
    thresholds = np.where(inner < x.size, (lower + upper) / 2.0, np.inf)
    thresholds = np.maximum.accumulate(thresholds) + offset
    return Grouping(thresholds, centers, sizes, float(best_inertia))


def _initial_centers(
    x: np.ndarray, prefix: np.ndarray, prefix_sq: np.ndarray, k: int, seed: int
) -> list[np.ndarray]:
    """Starts for Lloyd: the binned optimum, equal-count quantiles, k-means++ on a subsample."""
    n = x.size
    cuts = np.linspace(0, n, k + 1).astype(np.int64)
    quantile = (prefix[cuts[1:]] - prefix[cuts[:-1]]) / np.maximum(np.diff(cuts), 1)
    rng = np.random.default_rng(seed)
    sample = x if n <= 20_000 else np.sort(rng.choice(x, 20_000, replace=False))
    plus_plus = _kmeans_plus_plus(sample, k, rng)
    return [_binned_optimum(x, prefix, prefix_sq, k), quantile, plus_plus]


def _binned_optimum(
    x: np.ndarray, prefix: np.ndarray, prefix_sq: np.ndarray, k: int, bins: int = 512
) -> np.ndarray:
    """Centres of the exact optimum when cuts may only fall on ``~2 * bins`` bin edges.

    The edges are the union of equal-count and equal-width edges, so both dense regions and
    sparse tails are resolved; with ``n <= 2 * bins`` every value is its own bin and the
    result is the exact k-means optimum. The dynamic program is O(k * m^2) on m bins.
    """
    n = x.size
    if n <= 2 * bins:
        edges = np.arange(n + 1)
    else:
        by_count = np.linspace(0, n, bins + 1).astype(np.int64)
        by_value = np.searchsorted(x, np.linspace(x[0], x[-1], bins + 1), side="left")
        edges = np.unique(np.concatenate((by_count, by_value, [0, n])))
    edges = edges[(edges >= 0) & (edges <= n)]
    counts = edges.astype(np.float64)
    sums = prefix[edges]
    squares = prefix_sq[edges]
    m = edges.size - 1
    # cost[a, b]: within-group squares of bins a .. b-1, for a < b.
    size = counts[None, :] - counts[:, None]
    total = sums[None, :] - sums[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = squares[None, :] - squares[:, None] - np.where(size > 0, total * total / size, 0.0)
    cost = np.where(np.triu(np.ones((m + 1, m + 1), dtype=bool), 1), np.maximum(cost, 0.0), np.inf)
    best = cost[0].copy()
    choices = np.zeros((k, m + 1), dtype=np.int64)
    for j in range(1, k):
        candidates = best[:, None] + cost
        choices[j] = np.argmin(candidates, axis=0)
        best = candidates[choices[j], np.arange(m + 1)]
    cut_bins = [m]
    for j in range(k - 1, 0, -1):
        cut_bins.append(int(choices[j, cut_bins[-1]]))
    cut_bins.append(0)
    positions = edges[np.asarray(cut_bins[::-1])]
    group_sizes = np.diff(positions)
    group_sums = prefix[positions[1:]] - prefix[positions[:-1]]
    return np.where(group_sizes > 0, group_sums / np.maximum(group_sizes, 1), x[-1])


def _kmeans_plus_plus(sample: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centers = [sample[rng.integers(sample.size)]]
    nearest_sq = (sample - centers[0]) ** 2
    for _ in range(1, k):
        total = nearest_sq.sum()
        if total <= 0.0:
            centers.append(centers[-1])
            continue
        pick = np.searchsorted(np.cumsum(nearest_sq), rng.random() * total, side="right")
        centers.append(sample[min(pick, sample.size - 1)])
        nearest_sq = np.minimum(nearest_sq, (sample - centers[-1]) ** 2)
    return np.sort(np.asarray(centers))


def _lloyd(x: np.ndarray, prefix: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Run Lloyd steps on sorted ``x``; return the ``k + 1`` cut positions of the groups."""
    n = x.size
    k = centers.size
    centers = np.sort(centers)
    cuts = np.empty(k + 1, dtype=np.int64)
    cuts[0], cuts[-1] = 0, n
    previous = None
    for _ in range(_MAX_STEPS):
        midpoints = (centers[:-1] + centers[1:]) / 2.0
        cuts[1:-1] = np.searchsorted(x, midpoints, side="right")
        if previous is not None and np.array_equal(cuts, previous):
            break
        previous = cuts.copy()
        sizes = np.diff(cuts)
        sums = prefix[cuts[1:]] - prefix[cuts[:-1]]
        empty = sizes == 0
        centers = np.where(empty, centers, sums / np.maximum(sizes, 1))
        if empty.any():
            centers = _reseed_empty(x, cuts, centers, empty)
        centers = np.sort(centers)
    return cuts


def _reseed_empty(
    x: np.ndarray, cuts: np.ndarray, centers: np.ndarray, empty: np.ndarray
) -> np.ndarray:
    """Move each empty group's centre into the widest non-empty group, splitting it."""
    spans = np.where(
        np.diff(cuts) > 1, x[np.maximum(cuts[1:] - 1, 0)] - x[cuts[:-1].clip(max=x.size - 1)], -1.0
    )
    for j in np.flatnonzero(empty):
        widest = int(np.argmax(spans))
        if spans[widest] <= 0.0:
            break
        lo, hi = cuts[widest], cuts[widest + 1]
        centers[j] = x[(lo + hi) // 2]
        spans[widest] = -1.0
    return centers


def _inertia(prefix: np.ndarray, prefix_sq: np.ndarray, cuts: np.ndarray) -> float:
    sizes = np.diff(cuts)
    sums = prefix[cuts[1:]] - prefix[cuts[:-1]]
    squares = prefix_sq[cuts[1:]] - prefix_sq[cuts[:-1]]
    within = squares - np.where(sizes > 0, sums * sums / np.maximum(sizes, 1), 0.0)
    return float(np.maximum(within, 0.0).sum())
