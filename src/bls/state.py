"""The handler's state, declared once: what it is, how it moves, what a checkpoint holds.

Every piece of pruning state is declared with :meth:`DeclaredState.add_state` (the way
torchmetrics declares metric state): its kind (a tensor of one dtype, or a plain Python value),
whether it is saved in ``state_dict()``, whether a new epoch's decision clears it, and how it
relates across ranks. Moving to a device, pickling, saving and loading then go over the
declarations, so a new field is added in one place.

Across ranks a field is either ``"same"`` (identical on every rank: the scores, updated from
the losses of all ranks; the weights and plan, decided from those scores) or ``"own"`` (this
rank's alone: the losses it has not recorded yet).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

__all__ = ["FORMAT", "DeclaredState", "StateField"]

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
