"""The pruning handler: a dataset wrapper that owns all pruning state.

``PruningDataset`` composes a :class:`~bls.policies.Policy` (which samples an epoch keeps), a
:class:`~bls.scores.ScoreSource` (how losses become scores) and a
:class:`~bls.sampler.PruningSampler` (how the plan reaches the DataLoader). Everything that
changes during training lives here and nowhere else: scores, weights, the epoch counter, the
per-epoch history. That set is exactly what :meth:`PruningDataset.state_dict` returns.

Randomness comes only from ``numpy.random.default_rng([seed, epoch])``: the user's global
``random``, ``numpy.random`` and ``torch`` generators are never read or advanced.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bls._checks import check_dataset, check_fraction, check_int
from bls.distributed import gather_equal, gather_uneven, rank_and_world_size
from bls.policies import EpochPlan, Policy, is_pruning_epoch
from bls.sampler import LoaderInfo, PruningSampler, _EpochIterator
from bls.scores import NoScore, PerSampleLoss, ScoreSource

__all__ = ["AttributionWarning", "FewBatchesWarning", "PruningDataset"]

logger = logging.getLogger("bls")


class AttributionWarning(UserWarning):
    """An epoch ended with a different number of ``update()`` calls than batches."""


class FewBatchesWarning(UserWarning):
    """An epoch has fewer than two batches, so batch-loss scores cannot tell samples apart."""


class PruningDataset(Dataset[Any]):
    """Wraps a map-style dataset; prunes it epoch by epoch from per-sample scores.

    Use one of the concrete policies (:class:`bls.InfoBatch`, :class:`bls.SeTa`,
    :class:`bls.Static`, :class:`bls.RandomPrune`, :class:`bls.Full`) rather than this class.

    Args:
        dataset: a map-style dataset (``__len__`` and ``__getitem__``), not empty.
        policy: the pruning rule.
        num_epochs: planned number of epochs ``E >= 1``; sets the annealing boundary.
        delta: epochs ``e`` with ``e + 1 <= delta * E`` prune, later ones anneal; ``[0, 1]``.
        seed: non-negative seed of the handler's own generator.
        return_indices: when ``True`` every item carries its index (a dict gains the key
            ``index_key``, a tuple or list gains a last slot, anything else becomes
            ``(item, index)``) and ``update(loss, indices=...)`` must be given them. Needed
            under frameworks that read batches ahead or shard batches themselves.
        index_key: the dict key used by ``return_indices`` for dict items.

    Attributes:
        sampler: pass it to the ``DataLoader``.
        scores: float32 tensor ``(N,)`` on the device of the first loss seen.
        weights: float32 tensor ``(N,)``, the loss weight of every sample this epoch.
        history: one dict per decided epoch with ``epoch``, ``kept``, ``pruned``, ``pruning``
            and policy details.
    """

    # Per-epoch runtime, set by _reset_epoch_runtime.
    _decided: np.ndarray | None  # the current epoch's plan as the policy decided it
    _plan: np.ndarray | None  # ... made divisible by ranks and trimmed (see _finalize_plan)
    _plan_key: tuple[Any, ...] | None  # the loader layout _plan was finalised for
    _iterator: _EpochIterator | None
    _indices_on_device: torch.Tensor | None  # the plan as (positions, ranks), on the loss device
    _updates: int
    _unit_weights: bool
    _nonfinite: torch.Tensor
    # Single process, order route: update() only copies its measurement into _pending (one
    # slot per sample, or per batch for BLS) and _flush() folds batches
    # [_pending_from, _updates) into the scores in one vectorised step whenever they are read.
    _pending: torch.Tensor | None
    _pending_from: int
    _rank: int  # the process group's layout, read once per epoch
    _world_size: int

    def __init__(
        self,
        dataset: Any,
        policy: Policy,
        num_epochs: int,
        delta: float = 0.875,
        *,
        seed: int = 0,
        return_indices: bool = False,
        index_key: str = "index",
    ) -> None:
        self.dataset = dataset
        self.num_samples = check_dataset(dataset)
        self.policy = policy
        self.num_epochs = check_int("num_epochs", num_epochs, 1)
        self.delta = check_fraction("delta", delta, upper_inclusive=True)
        self.seed = check_int("seed", seed, 0)
        self.return_indices = bool(return_indices)
        self.index_key = index_key
        self.score_source: ScoreSource = (
            PerSampleLoss() if type(policy) is not Policy else NoScore()
        )
        self._scores = torch.full((self.num_samples,), policy.initial_score, dtype=torch.float32)
        self.weights = torch.ones(self.num_samples, dtype=torch.float32)
        self.history: list[dict[str, Any]] = []
        self.sampler = PruningSampler(self)
        self._epoch = -1  # the last epoch whose plan was decided
        self._batch_size: int | None = None  # read from the loader, kept across epochs
        self._loader = LoaderInfo()  # the last loader that iterated the sampler
        self._warned_nonfinite = False
        self._warned_few_batches = False
        self._reset_epoch_runtime()

    # ------------------------------------------------------------------ dataset protocol
    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        return self._with_index(item, index) if self.return_indices else item

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        # torch's fetcher prefers __getitems__; defining it here keeps the wrapper in the path
        # even when the wrapped dataset (a Hugging Face dataset, say) has its own.
        inner = getattr(self.dataset, "__getitems__", None)
        items = list(inner(indices)) if inner else [self.dataset[i] for i in indices]
        if self.return_indices:
            items = [self._with_index(item, i) for item, i in zip(items, indices, strict=True)]
        return items

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes the handler lacks: forward to the wrapped dataset
        # (``handler.classes``). Dunder names and a half-unpickled object must not recurse.
        dataset = self.__dict__.get("dataset")
        if name.startswith("__") or dataset is None:
            raise AttributeError(name)
        return getattr(dataset, name)

    def __getstate__(self) -> dict[str, Any]:
        # Workers started with spawn/forkserver receive a pickled copy; keep it on the host so
        # no CUDA tensor is shared between processes.
        self._flush()
        state = self.__dict__.copy()
        for key in ("_scores", "weights", "_nonfinite"):
            state[key] = state[key].cpu()
        for key in ("_indices_on_device", "_pending"):
            if state[key] is not None:
                state[key] = state[key].cpu()
        return state

    def _with_index(self, item: Any, index: int) -> Any:
        if isinstance(item, Mapping):
            return {**item, self.index_key: index}
        if isinstance(item, tuple):
            return (*item, index)
        if isinstance(item, list):
            return [*item, index]
        return (item, index)

    # ------------------------------------------------------------------ inspection
    @property
    def scores(self) -> torch.Tensor:
        """float32 ``(N,)``: every sample's score, up to date with every ``update()`` so far."""
        self._flush()
        return self._scores

    @scores.setter
    def scores(self, value: torch.Tensor) -> None:
        self._flush()
        self._scores = value

    @property
    def saved_ratio(self) -> float:
        """``sum_e (N - kept_e) / (N * E)`` over the epochs decided so far."""
        pruned = sum(record["pruned"] for record in self.history)
        return pruned / (self.num_samples * self.num_epochs)

    @property
    def epoch(self) -> int:
        """The epoch whose plan is current (``-1`` before the first)."""
        return self._epoch

    def is_pruning_epoch(self, epoch: int) -> bool:
        return is_pruning_epoch(epoch, self.num_epochs, self.delta)

    def use_score_source(self, source: ScoreSource) -> None:
        """Replace the score source; only before the first epoch. Resets every score."""
        if self._epoch >= 0:
            raise RuntimeError(
                "the score source can only change before the first epoch; wrap the handler "
                "with BLS(...).proxy() right after constructing it"
            )
        self.score_source = source
        self._scores.fill_(source.initial_score(self.policy.initial_score))

    # ------------------------------------------------------------------ update
    def update(self, loss: torch.Tensor, indices: Any = None) -> torch.Tensor:
        """Record the batch's loss as scores; return the (weighted) loss to back-propagate.

        Args:
            loss: per-sample losses of shape ``(batch,)`` (``reduction='none'``) without BLS;
                the ordinary scalar mean loss (or any tensor, averaged) with BLS.
            indices: the batch's sample indices (route (b), required when the handler was
                built with ``return_indices=True``); by default the k-th call of an epoch is
                matched to the k-th batch of the sampler.

        Returns:
            A new scalar tensor; the input is never modified. Makes no host-device
            synchronisation when the loss lives on a GPU.
        """
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"loss: expected a torch.Tensor, got {type(loss).__name__}")
        if self._iterator is None:
            raise RuntimeError(
                "update() was called before any batch was drawn: iterate a DataLoader built "
                "with sampler=handler.sampler first"
            )
        if not self.score_source.records:
            self._updates += 1
            return loss.mean()
        self._move_state_to(loss.device)
        every_rank: torch.Tensor | None = None
        if indices is None:
            start, stop = self._order_bounds(loss)
            length = stop - start
            # Views of the plan only where needed: each costs a dispatch on the step's path.
            deferred = self._world_size == 1
            if deferred and self._unit_weights:
                local = None
            else:
                assert self._indices_on_device is not None
                rows = self._indices_on_device[start:stop]  # (b, ranks), a view: no copy
                local = rows[:, self._rank]
                every_rank = None if deferred else rows.T  # (ranks, b), a view: no sync
        else:
            local = self._explicit_indices(indices, loss.device)
            start, length, deferred = 0, local.shape[0], False
        if self.score_source.per_sample and (loss.dim() == 0 or loss.shape[0] != length):
            raise ValueError(
                f"loss: per-sample scoring needs one loss per sample of the batch "
                f"(reduction='none', length {length}), got shape {tuple(loss.shape)}; "
                "for a scalar mean loss wrap the handler with BLS(...).proxy()"
            )
        batch_weights = None
        if not self._unit_weights:
            assert local is not None
            batch_weights = self.weights.index_select(0, local)
        returned, measurement = self.score_source.measure(loss, batch_weights)
        if measurement is not None:
            if deferred:
                self._defer(measurement, start, length)
            else:
                assert local is not None
                self._flush()  # earlier deferred batches first: scores change in step order
                self._record(local, every_rank, measurement)
                self._pending_from = self._updates + 1
        self._updates += 1
        return returned

    def _defer(self, measurement: torch.Tensor, start: int, length: int) -> None:
        """Copy this batch's measurement into its slot of the epoch's pending buffer."""
        assert self._batch_size is not None and self._iterator is not None
        if self._pending is None:
            slots = self._iterator.shard.size
            if not self.score_source.per_sample:
                slots = -(-slots // self._batch_size)  # one per batch
            self._pending = torch.empty(slots, dtype=torch.float32, device=self._scores.device)
        if self.score_source.per_sample:
            self._pending[start : start + length].copy_(measurement)
        else:
            self._pending[self._updates : self._updates + 1].copy_(measurement.reshape(1))

    def _flush(self) -> None:
        """Fold the deferred batches into the scores, exactly as recording them one by one.

        Within one epoch of one process no index repeats (the plan is a set and is never
        padded), so one vectorised ``record`` equals the sequence of per-batch ones; BLS's
        batches are recorded as rows of a ``(batches, batch_size)`` index matrix, each with its
        own batch loss. Device-side only: no host synchronisation.
        """
        first, last = self._pending_from, self._updates
        if first >= last or self._pending is None:
            return
        assert self._indices_on_device is not None and self._batch_size is not None
        size, order = self._batch_size, self._indices_on_device[:, 0]
        record = self.score_source.record
        if self.score_source.per_sample:
            lo, hi = first * size, min(last * size, order.shape[0])
            self._nonfinite += record(
                self._scores, order[lo:hi].unsqueeze(0), self._pending[lo:hi].unsqueeze(0)
            )
        else:
            whole = min(last, order.shape[0] // size)  # batches of full size
            if whole > first:
                self._nonfinite += record(
                    self._scores,
                    order[first * size : whole * size].view(-1, size),
                    self._pending[first:whole].unsqueeze(1),
                )
            if last > whole:  # the epoch's shorter last batch
                self._nonfinite += record(
                    self._scores,
                    order[whole * size :].unsqueeze(0),
                    self._pending[whole:last].unsqueeze(1),
                )
        self._pending_from = last

    def _order_bounds(self, loss: torch.Tensor) -> tuple[int, int]:
        """Where the k-th batch of this epoch lies in the rank's shard: ``[start, stop)``."""
        if self.return_indices or self._loader.sharded_by_framework:
            raise ValueError(
                "indices: this loader needs explicit indices; call update(loss, indices=...) "
                "with the indices the items carry (return_indices=True)"
            )
        batch_size = self._batch_size
        if batch_size is None:
            if not self.score_source.per_sample or loss.dim() == 0:
                raise RuntimeError(
                    "the batch size could not be read from the DataLoader (no torch "
                    "BatchSampler found); use DataLoader(handler, sampler=handler.sampler, "
                    "batch_size=...) or build the handler with return_indices=True and pass "
                    "update(loss, indices=...)"
                )
            batch_size = self._batch_size = int(loss.shape[0])
        assert self._iterator is not None
        shard_length = self._iterator.shard.size
        start = self._updates * batch_size
        stop = min(start + batch_size, shard_length)
        if start >= shard_length or (self._loader.drop_last and stop - start < batch_size):
            raise RuntimeError(
                f"update() was called {self._updates + 1} times in epoch {self._epoch}, which "
                f"has only {self._expected_batches()} batches: one batch was updated twice"
            )
        if stop > self._iterator.position:
            raise RuntimeError(
                f"update() number {self._updates + 1} of epoch {self._epoch} has no batch yet: "
                f"the loader has drawn {self._iterator.position} indices, batch needs {stop}; "
                "call update() once per batch, after the batch was drawn"
            )
        return start, stop

    def _explicit_indices(self, indices: Any, device: torch.device) -> torch.Tensor:
        local = torch.as_tensor(indices)
        if local.dtype.is_floating_point or local.dtype == torch.bool:
            raise TypeError(f"indices: expected integer sample indices, got dtype {local.dtype}")
        local = local.reshape(-1).to(device=device, dtype=torch.int64, non_blocking=True)
        return local

    def _record(
        self, local: torch.Tensor, every_rank: torch.Tensor | None, measurement: torch.Tensor
    ) -> None:
        if self._world_size == 1:
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
        self._nonfinite += self.score_source.record(self._scores, indices, measurements)

    def _move_state_to(self, device: torch.device) -> None:
        if self._scores.device != device:
            self._flush()
            self._scores = self._scores.to(device)
            self.weights = self.weights.to(device)
            self._nonfinite = self._nonfinite.to(device)
            if self._pending is not None:
                self._pending = self._pending.to(device)
        if self._indices_on_device is not None and self._indices_on_device.device != device:
            self._indices_on_device = self._indices_on_device.to(device, non_blocking=True)

    # ------------------------------------------------------------------ epochs
    def _reset_epoch_runtime(self) -> None:
        self._decided = None
        self._plan = None
        self._plan_key = None
        self._iterator = None
        self._indices_on_device = None
        self._updates = 0
        self._unit_weights = True
        self._nonfinite = torch.zeros((), dtype=torch.int64, device=self._scores.device)
        self._pending = None
        self._pending_from = 0
        self._rank, self._world_size = rank_and_world_size()

    def _set_epoch(self, epoch: int) -> None:
        epoch = check_int("epoch", epoch, 0)
        if epoch == self._epoch and self._decided is not None:
            # Decided already. Frameworks call set_epoch more than once per epoch (the trainer
            # and the loader wrapper), sometimes after iteration began: never decide twice.
            return
        self._close_epoch()
        self._decide(epoch)

    def _begin_iteration(self, loader: LoaderInfo) -> _EpochIterator:
        """Start iterating the current epoch (deciding the next one if nobody called set_epoch)."""
        if not loader.in_order:
            raise ValueError(
                "in_order: the DataLoader was built with in_order=False, so batches may arrive "
                "out of sampler order and losses could reach the wrong samples; use "
                "in_order=True (the default)"
            )
        if self._decided is None or self._iterator is not None:
            self._close_epoch()
            self._decide(self._epoch + 1)
        self._loader = loader
        if loader.batch_size is not None:
            self._batch_size = loader.batch_size
        plan = self._finalize_plan()
        rank, world_size = self._rank, self._world_size = rank_and_world_size()
        if loader.sharded_by_framework or world_size == 1:
            shard = plan
            table = plan.reshape(-1, 1)
        else:
            shard = plan[rank::world_size]
            table = plan.reshape(-1, world_size)
        self._indices_on_device = torch.from_numpy(table).to(self._scores.device, non_blocking=True)
        self._iterator = _EpochIterator(shard)
        self._updates = 0
        self._pending, self._pending_from = None, 0
        self._warn_if_too_few_batches()
        return self._iterator

    def _warn_if_too_few_batches(self) -> None:
        """Warn once per run when BLS scores an epoch of fewer than two batches."""
        source = self.score_source
        if self._warned_few_batches or not source.records or source.per_sample:
            return
        batches = self._expected_batches()
        if not self._batch_size or batches >= 2:
            return
        self._warned_few_batches = True
        assert self._iterator is not None
        warnings.warn(
            f"epoch {self._epoch}: the loader makes {batches} batch(es) of batch_size="
            f"{self._batch_size} from {self._iterator.shard.size} samples; BLS gives every "
            "sample of a batch that batch's loss, so with fewer than two batches per epoch all "
            "samples score alike and pruning cannot tell them apart (InfoBatch then prunes "
            "none). Use a batch_size of at most half the samples, or per-sample losses "
            "without BLS (warned once per run).",
            FewBatchesWarning,
            stacklevel=4,
        )

    def _decide(self, epoch: int) -> None:
        """Decide epoch ``epoch``'s plan from the current scores (one host sync per epoch)."""
        pruning = self.is_pruning_epoch(epoch)
        if epoch >= self.num_epochs:
            logger.warning(
                "epoch %d is past num_epochs=%d: training on all data", epoch, self.num_epochs
            )
        rng = np.random.default_rng([self.seed, epoch])
        scores = self.scores.detach().to("cpu", torch.float32).numpy()
        plan: EpochPlan = self.policy.plan(scores, epoch, pruning, rng)
        # int32 halves the plan's memory below 2**31 samples (torch indexes with it directly).
        index_dtype = np.int32 if self.num_samples < 2**31 else np.int64
        indices = plan.indices.astype(index_dtype, copy=False)
        weights = torch.ones(self.num_samples, dtype=torch.float32)
        if plan.upweighted.size and plan.up_weight != 1.0:
            weights[torch.from_numpy(plan.upweighted.astype(np.int64, copy=False))] = plan.up_weight
        self._reset_epoch_runtime()
        self.weights = weights.to(self._scores.device)
        self._unit_weights = not (plan.upweighted.size and plan.up_weight != 1.0)
        self._epoch = epoch
        self._decided = indices
        self.history = [r for r in self.history if r["epoch"] != epoch]
        self.history.append(
            {
                "epoch": epoch,
                "pruning": pruning,
                "kept": int(min(indices.size, self.num_samples)),
                "pruned": int(self.num_samples - min(indices.size, self.num_samples)),
                "policy": self.policy.name,
                "score": self.score_source.name,
                **plan.details,
            }
        )
        logger.debug("epoch %d: kept %d of %d", epoch, indices.size, self.num_samples)

    def _finalize_plan(self) -> np.ndarray:
        """The decided plan, made to shard evenly over ranks and never end in a batch of one.

        Depends on the loader (batch size, ``drop_last``, who shards) and the world size, so
        it is recomputed when those differ from the last time; ``kept`` follows it.
        """
        assert self._decided is not None
        _, world_size = rank_and_world_size()
        ranks = 1 if self._loader.sharded_by_framework else world_size
        key = (ranks, self._batch_size, self._loader.drop_last)
        if self._plan is not None and self._plan_key == key:
            return self._plan
        plan = self._decided
        pruned = plan.size < self.num_samples
        if plan.size % ranks:
            if pruned and plan.size > ranks:
                plan = plan[: plan.size - plan.size % ranks]
            else:  # padded as DistributedSampler does: no sample lost, no rank left without one
                plan = np.concatenate((plan, plan[: ranks - plan.size % ranks]))
        batch_size = self._batch_size
        if (
            pruned
            and batch_size is not None
            and batch_size > 1
            and not self._loader.drop_last
            and (plan.size // ranks) % batch_size == 1
            and plan.size > ranks
        ):
            plan = plan[: plan.size - ranks]  # BatchNorm cannot train on a final batch of one
        self._plan, self._plan_key = plan, key
        kept = int(min(plan.size, self.num_samples))
        self.history[-1].update(kept=kept, pruned=self.num_samples - kept)
        return plan

    def _expected_batches(self) -> int:
        if self._iterator is None or not self._batch_size:
            return 0
        length = self._iterator.shard.size
        if self._loader.drop_last:
            return length // self._batch_size
        return math.ceil(length / self._batch_size)

    def end_epoch(self) -> None:
        """Check the finished epoch's bookkeeping now (otherwise done when the next begins).

        Warns with :class:`AttributionWarning` when the number of ``update()`` calls differs
        from the number of batches, and once per run when non-finite losses were skipped.
        Idempotent; called by the framework integrations at the end of every epoch.
        """
        self._close_epoch()

    def _close_epoch(self) -> None:
        self._flush()
        if self._iterator is None or not self.history:
            return
        record = self.history[-1]
        if "updates" in record:
            return
        record["updates"] = self._updates
        expected = self._expected_batches()
        ordered = not self.return_indices and not self._loader.sharded_by_framework
        if ordered and expected and self._updates != expected:
            warnings.warn(
                f"epoch {self._epoch}: update() was called {self._updates} times for "
                f"{expected} batches; the samples of the batches without an update keep their "
                "previous scores. Call update() exactly once per batch.",
                AttributionWarning,
                stacklevel=3,
            )
        nonfinite = int(self._nonfinite)
        record["nonfinite"] = nonfinite
        if nonfinite and not self._warned_nonfinite:
            self._warned_nonfinite = True
            warnings.warn(
                f"epoch {self._epoch}: {nonfinite} non-finite loss value(s) were skipped and "
                "did not enter the scores (warned once per run; see handler.history)",
                RuntimeWarning,
                stacklevel=3,
            )

    def _rank_length(self) -> int:
        """Indices this rank yields in the current epoch (``ceil(N / world)`` before one)."""
        if self._iterator is not None:
            return int(self._iterator.shard.size)
        _, world_size = rank_and_world_size()
        if self._decided is None:
            return math.ceil(self.num_samples / world_size)
        ranks = 1 if self._loader.sharded_by_framework else world_size
        return self._finalize_plan().size // ranks

    def _global_length(self) -> int:
        """Indices the current epoch yields over all ranks (N before the first epoch)."""
        if self._decided is None:
            return self.num_samples
        return int(self._finalize_plan().size)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume at an epoch boundary, as tensors and Python numbers.

        Loads with ``torch.load(..., weights_only=True)``. Save after an epoch's last
        ``update()``; the resumed run then decides the following epochs exactly as the
        uninterrupted run.
        """
        self._flush()
        history = [dict(record) for record in self.history]
        if self._iterator is not None and history and "updates" not in history[-1]:
            # A resumed run never closes this epoch: store what closing it records, so the
            # resumed history equals the uninterrupted run's.
            history[-1].update(updates=self._updates, nonfinite=int(self._nonfinite))
        return {
            "format": 1,
            "policy": self.policy.name,
            "score_source": self.score_source.name,
            "num_samples": self.num_samples,
            "seed": self.seed,
            "epoch": self._epoch,
            "epoch_started": self._iterator is not None,
            "scores": self.scores.detach().cpu().clone(),
            "weights": self.weights.detach().cpu().clone(),
            "batch_size": -1 if self._batch_size is None else self._batch_size,
            "history": history,
            "warned_nonfinite": self._warned_nonfinite,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; checks it belongs to the same setup."""
        for key, mine in (
            ("num_samples", self.num_samples),
            ("policy", self.policy.name),
            ("score_source", self.score_source.name),
        ):
            if state[key] != mine:
                raise ValueError(
                    f"state_dict: saved {key}={state[key]!r} does not match this handler's "
                    f"{key}={mine!r}"
                )
        device = self._scores.device
        self.seed = int(state["seed"])
        self._batch_size = int(state["batch_size"]) if state["batch_size"] > 0 else None
        self._reset_epoch_runtime()
        self._scores = state["scores"].to(device=device, dtype=torch.float32).clone()
        self.history = [dict(record) for record in state["history"]]
        self._warned_nonfinite = bool(state["warned_nonfinite"])
        epoch = int(state["epoch"])
        if epoch >= 0 and not state["epoch_started"]:
            # Decided but not yet iterated: the scores have not moved since, so deciding again
            # reproduces the same plan.
            self._epoch = -1
            self._decide(epoch)
        else:
            self._epoch = epoch
            self.weights = state["weights"].to(device=device, dtype=torch.float32).clone()
