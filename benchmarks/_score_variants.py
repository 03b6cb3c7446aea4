"""Black-box score sources measured by the study (``benchmarks/study.py``), not shipped in ``bls``.

- :class:`BatchResidual`: the least-squares view of the batch loss. The loss ``L`` of a batch
  is the mean of its samples' losses, so scores ``s`` that explain the losses satisfy
  ``mean_j s_j = L`` on every batch. One stochastic-gradient step on ``(L - mean_j s_j)^2``
  (the factor ``2 / B`` of the gradient folded into the step size ``eta``) moves every sample
  of the batch by the same amount::

      s_i <- s_i + eta * (L - mean_j s_j)        for each sample i of the batch

  With ``eta = 1`` this is the Kaczmarz projection onto ``{s : mean_j s_j = L}``. Unlike the
  EMA of :class:`bls.scores.BatchLossEMA` (``s_i <- s_i + (1 - alpha) * (L - s_i)``), it
  leaves the differences between the samples of a batch unchanged, so what earlier batches
  taught about each sample is kept rather than shrunk by ``alpha`` at every visit. On a batch
  whose scores are all equal the two rules give the same step when ``eta = 1 - alpha``,
  which is how the study pairs them.
- :class:`ScorePanel`: several batch-loss sources fed by the same run. Without pruning the
  training does not depend on the scores, so one run can score every alpha and every rule at
  once; each member keeps its own table, and the handler's own scores follow the first.
- :class:`PanelTracker`: the :class:`bls.diagnostics.ScoreTracker` measurements for every
  member of a panel, with the true per-sample losses computed once per epoch.

Shapes follow :mod:`bls.scores`: ``indices`` is ``(..., batch)`` int64, one batch per row of
the last dimension (``(rows, batch)``, or ``(ranks, batches, batch)`` when the handler folds a
whole epoch of batches in at once; within an epoch of one process no index repeats, so the
rows are independent), and the measurement holds one batch loss per row (``(..., 1)``). A
flat index list (the explicit-indices route, which no longer says which samples shared a
batch) is refused: the study uses the order route only. Scores are float32 and start at 0, as
BLS's do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from bls.diagnostics import hard_recall, per_sample_losses, prune_overlap, spearman
from bls.scores import BatchLossEMA, ScoreSource

_BLS = BatchLossEMA()


@dataclass(frozen=True)
class BatchResidual(ScoreSource):
    """Every sample of a batch moves by ``eta`` times the batch's residual ``L - mean(score)``.

    Args:
        eta: step size in ``(0, 1]``; 1 makes each batch's mean score equal its loss.
    """

    name: ClassVar[str] = "bls-residual"
    records: ClassVar[bool] = True
    eta: float = 0.1

    def __post_init__(self) -> None:
        if not (isinstance(self.eta, (int, float)) and 0.0 < self.eta <= 1.0):
            raise ValueError(f"eta: expected a number in (0, 1], got {self.eta!r}")

    def initial_score(self, policy_default: float) -> float:
        return 0.0

    def measure(
        self, loss: torch.Tensor, batch_weights: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # The same loss to back-propagate and the same measurement (the scalar batch loss) as
        # BLS: only the rule that records it differs.
        return _BLS.measure(loss, batch_weights)

    def measure_scalar(
        self, loss: torch.Tensor, batch_weights: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return _BLS.measure_scalar(loss, batch_weights)

    def record(
        self, scores: torch.Tensor, indices: torch.Tensor, measurement: torch.Tensor
    ) -> torch.Tensor:
        if indices.dim() < 2:
            # The rule needs each batch's mean score, so it needs to know the batches.
            raise ValueError(
                f"indices: expected (..., batch) with one batch per row, got shape "
                f"{tuple(indices.shape)}"
            )
        values = measurement.to(scores.dtype).reshape(*indices.shape[:-1], 1)
        skip = values.mul(0.0).ne(0.0)  # non-finite batch losses leave their rows unchanged
        flat = indices.reshape(-1)
        old = scores.index_select(0, flat).view(indices.shape)
        step = self.eta * (values - old.mean(dim=-1, keepdim=True))
        new = torch.where(skip, old, old + step)
        # A repeated index in a row reads the same old score and gets the same new value.
        scores.index_put_((flat,), new.reshape(-1))
        return torch.count_nonzero(skip)


@dataclass(frozen=True)
class ScorePanel(ScoreSource):
    """Several batch-loss score sources recorded side by side from one run.

    Args:
        members: ``(label, source)`` pairs; every source takes the scalar batch loss
            (``per_sample`` false). The handler's scores follow the first member.
    """

    name: ClassVar[str] = "bls-panel"
    records: ClassVar[bool] = True
    members: tuple[tuple[str, ScoreSource], ...] = ()
    tables: dict[str, torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.members or any(source.per_sample for _, source in self.members):
            raise ValueError("members: expected at least one batch-loss score source")

    def initial_score(self, policy_default: float) -> float:
        return self.members[0][1].initial_score(policy_default)

    def measure(
        self, loss: torch.Tensor, batch_weights: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.members[0][1].measure(loss, batch_weights)

    def measure_scalar(
        self, loss: torch.Tensor, batch_weights: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.members[0][1].measure_scalar(loss, batch_weights)

    def record(
        self, scores: torch.Tensor, indices: torch.Tensor, measurement: torch.Tensor
    ) -> torch.Tensor:
        if not self.tables:
            for label, source in self.members:
                start = source.initial_score(0.0)
                self.tables[label] = torch.full_like(scores, start)
        skipped = torch.zeros((), dtype=torch.int64, device=scores.device)
        for label, source in self.members:
            skipped = source.record(self.tables[label], indices, measurement)
        scores.copy_(self.tables[self.members[0][0]])
        return skipped

    def scores_of(self, label: str, size: int) -> torch.Tensor:
        """Member ``label``'s current scores (its initial ones before the first record)."""
        if label in self.tables:
            return self.tables[label]
        source = dict(self.members)[label]
        return torch.full((size,), source.initial_score(0.0))


@dataclass
class PanelTracker:
    """Epoch-end callback: Spearman, overlap and hard recall of every panel member.

    Call as ``tracker(epoch, handler, model)``; ``records[label]`` gets one dict per epoch
    with ``epoch``, ``spearman``, ``overlap50`` and ``hard_recall``. Reading
    ``handler.scores`` first folds the epoch's pending batches into the panel's tables.
    """

    panel: ScorePanel
    records: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def __call__(self, epoch: int, handler: Any, model: torch.nn.Module) -> None:
        handler.scores  # noqa: B018 - folds the deferred batches into every member's table
        true_losses = per_sample_losses(model, handler, batch_size=512)
        for label, _ in self.panel.members:
            scores = self.panel.scores_of(label, len(handler)).detach().cpu()
            self.records.setdefault(label, []).append(
                {
                    "epoch": epoch,
                    "spearman": spearman(scores, true_losses),
                    "overlap50": prune_overlap(scores, true_losses, 0.5),
                    "hard_recall": hard_recall(scores, true_losses, 0.1),
                }
            )

    def mean(self, label: str, key: str, first_epoch: int = 1) -> float:
        values = [r[key] for r in self.records.get(label, []) if r["epoch"] >= first_epoch]
        finite = [v for v in values if not math.isnan(v)]
        return float(np.mean(finite)) if finite else math.nan
