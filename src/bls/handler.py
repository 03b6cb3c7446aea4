"""The pruning handler: the dataset users wrap, composing the parts that prune it.

``PruningDataset`` composes a :class:`~bls.policies.Policy` (which samples an epoch keeps), a
:class:`~bls.scores.ScoreSource` (how losses become scores), the attribution routes of
:mod:`bls.attribution` (which samples a loss belongs to), the layout of :mod:`bls.sharding`
(what each rank iterates) and a :class:`~bls.sampler.PruningSampler` (how the plan reaches the
DataLoader). Its state is declared once in a :class:`~bls.state.DeclaredState`; exactly the
saved part of it is what :meth:`PruningDataset.state_dict` returns. DataLoader workers receive
only the thin :class:`~bls.worker.WorkerDataset`.

Randomness comes only from ``numpy.random.default_rng([seed, epoch])``: the user's global
``random``, ``numpy.random`` and ``torch`` generators are never read or advanced.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bls._checks import check_dataset, check_fraction, check_int
from bls.epochs import (
    AttributionWarning,
    BudgetWarning,
    EpochCycle,
    EpochRun,
    FewBatchesWarning,
    Resume,
    ResumeWarning,
)
from bls.policies import Policy, coreset_of
from bls.recording import flush, fold_every_rank, record_update, sync_for_state
from bls.sampler import LoaderInfo, PruningSampler, _EpochIterator
from bls.scores import NoScore, PerSampleLoss, ScoreSource
from bls.state import FORMAT, DeclaredState, StateField, check_format, require
from bls.worker import WorkerDataset, send_as_worker_view

__all__ = [
    "AttributionWarning",
    "BudgetWarning",
    "FewBatchesWarning",
    "PruningDataset",
    "ResumeWarning",
]


class _HandlerState(DeclaredState):
    """The handler's state: every field declared here, once (see :mod:`bls.state`)."""

    scores: torch.Tensor
    weights: torch.Tensor
    nonfinite: torch.Tensor
    table: torch.Tensor | None
    pending: torch.Tensor | None
    epoch: int
    batch_size: int | None
    history: list[dict[str, Any]]
    warned_nonfinite: bool

    def __init__(self, num_samples: int, initial_score: float) -> None:
        super().__init__(num_samples)
        n, f32 = num_samples, torch.float32
        # Per sample, saved, the same on every rank: the scores and this epoch's loss weights.
        for name, value in (("scores", initial_score), ("weights", 1.0)):
            field = StateField(name, f32, per_sample=True, saved=True, finite=True)
            self.add_state(field, torch.full((n,), value, dtype=f32))
        # Per epoch: the count of skipped non-finite losses, the plan as a (per_rank, ranks)
        # index table on the scores' device (int32 below 2**31 samples), and the measurements
        # this process deferred.
        zero = torch.zeros((), dtype=torch.int64)
        self.add_state(StateField("nonfinite", torch.int64, per_epoch=True), zero)
        self.add_state(StateField("table", torch.int64, per_epoch=True), None)
        self.add_state(StateField("pending", f32, per_epoch=True, ranks="own"), None)
        # Saved values: the current epoch, the loader's batch size once known, the per-epoch
        # records and whether the once-per-run non-finite warning was given.
        self.add_state(StateField("epoch", None, saved=True), -1)
        self.add_state(StateField("batch_size", None, saved=True), None)
        self.add_state(StateField("history", None, saved=True), [])
        self.add_state(StateField("warned_nonfinite", None, saved=True), False)

    def checkpoint(self, identity: dict[str, Any], cycle: EpochCycle, seed: int) -> dict[str, Any]:
        """``state_dict()``: the saved fields, the handler's identity and where the epoch is.

        Mid-epoch (the epoch's iteration began) it also holds the epoch's plan, the number of
        ``update()`` calls and the shard position they reached, so a resumed run continues the
        epoch with exactly its remaining batches.
        """
        run = cycle.run
        saved = self.saved()
        history = [dict(record) for record in saved["history"]]
        started = run.iterator is not None
        if started and history and "updates" not in history[-1]:
            # A resumed run closes this epoch itself; the record says what closing it now
            # would, and the resumed run's close overwrites it.
            history[-1].update(updates=run.updates, nonfinite=int(self.nonfinite))
        batch_size = saved["batch_size"]
        key = run.shards_key if started and run.shards_key is not None else (1, None, False)
        ranks, layout_batch, drop_last = key
        position, finished = cycle.checkpoint_position()
        resumable = started and not finished and run.decided is not None
        plan = run.decided if resumable and run.decided is not None else np.empty(0, np.int64)
        return {
            "format": FORMAT,
            **identity,
            "seed": seed,
            "epoch_started": started,
            **saved,
            "batch_size": -1 if batch_size is None else batch_size,  # -1: not known yet
            "history": history,
            "plan": torch.from_numpy(plan.astype(np.int64)),
            "epoch_finished": finished,
            "updates": run.updates if started else 0,
            "position": position,
            "layout": [ranks, -1 if layout_batch is None else layout_batch, drop_last],
        }

    def restore(
        self, state: Mapping[str, Any], identity: dict[str, Any]
    ) -> tuple[int, int, tuple[np.ndarray, Resume] | None]:
        """Check and load a :meth:`checkpoint`; returns ``(seed, epoch, resume)``.

        Everything is checked before anything is loaded. The per-epoch fields are reset and
        ``epoch`` is left at ``-1`` when the saved epoch was decided but not yet iterated (the
        caller decides it again); ``resume`` is the plan and :class:`~bls.epochs.Resume` of an
        epoch whose iteration had begun.
        """
        check_format(state)
        for key, mine in identity.items():
            if require(state, key) != mine:
                raise ValueError(
                    f"state_dict: saved {key}={state[key]!r} does not match this handler's "
                    f"{key}={mine!r}"
                )
        plain = {key: check_plain(state, key) for key in _PLAIN}
        plan = _check_plan(require(state, "plan"), self.num_samples)
        device = self.scores.device
        self.load(state, device)
        self.batch_size = plain["batch_size"] if plain["batch_size"] > 0 else None
        self.history = [dict(record) for record in self.history]
        self.reset_epoch(device)
        epoch, started = plain["epoch"], plain["epoch_started"]
        if epoch >= 0 and not started:
            self.epoch = -1  # decided, not iterated: the caller decides it again
        resume = None
        if epoch >= 0 and started and not plain["epoch_finished"]:
            ranks, batch_size, drop_last = plain["layout"]
            layout = (ranks, batch_size if batch_size > 0 else None, bool(drop_last))
            resume = (plan, Resume(plain["updates"], plain["position"], layout))
        return plain["seed"], epoch, resume


def _check_plan(value: Any, num_samples: int) -> np.ndarray:
    """The saved plan of a started epoch: a 1-D integer tensor of sample indices."""
    ok = isinstance(value, torch.Tensor) and value.dim() == 1 and not value.is_floating_point()
    if ok and value.numel():
        ok = bool(value.min() >= 0) and bool(value.max() < num_samples)
    if not ok:
        shown = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"state_dict: 'plan' must be a 1-D integer tensor of sample indices in "
            f"[0, {num_samples}), got {shown}; the checkpoint is damaged"
        )
    dtype = np.int32 if num_samples < 2**31 else np.int64
    return value.numpy().astype(dtype)


def _is_history(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(r, dict) and isinstance(r.get("epoch"), int) for r in value
    )


def _is_layout(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(v, int) for v in value)
        and value[0] >= 1
    )


#: The plain values of a checkpoint: (rule, what is expected), checked before loading.
_PLAIN: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "epoch": (lambda v: _is_int(v) and v >= -1, "an int >= -1"),
    "epoch_started": (lambda v: isinstance(v, bool), "a bool"),
    "epoch_finished": (lambda v: isinstance(v, bool), "a bool"),
    "batch_size": (lambda v: _is_int(v) and (v == -1 or v >= 1), "-1 or an int >= 1"),
    "history": (_is_history, "a list of dicts with an int 'epoch'"),
    "warned_nonfinite": (lambda v: isinstance(v, bool), "a bool"),
    "updates": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "position": (lambda v: _is_int(v) and v >= -1, "an int >= -1"),
    "layout": (_is_layout, "[ranks >= 1, batch_size, drop_last]"),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_plain(state: Mapping[str, Any], key: str) -> Any:
    """``state[key]`` checked against :data:`_PLAIN`, or a ``ValueError`` naming the key."""
    value = require(state, key)
    rule, expected = _PLAIN[key]
    if not rule(value):
        raise ValueError(
            f"state_dict: {key!r} is {value!r:.80}; expected {expected}; the checkpoint is "
            "damaged or not a bls-prune handler state"
        )
    return value


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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        send_as_worker_view(cls)  # multiprocessing registers reducers by exact type

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
        self._state = _HandlerState(self.num_samples, policy.initial_score)
        self._epochs = EpochCycle(self._state, policy, self.num_epochs, self.delta)
        self.sampler = PruningSampler(self)
        self._loaded = False
        self._forward_writes = True  # from here on, see __setattr__

    # ------------------------------------------------------------------ dataset protocol
    def __len__(self) -> int:
        return self.num_samples

    # Items are read exactly as the worker view reads them (it uses only ``dataset``,
    # ``return_indices`` and ``index_key``). ``__getitems__`` keeps the handler in torch's fetch
    # path even when the wrapped dataset (a Hugging Face dataset, say) has its own.
    __getitem__ = WorkerDataset.__getitem__
    __getitems__ = WorkerDataset.__getitems__

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes the handler lacks: forward to the wrapped dataset
        # (``handler.classes``). Dunder names and a half-unpickled object must not recurse.
        dataset = self.__dict__.get("dataset")
        if name.startswith("__") or dataset is None:
            raise AttributeError(name)
        return getattr(dataset, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # Frameworks configure the dataset they are handed (timm's create_loader sets
        # ``dataset.transform``): a write of an attribute the wrapped dataset has, and the
        # handler does not, goes to the wrapped dataset, which the workers read.
        own = self.__dict__
        if (
            own.get("_forward_writes")
            and name not in own
            and not hasattr(type(self), name)
            and hasattr(own["dataset"], name)
        ):
            setattr(own["dataset"], name, value)
            return
        super().__setattr__(name, value)

    def __getstate__(self) -> dict[str, Any]:
        self._flush()  # a copy holds every update so far (DeclaredState pickles host tensors)
        return self.__dict__.copy()

    # ------------------------------------------------------------------ inspection
    @property
    def scores(self) -> torch.Tensor:
        """float32 ``(N,)``: every sample's score, up to date with every ``update()`` so far.

        Under a process group, inside an epoch: as of the last gather of every rank's losses
        (the previous epoch's last update, or a ``state_dict()`` on every rank), the same on
        every rank; reading them never communicates.
        """
        self._flush()
        return self._state.scores

    @scores.setter
    def scores(self, value: torch.Tensor) -> None:
        self._flush()
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
        return self._epochs.total_steps(
            check_int("batch_size", batch_size, 1),
            bool(drop_last),
            None if world_size is None else check_int("world_size", world_size, 1),
        )

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
        fraction = check_fraction("fraction", fraction, upper_inclusive=True, lower_inclusive=False)
        kept = max(1, round(fraction * self.num_samples))
        scores = self.scores.detach().to("cpu", torch.float32).numpy()
        rng = np.random.default_rng([self.seed, 0xC05E])
        return coreset_of(self.policy, scores, kept, self.epoch + 1, rng)

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
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"loss: expected a torch.Tensor, got {type(loss).__name__}")
        run = self._epochs.run
        steps = run.steps  # the order route's prepared step (bls.recording.OrderSteps)
        if steps is not None and indices is None and loss.device == steps.device:
            return steps.step(run, loss)
        return record_update(
            self._epochs, self.score_source, loss, indices, explicit=self.return_indices
        )

    def _flush(self) -> None:
        """Fold the deferred batches into the scores (exactly as recording them one by one).

        In one process every one of them. Under a process group none: they need every rank's
        buffer and are gathered at the epoch's last update, a decision, ``end_epoch()`` or a
        ``state_dict()`` that every rank calls at the same step.
        """
        flush(self.score_source, self._state, self._epochs.run)

    # ------------------------------------------------------------------ epochs (PlanSource)
    def plan_epoch(self, epoch: int) -> None:
        """Decide epoch ``epoch``'s plan unless it is current (``sampler.set_epoch`` calls this)."""
        epoch = check_int("epoch", epoch, 0)
        if epoch > 0 and self.epoch < 0 and not self._loaded:
            warnings.warn(
                f"set_epoch({epoch}) is the first epoch this handler sees: if the run resumes a "
                "checkpoint, call handler.load_state_dict(...) with the state saved beside the "
                "model first; otherwise every sample's score starts afresh",
                ResumeWarning,
                stacklevel=3,
            )
        if epoch == self.epoch and self._epochs.run.decided is not None:
            # Decided already. Frameworks call set_epoch more than once per epoch (the trainer
            # and the loader wrapper), sometimes after iteration began: never decide twice.
            return
        self._close_epoch()
        self._decide(epoch)

    def iterate_epoch(
        self, loader: LoaderInfo, into: _EpochIterator | None = None
    ) -> _EpochIterator:
        """Start iterating the current epoch (deciding the next one if nobody called
        ``set_epoch``); ``loader`` is what the sampler learnt of the DataLoader."""
        self._epochs.check_loader(loader)
        run = self._epochs.run
        if run.decided is None or (run.iterator is not None and run.iterator.drew):
            # A pass that drew nothing is not an epoch: torchdata's StatefulDataLoader calls
            # iter(sampler) twice per epoch, and again while restoring its state.
            self._close_epoch()
            self._decide(self.epoch + 1)
        iterator = self._epochs.begin(loader, into)
        if self.score_source.records and not self.score_source.per_sample:
            self._epochs.warn_if_too_few_batches()
        return iterator

    def track_batch(self, batch: list[int]) -> None:
        """Note a batch that ``sampler.track(...)``'s batch sampler drew."""
        self._epochs.track(batch)

    def epoch_length(self, *, whole_plan: bool = False) -> int:
        """Indices this rank yields in the current epoch, or all ranks with ``whole_plan``.

        Before the first epoch: ``N`` (whole plan) or ``ceil(N / world_size)``.
        """
        return self._epochs.length(whole_plan=whole_plan)

    def _decide(self, epoch: int) -> None:
        """Decide epoch ``epoch``'s plan from the current scores (one host sync per epoch)."""
        scores = self.scores.detach().to("cpu", torch.float32).numpy()
        self._epochs.decide(epoch, scores, self.seed, self.score_source.name)

    def end_epoch(self) -> None:
        """Check the finished epoch's bookkeeping now (otherwise done when the next begins).

        Warns with :class:`AttributionWarning` when the number of ``update()`` calls differs
        from the number of batches, and once per run when non-finite losses were skipped.
        Idempotent; called by the framework integrations at the end of every epoch.
        """
        self._close_epoch()

    def _close_epoch(self) -> None:
        # Every rank closes the epoch at the same point: a collective gather is safe here.
        fold_every_rank(self.score_source, self._state, self._epochs.run)
        self._epochs.close(explicit=self.return_indices)

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
        return self._state.checkpoint(self._identity(), self._epochs, self.seed)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output after checking it belongs to the same setup.

        Raises:
            ValueError: the state is damaged (a missing entry, scores of the wrong length or
                with NaN/inf values, another format) or from another setup (data set size,
                policy or score source).
        """
        waiting = self._epochs.run.iterator  # a loader may hold a pass that drew nothing yet
        self._loaded = True
        self.seed, epoch, resume = self._state.restore(state, self._identity())
        self._epochs.run = EpochRun()
        if resume is not None:
            self._epochs.resume(*resume)  # mid-epoch: the rest of the same plan
        elif epoch >= 0 and self.epoch < 0:
            # Decided but not yet iterated: the scores have not moved since, so deciding again
            # reproduces the same plan.
            self._decide(epoch)
        if waiting is not None and not waiting.drew:
            # torchdata's StatefulDataLoader (no workers) restores the dataset's state after it
            # began the sampler's pass: that pass continues from the loaded state.
            self.iterate_epoch(self._epochs.loader, into=waiting)

    def _identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be loaded into this handler."""
        return {
            "num_samples": self.num_samples,
            "policy": self.policy.name,
            "score_source": self.score_source.name,
        }


send_as_worker_view(PruningDataset)
