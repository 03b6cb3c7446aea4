"""The sampler that hands each epoch's plan to a stock ``torch.utils.data.DataLoader``.

The sampler knows nothing of scores: it asks a :class:`PlanSource` (the handler) for the
epoch's indices. What it adds is what it learns of the loader iterating it, for the order
route of :mod:`bls.attribution` (docs/design.md, "How a loss finds its samples"): the k-th
``update()`` of an epoch belongs to positions ``[k*B, (k+1)*B)`` of this rank's share of the
plan, so ``B`` must be known, not guessed. torch hands a sampler nothing of its loader, so
when the epoch's iteration begins :func:`discover_loader` reads the objects that called it:
the DataLoader iterator (its ``in_order`` flag and the batch sampler it draws from) and the
``BatchSampler`` frames (``batch_size``, ``drop_last``). That is the one place that inspects
frames. A batch sampler other than torch's stock one forms its own batches, so the order route
refuses it at the first ``update()`` and points to :meth:`PruningSampler.track` or explicit
indices. Where no DataLoader iterator is found at all (the sampler iterated by hand), per-sample
mode learns ``B`` from the first loss's length and BLS mode asks for explicit indices.

Invariants:

* the plan of an epoch is decided exactly once (at ``set_epoch`` or the start of iteration);
  every ``__iter__`` returns a fresh iterator over it;
* under a process group every rank decides the same plan and takes the disjoint strided shard
  ``plan[rank::world_size]``; shards have equal length, so ranks run equal batch counts;
* the iterator yields plain ``int``s, converted from the index array in chunks (no per-epoch
  Python list).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from torch.utils.data import BatchSampler, DataLoader, Sampler
from torch.utils.data.dataloader import _BaseDataLoaderIter
from torch.utils.data.distributed import DistributedSampler

from bls.distributed import rank_and_world_size

__all__ = ["LoaderInfo", "PlanSource", "PruningSampler", "discover_loader"]

_CHUNK = 4096
_LOOKAHEAD_CLASSES = {"_RepeatSampler", "MultiEpochsDataLoader", "_RepeatSampler2"}
# Accelerate's skip_first_batches: the loader draws the first batches and drops them.
_SKIPPERS = {"SkipBatchSampler", "SkipDataLoader"}


@dataclass(frozen=True)
class LoaderInfo:
    """What the sampler could read from the loader iterating it.

    Attributes:
        batch_size: samples per batch, or ``None`` when no stock ``BatchSampler`` was found.
        drop_last: whether the loader drops the last partial batch.
        in_order: the DataLoader's ``in_order`` flag (``True`` when unknown).
        sharded_by_framework: ``True`` when Accelerate's ``BatchSamplerShard`` splits batches
            between ranks itself; the sampler must then yield the global plan.
        batch_sampler: the class name of a batch sampler that forms its own batches (any other
            than torch's ``BatchSampler``, e.g. torchvision's ``GroupedBatchSampler``), whose
            batches are not consecutive runs of the plan; ``None`` for the stock one.
        tracked: the batch sampler is wrapped by :meth:`PruningSampler.track`, which reports
            every batch's indices as it is formed.
        skip_batches: batches the loader draws and drops before its first one (Accelerate's
            ``skip_first_batches``, which the Hugging Face Trainer uses on resume).
    """

    batch_size: int | None = None
    drop_last: bool = False
    in_order: bool = True
    sharded_by_framework: bool = False
    batch_sampler: str | None = None
    tracked: bool = False
    skip_batches: int = 0


#: Batch samplers that cut their sampler's order into consecutive batches, as torch's does:
#: torchdata's (StatefulDataLoader's default) only adds a resumable iterator.
_CONSECUTIVE = {"torchdata.stateful_dataloader.sampler.BatchSampler"}


def _is_stock_batch_sampler(owner: Any) -> bool:
    """A ``BatchSampler`` that cuts its sampler's order into consecutive batches."""
    kind = type(owner)
    return (
        isinstance(owner, BatchSampler)
        and (
            kind.__iter__ is BatchSampler.__iter__
            or f"{kind.__module__}.{kind.__qualname__}" in _CONSECUTIVE
        )
        and isinstance(getattr(owner, "batch_size", None), int)
        and isinstance(getattr(owner, "drop_last", None), bool)
    )


def discover_loader(max_depth: int = 12) -> LoaderInfo:
    """Read batch size, ``drop_last`` and ``in_order`` from the frames iterating the sampler.

    Must be called from ``PruningSampler.__iter__``. A batch sampler other than torch's stock
    one is recorded by name (``LoaderInfo.batch_sampler``), never read for attributes it may
    lack. Raises ``TypeError`` for loaders that read the next epoch ahead of ``set_epoch``
    (timm's ``MultiEpochsDataLoader`` and its kin), naming the loader class.
    """
    frame = sys._getframe(2)
    found: dict[str, Any] = {"batch_size": None, "drop_last": False, "in_order": True}
    lookahead: str | None = None
    loader_class: str | None = None
    for _ in range(max_depth):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        kind = type(owner).__name__
        if kind in _LOOKAHEAD_CLASSES and lookahead is None:
            lookahead = kind
        if isinstance(owner, DataLoader) and loader_class is None:
            loader_class = f"{type(owner).__module__}.{type(owner).__qualname__}"
        if kind in _SKIPPERS:
            if kind == "SkipDataLoader":  # (SkipBatchSampler is read through the loader)
                found["skip_batches"] = int(getattr(owner, "skip_batches", 0))
        elif kind == "BatchSamplerShard":
            found["sharded_by_framework"] = True
        elif isinstance(owner, _TrackedBatchSampler):
            found["tracked"] = True
        elif isinstance(owner, _BaseDataLoaderIter):
            found["in_order"] = found["in_order"] and bool(getattr(owner, "_in_order", True))
            _read_index_sampler(owner, found)
        elif isinstance(owner, BatchSampler) and "batch_sampler" not in found:
            _read_batch_sampler(owner, found)
        frame = frame.f_back  # type: ignore[assignment]
    if lookahead is not None:
        who = lookahead if loader_class is None else f"{loader_class} (through {lookahead})"
        raise TypeError(
            f"{who} reads the next epoch's indices before the current epoch's losses "
            "arrive, so pruning decisions would use stale scores; use the stock "
            "torch.utils.data.DataLoader (persistent_workers=True keeps workers alive)"
        )
    return LoaderInfo(**found)


def _read_batch_sampler(owner: Any, found: dict[str, Any]) -> None:
    """The innermost batch sampler: stock ones give ``B`` and ``drop_last``; others a name."""
    if found["batch_size"] is not None:
        return
    if _is_stock_batch_sampler(owner):
        found["batch_size"], found["drop_last"] = owner.batch_size, owner.drop_last
    else:
        found["batch_sampler"] = type(owner).__qualname__


def _read_index_sampler(owner: Any, found: dict[str, Any]) -> None:
    """What the DataLoader iterator draws indices from (torch keeps it as ``_index_sampler``).

    The loader's own reference is authoritative: the frames below it may show only an inner
    stock ``BatchSampler`` that a custom batch sampler regroups.
    """
    if not getattr(owner, "_auto_collation", True):
        found["batch_size"], found["drop_last"] = 1, False  # batch_size=None: one per step
        return
    index_sampler = getattr(owner, "_index_sampler", None)
    while type(index_sampler).__name__ == "SkipBatchSampler":
        found["skip_batches"] = int(getattr(index_sampler, "skip_batches", 0))
        index_sampler = getattr(index_sampler, "batch_sampler", None)
    if index_sampler is None or type(index_sampler).__name__ == "BatchSamplerShard":
        return  # under Accelerate's shard the inner batch sampler (read from its frame) counts
    if isinstance(index_sampler, _TrackedBatchSampler):
        found["tracked"] = True
    elif _is_stock_batch_sampler(index_sampler):
        found["batch_size"] = index_sampler.batch_size
        found["drop_last"] = index_sampler.drop_last
        found.pop("batch_sampler", None)
    else:
        found["batch_size"], found["drop_last"] = None, False
        found["batch_sampler"] = type(index_sampler).__qualname__


class PlanSource(Protocol):
    """What the sampler needs of the handler: epochs' plans and their lengths."""

    @property
    def epoch(self) -> int:
        """The epoch whose plan is current (``-1`` before the first)."""
        ...

    seed: int

    def __len__(self) -> int: ...

    def plan_epoch(self, epoch: int) -> None:
        """Decide epoch ``epoch``'s plan unless it is the current one."""
        ...

    def iterate_epoch(self, loader: LoaderInfo) -> Iterator[int]:
        """Start iterating the current epoch (or the next, if it was iterated already)."""
        ...

    def epoch_length(self, *, whole_plan: bool = False) -> int:
        """Indices this rank yields this epoch, or all ranks together with ``whole_plan``."""
        ...

    def track_batch(self, batch: list[int]) -> None:
        """Note a batch a tracked batch sampler formed (see :meth:`PruningSampler.track`)."""
        ...


class PruningSampler(DistributedSampler[int]):
    """Yields the current epoch's indices (this rank's share under DDP).

    Pass it as ``DataLoader(handler, sampler=handler.sampler, batch_size=...)``. Do not also
    pass ``shuffle=True``: the plan is already shuffled from ``(seed, epoch)``.

    It is a :class:`~torch.utils.data.distributed.DistributedSampler` by type only, so that
    frameworks which replace every other sampler in DDP (PyTorch Lightning) leave it alone.
    ``DistributedSampler.__init__`` is never called (it needs a process group); the attributes
    such frameworks read (``num_replicas``, ``rank``, ``epoch``, ``shuffle``, ``seed``,
    ``drop_last``, ``dataset``, ``num_samples``, ``total_size``) are read-only views of the
    handler and of the default process group at the time they are read.
    """

    def __init__(self, handler: PlanSource) -> None:
        self._handler = handler

    def set_epoch(self, epoch: int) -> None:
        """Decide epoch ``epoch``'s plan now (DDP launchers and Lightning call this)."""
        self._handler.plan_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        return self._handler.iterate_epoch(discover_loader())

    def state_dict(self) -> dict[str, int]:
        """The epoch the sampler is in (torchdata's ``Stateful`` protocol).

        The plan and the scores are the handler's: save ``handler.state_dict()`` beside the
        loader's state and load it first.
        """
        return {"epoch": self._handler.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Check that the handler was restored to the epoch the loader's state is in."""
        epoch = state.get("epoch") if isinstance(state, dict) else None
        if not isinstance(epoch, int):
            raise ValueError(
                f"state_dict: the sampler state's 'epoch' is {epoch!r}; expected an int (the "
                "loader state is damaged)"
            )
        if epoch != self._handler.epoch:
            raise ValueError(
                f"state_dict: the loader's state is in epoch {epoch} but the handler is in "
                f"epoch {self._handler.epoch}; call handler.load_state_dict(...) with the state "
                "saved at the same step before loader.load_state_dict(...)"
            )

    def track(self, batch_sampler: Iterable[list[int]]) -> Sampler[list[int]]:
        """Wrap a batch sampler built over this sampler so each loss finds its batch exactly.

        For batch samplers that form their own batches (torchvision's ``GroupedBatchSampler``,
        length bucketing, varying batch sizes): ``DataLoader(handler,
        batch_sampler=handler.sampler.track(GroupedBatchSampler(handler.sampler, ...)))``.
        Every batch's indices are noted as the loader draws it, and the ``k``-th ``update()``
        of an epoch takes the ``k``-th batch drawn (batches reach the loop in that order,
        ``in_order=True``), so ``update(loss)`` needs no indices and the items stay unchanged.
        """
        if isinstance(batch_sampler, _TrackedBatchSampler):
            return batch_sampler
        if not hasattr(batch_sampler, "__iter__"):
            raise TypeError(
                "batch_sampler: expected an iterable of index lists (a batch sampler), got "
                f"{type(batch_sampler).__name__}"
            )
        return _TrackedBatchSampler(batch_sampler, self._handler.track_batch)

    def __len__(self) -> int:
        # Accelerate's BatchSamplerShard sizes its shards from the global plan, which is also
        # what this sampler yields under it (see LoaderInfo.sharded_by_framework).
        return self._handler.epoch_length(whole_plan=_measured_by_framework_shard())

    # What DistributedSampler's constructor would have set, derived instead of stored: the
    # process group may be initialised after the handler was built (Lightning does so).
    @property
    def dataset(self) -> Any:  # type: ignore[override]
        return self._handler

    @property
    def num_replicas(self) -> int:  # type: ignore[override]
        return rank_and_world_size()[1]

    @property
    def rank(self) -> int:  # type: ignore[override]
        return rank_and_world_size()[0]

    @property
    def epoch(self) -> int:  # type: ignore[override]
        return max(self._handler.epoch, 0)

    @property
    def shuffle(self) -> bool:  # type: ignore[override]
        return True

    @property
    def seed(self) -> int:  # type: ignore[override]
        return self._handler.seed

    @property
    def drop_last(self) -> bool:  # type: ignore[override]
        return False

    @property
    def num_samples(self) -> int:  # type: ignore[override]
        return len(self)

    @property
    def total_size(self) -> int:  # type: ignore[override]
        return len(self) * self.num_replicas


class _TrackedBatchSampler(Sampler[list[int]]):
    """A user's batch sampler whose batches are reported to the handler as they are drawn.

    Attributes other than its own (``batch_size``, ``drop_last``, ``sampler``) are read from
    the wrapped batch sampler, so code that inspects a loader's batch sampler still works.
    """

    def __init__(self, batch_sampler: Iterable[list[int]], report: Callable[[list[int]], None]):
        self.batch_sampler = batch_sampler
        self._report = report

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batch_sampler:
            self._report(batch)
            yield batch

    def __len__(self) -> int:
        return len(self.batch_sampler)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("batch_sampler")
        if name.startswith("__") or inner is None:
            raise AttributeError(name)
        return getattr(inner, name)


def _measured_by_framework_shard(max_depth: int = 4) -> bool:
    """Whether ``len(sampler)`` was called for Accelerate's ``BatchSamplerShard``."""
    frame = sys._getframe(2)
    for _ in range(max_depth):
        if frame is None:
            return False
        if type(frame.f_locals.get("self")).__name__ == "BatchSamplerShard":
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


class _EpochIterator(Iterator[int]):
    """One pass over a rank's shard; ``position`` counts the indices handed out so far.

    ``__iter__`` returns ``self``: torch's ``BatchSampler`` re-wraps this iterator for every
    batch and must continue where the previous batch stopped. The items come from a C-level
    chain over ``tolist()`` chunks, so each index costs one counter increment in Python.
    ``start`` resumes the pass at that position (a mid-epoch checkpoint). ``state_dict`` and
    ``load_state_dict`` follow torchdata's ``Stateful`` protocol.
    """

    def __init__(self, shard: np.ndarray, start: int = 0) -> None:
        self.restart(shard, start)

    def restart(self, shard: np.ndarray, start: int) -> None:
        """Begin the pass again over ``shard`` at ``start`` (the object stays the same)."""
        self.shard = shard
        self.start = start
        self._drawn = 0
        self._items = self._chain_from(start)

    @property
    def position(self) -> int:
        return min(self.start + self._drawn, self.shard.size)  # the final, empty next() too

    @property
    def drew(self) -> bool:
        """Whether anything was asked of this pass yet."""
        return self._drawn > 0

    def __iter__(self) -> _EpochIterator:
        return self

    def __next__(self) -> int:
        self._drawn += 1
        return next(self._items)

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        position = state.get("position") if isinstance(state, dict) else None
        if not isinstance(position, int) or not 0 <= position <= self.shard.size:
            raise ValueError(
                f"state_dict: the sampler iterator's 'position' is {position!r}; expected an "
                f"int in [0, {self.shard.size}] (this epoch's shard); the loader state is "
                "damaged or from another run"
            )
        if not self.drew and position != self.start:
            raise ValueError(
                f"state_dict: the loader's state is at position {position} of this epoch's "
                f"shard, the handler's checkpoint at {self.start}; save handler.state_dict() "
                "and loader.state_dict() after the same update()"
            )
        self.start, self._drawn = position, 0
        self._items = self._chain_from(position)

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["start"], state["_drawn"] = self.position, 0
        state["_items"] = None  # a generator does not pickle; __setstate__ rebuilds it
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._items = self._chain_from(self.position)

    def _chain_from(self, start: int) -> Iterator[int]:
        chunks = (
            self.shard[i : i + _CHUNK].tolist() for i in range(start, self.shard.size, _CHUNK)
        )
        return itertools.chain.from_iterable(chunks)
