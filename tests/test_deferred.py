"""Deferred recording (one process, order route) equals recording every batch at once.

In one process ``update()`` only copies its measurement into the epoch's pending buffer; the
scores absorb the pending batches, vectorised, whenever they are read (``handler.scores``,
``state_dict()``, pickling, the next epoch's decision). Reading the scores after every
``update()`` therefore records batch by batch, and reading them only at epoch ends records
many batches at once: the two runs below must agree bit for bit, for per-sample and BLS
scores, with a shorter last batch, with ``drop_last``, and with non-finite losses.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch
from _data import IndexedDataset, sample_loss
from _replay import bls_replay
from torch.utils.data import DataLoader

from bls import BLS, InfoBatch, SeTa

# The non-finite losses below are deliberate; their warning is tested in test_scores.py.
pytestmark = pytest.mark.filterwarnings("ignore:.*non-finite loss:RuntimeWarning")

N, BATCH, EPOCHS = 203, 16, 4  # 203 = 12 * 16 + 11: every epoch ends in a shorter batch


def _handler(kind: str) -> Any:
    data = IndexedDataset(N)
    if kind == "per-sample":
        return InfoBatch(data, num_epochs=EPOCHS, prune_ratio=0.5)
    if kind == "bls-infobatch":
        return BLS(InfoBatch(data, num_epochs=EPOCHS, prune_ratio=0.5), alpha=0.7).proxy()
    return BLS(SeTa(data, num_epochs=EPOCHS, prune_ratio=0.1, num_group=3), alpha=0.6).proxy()


def _train(kind: str, *, read_every_step: bool, drop_last: bool) -> tuple[list[Any], Any]:
    """Scores at the end of every epoch plus a mid-epoch state_dict's; and the history."""
    handler = _handler(kind)
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=BATCH, drop_last=drop_last)
    snapshots: list[torch.Tensor] = []
    for epoch in range(EPOCHS):
        for step, (_, index) in enumerate(loader):
            losses = sample_loss(index.double(), epoch).float()
            if step in (2, 5):  # non-finite values: skipped, counted, never recorded
                losses[1] = float("nan") if step == 2 else float("inf")
            handler.update(losses if kind == "per-sample" else losses.mean())
            if read_every_step:
                assert handler.scores.dim() == 1  # folds this batch in now
            if epoch == 1 and step == 4:
                snapshots.append(handler.state_dict()["scores"])
        snapshots.append(handler.scores.clone())
    handler.end_epoch()
    return snapshots, handler.history


@pytest.mark.parametrize("drop_last", [False, True], ids=["short-last-batch", "drop_last"])
@pytest.mark.parametrize("kind", ["per-sample", "bls-infobatch", "bls-seta"])
def test_deferred_equals_per_batch_recording(kind: str, drop_last: bool) -> None:
    eager, eager_history = _train(kind, read_every_step=True, drop_last=drop_last)
    deferred, deferred_history = _train(kind, read_every_step=False, drop_last=drop_last)
    assert eager_history == deferred_history  # kept, updates and non-finite counts
    assert sum(record["nonfinite"] for record in eager_history) == 2 * EPOCHS
    assert len(eager) == EPOCHS + 1
    for a, b in zip(eager, deferred, strict=True):
        assert torch.equal(a, b)
    assert len(set(eager[-1].tolist())) > 3  # the scores moved


def test_scores_read_mid_epoch_include_every_update_so_far() -> None:
    handler = BLS(InfoBatch(IndexedDataset(N), num_epochs=EPOCHS), alpha=0.5).proxy()
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=BATCH)
    steps = []
    for step, (_, index) in enumerate(loader):
        loss = sample_loss(index.double(), 0).mean()
        handler.update(loss.float())
        steps.append((index, loss.float().item()))
        if step == 6:
            break
    expected = bls_replay(steps, N, 0.5)
    # Recorded from the pending buffer on this read, and again after pickling (a worker copy).
    torch.testing.assert_close(handler.scores.double(), expected, rtol=1e-6, atol=1e-6)
    copy = pickle.loads(pickle.dumps(handler))
    torch.testing.assert_close(copy.scores.double(), expected, rtol=1e-6, atol=1e-6)


def test_explicit_indices_mixed_into_an_order_route_epoch() -> None:
    # One update() of the epoch passes its indices explicitly: it is recorded at once, in step
    # order with the deferred batches around it, and its slot is never read from the buffer.
    handler = InfoBatch(IndexedDataset(N), num_epochs=EPOCHS)
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=BATCH)
    expected = torch.full((N,), 3.0)
    for step, (_, index) in enumerate(loader):
        losses = sample_loss(index.double(), 0).float() + step
        if step == 3:
            handler.update(losses, indices=index)
        else:
            handler.update(losses)
        expected[index] = losses
    torch.testing.assert_close(handler.scores, expected, rtol=0, atol=0)
