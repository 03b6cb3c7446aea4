"""The score sources of ``bls.scores`` (docs/design.md, 'Score sources').

First each source on its own: ``measure`` (the loss to back-propagate and the detached
measurement) and ``record`` (the measurement written into a score table), compared with the
rules written out here in float64, or with literal values. Tolerances: one float32 operation
against its float64 formula agrees to ``rel=1e-6``; a float32 EMA over many steps to
``rtol=1e-5, atol=1e-6``. Then the same rules through the handler and a stock DataLoader, whose
batches are replayed independently (``tests/_replay.py``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
from _data import IndexedDataset, sample_loss
from _replay import bls_replay
from torch.utils.data import DataLoader

from bls import BLS, Full, InfoBatch, RandomPrune, SeTa
from bls.policies import keep_ratio_of
from bls.scores import BatchLossEMA, NoScore, PerSampleLoss, ScoreSource

EPOCHS = 5

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _random(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- the sources' identities


def test_names_flags_and_initial_scores() -> None:
    assert NoScore is ScoreSource  # the no-pruning baseline's source is the base class
    assert (NoScore.name, NoScore.records, NoScore.per_sample) == ("none", False, False)
    assert (PerSampleLoss.name, PerSampleLoss.records, PerSampleLoss.per_sample) == (
        "per-sample",
        True,
        True,
    )
    assert (BatchLossEMA.name, BatchLossEMA.records, BatchLossEMA.per_sample) == (
        "bls",
        True,
        False,
    )
    # The policy's default initial score (3.0 for every policy), except BLS, which starts at 0.
    assert NoScore().initial_score(3.0) == 3.0
    assert PerSampleLoss().initial_score(3.0) == 3.0
    assert BatchLossEMA(alpha=0.5).initial_score(3.0) == 0.0
    assert BatchLossEMA().alpha == 0.9
    with pytest.raises(dataclasses.FrozenInstanceError):
        BatchLossEMA(alpha=0.5).alpha = 0.7  # type: ignore[misc]


def test_handlers_start_from_the_sources_initial_scores() -> None:
    per_sample = InfoBatch(IndexedDataset(9), num_epochs=2)
    assert per_sample.scores.dtype == torch.float32
    assert per_sample.scores.tolist() == [3.0] * 9
    bls = BLS(InfoBatch(IndexedDataset(9), num_epochs=2), alpha=0.5).proxy()
    assert bls.scores.dtype == torch.float32
    assert bls.scores.tolist() == [0.0] * 9  # proxy() resets every score


# ---------------------------------------------------------------- NoScore


def test_no_score_returns_the_mean_and_records_nothing() -> None:
    loss = torch.tensor([1.0, 2.0, 6.0]).requires_grad_()
    returned, measurement = NoScore().measure(loss, torch.tensor([2.0, 2.0, 2.0]))
    assert measurement is None
    assert returned.item() == 3.0 and returned is not loss
    scores = torch.full((4,), 3.0)
    count = NoScore().record(scores, torch.tensor([[0, 1, 2]]), torch.tensor([[9.0, 9.0, 9.0]]))
    assert count.dtype == torch.int64 and count.item() == 0
    assert scores.tolist() == [3.0] * 4


def test_full_handler_returns_the_mean_loss_and_never_moves_a_score() -> None:
    handler = Full(IndexedDataset(12), num_epochs=2)
    before = handler.scores.clone()
    for _ in range(2):
        for _, index in DataLoader(handler, sampler=handler.sampler, batch_size=4):
            losses = index.float() * 2.0
            returned = handler.update(losses)
            assert returned is not losses
            assert returned.item() == pytest.approx(2.0 * index.double().mean().item(), rel=1e-6)
    assert torch.equal(handler.scores, before)
    assert [record["kept"] for record in handler.history] == [12, 12]


# ---------------------------------------------------------------- PerSampleLoss.measure


def test_per_sample_measure_weighted_mean_and_detached_losses() -> None:
    loss = _random(6).requires_grad_()
    weights = torch.tensor([1.0, 2.5, 1.0, 2.5, 2.5, 1.0])
    before = loss.detach().clone()
    returned, measurement = PerSampleLoss().measure(loss, weights)
    expected = (before.double() * weights.double()).mean().item()
    assert returned.shape == () and returned.dtype == torch.float32
    assert returned.item() == pytest.approx(expected, rel=1e-6)
    assert measurement is not None and not measurement.requires_grad
    assert torch.equal(measurement, before)
    assert torch.equal(loss.detach(), before)  # never modified in place
    returned.backward()
    assert loss.grad is not None
    torch.testing.assert_close(loss.grad.double(), weights.double() / 6, rtol=1e-6, atol=0)


def test_per_sample_measure_without_weights_is_a_new_mean() -> None:
    loss = torch.tensor([0.5, 1.5, 4.0])
    returned, measurement = PerSampleLoss().measure(loss, None)
    assert returned is not loss and returned.item() == 2.0
    assert measurement is not None and measurement.tolist() == [0.5, 1.5, 4.0]


def test_per_sample_measure_averages_trailing_dimensions() -> None:
    loss = _random(4, 3, 2, seed=1)  # (batch, ...) e.g. a per-pixel loss
    weights = torch.tensor([1.0, 2.0, 1.0, 2.0])
    returned, measurement = PerSampleLoss().measure(loss, weights)
    per_sample = loss.double().reshape(4, 6).mean(dim=1)
    assert measurement is not None and measurement.shape == (4,)
    torch.testing.assert_close(measurement.double(), per_sample, rtol=1e-6, atol=0)
    expected = (per_sample * weights.double()).mean().item()
    assert returned.item() == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------- PerSampleLoss.record


def test_per_sample_record_writes_each_samples_own_loss() -> None:
    scores = torch.full((8,), 3.0)
    count = PerSampleLoss().record(
        scores, torch.tensor([[6, 1, 4]]), torch.tensor([[0.25, 1.5, 7.0]])
    )
    assert scores.tolist() == [3.0, 1.5, 3.0, 3.0, 7.0, 3.0, 0.25, 3.0]
    assert count.dtype == torch.int64 and count.item() == 0
    # Two ranks' batches of one step: (ranks, batch) indices and values.
    PerSampleLoss().record(
        scores, torch.tensor([[0, 2], [3, 5]]), torch.tensor([[1.0, 2.0], [4.0, 8.0]])
    )
    assert scores.tolist() == [1.0, 1.5, 2.0, 4.0, 7.0, 8.0, 0.25, 3.0]


def test_per_sample_record_casts_to_the_score_dtype() -> None:
    scores = torch.zeros(3)
    PerSampleLoss().record(scores, torch.tensor([[1]]), torch.tensor([[0.1]], dtype=torch.float64))
    assert scores.dtype == torch.float32
    assert scores[1].item() == torch.tensor(0.1, dtype=torch.float32).item()
    bf16 = torch.tensor([[0.75]], dtype=torch.bfloat16)
    PerSampleLoss().record(scores, torch.tensor([[2]]), bf16)
    assert scores.tolist()[2] == 0.75


def test_per_sample_record_skips_non_finite_values() -> None:
    scores = torch.full((6,), 5.0)
    values = torch.tensor([[float("nan"), 2.0, float("inf"), float("-inf"), 0.0]])
    count = PerSampleLoss().record(scores, torch.tensor([[0, 1, 2, 3, 4]]), values)
    assert scores.tolist() == [5.0, 2.0, 5.0, 5.0, 0.0, 5.0]
    assert count.item() == 3


def test_per_sample_record_duplicate_index_keeps_the_last_write_on_cpu() -> None:
    # docs/design.md, 'Duplicate indices': one step holding an index twice (a padded DDP
    # epoch) keeps the last write on the CPU, the same on every rank.
    for values, want in (([1.0, 2.0], 2.0), ([2.0, 1.0], 1.0)):
        scores = torch.zeros(5)
        PerSampleLoss().record(scores, torch.tensor([[3, 3]]), torch.tensor([values]))
        assert scores.tolist() == [0.0, 0.0, 0.0, want, 0.0]


@cuda
def test_per_sample_record_duplicate_index_keeps_the_larger_value_on_cuda() -> None:
    for values in ([1.0, 2.0], [2.0, 1.0]):
        scores = torch.zeros(5, device="cuda")
        indices = torch.tensor([[3, 3, 1]], device="cuda")
        PerSampleLoss().record(scores, indices, torch.tensor([[*values, 0.5]], device="cuda"))
        assert scores.cpu().tolist() == [0.0, 0.5, 0.0, 2.0, 0.0]


# ---------------------------------------------------------------- BatchLossEMA.measure


def test_bls_measure_scalar_loss_without_weights_is_a_new_tensor() -> None:
    loss = torch.tensor(2.5, requires_grad=True)
    returned, measurement = BatchLossEMA(alpha=0.5).measure(loss, None)
    assert returned is not loss and returned.item() == 2.5
    assert measurement is not None and measurement.shape == (1,)
    assert measurement.tolist() == [2.5] and not measurement.requires_grad


def test_bls_measure_vector_loss_is_averaged_first() -> None:
    loss = _random(2, 3, seed=2).requires_grad_()
    weights = torch.tensor([1.0, 2.0, 2.0, 1.0])  # the batch's weights, one per sample
    before = loss.detach().clone()
    returned, measurement = BatchLossEMA(alpha=0.5).measure(loss, weights)
    batch_loss = before.double().mean().item()
    assert measurement is not None
    assert measurement.item() == pytest.approx(batch_loss, rel=1e-6)
    assert returned.item() == pytest.approx(batch_loss * 1.5, rel=1e-6)
    assert torch.equal(loss.detach(), before)  # never modified in place
    returned.backward()
    assert loss.grad is not None
    torch.testing.assert_close(loss.grad, torch.full((2, 3), 1.5 / 6), rtol=1e-6, atol=0)


def test_bls_measure_scalar_loss_times_mean_weight() -> None:
    loss = torch.tensor(0.8, requires_grad=True)
    returned, measurement = BatchLossEMA(alpha=0.5).measure(loss, torch.tensor([1.0, 3.0]))
    assert returned is not loss
    assert returned.item() == pytest.approx(0.8 * 2.0, rel=1e-6)
    assert measurement is not None and measurement.item() == pytest.approx(0.8, rel=1e-7)
    returned.backward()
    assert loss.grad is not None and loss.grad.item() == 2.0
    assert loss.item() == pytest.approx(0.8, rel=1e-7)


# ---------------------------------------------------------------- BatchLossEMA.record


def test_bls_record_moves_each_sample_of_the_batch_toward_the_batch_loss() -> None:
    start = _random(10, seed=3)
    scores = start.clone()
    count = BatchLossEMA(alpha=0.7).record(
        scores, torch.tensor([[2, 5, 7]]), torch.tensor([[1.25]])
    )
    assert count.dtype == torch.int64 and count.item() == 0
    expected = start.double()
    expected[[2, 5, 7]] = 0.7 * expected[[2, 5, 7]] + 0.3 * 1.25
    torch.testing.assert_close(scores.double(), expected, rtol=1e-6, atol=1e-7)
    others = [0, 1, 3, 4, 6, 8, 9]
    assert torch.equal(scores[others], start[others])  # bit for bit untouched


def test_bls_record_one_row_per_rank_and_alpha_zero() -> None:
    scores = torch.zeros(5)
    BatchLossEMA(alpha=0.5).record(
        scores, torch.tensor([[0, 1], [2, 3]]), torch.tensor([[1.0], [3.0]])
    )
    assert scores.tolist() == [0.5, 0.5, 1.5, 1.5, 0.0]
    BatchLossEMA(alpha=0.0).record(scores, torch.tensor([[0, 4]]), torch.tensor([[0.25]]))
    assert scores.tolist() == [0.25, 0.5, 1.5, 1.5, 0.25]


def test_bls_record_duplicates_in_one_batch_update_once() -> None:
    scores = torch.ones(6)
    BatchLossEMA(alpha=0.5).record(scores, torch.tensor([[3, 3, 5, 3]]), torch.tensor([[3.0]]))
    # Once: 0.5 * 1 + 0.5 * 3 = 2; twice would give 2.5, three times 2.75.
    assert scores.tolist() == [1.0, 1.0, 1.0, 2.0, 1.0, 2.0]


@cuda
def test_bls_record_duplicates_update_once_on_cuda() -> None:
    scores = torch.ones(6, device="cuda")
    indices = torch.tensor([[3, 3, 5, 3]], device="cuda")
    BatchLossEMA(alpha=0.5).record(scores, indices, torch.tensor([[3.0]], device="cuda"))
    assert scores.cpu().tolist() == [1.0, 1.0, 1.0, 2.0, 1.0, 2.0]


def test_bls_record_skips_a_non_finite_batch_loss() -> None:
    scores = torch.full((6,), 2.0)
    count = BatchLossEMA(alpha=0.5).record(
        scores,
        torch.tensor([[0, 1], [2, 3], [4, 5]]),
        torch.tensor([[float("nan")], [4.0], [float("inf")]]),
    )
    # The whole batch keeps its scores; one count per skipped batch loss.
    assert scores.tolist() == [2.0, 2.0, 3.0, 3.0, 2.0, 2.0]
    assert count.item() == 2


def test_bls_record_over_many_steps_matches_the_float64_replay() -> None:
    n, alpha = 30, 0.9
    rng = np.random.default_rng(4)
    scores = torch.zeros(n)
    steps = []
    for _ in range(200):
        index = rng.choice(n, size=int(rng.integers(1, 9)), replace=True)  # repeats allowed
        loss = float(rng.gamma(2.0, 1.0))
        BatchLossEMA(alpha=alpha).record(
            scores, torch.from_numpy(index).reshape(1, -1), torch.tensor([[loss]])
        )
        steps.append((index, torch.tensor(loss, dtype=torch.float32).item()))
    expected = bls_replay(steps, n, alpha)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-5, atol=1e-6)
    assert expected.min() > 0  # every sample was updated at least once


# ---------------------------------------------------------------- through the handler

LOADERS = [
    pytest.param({"num_workers": 0}, id="workers0"),
    pytest.param({"num_workers": 2}, id="workers2"),
    pytest.param({"num_workers": 2, "drop_last": True}, id="workers2-drop_last"),
]


def _bls_run(handler, epochs: int = EPOCHS, **loader_options) -> list[tuple[torch.Tensor, float]]:
    """Train-like BLS loop; returns ``(indices, float64 mean loss)`` of every delivered batch."""
    loader = DataLoader(handler, sampler=handler.sampler, **{"batch_size": 16, **loader_options})
    steps = []
    for epoch in range(epochs):
        for _, index in loader:
            losses = sample_loss(index.double(), epoch).float()
            handler.update(losses.mean())
            steps.append((index, losses.double().mean().item()))
    return steps


@pytest.mark.parametrize("options", LOADERS)
@pytest.mark.parametrize("policy", ["InfoBatch", "SeTa", "RandomPrune"])
def test_bls_ema_matches_independent_formula(options: dict, policy: str) -> None:
    data = IndexedDataset(150)
    inner = {
        "InfoBatch": lambda: InfoBatch(data, EPOCHS, prune_ratio=0.5),
        "SeTa": lambda: SeTa(data, EPOCHS, prune_ratio=0.2, num_group=4, window_scale=0.5),
        "RandomPrune": lambda: RandomPrune(data, EPOCHS, prune_ratio=0.4),
    }[policy]()
    handler = BLS(inner, alpha=0.7).proxy()
    steps = _bls_run(handler, **options)
    expected = bls_replay(steps, 150, 0.7).numpy()
    assert np.allclose(handler.scores.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert handler.saved_ratio > 0


def test_infobatch_weights_and_returned_loss() -> None:
    handler = InfoBatch(IndexedDataset(100), num_epochs=4, prune_ratio=0.6)
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=10)
    previous_scores = handler.scores.numpy().copy()
    for epoch in range(3):
        kept = []
        for _, index in loader:
            losses = sample_loss(index.double(), epoch).float().requires_grad_()
            returned = handler.update(losses)
            keep_ratio = keep_ratio_of(0.6)
            well_learned = (
                previous_scores[index.numpy()] < previous_scores.astype(np.float64).mean()
            )
            weights = np.where(well_learned, 1.0 / keep_ratio, 1.0)
            assert returned.item() == pytest.approx(
                float((losses.detach().numpy() * weights).mean()), rel=1e-6
            )
            returned.backward()
            assert np.allclose(losses.grad.numpy(), weights / len(index), rtol=1e-6)
            kept.append(index)
        flat = torch.cat(kept).numpy()
        well = np.flatnonzero(previous_scores < previous_scores.astype(np.float64).mean())
        if epoch > 0:
            assert len(set(flat) & set(well)) == math.floor(keep_ratio_of(0.6) * well.size)
            assert np.allclose(
                handler.weights.numpy()[flat],
                np.where(np.isin(flat, well), 1 / keep_ratio_of(0.6), 1.0),
            )
        previous_scores = handler.scores.numpy().copy()


def test_bls_returns_loss_times_mean_weight_and_never_in_place() -> None:
    handler = BLS(InfoBatch(IndexedDataset(64), num_epochs=4, prune_ratio=0.5), alpha=0.5).proxy()
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=8)
    for epoch in range(3):
        for _, index in loader:
            loss = sample_loss(index.double(), epoch).float().mean().requires_grad_()
            before = loss.detach().clone()
            returned = handler.update(loss)
            assert returned is not loss and torch.equal(loss.detach(), before)
            mean_weight = handler.weights[index].mean()
            assert returned.item() == pytest.approx((before * mean_weight).item(), rel=1e-6)
            returned.backward()
            assert loss.grad.item() == pytest.approx(mean_weight.item(), rel=1e-6)


def test_bls_vector_loss_uses_mean_and_duplicates_update_once() -> None:
    handler = BLS(RandomPrune(IndexedDataset(10), num_epochs=2), alpha=0.5).proxy()
    handler.scores.fill_(1.0)
    handler.sampler.set_epoch(0)
    iterator = iter(handler.sampler)
    next(iterator)
    handler.update(torch.tensor([2.0, 4.0]), indices=torch.tensor([3, 3]))
    assert handler.scores[3].item() == pytest.approx(0.5 * 1.0 + 0.5 * 3.0)


def test_non_finite_losses_are_skipped_and_warned_once() -> None:
    handler = InfoBatch(IndexedDataset(8), num_epochs=3)
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=8)
    for _, index in loader:
        losses = index.float()
        losses[index == 2] = float("nan")
        losses[index == 5] = float("inf")
        handler.update(losses)
    assert handler.scores[2].item() == 3.0 and handler.scores[5].item() == 3.0
    assert handler.scores[4].item() == 4.0
    with pytest.warns(RuntimeWarning, match="2 non-finite loss value"):
        handler.end_epoch()
    assert handler.history[0]["nonfinite"] == 2
    bls_handler = BLS(InfoBatch(IndexedDataset(8), num_epochs=3), alpha=0.5).proxy()
    for _ in DataLoader(bls_handler, sampler=bls_handler.sampler, batch_size=4):
        bls_handler.update(torch.tensor(float("nan")))
    assert torch.all(bls_handler.scores == 0)


def test_non_finite_warning_is_given_once_per_run() -> None:
    handler = BLS(InfoBatch(IndexedDataset(8), num_epochs=3), alpha=0.5).proxy()
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            for step, _ in enumerate(loader):
                handler.update(torch.tensor(float("nan") if step == 0 else 1.0))
            handler.end_epoch()
    nonfinite = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(nonfinite) == 1
    assert str(nonfinite[0].message).startswith("epoch 0: 1 non-finite loss value(s)")
    assert [record["nonfinite"] for record in handler.history] == [1, 1, 1]
