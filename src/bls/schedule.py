"""A one-cycle learning-rate schedule that stays correct when pruning shortens epochs.

Step-based schedules such as ``torch.optim.lr_scheduler.OneCycleLR`` are built for a fixed
``steps_per_epoch``. Under dynamic pruning every epoch has its own number of steps (fewer
while pruning, all of them while annealing), so a stock ``OneCycleLR`` either stops early
(it never reaches its final learning rate) or raises because it was stepped too often.

:class:`EpochOneCycleLR` keeps the schedule on the epoch grid instead: epoch ``e`` always
covers the same stretch ``[e * S, (e + 1) * S - 1]`` of a ``E * S``-step one-cycle curve,
where ``S`` is the number of steps of an unpruned epoch, and the ``n_e`` steps that epoch
actually runs are spread evenly over that stretch (first step at its start, last step at its
end). Consequences, all tested:

* with no pruning (``n_e == S`` for every epoch) the learning rates are exactly those of
  ``OneCycleLR(total_steps=E * S)``;
* whatever the epoch lengths, the last step of the last epoch runs at the final learning rate
  ``max_lr / (div_factor * final_div_factor)`` and the first step at ``max_lr / div_factor``;
* the schedule is stateless (a function of epoch, step and epoch length), so resuming needs no
  scheduler state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch.optim import Optimizer

from bls._checks import check_fraction, check_int, check_positive

__all__ = ["EpochOneCycleLR", "one_cycle_value"]


def _anneal(start: float, end: float, pct: float, strategy: str) -> float:
    if strategy == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)
    return (end - start) * pct + start


def one_cycle_value(
    position: float,
    total_steps: int,
    *,
    start: float,
    peak: float,
    end: float,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    three_phase: bool = False,
) -> float:
    """The value of ``OneCycleLR``'s curve at a (possibly fractional) step ``position``.

    Follows ``torch.optim.lr_scheduler.OneCycleLR`` exactly: the curve rises from ``start``
    to ``peak`` until step ``pct_start * total_steps - 1`` and falls to ``end`` at step
    ``total_steps - 1`` (with ``three_phase``, it first falls back to ``start`` and then to
    ``end``). Used for momentum as well, with ``start``/``peak`` swapped.

    Args:
        position: step on the curve, ``0 <= position <= total_steps - 1``.
        total_steps: length of the curve in steps, ``>= 2``.
        start: value at step 0.
        peak: value at the end of the warm-up phase.
        end: value at the last step.
        pct_start: share of the curve spent warming up, ``(0, 1)``.
        anneal_strategy: ``"cos"`` or ``"linear"``.
        three_phase: use the three-phase variant of ``OneCycleLR``.

    Returns:
        The value at ``position``.
    """
    warm_end = float(pct_start * total_steps) - 1.0
    if three_phase:
        phases = [
            (0.0, warm_end, start, peak),
            (warm_end, 2.0 * warm_end, peak, start),
            (2.0 * warm_end, total_steps - 1.0, start, end),
        ]
    else:
        phases = [(0.0, warm_end, start, peak), (warm_end, total_steps - 1.0, peak, end)]
    for number, (phase_start, phase_end, value_start, value_end) in enumerate(phases):
        if position <= phase_end or number == len(phases) - 1:
            pct = (position - phase_start) / (phase_end - phase_start)
            return _anneal(value_start, value_end, pct, anneal_strategy)
    raise AssertionError("unreachable: the last phase always matches")


class EpochOneCycleLR:
    """One-cycle learning rate (and momentum) on the epoch grid, for epochs of any length.

    Call :meth:`set_step` before every ``optimizer.step()`` with the epoch, the step within the
    epoch and the epoch's number of steps (``len(loader)`` once the epoch's first batch was
    drawn). The learning rates equal ``OneCycleLR(total_steps=epochs * steps_per_epoch)`` when
    every epoch is full, and end exactly at the final learning rate on the last step of the
    last epoch whatever the epoch lengths.

    Args:
        optimizer: the optimizer whose parameter groups receive ``lr`` (and momentum).
        max_lr: peak learning rate, one value or one per parameter group.
        epochs: planned number of epochs ``E >= 1``.
        steps_per_epoch: steps ``S >= 1`` of an unpruned epoch (``ceil(N / batch_size)``).
        pct_start: share of the schedule spent increasing the learning rate, ``(0, 1)``.
        anneal_strategy: ``"cos"`` or ``"linear"``.
        cycle_momentum: cycle ``momentum`` (SGD) or ``betas[0]`` (Adam-like) inversely.
        base_momentum: momentum at the peak learning rate.
        max_momentum: momentum at the start and the end.
        div_factor: initial learning rate is ``max_lr / div_factor``.
        final_div_factor: final learning rate is ``max_lr / (div_factor * final_div_factor)``.
        three_phase: use ``OneCycleLR``'s three-phase variant.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> schedule = EpochOneCycleLR(optimizer, max_lr=0.1, epochs=2, steps_per_epoch=10)
        >>> for epoch, steps in enumerate([4, 10]):      # a pruned epoch, then a full one
        ...     for step in range(steps):
        ...         lr = schedule.set_step(epoch, step, steps)
        ...         optimizer.step()
        >>> abs(lr - 0.1 / (25 * 1e4)) < 1e-12
        True
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | Sequence[float],
        epochs: int,
        steps_per_epoch: int,
        *,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
    ) -> None:
        self.optimizer = optimizer
        self.epochs = check_int("epochs", epochs, 1)
        self.steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, 1)
        pct = check_fraction("pct_start", pct_start, upper_inclusive=False)
        if pct <= 0.0:
            raise ValueError(f"pct_start: expected a number in (0, 1), got {pct_start}")
        if self.epochs * self.steps_per_epoch < 2:
            raise ValueError(
                f"epochs * steps_per_epoch: a one-cycle schedule needs at least 2 steps, got "
                f"epochs={epochs}, steps_per_epoch={steps_per_epoch}"
            )
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                f"anneal_strategy: expected 'cos' or 'linear', got {anneal_strategy!r}"
            )
        groups = optimizer.param_groups
        peaks = list(max_lr) if isinstance(max_lr, Sequence) else [max_lr] * len(groups)
        if len(peaks) != len(groups):
            raise ValueError(
                f"max_lr: expected one value or {len(groups)} (one per parameter group), "
                f"got {len(peaks)}"
            )
        self.pct_start = pct
        self.anneal_strategy = anneal_strategy
        self.three_phase = bool(three_phase)
        self.max_lrs = [check_positive("max_lr", peak) for peak in peaks]
        self.div_factor = check_positive("div_factor", div_factor)
        self.final_div_factor = check_positive("final_div_factor", final_div_factor)
        self.cycle_momentum = bool(cycle_momentum)
        self.base_momentum = float(base_momentum)
        self.max_momentum = float(max_momentum)
        if self.cycle_momentum and not all(
            "momentum" in group or "betas" in group for group in groups
        ):
            raise ValueError(
                "cycle_momentum: the optimizer has neither 'momentum' nor 'betas'; pass "
                "cycle_momentum=False"
            )
        self.set_step(0, 0, self.steps_per_epoch)

    @property
    def total_steps(self) -> int:
        """Length ``E * S`` of the underlying one-cycle curve."""
        return self.epochs * self.steps_per_epoch

    def position(self, epoch: int, step: int, steps_in_epoch: int) -> float:
        """Where step ``step`` of an epoch of ``steps_in_epoch`` steps lies on the curve.

        Epoch ``e`` covers ``[e * S, (e + 1) * S - 1]``; its steps are spread evenly from the
        start to the end of that stretch. A one-step epoch sits at the end of its stretch.
        Epochs past ``epochs`` stay at the end of the curve.
        """
        steps_in_epoch = check_int("steps_in_epoch", steps_in_epoch, 1)
        if not 0 <= step < steps_in_epoch:
            raise ValueError(
                f"step: expected 0 <= step < steps_in_epoch={steps_in_epoch}, got {step}"
            )
        epoch = check_int("epoch", epoch, 0)
        last = self.total_steps - 1.0
        if epoch >= self.epochs:
            return last
        span = self.steps_per_epoch - 1.0
        offset = span if steps_in_epoch == 1 else step * span / (steps_in_epoch - 1)
        return min(epoch * self.steps_per_epoch + offset, last)

    def lr_at(self, epoch: int, step: int, steps_in_epoch: int) -> list[float]:
        """The learning rate of every parameter group at that step (nothing is changed)."""
        where = self.position(epoch, step, steps_in_epoch)
        return [
            self._curve(where, peak / self.div_factor, peak, self._final(peak))
            for peak in self.max_lrs
        ]

    def set_step(self, epoch: int, step: int, steps_in_epoch: int) -> float:
        """Write the learning rate (and momentum) of that step into the optimizer.

        Args:
            epoch: the epoch, ``0 .. epochs - 1``.
            step: the step within the epoch, ``0 .. steps_in_epoch - 1``.
            steps_in_epoch: how many steps this epoch runs (``len(loader)``).

        Returns:
            The learning rate of the first parameter group.
        """
        where = self.position(epoch, step, steps_in_epoch)
        for group, peak in zip(self.optimizer.param_groups, self.max_lrs, strict=True):
            group["lr"] = self._curve(where, peak / self.div_factor, peak, self._final(peak))
            if self.cycle_momentum:
                momentum = self._curve(
                    where, self.max_momentum, self.base_momentum, self.max_momentum
                )
                if "betas" in group:
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        """The schedule's settings (it has no progress state: positions come from the caller)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def _final(self, peak: float) -> float:
        return peak / (self.div_factor * self.final_div_factor)

    def _curve(self, where: float, start: float, peak: float, end: float) -> float:
        return one_cycle_value(
            where,
            self.total_steps,
            start=start,
            peak=peak,
            end=end,
            pct_start=self.pct_start,
            anneal_strategy=self.anneal_strategy,
            three_phase=self.three_phase,
        )
