"""bls-prune: dynamic data pruning for PyTorch with Batch Loss Score (BLS).

Three lines turn a training loop into a pruned one::

    handler = BLS(InfoBatch(train_data, num_epochs=E, prune_ratio=0.5), alpha=0.7).proxy()
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=64)
    loss = handler.update(criterion(model(x), y))   # in the loop, before backward()
"""

from importlib import metadata as _metadata

from bls import diagnostics
from bls.handler import (
    AttributionWarning,
    BudgetWarning,
    FewBatchesWarning,
    PruningDataset,
    ResumeWarning,
)
from bls.methods import BLS, PRUNE_TYPES, Full, InfoBatch, RandomPrune, SeTa, Static, prune
from bls.policies import EpochPlan, is_pruning_epoch
from bls.sampler import PruningSampler
from bls.schedule import EpochOneCycleLR
from bls.scores import BatchLossEMA, PerSampleLoss

# One version source: ``version`` in pyproject.toml, read from the installed metadata.
try:
    __version__: str = _metadata.version("bls-prune")
except _metadata.PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "BLS",
    "PRUNE_TYPES",
    "AttributionWarning",
    "BatchLossEMA",
    "BudgetWarning",
    "EpochOneCycleLR",
    "EpochPlan",
    "FewBatchesWarning",
    "Full",
    "InfoBatch",
    "PerSampleLoss",
    "PruningDataset",
    "PruningSampler",
    "RandomPrune",
    "ResumeWarning",
    "SeTa",
    "Static",
    "__version__",
    "diagnostics",
    "is_pruning_epoch",
    "prune",
]
