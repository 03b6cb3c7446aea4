"""Writing measured losses into the scores: deferred, then folded in vectorised steps.

:func:`record_update` is one ``update()``. What it does with the measurement depends on the
route (docs/design.md, 'Deferred recording'):

* Order route, one process or a process group: :class:`OrderSteps` (prepared at the epoch's
  first update) copies the measurement into this rank's slot of the epoch's pending buffer
  (``state.pending``) and returns the weighted loss; nothing else runs on the step's path. In
  one process :func:`flush` folds the pending batches into the scores whenever they are read.
  Under a process group :func:`fold_every_rank` gathers every rank's buffer in one collective
  and folds all of them, identically on every rank: at the epoch's last ``update()``, at the
  next decision or ``end_epoch()`` (every rank calls those), or in a mid-epoch
  ``state_dict()``, which every rank must then call at the same step (:func:`sync_for_state`).
* Explicit indices in one process: :class:`ExplicitLog` keeps a copy of each batch's indices
  and measurement; :func:`flush` folds them.
* Explicit indices under a process group: :func:`record_now` gathers and records the step at
  once, as their lengths differ between ranks.

Folding many batches at once gives exactly what recording them one by one gives: the writes
of a fold never hold an index twice (one process: the epoch's plan is a set; a padded plan
under a process group repeats indices only between its first and last rows, and the last
batch is folded on its own), and explicit batches are folded at once only when no index
repeats among them (else batch by batch). Counts of skipped non-finite values stay device
tensors (no host sync).
"""

from __future__ import annotations

from typing import Any

import torch

from bls.attribution import ExplicitRoute
from bls.distributed import check_ranks_agree, gather_equal, gather_uneven
from bls.epochs import EpochCycle, EpochRun
from bls.scores import ScoreSource, non_finite

_FLOAT32 = torch.float32

__all__ = [
    "ExplicitLog",
    "OrderSteps",
    "flush",
    "fold_every_rank",
    "fold_pending",
    "record_now",
    "record_update",
    "sync_for_state",
]


def record_update(
    cycle: EpochCycle, source: ScoreSource, loss: torch.Tensor, indices: Any, *, explicit: bool
) -> torch.Tensor:
    """One ``update()`` but a prepared order-route step (``PruningDataset.update`` takes that
    one itself, ``run.steps.step``): checks, prepares, records; returns the loss to
    back-propagate.

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
    # (Each route below keeps the loss's values for unweighted_loss: never the loss itself,
    # whose autograd graph would stay alive until the next update(), then freed inside it.)
    if run.tracked is not None:
        batch = cycle.next_tracked()
        indices = batch if indices is None else indices
    if not source.records:
        run.last_loss = loss.data
        run.updates += 1
        return loss.mean()
    if state.scores.device != loss.device:
        # (Every rank's first loss reaches the new device at the same step.)
        fold_every_rank(source, state, run)
        state.to(loss.device)  # the pending buffer moves too; the prepared views do not
        run.steps = run.log = None
    if indices is None:
        # The first order-route update of the epoch (or the first after a device change or an
        # explicit batch): check the route once, then prepare every later step.
        cycle.locate(loss, source.per_sample, explicit=explicit)
        if run.log is not None:
            # Explicit batches before this one first: the scores change in step order.
            fold_every_rank(source, state, run)
        run.steps = OrderSteps(cycle, source, loss.device)
        return run.steps.step(run, loss)
    local = ExplicitRoute.locate(indices, loss.device, copy=run.world_size == 1)
    if source.per_sample and (loss.dim() == 0 or loss.shape[0] != local.shape[0]):
        raise ValueError(
            f"loss: per-sample scoring needs one loss per sample of the batch "
            f"(reduction='none', length {local.shape[0]}), got shape {tuple(loss.shape)}; "
            "for a scalar mean loss wrap the handler with BLS(...).proxy()"
        )
    batch_weights = None if run.unit_weights else state.weights.index_select(0, local)
    if run.world_size == 1:
        returned, measurement = _measure(source, loss, batch_weights)
        if run.updates > run.pending_from:
            flush(source, state, run)  # order-route batches before this one
        if run.log is None:
            run.log = ExplicitLog()
        run.last_loss = run.log.append(local, measurement)
        run.steps = None  # an order-route update after this one folds the log first
    else:
        slots = _explicit_slots(cycle, source, local, loss.device)
        if slots is not None:
            returned, measurement = _measure(source, loss, batch_weights)
            slots.write(run.updates, local, measurement)
            run.last_loss = measurement
            run.updates += 1
            run.pending_from = run.updates
            if run.updates == slots.steps:  # the epoch's last batch: fold every rank's now
                fold_every_rank(source, state, run)
            return returned
        returned, gathered = source.measure(loss, batch_weights)
        assert gathered is not None
        run.last_loss = gathered
        fold_every_rank(source, state, run)  # deferred batches first, in step order
        state.nonfinite += record_now(source, state.scores, local, None, gathered, run.world_size)
    run.updates += 1
    run.pending_from = run.updates
    return returned


def _explicit_slots(
    cycle: EpochCycle, source: ScoreSource, local: torch.Tensor, device: torch.device
) -> ExplicitSlots | None:
    """Under a process group, where this explicit batch is deferred, or ``None``: recorded now.

    Deferred when every rank knows the epoch's batches (the stock batch sampler: each rank
    runs ``route.batches()`` batches of at most ``B`` samples), so a fixed layout holds every
    rank's batches and one gather moves them; else (a batch sampler of its own, a framework
    that shards batches, tracked batches, an update past the epoch's batches) the step is
    recorded at once, as its lengths differ between ranks.
    """
    run = cycle.run
    route, loader = run.route, cycle.loader
    stock = run.tracked is None and loader.batch_sampler is None
    if not (stock and not loader.sharded_by_framework and route and route.batch_size):
        return None
    slots = run.log if isinstance(run.log, ExplicitSlots) else None
    if slots is None:
        steps = route.batches()
        if run.updates >= steps:
            return None
        fold_every_rank(source, cycle.state, run)  # order-route batches before these first
        slots = run.log = ExplicitSlots(steps, route.batch_size, source.per_sample, device)
    if run.updates >= slots.steps:
        return None  # past the epoch's batches (every rank alike): recorded at once
    if local.shape[0] > slots.width:
        raise ValueError(
            f"indices: under a process group an explicit batch may hold at most the loader's "
            f"batch_size={slots.width} indices (every rank's batches are gathered at the "
            f"epoch's end in slots of that size), got {local.shape[0]}"
        )
    return slots


def _measure(
    source: ScoreSource, loss: torch.Tensor, batch_weights: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss to back-propagate, measurement)``: per sample, or the 0-d batch loss (BLS)."""
    if not source.per_sample:
        return source.measure_scalar(loss, batch_weights)
    returned, measurement = source.measure(loss, batch_weights)
    assert measurement is not None
    return returned, measurement


class OrderSteps:
    """The order route's per-step work for the rest of one epoch, prepared once.

    Everything a step needs that does not depend on its loss is made here, vectorised, from
    the epoch's index table: where each batch ends in this rank's shard, the pending buffer
    split into one view per batch, and, when InfoBatch up-weights, each batch's weights
    (per-sample) or their mean (BLS: one ``(batches,)`` tensor, so a step gathers no weights).
    :meth:`step` (what ``update()`` calls) then runs the score source's ``measure`` rule
    (:mod:`bls.scores`), written out inline for the usual shapes, a 1-D per-sample loss or a
    scalar batch loss, because on this path every Python call and every torch dispatch shows:

    * BLS, all weights 1: ``mean`` (the returned loss is a new tensor), ``copy_`` (into the
      buffer); up-weighted: ``mul`` by the batch's mean weight, ``copy_``;
    * per-sample, all weights 1: ``mean``, ``copy_``; up-weighted: ``dot`` with the batch's
      ``weight_i / b`` (``mul`` and ``mean`` for a loss that is not float32), ``copy_``.

    Other shapes (a vector BLS loss, a ``(b, ...)`` per-sample loss) go through
    ``source.measure``. Under a process group the epoch's last step also gathers every rank's
    buffer and folds it (:func:`fold_every_rank`).

    Args:
        cycle: the handler's epochs; its ``run`` has begun iterating.
        source: the score source (it records).
        device: the loss's device, where the scores, weights and buffer live.
    """

    __slots__ = (
        "batches",
        "cycle",
        "device",
        "ends",
        "every_rank",
        "measure",
        "per_sample",
        "scaled",
        "shapes",
        "shard",
        "sizes",
        "slots",
        "source",
        "step",
        "weights",
    )

    def __init__(self, cycle: EpochCycle, source: ScoreSource, device: torch.device) -> None:
        run, state = cycle.run, cycle.state
        route = run.route
        assert route is not None and route.batch_size and state.table is not None
        assert run.iterator is not None
        size, length = route.batch_size, route.length
        self.cycle, self.source, self.device = cycle, source, device
        self.per_sample = source.per_sample
        self.measure = source.measure if self.per_sample else source.measure_scalar
        self.batches = route.batches()
        # Where batch k ends in the shard; indexing past the last batch is the misuse check.
        self.ends = tuple(min((k + 1) * size, length) for k in range(self.batches))
        self.sizes = tuple(end - k * size for k, end in enumerate(self.ends))
        self.shapes = tuple(torch.Size((n,)) for n in self.sizes)
        self.shard = run.iterator
        self.every_rank = run.world_size > 1
        if state.pending is None:
            # One slot per sample of this rank's shard, or one per batch (BLS).
            slots = length if self.per_sample else -(-length // size)
            state.pending = torch.empty(slots, dtype=torch.float32, device=device)
        pending = state.pending
        self.slots = pending.split(size) if self.per_sample else pending.unbind(0)
        self.weights: tuple[torch.Tensor, ...] | None = None
        self.scaled: tuple[torch.Tensor, ...] | None = None
        if not run.unit_weights:
            local = state.weights.index_select(0, state.table[:, run.rank])
            if self.per_sample:
                self.weights = local.split(size)
                # weight_i / b, b the sample count of i's batch (the last one may be short).
                counts = torch.full_like(local, float(size))
                if self.batches:
                    counts[(self.batches - 1) * size : self.batches * size] = self.sizes[-1]
                self.scaled = (local / counts).split(size)
            else:
                self.weights = _batch_means(local, size)
        self.step = self._per_sample if self.per_sample else self._batch_loss

    def _check(self, run: EpochRun, loss: torch.Tensor) -> None:
        """A step past the epoch's last batch, or whose batch was not drawn yet: raise.

        The steps test ``shard.start + shard._drawn`` (what ``shard.position`` returns below
        the shard's end, and a batch never ends past it) rather than call the property: on
        this path a Python call costs as much as a torch dispatch.
        """
        step = run.updates
        if step < self.batches and self.ends[step] <= self.shard.position:
            return
        assert run.route is not None
        run.route.locate(step, loss, self.per_sample)  # raises, saying what went wrong
        raise AssertionError("unreachable: the route accepted a step the epoch lacks")

    def _per_sample(self, run: EpochRun, loss: torch.Tensor) -> torch.Tensor:
        step = run.updates
        shard = self.shard  # (its position, read without a call: see _check)
        if step >= self.batches or self.ends[step] > shard.start + shard._drawn:
            self._check(run, loss)
        if loss.shape != self.shapes[step]:  # not a 1-D loss of the batch's length
            return self._other_shape(run, loss)
        scaled = self.scaled
        if scaled is None:
            returned = loss.mean()
        elif loss.dtype is _FLOAT32:
            # mean(loss_i * weight_i) as one dispatch: the dot product with weight_i / b.
            returned = loss.dot(scaled[step])
        else:
            returned = (loss * self.weights[step]).mean()  # type: ignore[index]
        # Written out as in _keep (one Python call fewer on the path).
        slot = self.slots[step]
        slot.copy_(loss.data)
        run.last_loss = slot
        run.updates = step + 1
        if self.every_rank and step + 1 == self.batches:
            fold_every_rank(self.source, self.cycle.state, run)
        return returned

    def _batch_loss(self, run: EpochRun, loss: torch.Tensor) -> torch.Tensor:
        step = run.updates
        shard = self.shard  # (its position, read without a call: see _check)
        if step >= self.batches or self.ends[step] > shard.start + shard._drawn:
            self._check(run, loss)
        if loss.dim() != 0:
            return self._other_shape(run, loss)
        weights = self.weights
        # BLS: L * mean(weight) of the batch, or a new L (loss.mean()) while all weights are 1.
        returned = loss.mean() if weights is None else loss * weights[step]
        slot = self.slots[step]  # as in _keep, written out
        slot.copy_(loss.data)
        run.last_loss = slot
        run.updates = step + 1
        if self.every_rank and step + 1 == self.batches:
            fold_every_rank(self.source, self.cycle.state, run)
        return returned

    def _keep(
        self, run: EpochRun, step: int, measured: torch.Tensor, returned: torch.Tensor
    ) -> torch.Tensor:
        """Copy the step's measurement into its slot; count the step; fold at the epoch's end."""
        slot = self.slots[step]
        slot.copy_(measured.data)  # ``.data``: the values, not an autograd op
        # The copy (float32) stands for the loss (unweighted_loss averages it): holding the
        # loss would keep its autograd graph alive until the next update(), which would then
        # pay for freeing it.
        run.last_loss = slot
        run.updates = step + 1
        if self.every_rank and step + 1 == self.batches:
            # The epoch's last batch: every rank folds every rank's losses now, so the
            # scores at the epoch's end are complete and identical without another call.
            fold_every_rank(self.source, self.cycle.state, run)
        return returned

    def _other_shape(self, run: EpochRun, loss: torch.Tensor) -> torch.Tensor:
        """A vector BLS loss, or a per-sample loss that is not 1-D: ``measure`` (or raise)."""
        step = run.updates
        if self.per_sample and (loss.dim() == 0 or loss.shape[0] != self.sizes[step]):
            raise ValueError(
                f"loss: per-sample scoring needs one loss per sample of the batch "
                f"(reduction='none', length {self.sizes[step]}), got shape "
                f"{tuple(loss.shape)}; for a scalar mean loss wrap the handler with "
                "BLS(...).proxy()"
            )
        weight = None if self.weights is None else self.weights[step]
        returned, measurement = self.measure(loss, weight)
        assert measurement is not None
        return self._keep(run, step, measurement, returned)


def _batch_means(weights: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, ...]:
    """The mean of every run of ``batch_size`` weights (the last may be short), as 0-d views
    of one ``(batches,)`` tensor, computed at once."""
    whole = weights.shape[0] // batch_size
    means = weights[: whole * batch_size].view(whole, batch_size).mean(dim=1)
    if whole * batch_size < weights.shape[0]:
        means = torch.cat((means, weights[whole * batch_size :].mean().reshape(1)))
    return means.unbind(0)


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
    table: torch.Tensor,
    pending: torch.Tensor,
    first: int,
    last: int,
    batch_size: int,
    *,
    alone: int | None = None,
) -> torch.Tensor | None:
    """Write the pending batches ``[first, last)`` of every rank into ``scores`` at once.

    Args:
        source: the score source.
        scores: ``(N,)`` float32, updated in place.
        table: ``(per_rank, ranks)``, the epoch's index table (column ``r``: rank ``r``'s
            iteration order), on the scores' device.
        pending: ``(ranks, slots)``: every rank's buffer, one slot per sample (per-sample
            scores) or per batch (BLS).
        first: the first batch not yet folded in.
        last: one past the last batch to fold in.
        batch_size: samples per batch (the last batch of the epoch may be shorter).
        alone: a batch folded on its own, as one step: the epoch's last batch when the plan
            is padded (its repeated indices are the first row's, so they must come after it).

    Returns:
        The non-finite count of the folded values, or ``None`` when nothing was pending.
    """
    if first >= last:
        return None
    if alone is not None and first <= alone < last and last - first > 1:
        counts = [
            fold_pending(source, scores, table, pending, lo, hi, batch_size)
            for lo, hi in ((first, alone), (alone, alone + 1), (alone + 1, last))
        ]
        present = [c for c in counts if c is not None]
        return torch.stack(present).sum() if len(present) > 1 else present[0]
    record, ranks, rows = source.record, table.shape[1], table.shape[0]
    if source.per_sample:
        lo, hi = first * batch_size, min(last * batch_size, rows)
        # (ranks, n) indices and values, rank by rank: the order one step's record uses.
        return record(scores, table[lo:hi].T, pending[:, lo:hi])
    # BLS: full batches as a (ranks, batches, batch_size) index block, each batch with its
    # own loss; the epoch's shorter last batch on its own.
    whole = min(last, rows // batch_size)
    skipped = None
    if whole > first:
        block = table[first * batch_size : whole * batch_size].T
        skipped = record(
            scores,
            block.reshape(ranks, whole - first, batch_size),
            pending[:, first:whole].unsqueeze(2),
        )
    if last > whole:
        tail = record(scores, table[whole * batch_size :].T, pending[:, whole:last])
        skipped = tail if skipped is None else skipped + tail
    return skipped


def flush(source: ScoreSource, state: Any, run: EpochRun) -> None:
    """Fold what this process alone may fold into ``state.scores``, exactly as recorded one
    by one: in one process every pending batch; under a process group nothing (the order
    route's pending batches need every rank's buffer: :func:`fold_every_rank`)."""
    if isinstance(run.log, ExplicitLog):
        log, run.log = run.log, None
        state.nonfinite += log.fold(source, state.scores)
    if run.world_size > 1 or state.pending is None or run.pending_from >= run.updates:
        return
    assert state.table is not None and state.batch_size is not None
    skipped = fold_pending(
        source,
        state.scores,
        state.table,
        state.pending.unsqueeze(0),
        run.pending_from,
        run.updates,
        state.batch_size,
    )
    if skipped is not None:
        state.nonfinite += skipped
    run.pending_from = run.updates


def fold_every_rank(source: ScoreSource, state: Any, run: EpochRun) -> None:
    """Gather every rank's pending buffer (one collective) and fold all of them in.

    Under a process group every rank must call this at the same step (the epoch's last
    update, a decision, ``end_epoch()``): each rank then writes the same values in the same
    order and the scores stay identical. One process: :func:`flush`.
    """
    if run.world_size == 1:
        flush(source, state, run)
        return
    if isinstance(run.log, ExplicitSlots):
        skipped = run.log.fold(source, state.scores, run.updates)
        if skipped is not None:
            state.nonfinite += skipped
    if state.pending is None or run.pending_from >= run.updates:
        return
    assert state.table is not None and state.batch_size is not None
    gathered = gather_equal(state.pending)  # (ranks, slots), no host sync
    table = state.table
    if gathered.shape[0] != table.shape[1]:
        # No process group to match the layout (a copy unpickled elsewhere): this rank's own.
        table, gathered = table[:, run.rank : run.rank + 1], state.pending.unsqueeze(0)
    shards, decided = run.shards, run.decided
    padded = shards is not None and decided is not None and shards.plan.size > decided.size
    assert run.route is not None
    skipped = fold_pending(
        source,
        state.scores,
        table,
        gathered,
        run.pending_from,
        run.updates,
        state.batch_size,
        alone=run.route.batches() - 1 if padded else None,
    )
    if skipped is not None:
        state.nonfinite += skipped
    run.pending_from = run.updates


def sync_for_state(source: ScoreSource, state: Any, run: EpochRun, epoch: int) -> None:
    """Before ``state_dict()``: fold every pending loss of every rank into the scores.

    One process: :func:`flush`. Under a process group with the epoch's losses still pending
    (a mid-epoch checkpoint), every rank must call ``state_dict()`` at the same step: the ranks
    first agree through the process group's store that they all did, at the same step, which
    raises on a rank that waited in vain (instead of a collective that would pair with another
    one and hang), then gather and fold as at the epoch's end. At an epoch's end nothing is
    pending and this needs nothing from the other ranks.
    """
    pending = state.pending is not None and run.pending_from < run.updates
    if isinstance(run.log, ExplicitSlots):
        pending = pending or run.log.folded < run.updates
    if run.world_size > 1 and pending:
        check_ranks_agree("state_dict", f"epoch {epoch}, after update {run.updates}")
        fold_every_rank(source, state, run)
    else:
        flush(source, state, run)


class ExplicitLog:
    """Explicit-index batches of one epoch in one process, not yet folded into the scores.

    ``append`` keeps copies (the loop may reuse its tensors): the indices as int64 on the
    scores' device and the measurement (per sample, or the 0-d batch loss of BLS) as float32.
    """

    __slots__ = ("indices", "values")

    def __init__(self) -> None:
        self.indices: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def append(self, indices: torch.Tensor, measurement: torch.Tensor) -> torch.Tensor:
        """Keep one batch (``indices`` already a copy); returns the measurement's copy."""
        value = measurement.to(torch.float32, copy=True)
        self.indices.append(indices)
        self.values.append(value)
        return value

    def fold(self, source: ScoreSource, scores: torch.Tensor) -> torch.Tensor:
        """Write every logged batch into ``scores`` as if one by one; the non-finite count.

        All at once when no index repeats among them, which is checked on the CPU (the index
        count of ``torch.unique`` is a shape); on an accelerator that check would wait for the
        device, so the batches are written one by one there, still without a host sync.
        """
        if scores.device.type == "cpu" and len(self.indices) > 1:
            flat = torch.cat(self.indices)
            if torch.unique(flat).shape[0] == flat.shape[0]:
                if source.per_sample:
                    return source.record(scores, flat, torch.cat(self.values))
                losses = torch.stack(self.values)
                lengths = torch.tensor([i.shape[0] for i in self.indices])
                source.record(scores, flat, losses.repeat_interleave(lengths))
                return torch.count_nonzero(non_finite(losses))  # one per batch, as BLS counts
        skipped = [
            source.record(scores, index.unsqueeze(0), value.reshape(1, -1))
            for index, value in zip(self.indices, self.values, strict=True)
        ]
        return skipped[0] if len(skipped) == 1 else torch.stack(skipped).sum()


class ExplicitSlots:
    """Explicit-index batches of one epoch on this rank, under a process group, not yet folded.

    A fixed layout every rank shares without asking the others: one row of ``width`` (the
    loader's batch size) indices per batch of the epoch, ``-1`` where a shorter batch has no
    sample, and its measurements (one per sample, or the batch loss). :meth:`fold` gathers
    every rank's rows (two collectives, no host sync) and records the batches step by step, in
    order, exactly as recording each step at once did.
    """

    __slots__ = ("folded", "index_rows", "indices", "per_sample", "steps", "value_rows",
                 "values", "width")  # fmt: skip

    def __init__(self, steps: int, width: int, per_sample: bool, device: torch.device) -> None:
        self.steps, self.width, self.per_sample, self.folded = steps, width, per_sample, 0
        self.indices = torch.full((steps, width), -1, dtype=torch.int64, device=device)
        shape = (steps, width) if per_sample else (steps,)
        self.values = torch.zeros(shape, dtype=torch.float32, device=device)
        self.index_rows = self.indices.unbind(0)
        self.value_rows = self.values.unbind(0)

    def write(self, step: int, indices: torch.Tensor, measurement: torch.Tensor) -> None:
        """Copy batch ``step``'s indices and measurement into its row."""
        length = indices.shape[0]
        row, values = self.index_rows[step], self.value_rows[step]
        if length < self.width:
            row = row[:length]
            values = values[:length] if self.per_sample else values
        row.copy_(indices)
        values.copy_(measurement)

    def fold(self, source: ScoreSource, scores: torch.Tensor, last: int) -> torch.Tensor | None:
        """Gather every rank's batches ``[folded, last)`` and record them; the non-finite count.

        Every rank calls this at the same step. The rows' empty places write to one scratch
        slot past the scores, so each step is recorded with a fixed shape.
        """
        first = self.folded
        if first >= last:
            return None
        indices = gather_equal(self.indices[first:last])  # (ranks, steps, width)
        values = gather_equal(self.values[first:last])
        size = scores.shape[0]
        indices = torch.where(indices < 0, size, indices)
        extended = torch.cat((scores, scores.new_zeros(1)))
        skipped = []
        for step in range(last - first):
            measured = values[:, step] if self.per_sample else values[:, step].unsqueeze(1)
            skipped.append(source.record(extended, indices[:, step], measured))
        scores.copy_(extended[:size])
        self.folded = last
        return skipped[0] if len(skipped) == 1 else torch.stack(skipped).sum()
