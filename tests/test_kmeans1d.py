"""1-D k-means: compared with the exact dynamic program and with scikit-learn's KMeans."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans

from bls.kmeans1d import kmeans_1d


def exact_inertia(values: np.ndarray, k: int) -> float:
    """Optimal within-group sum of squares by the O(k n^2) dynamic program (brute force)."""
    x = np.sort(values.astype(np.float64))
    n = x.size
    prefix = np.concatenate(([0.0], np.cumsum(x)))
    prefix_sq = np.concatenate(([0.0], np.cumsum(x * x)))

    def cost(a: int, b: int) -> float:  # values x[a:b]
        s = prefix[b] - prefix[a]
        return prefix_sq[b] - prefix_sq[a] - s * s / (b - a)

    best = np.full((k + 1, n + 1), np.inf)
    best[0, 0] = 0.0
    for j in range(1, k + 1):
        for b in range(j, n + 1):
            best[j, b] = min(best[j - 1, a] + cost(a, b) for a in range(j - 1, b))
    return float(best[k, n])


def labels_inertia(values: np.ndarray, thresholds: np.ndarray) -> float:
    labels = np.searchsorted(thresholds, values, side="right")
    total = 0.0
    for g in np.unique(labels):
        members = values[labels == g].astype(np.float64)
        total += float(((members - members.mean()) ** 2).sum())
    return total


DISTRIBUTIONS = {
    "uniform": lambda rng, n: rng.random(n),
    "bimodal": lambda rng, n: np.concatenate(
        (rng.normal(0, 1, n // 2), rng.normal(6, 0.5, n - n // 2))
    ),
    "heavy_tail": lambda rng, n: rng.lognormal(0, 1.5, n),
    "ties": lambda rng, n: rng.integers(0, 7, n).astype(float),
    "losses": lambda rng, n: rng.gamma(0.5, 1.0, n) + (rng.random(n) < 0.05) * 5.0,
}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 7 ties, k=10
@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
@pytest.mark.parametrize("k", [2, 5, 10])
def test_matches_or_beats_sklearn(name: str, k: int) -> None:
    rng = np.random.default_rng(7)
    values = DISTRIBUTIONS[name](rng, 3000)
    grouping = kmeans_1d(values, k)
    reference = KMeans(n_clusters=k, n_init="auto", random_state=0).fit(values.reshape(-1, 1))
    # docs/design.md, 'SeTa': within 1% of (or better than) scikit-learn on the same data.
    assert grouping.inertia <= reference.inertia_ * 1.01 + 1e-9
    # The reported inertia is the inertia of the labelling the thresholds induce.
    assert labels_inertia(values, grouping.thresholds) == pytest.approx(
        grouping.inertia, rel=1e-6, abs=1e-9
    )


@pytest.mark.parametrize("seed", range(6))
def test_close_to_exact_optimum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = np.concatenate((rng.normal(0, 1, 40), rng.normal(3, 0.3, 25), rng.exponential(2, 15)))
    for k in (2, 3, 4):
        optimum = exact_inertia(values, k)
        assert kmeans_1d(values, k).inertia <= optimum * 1.01 + 1e-9


def test_groups_ordered_and_sized() -> None:
    rng = np.random.default_rng(0)
    values = rng.random(1000).astype(np.float32)
    grouping = kmeans_1d(values, 6)
    assert grouping.sizes.sum() == 1000
    assert np.all(np.diff(grouping.centers) > 0)
    assert np.all(np.diff(grouping.thresholds) >= 0)
    labels = np.searchsorted(grouping.thresholds, values, side="right")
    assert np.array_equal(np.bincount(labels, minlength=6), grouping.sizes)
    for g in range(6):
        assert values[labels == g].mean() == pytest.approx(grouping.centers[g], rel=1e-5)


def test_fewer_distinct_values_than_groups() -> None:
    values = np.array([1.0, 1.0, 2.0, 2.0, 2.0, 5.0, 5.0])
    grouping = kmeans_1d(values, 5)
    assert grouping.inertia == pytest.approx(0.0, abs=1e-12)
    labels = np.searchsorted(grouping.thresholds, values, side="right")
    # Equal values always share a group.
    for v in np.unique(values):
        assert np.unique(labels[values == v]).size == 1


def test_does_not_touch_global_state_or_input() -> None:
    values = np.random.default_rng(3).random(500)
    before = values.copy()
    np.random.seed(11)
    state = np.random.get_state()
    kmeans_1d(values, 4)
    assert np.array_equal(values, before)
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]


@pytest.mark.parametrize(("k", "match"), [(0, "k: expected"), (5, "k: expected")])
def test_rejects_bad_k(k: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        kmeans_1d(np.arange(5.0), k)


def test_rejects_2d() -> None:
    with pytest.raises(ValueError, match="values: expected a 1-D array"):
        kmeans_1d(np.zeros((3, 3)), 2)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=4, max_size=30),
    st.integers(1, 3),
)
def test_property_never_worse_than_one_percent_of_exact(raw: list[float], k: int) -> None:
    values = np.asarray(raw)
    if k >= values.size:
        return
    optimum = exact_inertia(values, k)
    result = kmeans_1d(values, k)
    assert result.inertia <= optimum * 1.01 + 1e-6 * (1 + np.abs(values).max() ** 2)
