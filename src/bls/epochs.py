"""One epoch at a time: decide its plan, lay it out for the loader, iterate it, close it.

:class:`EpochCycle` owns the current epoch's runtime (:class:`EpochRun`, rebuilt at every
decision and never saved) and writes the decided weights, epoch and history into the
handler's declared state. The rules it follows are in docs/design.md ("The epoch schedule",
"Sharding over ranks"): each epoch's plan is decided once, from the scores as they are at that
moment, with a generator seeded by ``(seed, epoch)``. Where a checkpoint left an epoch's pass
and where its resumed pass starts is :mod:`bls.resume`; how a loss finds its batch is
:mod:`bls.attribution`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bls.attribution import AttributionWarning, OrderRoute, TrackedRoute
from bls.distributed import rank_and_world_size
from bls.policies import EpochPlan, Policy, is_pruning_epoch
from bls.resume import Resume, ResumeWarning, resume_point
from bls.sampler import LoaderInfo, _EpochIterator
from bls.sharding import Shards, planned_steps, shard_plan

__all__ = [
    "AttributionWarning",
    "BudgetWarning",
    "EpochCycle",
    "EpochRun",
    "FewBatchesWarning",
    "Resume",
    "ResumeWarning",
    "warn_if_too_few_batches",
]

logger = logging.getLogger("bls")


class BudgetWarning(UserWarning):
    """A budget epoch had too few well-learned samples to prune from them alone."""


class FewBatchesWarning(UserWarning):
    """An epoch has fewer than two batches, so batch-loss scores cannot tell samples apart."""


@dataclass
class EpochRun:
    """The current epoch's runtime: rebuilt when an epoch is decided, never saved."""

    decided: np.ndarray | None = None  # the plan as the policy decided it
    shards: Shards | None = None  # ... laid out for the loader in shards_key
    shards_key: tuple[int, int | None, bool] | None = None
    iterator: _EpochIterator | None = None
    route: OrderRoute | None = None
    updates: int = 0  # update() calls so far this epoch
    unit_weights: bool = True
    pending_from: int = 0  # first batch of the pending buffer not yet folded into the scores
    rank: int = 0  # this process's column of the index table
    world_size: int = 1
    tracked: TrackedRoute | None = None  # the tracked route, under sampler.track(...)
    resume: Resume | None = None  # where a mid-epoch checkpoint left this epoch
    last_loss: torch.Tensor | None = None  # the last update()'s loss, as the loop passed it
    # The update path (bls.recording): the order route's per-step views, prepared at the
    # epoch's first update (an OrderSteps), and explicit batches not yet in the scores (one
    # process, an ExplicitLog).
    steps: Any = None
    log: Any = None


class EpochCycle:
    """Decides, lays out and closes epochs for one handler.

    Args:
        state: the handler's declared state (``weights``, ``epoch``, ``history``, ``table``,
            ``pending``, ``nonfinite``, ``batch_size``, ``warned_nonfinite``, ``scores``).
        policy: the pruning rule.
        num_epochs: the planned number of epochs ``E``.
        delta: epochs ``e`` with ``e + 1 <= delta * E`` prune, later ones anneal.
    """

    def __init__(self, state: Any, policy: Policy, num_epochs: int, delta: float) -> None:
        self.state = state
        self.policy = policy
        self.num_samples = int(state.num_samples)
        self.num_epochs = num_epochs
        self.delta = delta
        self.run = EpochRun()
        self.loader = LoaderInfo()  # the last loader that iterated the sampler
        self.warned_few_batches = False
        self.warned_budget = False

    def is_pruning_epoch(self, epoch: int) -> bool:
        return is_pruning_epoch(epoch, self.num_epochs, self.delta)

    def decide(self, epoch: int, scores: np.ndarray, seed: int, score_name: str) -> None:
        """Decide epoch ``epoch``'s plan from ``scores`` (float32 ``(N,)`` on the host)."""
        pruning = self.is_pruning_epoch(epoch)
        if epoch >= self.num_epochs:
            logger.warning(
                "epoch %d is past num_epochs=%d: training on all data", epoch, self.num_epochs
            )
        rng = np.random.default_rng([seed, epoch])
        plan: EpochPlan = self.policy.plan(scores, epoch, pruning, rng)
        # int32 halves the plan's memory below 2**31 samples (torch indexes with it directly).
        index_dtype = np.int32 if self.num_samples < 2**31 else np.int64
        indices = plan.indices.astype(index_dtype, copy=False)
        weights = torch.ones(self.num_samples, dtype=torch.float32)
        upweighted = bool(plan.upweighted.size and plan.up_weight != 1.0)
        if upweighted:
            weights[torch.from_numpy(plan.upweighted.astype(np.int64, copy=False))] = plan.up_weight
        state = self.state
        state.reset_epoch(state.scores.device)
        state.weights = weights.to(state.scores.device)
        state.epoch = epoch
        self.run = EpochRun(decided=indices, unit_weights=not upweighted)
        kept = int(min(indices.size, self.num_samples))
        state.history = [r for r in state.history if r["epoch"] != epoch]
        state.history.append(
            {
                "epoch": epoch,
                "pruning": pruning,
                "kept": kept,
                "pruned": self.num_samples - kept,
                "policy": self.policy.name,
                "score": score_name,
                **plan.details,
            }
        )
        logger.debug("epoch %d: kept %d of %d", epoch, indices.size, self.num_samples)
        beyond = plan.details.get("beyond_well_learned", 0)
        if beyond and not self.warned_budget:
            self.warned_budget = True
            warnings.warn(
                f"epoch {epoch}: target_saving prunes {plan.details['budget_pruned']} samples "
                f"per epoch but only {plan.details['well_learned']} scored below the mean; to "
                f"keep the epoch at its fixed length the {beyond} lowest-scoring other samples "
                "were pruned too, without re-weighting (warned once per run; every epoch's "
                "count is in handler.history as 'beyond_well_learned')",
                BudgetWarning,
                stacklevel=6,  # the caller of sampler.set_epoch
            )

    def total_steps(self, batch_size: int, drop_last: bool, world_size: int | None) -> int:
        """Batches this rank runs over all ``num_epochs`` epochs (:func:`planned_steps`).

        ``world_size``: by default the current process group's (1 without one).
        """
        ranks = rank_and_world_size()[1] if world_size is None else world_size
        return planned_steps(
            self.policy,
            num_samples=self.num_samples,
            num_epochs=self.num_epochs,
            delta=self.delta,
            batch_size=batch_size,
            drop_last=drop_last,
            world_size=ranks,
        )

    def resume(self, plan: np.ndarray, resume: Resume) -> None:
        """Restore an epoch whose iteration began before a checkpoint (the state is loaded,
        its record reopened by ``HandlerState.restore``)."""
        unit = bool(torch.all(self.state.weights == 1.0))
        self.run = EpochRun(decided=plan, unit_weights=unit, resume=resume)

    def shards(self, world_size: int) -> Shards:
        """The decided plan laid out for the current loader (cached per layout)."""
        run, state = self.run, self.state
        assert run.decided is not None
        ranks = 1 if self.loader.sharded_by_framework else world_size
        key = (ranks, state.batch_size, self.loader.drop_last)
        if run.shards is None or run.shards_key != key:
            run.shards = shard_plan(
                run.decided,
                num_samples=self.num_samples,
                ranks=ranks,
                batch_size=state.batch_size,
                drop_last=self.loader.drop_last,
            )
            run.shards_key = key
            kept = int(min(run.shards.plan.size, self.num_samples))
            state.history[-1].update(kept=kept, pruned=self.num_samples - kept)
        return run.shards

    def locate(
        self, loss: torch.Tensor, per_sample: bool, *, explicit: bool
    ) -> tuple[int, int, torch.Tensor | None, torch.Tensor | None]:
        """By the order route: where this epoch's next loss lies in the rank's shard.

        ``explicit``: the items carry their indices (``return_indices=True``), so the order
        route is refused, as it is under a framework that shards batches itself.

        Returns:
            ``(start, length, local, every_rank)``: the batch's positions, and the views of
            the index table that recording it needs. In one process with unit weights the
            scores are folded in later from the table itself, so no view is made (each costs
            a dispatch on the step's path).
        """
        run, state = self.run, self.state
        custom = self.loader.batch_sampler
        if custom is not None and not explicit:
            raise ValueError(
                f"indices: the DataLoader's batch sampler {custom} forms its own batches, so a "
                "loss cannot be matched to its samples by order; wrap it, "
                f"DataLoader(handler, batch_sampler=handler.sampler.track({custom}(...))), or "
                "build the handler with return_indices=True and pass update(loss, indices=...)"
            )
        if explicit or self.loader.sharded_by_framework:
            raise ValueError(
                "indices: this loader needs explicit indices; call update(loss, indices=...) "
                "with the indices the items carry (return_indices=True)"
            )
        route = run.route
        assert route is not None and state.table is not None  # set when iteration began
        start, stop = route.locate(run.updates, loss, per_sample)
        if state.batch_size is None:
            state.batch_size = route.batch_size  # learned from the first per-sample loss
        if run.world_size == 1 and run.unit_weights:
            return start, stop - start, None, None
        local = route.local(state.table, start, stop)
        every_rank = None if run.world_size == 1 else route.every_rank(state.table, start, stop)
        return start, stop - start, local, every_rank

    def begin(self, loader: LoaderInfo, into: _EpochIterator | None = None) -> _EpochIterator:
        """Start iterating the decided epoch for ``loader``; returns this rank's iterator.

        ``into``: an iterator a loader already holds, restarted for this pass instead of a
        new one (see ``PruningDataset.load_state_dict``).
        """
        self.loader = loader
        state, run = self.state, self.run
        if loader.batch_size is not None:
            state.batch_size = loader.batch_size
        rank, world_size = rank_and_world_size()
        shards = self.shards(world_size)
        column = rank if shards.ranks > 1 else 0
        state.table = torch.from_numpy(shards.table()).to(state.scores.device, non_blocking=True)
        run.rank, run.world_size = column, world_size
        assert run.shards_key is not None  # set by self.shards
        start, done = resume_point(run.resume, run.shards_key, loader.skip_batches, state.epoch)
        if into is None:
            into = _EpochIterator(shards.local(column), start)
        else:
            into.restart(shards.local(column), start)
        run.iterator = into
        run.route = OrderRoute(
            run.iterator, column, state.batch_size, loader.drop_last, state.epoch
        )
        run.updates, run.pending_from, state.pending = done, done, None
        run.steps = None  # views of the pending buffer just dropped
        run.tracked = TrackedRoute(into, state.epoch, done, start) if loader.tracked else None
        return run.iterator

    def track(self, batch: list[int]) -> None:
        """Note a batch that the tracked batch sampler drew (its update comes later)."""
        run = self.run
        if run.tracked is None:
            raise RuntimeError(
                "a tracked batch sampler drew a batch outside an epoch's iteration: build the "
                "DataLoader with batch_sampler=handler.sampler.track(...) over handler.sampler"
            )
        run.tracked.track(batch)

    def next_tracked(self) -> list[int]:
        """The oldest drawn batch without an ``update()`` yet (the tracked route)."""
        assert self.run.tracked is not None
        return self.run.tracked.next(self.run.updates)

    def length(self, *, whole_plan: bool) -> int:
        """Indices this rank yields in the current epoch, or all ranks with ``whole_plan``."""
        _, world_size = rank_and_world_size()
        if self.run.decided is None:
            return self.num_samples if whole_plan else -(-self.num_samples // world_size)
        if self.run.iterator is not None and not whole_plan:
            return int(self.run.iterator.shard.size)
        shards = self.shards(world_size)
        return int(shards.plan.size if whole_plan else shards.per_rank)

    def close(self, *, explicit: bool) -> None:
        """Record the finished epoch's update count and warn about miscounts (idempotent).

        Args:
            explicit: losses came with explicit indices (update counts are then not checked).
        """
        run, state = self.run, self.state
        if run.iterator is None or not state.history:
            return
        record = state.history[-1]
        if "updates" in record:
            return
        record["updates"] = run.updates
        expected = run.route.batches() if run.route is not None else 0
        ordered = not explicit and not self.loader.sharded_by_framework
        if run.tracked is not None:
            expected, ordered = run.tracked.drawn, True
        if ordered and expected and run.updates != expected:
            warnings.warn(
                f"epoch {state.epoch}: update() was called {run.updates} times for "
                f"{expected} batches; the samples of the batches without an update keep their "
                "previous scores. Call update() exactly once per batch.",
                AttributionWarning,
                stacklevel=4,
            )
        nonfinite = int(state.nonfinite)
        record["nonfinite"] = nonfinite
        if nonfinite and not state.warned_nonfinite:
            state.warned_nonfinite = True
            warnings.warn(
                f"epoch {state.epoch}: {nonfinite} non-finite loss value(s) were skipped and "
                "did not enter the scores (warned once per run; see handler.history)",
                RuntimeWarning,
                stacklevel=4,
            )


def warn_if_too_few_batches(cycle: EpochCycle) -> None:
    """Warn once per run when an epoch of batch-loss scores has fewer than two batches."""
    route, run = cycle.run.route, cycle.run
    if cycle.warned_few_batches or route is None or not route.batch_size:
        return
    if route.batches() >= 2:
        return
    cycle.warned_few_batches = True
    assert run.iterator is not None
    warnings.warn(
        f"epoch {cycle.state.epoch}: the loader makes {route.batches()} batch(es) of "
        f"batch_size={route.batch_size} from {run.iterator.shard.size} samples; BLS gives "
        "every sample of a batch that batch's loss, so with fewer than two batches per "
        "epoch all samples score alike and pruning cannot tell them apart (InfoBatch then "
        "prunes none). Use a batch_size of at most half the samples, or per-sample losses "
        "without BLS (warned once per run).",
        FewBatchesWarning,
        stacklevel=6,  # the caller of iter(sampler)
    )
