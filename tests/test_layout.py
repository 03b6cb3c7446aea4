"""The layout of an epoch's plan over ranks (``bls.sharding``), in one process.

Literal per-rank index lists for every cutting, padding, ``drop_last`` and world-size case,
written by hand from the rules in docs/design.md, then properties over random plans.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bls.sharding import shard_plan


def _lists(decided: list[int], n: int, ranks: int, batch: int | None, drop_last: bool):
    shards = shard_plan(
        np.array(decided), num_samples=n, ranks=ranks, batch_size=batch, drop_last=drop_last
    )
    return shards.plan.tolist(), [shards.local(r).tolist() for r in range(ranks)]


# (decided plan, N, ranks, batch size, drop_last) -> (laid-out plan, per-rank lists)
CASES = {
    "one rank, full, untouched": (
        ([3, 0, 2, 1], 4, 1, 2, False),
        ([3, 0, 2, 1], [[3, 0, 2, 1]]),
    ),
    "one rank, full, last batch of one kept": (
        ([4, 2, 0, 3, 1], 5, 1, 2, False),
        ([4, 2, 0, 3, 1], [[4, 2, 0, 3, 1]]),
    ),
    "one rank, pruned, last batch of one cut": (
        ([7, 1, 4, 0, 9], 10, 1, 2, False),
        ([7, 1, 4, 0], [[7, 1, 4, 0]]),
    ),
    "one rank, pruned, drop_last keeps all": (
        ([7, 1, 4, 0, 9], 10, 1, 2, True),
        ([7, 1, 4, 0, 9], [[7, 1, 4, 0, 9]]),
    ),
    "one rank, pruned, batch size 1 keeps all": (
        ([7, 1, 4], 10, 1, 1, False),
        ([7, 1, 4], [[7, 1, 4]]),
    ),
    "one rank, pruned, batch size unknown keeps all": (
        ([7, 1, 4, 0, 9], 10, 1, None, False),
        ([7, 1, 4, 0, 9], [[7, 1, 4, 0, 9]]),
    ),
    "two ranks, full, even": (
        ([5, 2, 0, 4, 1, 3], 6, 2, 2, False),
        ([5, 2, 0, 4, 1, 3], [[5, 0, 1], [2, 4, 3]]),
    ),
    "two ranks, full, padded with the first sample": (
        ([4, 2, 0, 3, 1], 5, 2, 2, False),
        ([4, 2, 0, 3, 1, 4], [[4, 0, 1], [2, 3, 4]]),
    ),
    "two ranks, pruned, odd length cut": (
        ([4, 1, 7, 0, 9, 3, 5], 10, 2, 3, False),
        ([4, 1, 7, 0, 9, 3], [[4, 7, 9], [1, 0, 3]]),
    ),
    "two ranks, pruned, cut then batch of one cut per rank": (
        ([4, 1, 7, 0, 9, 3, 5], 10, 2, 2, False),
        ([4, 1, 7, 0], [[4, 7], [1, 0]]),
    ),
    "two ranks, pruned, drop_last: only the cut": (
        ([4, 1, 7, 0, 9, 3, 5], 10, 2, 2, True),
        ([4, 1, 7, 0, 9, 3], [[4, 7, 9], [1, 0, 3]]),
    ),
    "three ranks, full, padded by two": (
        ([6, 3, 0, 5, 2, 4, 1], 7, 3, 4, False),
        ([6, 3, 0, 5, 2, 4, 1, 6, 3], [[6, 5, 1], [3, 2, 6], [0, 4, 3]]),
    ),
    "three ranks, pruned, cut by two": (
        ([8, 2, 5, 0, 7, 3, 9, 1], 12, 3, 4, False),
        ([8, 2, 5, 0, 7, 3], [[8, 0], [2, 7], [5, 3]]),
    ),
    "four ranks, pruned plan shorter than the ranks: padded cyclically": (
        ([6], 10, 4, 2, False),
        ([6, 6, 6, 6], [[6], [6], [6], [6]]),
    ),
    "four ranks, pruned plan of two: padded, never trimmed to nothing": (
        ([6, 2], 10, 4, 2, False),
        ([6, 2, 6, 2], [[6], [2], [6], [2]]),
    ),
    "four ranks, pruned plan equal to the ranks: one each, kept": (
        ([6, 2, 9, 0], 10, 4, 2, False),
        ([6, 2, 9, 0], [[6], [2], [9], [0]]),
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_literal_layouts(case: str) -> None:
    arguments, expected = CASES[case]
    assert _lists(*arguments) == expected


def test_table_rows_hold_every_ranks_index_of_a_step() -> None:
    shards = shard_plan(
        np.array([4, 1, 7, 0, 9, 3]), num_samples=10, ranks=2, batch_size=3, drop_last=False
    )
    assert shards.table().tolist() == [[4, 1], [7, 0], [9, 3]]
    assert shards.per_rank == 3
    with pytest.raises(ValueError, match=r"rank: expected an integer in \[0, 2\), got 2"):
        shards.local(2)
    with pytest.raises(ValueError, match="ranks: expected an integer >= 1, got 0"):
        shard_plan(np.arange(3), num_samples=3, ranks=0, batch_size=1, drop_last=False)


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 60),
    kept=st.floats(0.0, 1.0),
    ranks=st.integers(1, 5),
    batch=st.one_of(st.none(), st.integers(1, 9)),
    drop_last=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_layout_properties(
    n: int, kept: float, ranks: int, batch: int | None, drop_last: bool, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    size = max(1, round(kept * n))
    decided = rng.permutation(n)[:size]
    shards = shard_plan(decided, num_samples=n, ranks=ranks, batch_size=batch, drop_last=drop_last)
    plan = shards.plan
    locals_ = [shards.local(r) for r in range(ranks)]
    # Equal shares: every rank yields as many indices, so as many batches.
    assert len({x.size for x in locals_}) == 1 and plan.size == ranks * locals_[0].size
    assert plan.size >= 1
    # The shards together are the laid-out plan, rank r holding positions r, r + ranks, ...
    assert sorted(np.concatenate(locals_).tolist()) == sorted(plan.tolist())
    for r, local in enumerate(locals_):
        assert local.tolist() == plan[r::ranks].tolist()
    pruned = size < n
    if pruned and size >= ranks:
        # Cut, never padded: a prefix of the decided plan, so disjoint shards, no repeats,
        # and at most ranks - 1 (cut) + ranks (batch of one) indices lost.
        assert plan.tolist() == decided[: plan.size].tolist()
        assert len(set(plan.tolist())) == plan.size
        assert size - plan.size < 2 * ranks
    else:
        # Padded: the decided plan first, then its indices again from the start; nothing lost.
        assert plan[:size].tolist() == decided.tolist()
        assert plan.size - size < ranks
        assert plan[size:].tolist() == np.resize(decided, plan.size - size).tolist()
    if pruned and batch is not None and batch > 1 and not drop_last and plan.size > ranks:
        assert locals_[0].size % batch != 1  # no rank ends in a batch of one
