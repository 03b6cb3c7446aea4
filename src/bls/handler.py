"""The pruning handler: the dataset users wrap, composing the parts that prune it.

``PruningDataset`` composes a :class:`~bls.policies.Policy` (which samples an epoch keeps), a
:class:`~bls.scores.ScoreSource` (how losses become scores), the attribution routes of
:mod:`bls.attribution` (which samples a loss belongs to), the layout of :mod:`bls.sharding`
(what each rank iterates) and a :class:`~bls.sampler.PruningSampler` (how the plan reaches the
DataLoader). Its state is declared once in a :class:`~bls.state.HandlerState`; exactly the
saved part of it is what :meth:`PruningDataset.state_dict` returns, and :mod:`bls.resume` says
where a mid-epoch checkpoint continues. DataLoader workers receive only the thin
:class:`~bls.worker.WorkerDataset`; the handler reads items as it does and forwards the
wrapped dataset's attributes (:class:`~bls.worker.ForwardsToDataset`). The order in which an
epoch is closed, the next decided and a pass started is :mod:`bls.lifecycle`.

Randomness comes only from ``numpy.random.default_rng([seed, epoch])``: the user's global
``random``, ``numpy.random`` and ``torch`` generators are never read or advanced.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bls._checks import check_dataset, check_fraction, check_int
from bls.attribution import AttributionWarning
from bls.epochs import BudgetWarning, EpochCycle, EpochRun, FewBatchesWarning
from bls.lifecycle import close_epoch, continue_loaded, decide_unless_current, start_pass
from bls.policies import Policy, coreset_of
from bls.recording import flush, record_update, sync_for_state
from bls.resume import ResumeWarning, warn_if_not_loaded
from bls.sampler import LoaderInfo, PruningSampler, _EpochIterator
from bls.scores import NoScore, PerSampleLoss, ScoreSource
from bls.state import HandlerState
from bls.worker import ForwardsToDataset

__all__ = [
    "AttributionWarning",
    "BudgetWarning",
    "FewBatchesWarning",
    "PruningDataset",
    "ResumeWarning",
]


def _coreset(
    policy: Policy, scores: torch.Tensor, fraction: float, seed: int, epoch: int
) -> np.ndarray:
    """:meth:`PruningDataset.coreset` from the handler's policy, scores, seed and epoch."""
    fraction = check_fraction("fraction", fraction, upper_inclusive=True, lower_inclusive=False)
    kept = max(1, round(fraction * scores.numel()))
    host = scores.detach().to("cpu", torch.float32).numpy()
    rng = np.random.default_rng([seed, 0xC05E])
    return coreset_of(policy, host, kept, epoch + 1, rng)


class PruningDataset(ForwardsToDataset, Dataset[Any]):
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
        self._state = HandlerState(self.num_samples, policy.initial_score)
        self._epochs = EpochCycle(self._state, policy, self.num_epochs, self.delta)
        self.sampler = PruningSampler(self)
        self._loaded = False
        self._forward_writes = True  # from here on, see ForwardsToDataset.__setattr__

    # ------------------------------------------------------------------ dataset protocol
    def __len__(self) -> int:
        return self.num_samples

    def __getstate__(self) -> dict[str, Any]:
        # A copy holds every update so far (DeclaredState pickles host tensors).
        flush(self.score_source, self._state, self._epochs.run)
        return self.__dict__.copy()

    # ------------------------------------------------------------------ inspection
    @property
    def scores(self) -> torch.Tensor:
        """float32 ``(N,)``: every sample's score, up to date with every ``update()`` so far.

        Under a process group, inside an epoch: as of the last gather of every rank's losses
        (the previous epoch's last update, or a ``state_dict()`` on every rank), the same on
        every rank; reading them never communicates.
        """
        flush(self.score_source, self._state, self._epochs.run)  # the deferred batches
        return self._state.scores

    @scores.setter
    def scores(self, value: torch.Tensor) -> None:
        flush(self.score_source, self._state, self._epochs.run)
        self._state.scores = value

    @property
    def weights(self) -> torch.Tensor:
        """float32 ``(N,)``: every sample's loss weight in the current epoch."""
        return self._state.weights

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per decided epoch (``epoch``, ``kept``, ``pruned``, ``pruning``, ...)."""
        return self._state.history

    @property
    def saved_ratio(self) -> float:
        """``sum_e (N - kept_e) / (N * E)`` over the epochs decided so far."""
        pruned = sum(record["pruned"] for record in self.history)
        return pruned / (self.num_samples * self.num_epochs)

    @property
    def epoch(self) -> int:
        """The epoch whose plan is current (``-1`` before the first)."""
        return int(self._state.epoch)

    @property
    def _run(self) -> EpochRun:  # the current epoch's runtime (tests and benchmarks read it)
        return self._epochs.run

    @property
    def unweighted_loss(self) -> torch.Tensor | None:
        """The last ``update()``'s loss averaged, before any re-weighting: log this one.

        ``update()`` returns InfoBatch's re-weighted loss in pruning epochs (larger than the
        plain mean), right to back-propagate but not comparable across epochs or with an
        unpruned run. A detached scalar tensor (no host sync until you read it); ``None``
        before the first ``update()`` of the epoch.
        """
        loss = self._epochs.run.last_loss
        return None if loss is None else loss.detach().mean()

    def total_steps(
        self, batch_size: int, drop_last: bool = False, *, world_size: int | None = None
    ) -> int:
        """Batches (optimizer steps without accumulation) of the whole run on this rank.

        Known before training when every epoch's length is fixed in advance: with
        ``target_saving=...`` or without pruning. Size a step-based schedule with it, e.g.
        ``OneCycleLR(optimizer, max_lr, total_steps=handler.total_steps(64))``.

        Args:
            batch_size: the loader's batch size (per rank).
            drop_last: the loader's ``drop_last``.
            world_size: ranks; by default the current process group's (1 without one).

        Raises:
            ValueError: the epochs' lengths depend on scores not seen yet (no budget).
        """
        return self._epochs.total_steps(batch_size, drop_last, world_size)

    def coreset(self, fraction: float) -> np.ndarray:
        """Sorted int64 indices of the ``round(fraction * N)`` samples to keep, from the
        current scores by the policy's own ranking: a static subset to export.

        InfoBatch drops well-learned (low-score) samples first; SeTa keeps the run of the
        score order where its window would start next. The choice among equal candidates is
        seeded by the handler's seed, so it is reproducible.

        Raises:
            ValueError: ``fraction`` outside ``(0, 1]``, or a policy that does not rank by
                score (RandomPrune, Static, Full).
        """
        return _coreset(self.policy, self.scores, fraction, self.seed, self.epoch)

    def is_pruning_epoch(self, epoch: int) -> bool:
        return self._epochs.is_pruning_epoch(epoch)

    def use_score_source(self, source: ScoreSource) -> None:
        """Replace the score source; only before the first epoch. Resets every score."""
        if self.epoch >= 0:
            raise RuntimeError(
                "the score source can only change before the first epoch; wrap the handler "
                "with BLS(...).proxy() right after constructing it"
            )
        self.score_source = source
        self._state.scores.fill_(source.initial_score(self.policy.initial_score))

    # ------------------------------------------------------------------ update
    def update(self, loss: torch.Tensor, indices: Any = None) -> torch.Tensor:
        """Record the batch's loss as scores; return the (weighted) loss to back-propagate.

        Args:
            loss: per-sample losses of shape ``(batch,)`` (``reduction='none'``) without BLS;
                the ordinary scalar mean loss (or any tensor, averaged) with BLS.
            indices: the batch's sample indices (the explicit route, required when the handler
                was built with ``return_indices=True``); by default the k-th call of an epoch
                is matched to the k-th batch of the sampler.

        Returns:
            A new scalar tensor; the input is never modified. Makes no host-device
            synchronisation when the loss lives on a GPU.
        """
        if torch.compiler.is_compiling():  # traced by torch.compile: run outside the graph
            return _eager_update(self, loss, indices)
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"loss: expected a torch.Tensor, got {type(loss).__name__}")
        run = self._epochs.run
        steps = run.steps  # the order route's prepared step (bls.recording.OrderSteps)
        if steps is not None and indices is None and loss.device == steps.device:
            return steps.step(run, loss)
        return record_update(
            self._epochs, self.score_source, loss, indices, explicit=self.return_indices
        )

    # ------------------------------------------------------------------ epochs (PlanSource)
    def plan_epoch(self, epoch: int) -> None:
        """Decide epoch ``epoch``'s plan unless it is current (``sampler.set_epoch`` calls this)."""
        epoch = check_int("epoch", epoch, 0)
        warn_if_not_loaded(epoch, self.epoch, self._loaded)
        decide_unless_current(
            self._epochs, self.score_source, self.seed, epoch, explicit=self.return_indices
        )

    def iterate_epoch(
        self, loader: LoaderInfo, into: _EpochIterator | None = None
    ) -> _EpochIterator:
        """Start iterating the current epoch (deciding the next one if nobody called
        ``set_epoch``); ``loader`` is what the sampler learnt of the DataLoader."""
        return start_pass(
            self._epochs, self.score_source, self.seed, loader, into, explicit=self.return_indices
        )

    def track_batch(self, batch: list[int]) -> None:
        """Note a batch that ``sampler.track(...)``'s batch sampler drew."""
        self._epochs.track(batch)

    def epoch_length(self, *, whole_plan: bool = False) -> int:
        """Indices this rank yields in the current epoch, or all ranks with ``whole_plan``.

        Before the first epoch: ``N`` (whole plan) or ``ceil(N / world_size)``.
        """
        return self._epochs.length(whole_plan=whole_plan)

    def end_epoch(self) -> None:
        """Check the finished epoch's bookkeeping now (otherwise done when the next begins).

        Warns with :class:`AttributionWarning` when the number of ``update()`` calls differs
        from the number of batches, and once per run when non-finite losses were skipped.
        Idempotent; called by the framework integrations at the end of every epoch.
        """
        close_epoch(self._epochs, self.score_source, explicit=self.return_indices)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as tensors and Python numbers.

        Loads with ``torch.load(..., weights_only=True)``. Save after any ``update()``. The
        resumed run continues an interrupted epoch with exactly its remaining batches, then
        decides the following epochs as the uninterrupted run.

        Under a process group each rank defers its losses until the epoch's last
        ``update()``, which gathers them: at an epoch's end (after its last update, a
        decision or ``end_epoch()``) the ranks' states are equal and rank 0 alone may call
        this. Inside an epoch it needs every rank's pending losses, so every rank must call it
        at the same step (rank 0 may then write its result alone); a rank that calls it alone
        raises ``RuntimeError`` after ``bls.distributed.AGREE_TIMEOUT`` (60 s), without
        waiting on any collective.
        """
        sync_for_state(self.score_source, self._state, self._epochs.run, self.epoch)
        return self._state.checkpoint(self.policy, self.score_source, self._epochs, self.seed)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output after checking it belongs to the same setup.

        Raises:
            ValueError: the state is damaged (a missing entry, scores of the wrong length or
                with NaN/inf values, another format) or from another setup (data set size,
                policy or score source).
        """
        self._loaded = True
        self.seed, epoch, resume = self._state.restore(state, self.policy, self.score_source)
        continue_loaded(
            self._epochs, self.score_source, self.seed, epoch, resume, explicit=self.return_indices
        )


_EAGER_UPDATE: Callable[..., torch.Tensor] | None = None


def _eager_update(handler: PruningDataset, loss: torch.Tensor, indices: Any) -> torch.Tensor:
    """``update()`` called from a function that ``torch.compile`` traces, run outside the graph.

    ``update()`` keeps per-step Python state (which batch this is), which Dynamo would guard
    on and recompile for at every step; excluded from tracing, it is one graph break and the
    step compiles once (benchmarks/bench_compile.py). The excluded function is made on first
    use, so that ``import bls`` never imports ``torch._dynamo`` (about 1.5 s).
    """
    global _EAGER_UPDATE
    if _EAGER_UPDATE is None:
        _EAGER_UPDATE = torch.compiler.disable(PruningDataset.update)
    return _EAGER_UPDATE(handler, loss, indices)
