"""Score sources: how a training loss becomes per-sample scores.

A score source does two things each step, both on the loss's device and without any
host-device synchronisation:

* :meth:`ScoreSource.measure` turns the user's loss into the loss to back-propagate (weighted
  by the policy's per-sample weights) and a detached *measurement*;
* :meth:`ScoreSource.record` folds measurements into the score table. Under DDP it receives
  every rank's measurements, so all ranks keep identical scores.

Shapes: ``measure`` returns one value per sample (per-sample) or a 0-d batch loss (BLS).
``record`` takes ``indices`` of any shape (int64 or int32) and a measurement that broadcasts
against it: ``(ranks, batch)`` values for the per-sample source, ``(ranks, 1)`` (one per rank
and batch, or ``(ranks, batches, 1)`` for many batches at once) for the batch-loss EMA.
Non-finite measurements never enter the table: those entries keep their previous score and
are counted, and the handler warns once per epoch with the count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

__all__ = ["BatchLossEMA", "NoScore", "PerSampleLoss", "ScoreSource", "non_finite"]


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

    def measure_scalar(
        self, loss: torch.Tensor, batch_weights: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`measure`, with a 0-d measurement: only for batch-loss sources."""
        raise NotImplementedError(f"{type(self).__name__} measures per sample, not per batch")

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
        # ``.data``: the values without autograd, like ``detach()`` but not a dispatched op.
        return weighted.mean(), per_sample.data

    def record(
        self, scores: torch.Tensor, indices: torch.Tensor, measurement: torch.Tensor
    ) -> torch.Tensor:
        values = _as_dtype(measurement, scores.dtype).reshape(-1)
        flat = indices.reshape(-1)
        skip = non_finite(values)
        _write(scores, flat, torch.where(skip, scores.index_select(0, flat), values))
        return torch.count_nonzero(skip)


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
        returned, batch_loss = self.measure_scalar(loss, batch_weights)
        return returned, batch_loss.reshape(1)

    def measure_scalar(
        self, loss: torch.Tensor, batch_weights: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`measure` with a 0-d measurement (the batch loss, without autograd).

        ``batch_weights``: the batch's weights, or already their mean as a 0-d tensor (the
        order route computes every batch's mean weight once per epoch).
        """
        if batch_weights is None:
            batch_loss = loss.mean()  # a new tensor even for a scalar loss
            return batch_loss, batch_loss.data
        # The product is already a new tensor: a scalar loss needs no extra mean() node.
        batch_loss = loss if loss.dim() == 0 else loss.mean()
        mean_weight = batch_weights if batch_weights.dim() == 0 else batch_weights.mean()
        # ``.data``: the values without autograd, like ``detach()`` but not a dispatched op.
        return batch_loss * mean_weight, batch_loss.data

    def record(
        self, scores: torch.Tensor, indices: torch.Tensor, measurement: torch.Tensor
    ) -> torch.Tensor:
        values = _as_dtype(measurement, scores.dtype)
        skip = non_finite(values)
        flat = indices.reshape(-1)
        old = scores.index_select(0, flat).view(indices.shape)
        # lerp(old, L, 1 - alpha) = alpha * old + (1 - alpha) * L, in one kernel. A repeated
        # index reads the same old score and writes the same value: it is updated once.
        new = torch.where(skip, old, old.lerp(values, 1.0 - self.alpha))
        _write(scores, flat, new.reshape(-1))
        return torch.count_nonzero(skip)


def _write(scores: torch.Tensor, flat: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``scores[flat] = values`` with a deterministic winner for repeated indices.

    A step may hold one index twice (a padded DDP epoch can give a sample to two ranks). On the
    CPU ``index_put_`` writes in order, the same on every rank; on a GPU its winner is
    unspecified, so ranks could diverge: there the larger candidate wins (``scatter_reduce``
    with ``amax``), which is deterministic and needs no host synchronisation.
    """
    if scores.is_cuda:
        return scores.scatter_reduce_(0, flat.long(), values, reduce="amax", include_self=False)
    return scores.index_put_((flat,), values)


def _as_dtype(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # Tensor.to() costs a dispatch (about 1 us on CPU) even when it returns its input.
    return values if values.dtype == dtype else values.to(dtype)


def non_finite(values: torch.Tensor) -> torch.Tensor:
    """``~isfinite(values)`` in two cheap kernels: ``x * 0`` is 0 for finite x, NaN otherwise.

    ``torch.isfinite`` is a composite of several kernels; on the per-step path every kernel
    launch counts (``update()`` is budgeted at tens of microseconds on CPU).
    """
    return values.mul(0.0).ne(0.0)
