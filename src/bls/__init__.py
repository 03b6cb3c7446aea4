"""bls-prune: dynamic data pruning for PyTorch with Batch Loss Score (BLS).

Three lines turn a training loop into a pruned one::

    handler = BLS(InfoBatch(train_data, num_epochs=E, prune_ratio=0.5), alpha=0.7).proxy()
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=64)
    loss = handler.update(criterion(model(x), y))   # in the loop, before backward()
"""

from bls import diagnostics
from bls.handler import AttributionWarning, FewBatchesWarning, PruningDataset, ResumeWarning
from bls.methods import BLS, PRUNE_TYPES, Full, InfoBatch, RandomPrune, SeTa, Static, prune
from bls.policies import EpochPlan, is_pruning_epoch
from bls.sampler import PruningSampler
from bls.schedule import EpochOneCycleLR
from bls.scores import BatchLossEMA, PerSampleLoss

__version__ = "0.1.0"

__all__ = [
    "BLS",
    "PRUNE_TYPES",
    "AttributionWarning",
    "BatchLossEMA",
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
