"""Epoch-decision time against N, and the quality of SeTa's 1-D grouping.

The decision is everything the sampler does at the start of an epoch: read the scores,
apply the policy (InfoBatch's threshold and random keep, SeTa's subset, 1-D k-means and
window), build the weights, shuffle the index array and hand it to the iterator
(``sampler.set_epoch(e)`` followed by ``iter(sampler)``).

The grouping quality compares the within-group sum of squares of ``bls.kmeans1d.kmeans_1d``
with scikit-learn's ``KMeans`` (k-means++ initialisation) on the same data, and with the exact
optimum (dynamic programme) where the data is small enough. scikit-learn is used here only.

Run: ``taskset -c 1 python benchmarks/bench_decision.py`` (``--tiny`` for a smoke run).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from _common import IndexDataset, emit, loss_like_scores, median_time, print_machine

from bls import InfoBatch, SeTa
from bls.kmeans1d import kmeans_1d

IMAGENET = 1_281_167


def decision_time(policy: str, n: int, repeats: int) -> dict[str, Any]:
    """Median seconds of ``set_epoch(e)`` + ``iter(sampler)`` for ``n`` samples."""
    data = IndexDataset(n)
    if policy == "InfoBatch":
        handler: Any = InfoBatch(data, num_epochs=1000, prune_ratio=0.5)
    else:
        handler = SeTa(data, num_epochs=1000, prune_ratio=0.1, num_group=10, window_scale=0.5)
    handler.scores.copy_(loss_like_scores(n, seed=1))
    epoch = iter(range(1, 1000))  # a fresh pruning epoch per repetition

    def decide() -> None:
        handler.sampler.set_epoch(next(epoch))
        iterator = iter(handler.sampler)
        assert isinstance(iterator.shard, np.ndarray)  # an index array, not a list

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no update() calls between decisions: expected
        median, times = median_time(decide, repeats)
    kept = handler.history[-1]["kept"]
    return {"policy": policy, "n": n, "seconds": median, "all": times, "kept": kept}


def hot_spots(policy: str, n: int, top: int = 6) -> list[dict[str, Any]]:
    """The functions that take the decision's time at ``n`` (cProfile, own time)."""
    import cProfile
    import pstats

    data = IndexDataset(n)
    if policy == "InfoBatch":
        handler: Any = InfoBatch(data, num_epochs=1000, prune_ratio=0.5)
    else:
        handler = SeTa(data, num_epochs=1000, prune_ratio=0.1, num_group=10, window_scale=0.5)
    handler.scores.copy_(loss_like_scores(n, seed=1))
    profile = cProfile.Profile()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handler.sampler.set_epoch(1)
        iter(handler.sampler)
        profile.enable()
        handler.sampler.set_epoch(2)
        iter(handler.sampler)
        profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    rows = sorted(
        (
            {"function": f"{Path(file).name}:{line}({name})", "calls": calls, "seconds": own}
            for (file, line, name), (_, calls, own, _, _) in stats.items()
        ),
        key=lambda r: -r["seconds"],
    )
    return rows[:top]


def exact_inertia(values: np.ndarray, k: int) -> float:
    """The exact 1-D k-means optimum by dynamic programming over the sorted values."""
    x = np.sort(values.astype(np.float64))
    n = x.size
    prefix = np.concatenate(([0.0], np.cumsum(x)))
    prefix_sq = np.concatenate(([0.0], np.cumsum(x * x)))
    a = np.arange(n + 1)
    size = (a[None, :] - a[:, None]).astype(np.float64)
    total = prefix[None, :] - prefix[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = prefix_sq[None, :] - prefix_sq[:, None] - total * total / size
    cost = np.where(size > 0, np.maximum(cost, 0.0), np.inf)
    best = cost[0]
    for _ in range(1, k):
        best = np.min(best[:, None] + cost, axis=0)
    return float(best[n])


def grouping_quality(k: int, sizes: dict[str, int]) -> list[dict[str, Any]]:
    """Within-group SS of kmeans_1d vs scikit-learn KMeans (and the exact optimum if small)."""
    try:
        from sklearn.cluster import KMeans
    except ImportError:  # the library never needs it; the comparison does
        print("scikit-learn not installed: grouping quality skipped")
        return []
    rng = np.random.default_rng(7)
    data = {
        "gamma (loss-like)": lambda n: rng.gamma(2.0, 0.5, n),
        "bimodal mixture": lambda n: np.concatenate(
            (rng.normal(0.2, 0.05, n // 2), rng.normal(2.0, 0.6, n - n // 2))
        ),
        "BLS-like (ties)": lambda n: np.repeat(rng.gamma(2.0, 0.5, max(n // 256, k + 1)), 256)[:n],
        "small (exact DP)": lambda n: rng.gamma(2.0, 0.5, n),
    }
    rows = []
    for name, make in data.items():
        n = sizes["small"] if name.startswith("small") else sizes["large"]
        values = make(n).astype(np.float32)
        start = time.perf_counter()
        ours = kmeans_1d(values, k, seed=0).inertia
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        model = KMeans(n_clusters=k, init="k-means++", n_init=1, random_state=0)
        model.fit(values.reshape(-1, 1).astype(np.float64))
        sk_s = time.perf_counter() - start
        row = {
            "data": name,
            "n": n,
            "ours": ours,
            "sklearn": float(model.inertia_),
            "ratio": ours / float(model.inertia_),
            "ours_s": ours_s,
            "sklearn_s": sk_s,
        }
        if name.startswith("small"):
            row["exact"] = exact_inertia(values, k)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    info = print_machine()
    sizes = args.sizes or (
        [1_000, 20_000] if args.tiny else [10_000, 100_000, 1_000_000, IMAGENET, 10_000_000]
    )
    results = []
    for n in sizes:
        repeats = args.repeats if n <= 2_000_000 else max(3, args.repeats // 2 + 1)
        for policy in ("InfoBatch", "SeTa"):
            r = decision_time(policy, n, repeats)
            results.append(r)
            print(f"decision {policy:9s} N={n:>11,d}: {r['seconds']:.4f} s median ({repeats} runs)")
    spots = {}
    for policy in ("InfoBatch", "SeTa"):
        spots[policy] = hot_spots(policy, max(sizes))
        listed = ", ".join(
            f"{r['function']} {r['seconds']:.3f} s ({r['calls']} calls)" for r in spots[policy]
        )
        print(f"hot spots {policy} N={max(sizes):,d} (own time): {listed}")
    quality_sizes = (
        {"large": 5_000, "small": 300}
        if args.tiny
        else {"large": int(0.9 * IMAGENET), "small": 2_000}
    )
    quality = grouping_quality(10, quality_sizes)
    for q in quality:
        exact = f", exact optimum {q['exact']:.6g}" if "exact" in q else ""
        print(
            f"grouping k=10 {q['data']:18s} n={q['n']:>9,d}: bls {q['ours']:.6g} "
            f"({q['ours_s']:.2f} s), sklearn KMeans {q['sklearn']:.6g} ({q['sklearn_s']:.2f} s), "
            f"ratio {q['ratio']:.6f}{exact}"
        )
    result = {"machine": info, "decision": results, "quality": quality, "hot_spots": spots}
    emit(result)
    return result


if __name__ == "__main__":
    main()
