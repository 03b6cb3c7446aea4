"""Framework integrations, each an optional extra that imports its framework only when used.

* :mod:`bls.integrations.lightning` — ``PruningCallback`` for PyTorch Lightning
  (``pip install 'bls-prune[lightning]'``);
* :mod:`bls.integrations.hf` — ``PruningTrainer`` for the Hugging Face ``Trainer`` and
  Accelerate (``pip install 'bls-prune[hf]'``);
* :mod:`bls.integrations.ultralytics` — ``PruningDetectionTrainer`` for Ultralytics YOLO
  detection, one process (``pip install 'bls-prune[ultralytics]'``; needs torchvision).

Importing :mod:`bls` or this package never imports a framework.
"""

from __future__ import annotations

from typing import Any

from bls.handler import PruningDataset

__all__: list[str] = []


def _with_indices(handler: Any, argument: str, requirement: str, remedy: str) -> PruningDataset:
    """``handler``, switched to explicit indices (``return_indices=True``), for a framework
    whose loader reads ahead or regroups batches.

    Raises:
        TypeError: ``handler`` is not a pruning dataset (``requirement`` says what is).
        ValueError: it was already iterated without indices (its epoch's attribution would
            change midway); ``remedy`` says what to do instead.
    """
    if not isinstance(handler, PruningDataset):
        raise TypeError(f"{argument}: {requirement}, got {type(handler).__name__}")
    if not handler.return_indices:
        if handler.epoch >= 0:
            raise ValueError(
                f"{argument}: the handler was already iterated without indices; {remedy}"
            )
        handler.return_indices = True
    return handler
