"""How a loss finds its samples: three routes, each answering "which indices is this loss of?".

The DataLoader reads indices ahead of the loop (``prefetch_factor * num_workers`` batches), so
"the indices drawn last" are not the current batch's. Neither route patches torch:

* :class:`OrderRoute` (the default): with ``in_order=True`` batches reach the loop in sampler
  order, so the ``k``-th ``update()`` of an epoch belongs to positions ``[k*B, (k+1)*B)`` of
  this rank's shard.
* :class:`TrackedRoute` (``handler.sampler.track(...)``): a batch sampler of the loop's own
  reports every batch as the loader draws it, and the ``k``-th ``update()`` takes the ``k``-th
  batch drawn.
* :class:`ExplicitRoute` (``return_indices=True``): every item carries its index and the loop
  passes the batch's indices to ``update(loss, indices=...)``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch

__all__ = ["AttributionWarning", "ExplicitRoute", "OrderRoute", "TrackedRoute", "check_in_order"]


class AttributionWarning(UserWarning):
    """An epoch ended with a different number of ``update()`` calls than batches."""


def check_in_order(in_order: bool) -> None:
    """Refuse a loader whose batches may arrive out of sampler order (``in_order=False``)."""
    if not in_order:
        raise ValueError(
            "in_order: the DataLoader was built with in_order=False, so batches may arrive "
            "out of sampler order and losses could reach the wrong samples; use "
            "in_order=True (the default)"
        )


class OrderRoute:
    """The ``k``-th ``update()`` of an epoch is the ``k``-th batch of this rank's shard.

    The epoch's index table (``(per_rank, ranks)``, on the loss's device; row ``j`` holds
    every rank's ``j``-th index, one column when one process or a framework iterates the whole
    plan) is passed to :meth:`local` and :meth:`every_rank` rather than kept: the handler owns it.

    Args:
        shard: this rank's iterator over its shard (its ``position`` counts indices drawn).
        rank: this rank's column of the table.
        batch_size: the loader's batch size, ``None`` until known.
        drop_last: the loader's ``drop_last``.
        epoch: the epoch, for messages.
    """

    def __init__(
        self, shard: Any, rank: int, batch_size: int | None, drop_last: bool, epoch: int
    ) -> None:
        self.shard = shard
        self.rank = rank
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.epoch = epoch
        self.length = int(shard.shard.size)

    def batches(self) -> int:
        """Batches this epoch has on this rank (0 while the batch size is unknown)."""
        if not self.batch_size:
            return 0
        if self.drop_last:
            return self.length // self.batch_size
        return -(-self.length // self.batch_size)

    def locate(self, step: int, loss: torch.Tensor, per_sample: bool) -> tuple[int, int]:
        """Positions ``[start, stop)`` of the shard that the ``step``-th loss belongs to.

        Raises:
            RuntimeError: the batch size is unknown (BLS under a custom batch sampler), the
                epoch has no such batch (one batch updated twice), or the batch was not
                drawn yet (``update()`` before its batch).
        """
        if self.batch_size is None:
            if not per_sample or loss.dim() == 0:
                raise RuntimeError(
                    "the batch size could not be read from the DataLoader (no torch "
                    "BatchSampler found); use DataLoader(handler, sampler=handler.sampler, "
                    "batch_size=...) or build the handler with return_indices=True and pass "
                    "update(loss, indices=...)"
                )
            self.batch_size = int(loss.shape[0])  # per-sample losses: one per sample
        start = step * self.batch_size
        stop = min(start + self.batch_size, self.length)
        if start >= self.length or (self.drop_last and stop - start < self.batch_size):
            raise RuntimeError(
                f"update() was called {step + 1} times in epoch {self.epoch}, which has only "
                f"{self.batches()} batches: one batch was updated twice"
            )
        drawn = self.shard.position
        if stop > drawn:
            raise RuntimeError(
                f"update() number {step + 1} of epoch {self.epoch} has no batch yet: the "
                f"loader has drawn {drawn} indices, batch needs {stop}; call update() once "
                "per batch, after the batch was drawn"
            )
        return start, stop

    def local(self, table: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """This rank's indices at positions ``[start, stop)`` (a view: no copy, no sync)."""
        return table[start:stop, self.rank]

    @staticmethod
    def every_rank(table: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """``(ranks, stop - start)``: every rank's indices of this step (a view)."""
        return table[start:stop].T


class TrackedRoute:
    """The ``k``-th ``update()`` of an epoch takes the ``k``-th batch the tracked sampler drew.

    Batches are drawn ahead of the loop (by up to the loader's prefetch depth), so each one is
    kept, with the shard position at which it was drawn, until its ``update()`` takes it.

    Args:
        shard: this rank's iterator over its shard (its ``position`` counts indices drawn).
        epoch: the epoch, for messages.
        drawn: batches counted as drawn already (a resumed epoch's updated batches).
        consumed: the shard position when the last updated batch was drawn.
    """

    def __init__(self, shard: Any, epoch: int, drawn: int = 0, consumed: int = 0) -> None:
        self.shard = shard
        self.epoch = epoch
        self.pending: deque[tuple[list[int], int]] = deque()  # drawn (batch, position)
        self.drawn = drawn  # batches drawn this epoch
        self.consumed = consumed

    def track(self, batch: list[int]) -> None:
        """Note a batch the tracked batch sampler drew (its update comes later)."""
        self.pending.append((batch, self.shard.position))
        self.drawn += 1

    def next(self, step: int) -> list[int]:
        """The oldest drawn batch without an ``update()`` yet, for the ``step``-th update.

        Raises:
            RuntimeError: no batch is waiting (``update()`` before its batch was drawn).
        """
        if not self.pending:
            raise RuntimeError(
                f"update() number {step + 1} of epoch {self.epoch} has no batch yet: the "
                f"tracked batch sampler has drawn {self.drawn} batches; call update() once "
                "per batch, after the batch was drawn"
            )
        batch, self.consumed = self.pending.popleft()
        return batch


class ExplicitRoute:
    """The indices come with the loss: ``update(loss, indices=batch_indices)``."""

    @staticmethod
    def locate(indices: Any, device: torch.device, *, copy: bool = False) -> torch.Tensor:
        """``indices`` as a flat int64 tensor on ``device`` (copied without a host sync).

        ``copy``: always a new tensor, never the caller's (one dispatch either way when the
        indices are a 1-D tensor), for keeping them past this ``update()``.

        Raises:
            TypeError: the indices are floating point or boolean.
        """
        local = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(indices)
        if local.dtype.is_floating_point or local.dtype == torch.bool:
            raise TypeError(f"indices: expected integer sample indices, got dtype {local.dtype}")
        if local.dim() != 1:
            local = local.reshape(-1)
        return local.to(device=device, dtype=torch.int64, non_blocking=True, copy=copy)
