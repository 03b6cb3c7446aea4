"""How an epoch's plan is laid out over ranks: pure functions, no process group needed.

Every rank decides the same plan (the policy's indices, in order). :func:`shard_plan` turns it
into what each rank iterates, from the plan and the loader's layout alone (and
:func:`planned_steps` counts a budgeted run's batches from those layouts before training):

* **Who shards.** When a framework splits batches between ranks itself (Accelerate's
  ``BatchSamplerShard``), the sampler yields the whole plan: one "rank" in the sense below.
* **Equal shares.** Ranks must run the same number of batches (unequal counts deadlock DDP),
  so the plan's length is made a multiple of the number of ranks. A *pruned* plan (shorter than
  the data set) loses its last ``len % ranks`` indices: they count as pruned. A *full* plan,
  or a pruned one with fewer indices than ranks, is padded by repeating its indices from the
  start, as ``torch.utils.data.DistributedSampler`` does: no sample is lost.
* **No batch of one.** BatchNorm cannot train on a last batch of one sample, so when a pruned
  plan with ``drop_last=False`` would leave every rank such a batch, one more index per rank is
  cut. Full epochs stay exactly as the user's loader would have them.
* **Strided shards.** Rank ``r`` takes ``plan[r::ranks]``: the shards are disjoint (apart from
  padding) and together are the plan; position ``k`` of every shard is row ``k`` of
  ``plan.reshape(-1, ranks)``, which lets every rank know every rank's indices of a step.

Example (10 samples, a pruned plan of 7, 2 ranks, batch size 3)::

    >>> import numpy as np
    >>> shards = shard_plan(np.array([4, 1, 7, 0, 9, 3, 5]), num_samples=10, ranks=2,
    ...                     batch_size=3, drop_last=False)
    >>> shards.plan.tolist(), shards.local(0).tolist(), shards.local(1).tolist()
    ([4, 1, 7, 0, 9, 3], [4, 7, 9], [1, 0, 3])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bls._checks import check_int
from bls.policies import Policy, is_pruning_epoch

__all__ = ["Shards", "planned_shards", "planned_steps", "shard_plan"]


@dataclass(frozen=True)
class Shards:
    """An epoch's plan laid out over ``ranks`` ranks.

    Attributes:
        plan: the indices all ranks together iterate, ``len(plan) % ranks == 0``; equal to the
            decided plan, cut or padded as described in the module docstring.
        ranks: how many ways the sampler splits the plan (1 when a framework shards batches).
    """

    plan: np.ndarray
    ranks: int

    @property
    def per_rank(self) -> int:
        """Indices each rank yields."""
        return self.plan.size // self.ranks

    def local(self, rank: int) -> np.ndarray:
        """Rank ``rank``'s indices in iteration order (a view of ``plan``)."""
        if not 0 <= rank < self.ranks:
            raise ValueError(f"rank: expected an integer in [0, {self.ranks}), got {rank}")
        return self.plan[rank :: self.ranks]

    def table(self) -> np.ndarray:
        """``(per_rank, ranks)``: row ``k`` holds every rank's ``k``-th index (a view)."""
        return self.plan.reshape(-1, self.ranks)


def shard_plan(
    decided: np.ndarray,
    *,
    num_samples: int,
    ranks: int,
    batch_size: int | None,
    drop_last: bool,
) -> Shards:
    """Lay the decided plan out over ``ranks`` ranks (see the module docstring for the rules).

    Args:
        decided: the policy's plan for the epoch, 1-D integer indices (a pruned plan holds
            each index at most once; a full plan holds every index once).
        num_samples: the data set's size ``N``; a plan shorter than ``N`` is a pruned plan.
        ranks: the world size, or 1 when a framework shards batches itself.
        batch_size: the loader's batch size per rank, ``None`` when unknown (no trim then).
        drop_last: the loader's ``drop_last``.

    Returns:
        The laid-out plan. Invariants: ``len(plan) % ranks == 0``; every rank yields
        ``len(plan) // ranks`` indices; a pruned plan with at least ``ranks`` indices is a
        prefix of ``decided``; any other plan is ``decided`` followed by a cyclic repeat of it.
    """
    if ranks < 1:
        raise ValueError(f"ranks: expected an integer >= 1, got {ranks}")
    plan = decided
    pruned = plan.size < num_samples
    remainder = plan.size % ranks
    if remainder:
        if pruned and plan.size > ranks:
            plan = plan[: plan.size - remainder]
        else:  # no sample lost and no rank left without one: repeat from the start
            plan = np.concatenate((plan, np.resize(plan, ranks - remainder)))
    if (
        pruned
        and batch_size is not None
        and batch_size > 1
        and not drop_last
        and plan.size > ranks
        and (plan.size // ranks) % batch_size == 1
    ):
        plan = plan[: plan.size - ranks]  # BatchNorm cannot train on a final batch of one
    return Shards(plan, ranks)


def planned_shards(
    policy: Policy,
    epoch: int,
    *,
    num_samples: int,
    num_epochs: int,
    delta: float,
    batch_size: int,
    drop_last: bool,
    world_size: int,
) -> Shards:
    """Epoch ``epoch``'s shards as the sampler will lay out its plan, known before training.

    The epoch's kept count comes from the policy's budget (:meth:`Policy.kept_count`), laid
    out by :func:`shard_plan` exactly as the sampler lays out the decided plan. Epochs past
    ``num_epochs`` anneal (keep every sample).

    Args:
        policy: the pruning rule.
        epoch: the epoch, ``>= 0``.
        num_samples: the data set's size ``N``.
        num_epochs: the planned number of epochs ``E``.
        delta: epochs ``e`` with ``e + 1 <= delta * E`` prune, later ones anneal.
        batch_size: the loader's batch size per rank, ``>= 1``.
        drop_last: the loader's ``drop_last``.
        world_size: the ranks the plan is sharded over, ``>= 1``.

    Raises:
        ValueError: the epoch's length depends on scores not seen yet (no budget).
    """
    kept = policy.kept_count(num_samples, epoch, is_pruning_epoch(epoch, num_epochs, delta))
    if kept is None:
        raise ValueError(
            "total_steps: epoch lengths are known before training only with "
            "target_saving=... (InfoBatch, SeTa, RandomPrune) or without pruning "
            "(Full); here each pruning epoch's length depends on the scores"
        )
    return shard_plan(
        np.arange(kept),
        num_samples=num_samples,
        ranks=world_size,
        batch_size=batch_size,
        drop_last=drop_last,
    )


def planned_steps(
    policy: Policy,
    *,
    num_samples: int,
    num_epochs: int,
    delta: float,
    batch_size: int,
    drop_last: bool,
    world_size: int,
) -> int:
    """Batches one rank runs over all ``num_epochs`` epochs, known before training
    (each epoch laid out by :func:`planned_shards`; the arguments are its own).

    Raises:
        ValueError: an epoch's length depends on scores not seen yet (no budget).
    """
    batch_size = check_int("batch_size", batch_size, 1)
    world_size = check_int("world_size", world_size, 1)
    total = 0
    for epoch in range(num_epochs):
        per_rank = planned_shards(
            policy,
            epoch,
            num_samples=num_samples,
            num_epochs=num_epochs,
            delta=delta,
            batch_size=batch_size,
            drop_last=drop_last,
            world_size=world_size,
        ).per_rank
        total += per_rank // batch_size if drop_last else -(-per_rank // batch_size)
    return total
