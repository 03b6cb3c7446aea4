"""Writing measured losses into the scores: at once, or deferred and folded in one step.

Two ways, chosen per ``update()`` by :func:`record_update`:

* :func:`record_now` writes one step's measurement, gathered from every rank under a process
  group, so the scores stay identical on all ranks after every step.
* In one process by the order route, ``update()`` only copies its measurement into a slot of
  the epoch's pending buffer, and :func:`fold_pending` later writes a run of those batches in
  one vectorised step. Within one epoch of one process no index repeats (the plan is a set and
  is never padded), so one vectorised write equals the sequence of per-batch writes.

Both return the number of non-finite values skipped, as a device tensor (no host sync).
"""

from __future__ import annotations

from typing import Any

import torch

from bls.attribution import ExplicitRoute
from bls.distributed import gather_equal, gather_uneven
from bls.epochs import EpochCycle, EpochRun
from bls.scores import ScoreSource

__all__ = ["defer", "flush", "fold_pending", "record_now", "record_update"]


def record_update(
    cycle: EpochCycle,
    source: ScoreSource,
    loss: torch.Tensor,
    indices: Any,
    *,
    explicit: bool,
) -> torch.Tensor:
    """One ``update()``: find the loss's samples, record it, return the loss to back-propagate.

    Args:
        cycle: the handler's epochs (its ``run`` and declared ``state``).
        source: the score source.
        loss: the loss as the training loop computed it.
        indices: the batch's indices (the explicit route), or ``None``: then a tracked batch
            sampler's next batch, or else the order route.
        explicit: the items carry their indices (``return_indices=True``).
    """
    run, state = cycle.run, cycle.state
    if run.iterator is None:
        raise RuntimeError(
            "update() was called before any batch was drawn: iterate a DataLoader built "
            "with sampler=handler.sampler first"
        )
    run.last_loss = loss
    if run.tracked is not None:
        batch = cycle.next_tracked()
        indices = batch if indices is None else indices
    if not source.records:
        run.updates += 1
        return loss.mean()
    if state.scores.device != loss.device:
        flush(source, state, run)
        state.to(loss.device)
    every_rank: torch.Tensor | None = None
    if indices is None:
        start, length, local, every_rank = cycle.locate(loss, source.per_sample, explicit=explicit)
        deferred = run.world_size == 1
    else:
        local = ExplicitRoute.locate(indices, loss.device)
        start, length, deferred = 0, local.shape[0], False
    if source.per_sample and (loss.dim() == 0 or loss.shape[0] != length):
        raise ValueError(
            f"loss: per-sample scoring needs one loss per sample of the batch "
            f"(reduction='none', length {length}), got shape {tuple(loss.shape)}; "
            "for a scalar mean loss wrap the handler with BLS(...).proxy()"
        )
    batch_weights = None
    if not run.unit_weights:
        assert local is not None
        batch_weights = state.weights.index_select(0, local)
    returned, measurement = source.measure(loss, batch_weights)
    if measurement is not None:
        if deferred:
            defer(state, run, source.per_sample, measurement, start, length)
        else:
            assert local is not None
            flush(source, state, run)  # earlier deferred batches first: scores change in order
            state.nonfinite += record_now(
                source, state.scores, local, every_rank, measurement, run.world_size
            )
            run.pending_from = run.updates + 1
    run.updates += 1
    return returned


def record_now(
    source: ScoreSource,
    scores: torch.Tensor,
    local: torch.Tensor,
    every_rank: torch.Tensor | None,
    measurement: torch.Tensor,
    world_size: int,
) -> torch.Tensor:
    """Record one step on every rank: this rank's ``local`` indices and ``measurement``.

    Args:
        source: the score source (its ``record`` writes the values).
        scores: ``(N,)`` float32, updated in place.
        local: this rank's indices of the step.
        every_rank: ``(ranks, b)``: every rank's indices, when every rank knows them (the
            order route); ``None`` when they must travel (explicit indices).
        measurement: one value per sample (per-sample scores) or one per batch (BLS).
        world_size: the process group's size (1 without one).
    """
    if world_size == 1:
        measurements = measurement.unsqueeze(0)
        indices = local.unsqueeze(0) if every_rank is None else every_rank
    elif every_rank is not None:
        # Order route: every rank already knows every rank's indices; only losses travel.
        measurements = gather_equal(measurement)
        indices = every_rank
    else:
        pieces = gather_uneven(local)
        values = gather_uneven(measurement)
        indices = torch.cat(pieces)
        measurements = torch.cat(
            [
                v.expand(p.shape[0]) if v.shape[0] == 1 else v
                for v, p in zip(values, pieces, strict=True)
            ]
        )
    return source.record(scores, indices, measurements)


def fold_pending(
    source: ScoreSource,
    scores: torch.Tensor,
    order: torch.Tensor,
    pending: torch.Tensor,
    first: int,
    last: int,
    batch_size: int,
) -> torch.Tensor | None:
    """Write the pending batches ``[first, last)`` of an epoch into ``scores`` at once.

    Args:
        source: the score source.
        scores: ``(N,)`` float32, updated in place.
        order: the epoch's plan in this process's iteration order, on the scores' device.
        pending: one slot per sample (per-sample scores) or per batch (BLS).
        first: the first batch not yet folded in.
        last: one past the last batch to fold in.
        batch_size: samples per batch (the last batch of the epoch may be shorter).

    Returns:
        The non-finite count of the folded values, or ``None`` when nothing was pending.
    """
    if first >= last:
        return None
    record = source.record
    if source.per_sample:
        lo, hi = first * batch_size, min(last * batch_size, order.shape[0])
        return record(scores, order[lo:hi].unsqueeze(0), pending[lo:hi].unsqueeze(0))
    # BLS: full batches as rows of a (batches, batch_size) index matrix, each with its own
    # batch loss; the epoch's shorter last batch on its own.
    whole = min(last, order.shape[0] // batch_size)
    skipped = None
    if whole > first:
        skipped = record(
            scores,
            order[first * batch_size : whole * batch_size].view(-1, batch_size),
            pending[first:whole].unsqueeze(1),
        )
    if last > whole:
        tail = record(
            scores, order[whole * batch_size :].unsqueeze(0), pending[whole:last].unsqueeze(1)
        )
        skipped = tail if skipped is None else skipped + tail
    return skipped


def defer(
    state: Any, run: EpochRun, per_sample: bool, measurement: torch.Tensor, start: int, length: int
) -> None:
    """Copy one batch's measurement into its slot of the epoch's pending buffer.

    The buffer (``state.pending``, float32 on the scores' device) is allocated at the epoch's
    first deferred batch: one slot per sample of this process's shard, or one per batch (BLS).
    """
    if state.pending is None:
        assert run.iterator is not None and state.batch_size is not None
        slots = run.iterator.shard.size
        if not per_sample:
            slots = -(-slots // state.batch_size)
        state.pending = torch.empty(slots, dtype=torch.float32, device=state.scores.device)
    if per_sample:
        state.pending[start : start + length].copy_(measurement)
    else:
        state.pending[run.updates : run.updates + 1].copy_(measurement.reshape(1))


def flush(source: ScoreSource, state: Any, run: EpochRun) -> None:
    """Fold every pending batch of the epoch into ``state.scores`` (see :func:`fold_pending`)."""
    if state.pending is None or run.pending_from >= run.updates:
        return
    assert state.table is not None and state.batch_size is not None
    skipped = fold_pending(
        source,
        state.scores,
        state.table[:, 0],
        state.pending,
        run.pending_from,
        run.updates,
        state.batch_size,
    )
    if skipped is not None:
        state.nonfinite += skipped
    run.pending_from = run.updates
