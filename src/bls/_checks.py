"""Argument checks shared by every public constructor.

Each check raises ``ValueError`` or ``TypeError`` whose message names the argument, the value
received and what is allowed, so a typo in a training script fails on the line that made it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset


def check_dataset(dataset: Any) -> int:
    """Return ``len(dataset)`` after checking the dataset can be pruned (map-style, non-empty)."""
    if isinstance(dataset, IterableDataset):
        raise TypeError(
            "dataset: an IterableDataset cannot be pruned (pruning needs random access by index); "
            "pass a map-style dataset with __len__ and __getitem__"
        )
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise TypeError(
            f"dataset: expected a map-style dataset with __len__ and __getitem__, "
            f"got {type(dataset).__name__}"
        )
    size = len(dataset)
    if size < 1:
        raise ValueError("dataset: the dataset is empty; pruning needs at least one sample")
    return size


def check_int(name: str, value: Any, minimum: int) -> int:
    """Check ``value`` is an integer (not a bool) of at least ``minimum``; return it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def check_fraction(
    name: str, value: Any, *, upper_inclusive: bool, lower_inclusive: bool = True
) -> float:
    """Check ``value`` lies in ``[0, 1)``, or ``[0, 1]`` when ``upper_inclusive``.

    ``lower_inclusive=False`` excludes 0 as well: ``(0, 1)`` or ``(0, 1]``. Returns the value
    as ``float``.
    """
    allowed = ("[" if lower_inclusive else "(") + "0, 1" + ("]" if upper_inclusive else ")")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number in {allowed}, got {value!r}")
    value = float(value)
    too_big = value > 1.0 if upper_inclusive else value >= 1.0
    too_small = value < 0.0 if lower_inclusive else value <= 0.0
    if math.isnan(value) or too_small or too_big:
        raise ValueError(f"{name}: expected a number in {allowed}, got {value}")
    return value


def check_positive(name: str, value: Any) -> float:
    """Check ``value`` is a finite number above 0, ``(0, inf)``; return it as ``float``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number in (0, inf), got {value!r}")
    value = float(value)
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{name}: expected a number in (0, inf), got {value}")
    return value


# Keys the reference implementation's ``args`` namespaces use, in order of preference.
_ALIASES: dict[str, tuple[str, ...]] = {
    "num_epochs": ("num_epochs", "epochs", "num_epoch"),
    "prune_ratio": ("prune_ratio", "ratio"),
    "delta": ("delta",),
    "num_group": ("num_group", "num_groups"),
    "window_scale": ("window_scale",),
    "alpha": ("alpha",),
    "seed": ("seed",),
    "prune_type": ("prune_type",),
}


def read_args(args: Any, wanted: tuple[str, ...]) -> dict[str, Any]:
    """Read the reference code's ``args`` (an ``argparse.Namespace``-like object or a dict).

    Returns the found values under their canonical names (``epochs`` becomes ``num_epochs``,
    ``ratio`` becomes ``prune_ratio``); missing optional keys are simply absent.
    """
    if isinstance(args, Mapping):
        source: Mapping[str, Any] = args
    else:
        source = {key: getattr(args, key) for key in dir(args) if not key.startswith("_")}
    found: dict[str, Any] = {}
    for name in wanted:
        for alias in _ALIASES.get(name, (name,)):
            if source.get(alias) is not None:
                found[name] = source[alias]
                break
    return found


def looks_like_args(value: Any) -> bool:
    """True for a namespace or dict passed in the reference style ``InfoBatch(data, args)``."""
    if isinstance(value, Mapping):
        return True
    return not isinstance(value, int | float | str | bytes) and hasattr(value, "__dict__")


__all__ = [
    "check_dataset",
    "check_fraction",
    "check_int",
    "check_positive",
    "looks_like_args",
    "read_args",
]
