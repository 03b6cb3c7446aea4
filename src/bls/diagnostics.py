"""How well do pruning scores rank samples? Compare them with the true per-sample losses.

BLS scores every sample with an exponential moving average of the *batch* losses of the
batches it appeared in. Its claim is that this ranks samples almost as well as the samples' own
losses. This module measures the claim on any model and data set:

- :func:`per_sample_losses`: the true loss of every sample under the current model (one
  forward pass over the data, in ``eval`` mode, without gradients).
- :func:`spearman`: Spearman's rank correlation of two score vectors (ties get average ranks,
  as ``scipy.stats.spearmanr`` does; no scipy needed).
- :func:`prune_overlap`: the Jaccard overlap of the sets two score vectors would prune (the
  ``floor(prune_ratio * N)`` lowest-scored samples of each).
- :func:`hard_recall`: how many of the truly hardest samples the scores rank hardest.
- :class:`ScoreTracker`: an epoch-end callback that records all of the above for a handler.

Everything here reads the model and the handler; nothing changes their state (the model's
``training`` flag is restored) and no global random generator is used.

Example:
    >>> import torch
    >>> from bls.diagnostics import spearman, prune_overlap
    >>> spearman(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([10.0, 30.0, 20.0, 40.0]))
    0.8
    >>> prune_overlap(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([2.0, 1.0, 4.0, 3.0]), 0.5)
    1.0
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from bls._checks import check_fraction, check_int

__all__ = [
    "EpochDiagnostics",
    "ScoreTracker",
    "hard_recall",
    "per_sample_losses",
    "prune_overlap",
    "random_overlap",
    "rank",
    "spearman",
]

logger = logging.getLogger("bls")

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]


def _as_vector(name: str, values: ArrayLike) -> np.ndarray:
    """A 1-D float64 numpy copy of ``values``; rejects non-finite entries."""
    if isinstance(values, torch.Tensor):
        array = values.detach().to("cpu", torch.float64).numpy()
    else:
        array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D vector of scores, got shape {array.shape}")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(f"{name}: expected finite values, got {bad} NaN or inf entries")
    return array


def rank(values: ArrayLike) -> np.ndarray:
    """1-based ranks of ``values``; tied values share the average of their ranks.

    Args:
        values: a 1-D vector (tensor, array or sequence) of finite numbers.

    Returns:
        float64 array of the same length; ``rank([10, 20, 20, 5]) == [2, 3.5, 3.5, 1]``.
    """
    return _rank(_as_vector("values", values))


def _rank(array: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(array, return_inverse=True, return_counts=True)
    # The group of the k-th smallest distinct value occupies ranks end-count+1 .. end.
    ends = np.cumsum(counts)
    average = ends - (counts - 1) / 2.0
    return average[inverse.reshape(-1)]


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman's rank correlation of ``a`` and ``b`` (the Pearson correlation of their ranks).

    Ties get average ranks, so the result equals ``scipy.stats.spearmanr(a, b).statistic``.

    Args:
        a: 1-D scores, length ``N >= 2``, finite.
        b: 1-D scores, same length as ``a``, finite.

    Returns:
        A float in ``[-1, 1]``; ``nan`` when either vector is constant (its ranks have no
        spread, so no correlation is defined).
    """
    rank_a, rank_b = _rank(_as_vector("a", a)), _rank(_as_vector("b", b))
    if rank_a.shape != rank_b.shape:
        raise ValueError(
            f"b: expected the same length as a ({rank_a.shape[0]}), got {rank_b.shape[0]}"
        )
    if rank_a.shape[0] < 2:
        raise ValueError(f"a: a correlation needs at least 2 values, got {rank_a.shape[0]}")
    centred_a = rank_a - rank_a.mean()
    centred_b = rank_b - rank_b.mean()
    spread = math.sqrt(float(centred_a @ centred_a) * float(centred_b @ centred_b))
    if spread == 0.0:
        return math.nan
    return float(np.clip(float(centred_a @ centred_b) / spread, -1.0, 1.0))


def _lowest(scores: np.ndarray, count: int) -> np.ndarray:
    # A stable sort breaks ties by index, so equal scores give a reproducible set.
    return np.argsort(scores, kind="stable")[:count]


def prune_overlap(scores_a: ArrayLike, scores_b: ArrayLike, prune_ratio: float) -> float:
    """Jaccard overlap of the samples each score vector would prune.

    Each vector "prunes" its ``k = floor(prune_ratio * N)`` lowest-scored samples (the
    best-learned ones; ties broken by index). The result is ``|A & B| / |A | B|``: 1 when both
    prune the same samples, about ``prune_ratio / (2 - prune_ratio)`` for unrelated scores
    (see :func:`random_overlap`), 0 when the sets are disjoint.

    Args:
        scores_a: 1-D scores, length ``N``.
        scores_b: 1-D scores, length ``N``.
        prune_ratio: share of samples pruned, ``[0, 1)``.

    Returns:
        The Jaccard index in ``[0, 1]``; ``1.0`` when ``k == 0`` (both prune nothing).
    """
    first = _as_vector("scores_a", scores_a)
    second = _as_vector("scores_b", scores_b)
    if first.shape != second.shape:
        raise ValueError(
            f"scores_b: expected the same length as scores_a ({first.shape[0]}), "
            f"got {second.shape[0]}"
        )
    ratio = check_fraction("prune_ratio", prune_ratio, upper_inclusive=False)
    count = math.floor(ratio * first.shape[0])
    if count == 0:
        return 1.0
    pruned_a = np.zeros(first.shape[0], dtype=bool)
    pruned_b = np.zeros(first.shape[0], dtype=bool)
    pruned_a[_lowest(first, count)] = True
    pruned_b[_lowest(second, count)] = True
    return float((pruned_a & pruned_b).sum() / (pruned_a | pruned_b).sum())


def hard_recall(scores: ArrayLike, losses: ArrayLike, fraction: float = 0.1) -> float:
    """Share of the hardest samples that the scores also rank among the hardest.

    With ``k = max(1, floor(fraction * N))``: of the ``k`` samples with the highest true
    ``losses``, the share that are also among the ``k`` highest ``scores`` (ties broken by
    index). Pruning policies must keep these samples, so this is the part of the ranking that
    matters most; chance level is ``fraction``.

    Args:
        scores: 1-D scores, length ``N``.
        losses: 1-D true per-sample losses, length ``N``.
        fraction: share of samples counted as hardest, ``(0, 1)``.

    Returns:
        A float in ``[0, 1]``.
    """
    first = _as_vector("scores", scores)
    second = _as_vector("losses", losses)
    if first.shape != second.shape:
        raise ValueError(
            f"losses: expected the same length as scores ({first.shape[0]}), got {second.shape[0]}"
        )
    share = check_fraction("fraction", fraction, upper_inclusive=False)
    if share == 0.0:
        raise ValueError("fraction: expected a number in (0, 1), got 0.0")
    count = max(1, math.floor(share * first.shape[0]))
    # the highest k of x are the lowest k of -x
    top_scores = set(_lowest(-first, count).tolist())
    top_losses = _lowest(-second, count)
    return sum(int(i) in top_scores for i in top_losses) / count


def random_overlap(prune_ratio: float) -> float:
    """Expected :func:`prune_overlap` of two unrelated score vectors (large ``N``).

    Two independent random sets of ``r * N`` samples share ``r^2 * N`` on average, so the
    Jaccard index is ``r / (2 - r)``: the chance level to compare a measured overlap with.
    """
    ratio = check_fraction("prune_ratio", prune_ratio, upper_inclusive=False)
    return ratio / (2.0 - ratio)


def _default_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(outputs, targets, reduction="none")


@torch.no_grad()
def per_sample_losses(
    model: torch.nn.Module,
    dataset: Any,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The loss of every sample of ``dataset`` under ``model``, in dataset order.

    Runs the model in ``eval`` mode (BatchNorm uses its running statistics, dropout is off)
    without gradients, then restores the model's previous mode. Items are read by index, in
    order, and collated with torch's ``default_collate``; no DataLoader is built, so no random
    generator is touched. A pruning handler is unwrapped to the dataset it prunes.

    Args:
        model: maps a collated input batch to outputs.
        dataset: a map-style dataset whose items are ``(input, target)`` pairs.
        loss_fn: ``loss_fn(outputs, targets)`` returning one loss per sample (shape
            ``(batch,)``, or ``(batch, ...)``, which is averaged over the trailing dimensions).
            Default: cross-entropy with ``reduction='none'``.
        batch_size: samples per forward pass, ``>= 1``.
        device: where the inputs are moved before the forward pass.

    Returns:
        float32 tensor of shape ``(N,)`` on the CPU.
    """
    from bls.handler import PruningDataset  # local: diagnostics must not import-cycle the core

    if isinstance(dataset, PruningDataset):
        dataset = dataset.dataset
    batch_size = check_int("batch_size", batch_size, 1)
    loss_fn = _default_loss if loss_fn is None else loss_fn
    size = len(dataset)
    losses: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, size, batch_size):
            batch = default_collate(
                [dataset[i] for i in range(start, min(start + batch_size, size))]
            )
            if not isinstance(batch, (list, tuple)) or len(batch) < 2:
                raise TypeError(
                    "dataset: expected items that are (input, target) pairs, got "
                    f"{type(dataset[start]).__name__}"
                )
            inputs, targets = batch[0].to(device), batch[1].to(device)
            loss = loss_fn(model(inputs), targets)
            if loss.dim() == 0 or loss.shape[0] != targets.shape[0]:
                raise ValueError(
                    f"loss_fn: expected one loss per sample (length {targets.shape[0]}, "
                    f"reduction='none'), got shape {tuple(loss.shape)}"
                )
            losses.append(loss.reshape(loss.shape[0], -1).mean(dim=1).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(losses)


@dataclass
class EpochDiagnostics:
    """How a handler's scores compare with the true per-sample losses after one epoch.

    Attributes:
        epoch: the epoch that just ended (0-based).
        spearman: rank correlation of ``handler.scores`` with the true losses.
        overlap: ``{prune_ratio: Jaccard}`` of the lowest-scored sets (:func:`prune_overlap`).
        hard_recall: share of the 10% highest-loss samples among the 10% highest scores.
        kept: samples the epoch trained on.
        mean_loss: mean true loss over the data set.
    """

    epoch: int
    spearman: float
    overlap: dict[float, float]
    hard_recall: float
    kept: int
    mean_loss: float

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["overlap"] = {str(k): v for k, v in self.overlap.items()}
        return record


@dataclass
class ScoreTracker:
    """Epoch-end callback: compare a handler's scores with the true per-sample losses.

    Call it as ``tracker(epoch, handler, model)`` after each epoch's last ``update()``
    (the signature of ``bls.app.train``'s ``on_epoch_end``); every call appends one
    :class:`EpochDiagnostics` to :attr:`records`.

    Args:
        prune_ratios: the ratios at which :func:`prune_overlap` is reported.
        loss_fn: per-sample loss for :func:`per_sample_losses` (default cross-entropy).
        batch_size: forward-pass batch size for the true losses.
        device: device for the forward passes.
    """

    prune_ratios: tuple[float, ...] = (0.3, 0.5)
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    batch_size: int = 512
    device: torch.device | str = "cpu"
    records: list[EpochDiagnostics] = field(default_factory=list)

    def __call__(self, epoch: int, handler: Any, model: torch.nn.Module) -> None:
        true_losses = per_sample_losses(
            model, handler, self.loss_fn, batch_size=self.batch_size, device=self.device
        )
        scores = handler.scores.detach().cpu()
        kept = handler.history[-1]["kept"] if handler.history else len(handler)
        record = EpochDiagnostics(
            epoch=int(epoch),
            spearman=spearman(scores, true_losses),
            overlap={r: prune_overlap(scores, true_losses, r) for r in self.prune_ratios},
            hard_recall=hard_recall(scores, true_losses, 0.1),
            kept=int(kept),
            mean_loss=float(true_losses.mean()),
        )
        logger.debug("epoch %d: spearman %.3f", epoch, record.spearman)
        self.records.append(record)

    def mean_spearman(self, first_epoch: int = 1) -> float:
        """Mean correlation over the recorded epochs ``>= first_epoch`` (``nan`` if none)."""
        values = [r.spearman for r in self.records if r.epoch >= first_epoch]
        finite = [v for v in values if not math.isnan(v)]
        return float(np.mean(finite)) if finite else math.nan

    def mean_overlap(self, prune_ratio: float, first_epoch: int = 1) -> float:
        """Mean :func:`prune_overlap` at ``prune_ratio`` over epochs ``>= first_epoch``."""
        values = [r.overlap[prune_ratio] for r in self.records if r.epoch >= first_epoch]
        return float(np.mean(values)) if values else math.nan
