"""The handler's state, declared once: what it is, how it moves, what a checkpoint holds.

Every piece of pruning state is declared with :meth:`DeclaredState.add_state` (the way
torchmetrics declares metric state): its kind (a tensor of one dtype, or a plain Python value),
whether it is saved in ``state_dict()``, whether a new epoch's decision clears it, and how it
relates across ranks. Moving to a device, pickling, saving and loading then go over the
declarations, so a new field is added in one place.

Across ranks a field is either ``"same"`` (identical on every rank: the scores, updated from
the losses of all ranks; the weights and plan, decided from those scores) or ``"own"`` (this
rank's alone: the losses it has not recorded yet).

:class:`HandlerState` is the handler's declaration. Its checkpoint adds what a loaded state
must match (:func:`identity`) and where the current epoch's pass stood (:mod:`bls.resume`);
every plain value of it is checked before anything is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from bls.epochs import EpochCycle
from bls.policies import Policy
from bls.resume import Resume, checkpoint_position
from bls.scores import ScoreSource

__all__ = ["FORMAT", "DeclaredState", "HandlerState", "StateField", "identity"]

#: The ``state_dict()`` format this version writes and the only one it loads.
FORMAT = 1


@dataclass(frozen=True)
class StateField:
    """One declared piece of state.

    Attributes:
        name: the attribute and ``state_dict`` key.
        dtype: the tensor dtype, or ``None`` for a plain Python value.
        per_sample: a tensor of length ``N`` (checked when loaded).
        saved: part of ``state_dict()``.
        per_epoch: reset to its default when an epoch is decided.
        ranks: ``"same"`` on every rank or this rank's ``"own"``.
        finite: a saved float tensor must hold only finite values.
    """

    name: str
    dtype: torch.dtype | None
    per_sample: bool = False
    saved: bool = False
    per_epoch: bool = False
    ranks: Literal["same", "own"] = "same"
    finite: bool = False


class DeclaredState:
    """Holds the declared fields as attributes; moves, pickles, saves and loads them.

    Args:
        num_samples: ``N``, the length of every per-sample tensor.
    """

    def __init__(self, num_samples: int) -> None:
        self.num_samples = num_samples
        self._fields: dict[str, StateField] = {}
        self._epoch_defaults: dict[str, torch.Tensor | None] = {}

    def add_state(self, field: StateField, value: Any) -> None:
        """Declare ``field`` with its initial value.

        A per-epoch field's initial value is also what each new epoch resets it to: ``None``
        or a small tensor (kept, and cloned at every reset).
        """
        if field.name in self._fields:
            raise ValueError(f"name: state {field.name!r} is declared already")
        if field.per_epoch and not (value is None or isinstance(value, torch.Tensor)):
            raise TypeError(f"value: a per-epoch field starts as None or a tensor, got {value!r}")
        self._fields[field.name] = field
        if field.per_epoch:
            self._epoch_defaults[field.name] = value
        setattr(self, field.name, value.clone() if isinstance(value, torch.Tensor) else value)

    @property
    def fields(self) -> tuple[StateField, ...]:
        return tuple(self._fields.values())

    def reset_epoch(self, device: torch.device) -> None:
        """Reset every per-epoch field to its default, tensors on ``device``."""
        for name, value in self._epoch_defaults.items():
            setattr(self, name, None if value is None else value.to(device, copy=True))

    def to(self, device: torch.device) -> None:
        """Move every tensor field to ``device``, all or none (no copy for those already there).

        Copies to an accelerator are asynchronous; copies to the host are not, so the values
        are there when read. When a copy raises (a sync-debug mode refusing it, say), no field
        has moved.
        """
        non_blocking = device.type != "cpu"
        moved = {}
        for field in self.fields:
            value = getattr(self, field.name)
            if isinstance(value, torch.Tensor) and value.device != device:
                moved[field.name] = value.to(device, non_blocking=non_blocking)
        for name, value in moved.items():
            setattr(self, name, value)

    def __getstate__(self) -> dict[str, Any]:
        # A pickled copy (a checkpoint of the whole handler, a spawned process) holds host
        # tensors, so no CUDA memory is shared between processes.
        state = self.__dict__.copy()
        for field in self.fields:
            value = state[field.name]
            if isinstance(value, torch.Tensor):
                state[field.name] = value.cpu()
        return state

    def saved(self) -> dict[str, Any]:
        """The saved fields: tensors as host copies, values as they are."""
        out: dict[str, Any] = {}
        for field in self.fields:
            if field.saved:
                value = getattr(self, field.name)
                out[field.name] = value.detach().cpu().clone() if field.dtype else value
        return out

    def load(self, state: Mapping[str, Any], device: torch.device) -> None:
        """Restore the saved fields from ``state`` after checking each one.

        Raises:
            ValueError: a field is missing, has the wrong type, shape or non-finite values.
        """
        checked = {
            field.name: check_saved(field, state, self.num_samples)
            for field in self.fields
            if field.saved
        }
        for name, value in checked.items():
            if isinstance(value, torch.Tensor):
                value = value.to(device=device, dtype=self._fields[name].dtype).clone()
            setattr(self, name, value)


def require(state: Mapping[str, Any], key: str) -> Any:
    """``state[key]``, or a ``ValueError`` that names the missing key."""
    if not isinstance(state, Mapping):
        raise TypeError(
            f"state_dict: expected the dict handler.state_dict() returned, got "
            f"{type(state).__name__}"
        )
    if key not in state:
        raise ValueError(
            f"state_dict: the checkpoint has no {key!r} entry (has: "
            f"{', '.join(map(repr, state)) or 'nothing'}); it is damaged or not a bls-prune "
            "handler state"
        )
    return state[key]


def check_saved(field: StateField, state: Mapping[str, Any], num_samples: int) -> Any:
    """The saved value of ``field`` in ``state``, checked against its declaration."""
    value = require(state, field.name)
    if field.dtype is None:
        return value
    if not isinstance(value, torch.Tensor):
        raise ValueError(
            f"state_dict: {field.name!r} must be a tensor, got {type(value).__name__}; the "
            "checkpoint is damaged"
        )
    if field.per_sample and tuple(value.shape) != (num_samples,):
        raise ValueError(
            f"state_dict: {field.name!r} has shape {tuple(value.shape)}, this handler needs "
            f"({num_samples},): one value per sample; the checkpoint is damaged or belongs to "
            "another data set"
        )
    if field.finite and value.is_floating_point():
        bad = int((~torch.isfinite(value)).sum())  # loading is rare: a host sync is fine
        if bad:
            raise ValueError(
                f"state_dict: {field.name!r} holds {bad} non-finite value(s) (NaN or inf); "
                "the checkpoint is damaged"
            )
    return value


def check_format(state: Mapping[str, Any]) -> None:
    """Raise unless ``state`` is in the format this version writes."""
    version = require(state, "format")
    if isinstance(version, bool) or not isinstance(version, int) or version != FORMAT:
        raise ValueError(
            f"state_dict: format {version!r} is not supported; this version of bls-prune "
            f"reads format {FORMAT}"
        )


class HandlerState(DeclaredState):
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

    def checkpoint(
        self, policy: Policy, source: ScoreSource, cycle: EpochCycle, seed: int
    ) -> dict[str, Any]:
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
        position, finished = checkpoint_position(run, cycle.loader, self.batch_size)
        resumable = started and not finished and run.decided is not None
        plan = run.decided if resumable and run.decided is not None else np.empty(0, np.int64)
        return {
            "format": FORMAT,
            **identity(self.num_samples, policy, source),
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
        self, state: Mapping[str, Any], policy: Policy, source: ScoreSource
    ) -> tuple[int, int, tuple[np.ndarray, Resume] | None]:
        """Check and load a :meth:`checkpoint` of this setup; returns ``(seed, epoch, resume)``.

        Everything is checked before anything is loaded. The per-epoch fields are reset and
        ``epoch`` is left at ``-1`` when the saved epoch was decided but not yet iterated (the
        caller decides it again); ``resume`` is the plan and :class:`~bls.resume.Resume` of an
        epoch whose iteration had begun, whose record and non-finite count are then reopened.
        """
        check_format(state)
        for key, mine in identity(self.num_samples, policy, source).items():
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
            self._reopen_epoch()
        return plain["seed"], epoch, resume

    def _reopen_epoch(self) -> None:
        """The resumed epoch's record loses what the checkpoint wrote for closing it (the
        resumed pass closes it), and its non-finite count so far is restored."""
        record = self.history[-1] if self.history else {}
        if record.get("epoch") == self.epoch:
            record.pop("updates", None)
            skipped = int(record.pop("nonfinite", 0))
            self.nonfinite = torch.tensor(skipped, device=self.scores.device)


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


def identity(num_samples: int, policy: Policy, source: ScoreSource) -> dict[str, Any]:
    """What a checkpoint must match to be loaded into a handler of this setup."""
    return {"num_samples": num_samples, "policy": policy.name, "score_source": source.name}
