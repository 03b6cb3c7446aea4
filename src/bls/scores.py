"""Score sources: how a training loss becomes per-sample scores.

A score source does two things each step, both on the loss's device and without any
host-device synchronisation:

* :meth:`ScoreSource.measure` turns the user's loss into the loss to back-propagate (weighted
  by the policy's per-sample weights) and a detached *measurement*;
* :meth:`ScoreSource.record` folds measurements into the score table. Under DDP it receives
  every rank's measurements, so all ranks keep identical scores.

Shapes: ``indices`` is ``(ranks, batch)`` int64; a measurement is ``(ranks, batch)`` for the
per-sample source and ``(ranks, 1)`` for the batch-loss EMA, so one broadcast serves both.
Non-finite measurements never enter the table: those entries keep their previous score and
are counted, and the handler warns once per epoch with the count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

__all__ = ["BatchLossEMA", "NoScore", "PerSampleLoss", "ScoreSource"]


@dataclass(frozen=True)
class ScoreSource:
    """Base class. Subclasses define how losses are measured and recorded."""

    name: ClassVar[str] = "none"
    #: Whether this source records anything (the no-pruning baseline does not).
    records: ClassVar[bool] = False
    #: Whether ``record`` takes one value per sample (``True``) or one per batch.
    per_sample: ClassVar[bool] = False

    def initial_score(self, policy_default: float) -> float:
        return policy_default

    def measure(
        self, loss: torch.Tensor, batch_weights: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(loss to back-propagate, detached measurement or None)``."""
        return loss.mean(), None

    def record(
        self, scores: torch.Tensor, indices: torch.Tensor, measurement: torch.Tensor
    ) -> torch.Tensor:
        """Write ``measurement`` into ``scores`` at ``indices``; return the non-finite count."""
        return torch.zeros((), dtype=torch.int64, device=scores.device)


NoScore = ScoreSource


@dataclass(frozen=True)
class PerSampleLoss(ScoreSource):
    """The original InfoBatch/SeTa score: each sample's own last loss.

    ``measure`` takes a loss of shape ``(batch,)`` (or ``(batch, ...)``, averaged over the
    trailing dimensions) from ``reduction='none'`` and returns ``mean(loss_i * weight_i)``.
    """

    name: ClassVar[str] = "per-sample"
    records: ClassVar[bool] = True
    per_sample: ClassVar[bool] = True

    def measure(
        self, loss: torch.Tensor, batch_weights: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        per_sample = loss.reshape(loss.shape[0], -1).mean(dim=1) if loss.dim() > 1 else loss
        weighted = per_sample if batch_weights is None else per_sample * batch_weights
        return weighted.mean(), per_sample.detach()

    def record(
        self, scores: torch.Tensor, indices: torch.Tensor, measurement: torch.Tensor
    ) -> torch.Tensor:
        values = measurement.to(scores.dtype)
        finite = torch.isfinite(values)
        scores[indices] = torch.where(finite, values, scores[indices])
        return (~finite).sum()


@dataclass(frozen=True)
class BatchLossEMA(ScoreSource):
    """BLS: every sample of a batch moves toward the batch's mean loss.

    ``score[i] <- alpha * score[i] + (1 - alpha) * L`` for each distinct index ``i`` of the
    batch, where ``L`` is the scalar mean loss (a vector loss is averaged first). The step
    returns ``L * mean(weight_i)``. Scores start at 0.
    """

    name: ClassVar[str] = "bls"
    records: ClassVar[bool] = True
    alpha: float = 0.9

    def initial_score(self, policy_default: float) -> float:
        return 0.0

    def measure(
        self, loss: torch.Tensor, batch_weights: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_loss = loss.mean()
        returned = batch_loss if batch_weights is None else batch_loss * batch_weights.mean()
        return returned, batch_loss.detach().reshape(1)

    def record(
        self, scores: torch.Tensor, indices: torch.Tensor, measurement: torch.Tensor
    ) -> torch.Tensor:
        values = measurement.to(scores.dtype)
        finite = torch.isfinite(values)
        old = scores[indices]
        # lerp(old, L, 1 - alpha) = alpha * old + (1 - alpha) * L, in one kernel. A repeated
        # index reads the same old score and writes the same value: it is updated once.
        new = torch.where(finite, old.lerp(values.expand_as(old), 1.0 - self.alpha), old)
        scores[indices] = new
        return finite.logical_not().sum()
