"""EpochOneCycleLR against torch's OneCycleLR and on epochs that pruning shortened."""

from __future__ import annotations

import math

import pytest
import torch

from bls.schedule import EpochOneCycleLR, one_cycle_value


def _sgd() -> torch.optim.SGD:
    return torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1, momentum=0.9)


def _torch_reference(epochs: int, steps: int, **kwargs: object) -> tuple[list[float], list[float]]:
    """Learning rate and momentum used by each optimizer step under torch's OneCycleLR."""
    optimizer = _sgd()
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.4, epochs=epochs, steps_per_epoch=steps, **kwargs
    )
    lrs, momenta = [], []
    for _ in range(epochs * steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        momenta.append(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        scheduler.step()
    return lrs, momenta


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"pct_start": 0.25, "anneal_strategy": "linear"},
        {"three_phase": True, "div_factor": 10.0, "final_div_factor": 100.0},
    ],
)
def test_full_epochs_match_torch_one_cycle(kwargs: dict[str, object]) -> None:
    epochs, steps = 4, 7
    expected_lr, expected_momentum = _torch_reference(epochs, steps, **kwargs)
    optimizer = _sgd()
    schedule = EpochOneCycleLR(optimizer, 0.4, epochs, steps, **kwargs)  # type: ignore[arg-type]
    got_lr, got_momentum = [], []
    for epoch in range(epochs):
        for step in range(steps):
            got_lr.append(schedule.set_step(epoch, step, steps))
            got_momentum.append(optimizer.param_groups[0]["momentum"])
    assert got_lr == pytest.approx(expected_lr, rel=1e-9, abs=1e-12)
    assert got_momentum == pytest.approx(expected_momentum, rel=1e-9)


def test_pruned_epochs_end_exactly_at_final_lr() -> None:
    # A known sequence of epoch lengths as InfoBatch produces them: full, pruned, annealing.
    lengths = [10, 6, 5, 7, 3, 10]
    max_lr, div, final_div = 0.2, 25.0, 1e4
    optimizer = _sgd()
    schedule = EpochOneCycleLR(
        optimizer, max_lr, len(lengths), 10, div_factor=div, final_div_factor=final_div
    )
    lrs = [
        [schedule.set_step(epoch, step, n) for step in range(n)] for epoch, n in enumerate(lengths)
    ]
    assert lrs[0][0] == pytest.approx(max_lr / div, rel=1e-12)
    assert lrs[-1][-1] == pytest.approx(max_lr / (div * final_div), rel=1e-9)
    # Each epoch starts and ends where the full-length schedule would on the same epoch grid.
    reference, _ = _torch_reference(len(lengths), 10, div_factor=div, final_div_factor=final_div)
    reference = [r * max_lr / 0.4 for r in reference]
    for epoch, epoch_lrs in enumerate(lrs):
        assert epoch_lrs[0] == pytest.approx(reference[epoch * 10], rel=1e-9)
        assert epoch_lrs[-1] == pytest.approx(reference[epoch * 10 + 9], rel=1e-9)
    # Independent check of one interior point: epoch 2 (5 steps), step 2 sits at 20 + 4.5.
    where = 20 + 2 * 9 / 4
    warm_end = 0.3 * 60 - 1
    pct = (where - warm_end) / (59 - warm_end)
    final = max_lr / (div * final_div)
    expected = final + (max_lr - final) / 2 * (math.cos(math.pi * pct) + 1)
    assert lrs[2][2] == pytest.approx(expected, rel=1e-12)


def test_stock_one_cycle_fails_on_pruned_epochs_where_helper_does_not() -> None:
    # The motivating bug: on epochs that pruning shortened, a stock OneCycleLR sized for full
    # epochs never reaches its final learning rate; EpochOneCycleLR, fed the same epochs, ends
    # exactly on it and runs each full epoch as the full-length schedule does.
    lengths = [10, 5, 5, 10]
    final_lr = 0.4 / 25 / 1e4
    reference, _ = _torch_reference(4, 10)  # the full-length run: 40 steps
    stock_optimizer, helper_optimizer = _sgd(), _sgd()
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        stock_optimizer, max_lr=0.4, epochs=4, steps_per_epoch=10
    )
    schedule = EpochOneCycleLR(helper_optimizer, 0.4, 4, 10)
    stock, helper = [], []
    for epoch, steps in enumerate(lengths):
        for step in range(steps):
            stock.append(stock_optimizer.param_groups[0]["lr"])
            helper.append(schedule.set_step(epoch, step, steps))
            stock_optimizer.step()
            scheduler.step()
    assert len(stock) == len(helper) == 30
    # The stock schedule is still at the 30th of its 40 steps when training ends.
    assert stock == pytest.approx(reference[:30], rel=1e-9)
    assert stock[-1] > 100 * final_lr
    # The helper follows the full-length run on the full epochs 0 and 3 and ends at its end.
    assert helper[:10] == pytest.approx(reference[:10], rel=1e-9)
    assert helper[-10:] == pytest.approx(reference[-10:], rel=1e-9)
    assert helper[-1] == pytest.approx(final_lr, rel=1e-9)


def test_adam_betas_are_cycled() -> None:
    optimizer = torch.optim.Adam(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    schedule = EpochOneCycleLR(optimizer, 0.1, 2, 5, base_momentum=0.8, max_momentum=0.9)
    assert optimizer.param_groups[0]["betas"][0] == pytest.approx(0.9)
    schedule.set_step(0, 2, 5)  # position 2 of 10; the warm-up ends at step 2
    assert optimizer.param_groups[0]["betas"] == pytest.approx((0.8, 0.999))


def test_one_step_epoch_and_epochs_past_the_end() -> None:
    optimizer = _sgd()
    schedule = EpochOneCycleLR(optimizer, 0.1, 3, 4)
    assert schedule.position(1, 0, 1) == 7.0
    assert schedule.position(5, 0, 3) == 11.0
    assert schedule.lr_at(2, 3, 4) == [pytest.approx(0.1 / 25 / 1e4)]


def test_one_cycle_value_matches_formula_at_the_peak() -> None:
    value = one_cycle_value(29.0, 100, start=0.01, peak=1.0, end=0.0, pct_start=0.3)
    assert value == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs"),
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
        ({"pct_start": 0.0}, "pct_start"),
        ({"pct_start": 1.0}, "pct_start"),
        ({"anneal_strategy": "step"}, "anneal_strategy"),
        ({"max_lr": -1.0}, "max_lr"),
        ({"max_lr": [0.1, 0.2]}, "max_lr"),
        ({"epochs": 1, "steps_per_epoch": 1}, "at least 2 steps"),
    ],
)
def test_rejects_bad_settings(kwargs: dict[str, object], match: str) -> None:
    settings: dict[str, object] = {"max_lr": 0.1, "epochs": 2, "steps_per_epoch": 3}
    settings.update(kwargs)
    with pytest.raises(ValueError, match=match):
        EpochOneCycleLR(_sgd(), **settings)  # type: ignore[arg-type]


def test_rejects_step_outside_epoch_and_optimizer_without_momentum() -> None:
    schedule = EpochOneCycleLR(_sgd(), 0.1, 2, 3)
    with pytest.raises(ValueError, match="step: expected 0 <= step < steps_in_epoch=3"):
        schedule.set_step(0, 3, 3)
    plain = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    del plain.param_groups[0]["momentum"]
    with pytest.raises(ValueError, match="cycle_momentum"):
        EpochOneCycleLR(plain, 0.1, 2, 3)
