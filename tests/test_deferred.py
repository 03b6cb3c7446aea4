"""Deferred recording (one process) equals recording every batch at once.

In one process ``update()`` only copies its measurement into the epoch's pending buffer (the
order route) or keeps a copy of it and of its indices (explicit indices); the scores absorb
the pending batches, vectorised, whenever they are read (``handler.scores``, ``state_dict()``,
pickling, the next epoch's decision). Reading the scores after every ``update()`` therefore
records batch by batch, and reading them only at epoch ends records many batches at once: the
two runs below must agree bit for bit, for per-sample and BLS scores, with a shorter last
batch, with ``drop_last``, with non-finite losses and with indices repeated between explicit
batches. The last tests count the torch operations one ``update()`` dispatches.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import torch
from _data import IndexedDataset, sample_loss
from _replay import bls_replay
from torch.utils._python_dispatch import TorchDispatchMode
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


def _explicit_run(kind: str, batches: list[list[int]], *, read_every_step: bool) -> Any:
    """Explicit-index updates of the given batches (any indices: the route does not check
    them against the plan), some of them non-finite; the scores, and the non-finite count."""
    handler = _handler(kind)
    handler.return_indices = True  # (items are not read here: only update() sees it)
    iterator = iter(handler.sampler)
    next(iterator)  # the epoch's iteration began
    for step, batch in enumerate(batches):
        index = torch.tensor(batch)
        losses = sample_loss(index.double(), step).float() + step
        if step == 2:
            losses[0] = float("nan")
        handler.update(losses if kind == "per-sample" else losses.mean(), indices=index)
        if read_every_step:
            assert handler.scores.dim() == 1
    handler.end_epoch()
    return handler.scores.clone(), handler.history[-1]["nonfinite"]


@pytest.mark.parametrize("kind", ["per-sample", "bls-infobatch"])
@pytest.mark.parametrize(
    "batches",
    [
        [[0, 1, 2], [3, 4], [5, 6, 7], [8]],  # no index twice: folded at once
        [[0, 1, 2], [2, 3], [3, 0, 4], [4, 4, 5]],  # repeats across and within batches
    ],
    ids=["distinct", "repeated"],
)
def test_deferred_explicit_batches_equal_recording_each_at_once(
    kind: str, batches: list[list[int]]
) -> None:
    eager, eager_nonfinite = _explicit_run(kind, batches, read_every_step=True)
    deferred, deferred_nonfinite = _explicit_run(kind, batches, read_every_step=False)
    assert torch.equal(eager, deferred)
    assert eager_nonfinite == deferred_nonfinite == 1  # one sample, or one batch (BLS)
    # Against the rules written out: the last loss of a sample (per-sample), the EMA of the
    # batch losses, a batch's repeated index moved once (BLS); the non-finite entry skipped.
    expected = torch.full((N,), 3.0 if kind == "per-sample" else 0.0, dtype=torch.float64)
    for step, batch in enumerate(batches):
        index = torch.tensor(batch)
        losses = sample_loss(index.double(), step).float() + step
        if step == 2:
            losses[0] = float("nan")
        if kind == "per-sample":
            finite = torch.isfinite(losses)
            expected[index[finite]] = losses[finite].double()
        elif torch.isfinite(losses.mean()):
            expected = bls_replay([(batch, float(losses.mean()))], N, 0.7, start=expected)
    torch.testing.assert_close(deferred.double(), expected, rtol=0, atol=1e-6)


class _DispatchCount(TorchDispatchMode):
    """Every torch operation dispatched inside the block, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


# What one update() dispatches, and why each is needed (docs/performance.md lists them too):
# the loss to back-propagate (mean, mul or dot: a new autograd tensor); detach (the `.data`
# alias through which the measurement is copied without autograd); copy_ / _to_copy (the
# step's measurement and, on the explicit route, its indices, kept safe from later in-place
# changes of the caller's tensors); index_select (explicit route, up-weighted: the batch's
# weights, whose indices only the call knows).
DISPATCHES = {
    ("bls", "order", False): ["mean", "detach", "copy_"],
    ("bls", "order", True): ["mul", "detach", "copy_"],
    ("per-sample", "order", False): ["mean", "detach", "copy_"],
    ("per-sample", "order", True): ["dot", "detach", "copy_"],
    ("bls", "indices", False): ["_to_copy", "mean", "detach", "_to_copy"],
    ("bls", "indices", True): ["_to_copy", "index_select", "mean", "mul", "detach", "_to_copy"],
    ("per-sample", "indices", False): ["_to_copy", "mean", "detach", "_to_copy"],
    ("per-sample", "indices", True): [
        "_to_copy", "index_select", "mul", "mean", "detach", "_to_copy"
    ],
}  # fmt: skip


@pytest.mark.parametrize("weighted", [False, True], ids=["unit-weights", "up-weighted"])
@pytest.mark.parametrize("route", ["order", "indices"])
@pytest.mark.parametrize("mode", ["bls", "per-sample"])
def test_torch_dispatches_of_one_update(mode: str, route: str, weighted: bool) -> None:
    data = IndexedDataset(N)
    handler: Any = InfoBatch(
        data, num_epochs=EPOCHS, prune_ratio=0.5, return_indices=route != "order"
    )
    if mode == "bls":
        handler = BLS(handler, alpha=0.7).proxy()
    handler.scores = torch.linspace(0.0, 2.0, N)  # epoch 0 prunes and up-weights
    if not weighted:
        handler.scores = torch.ones(N)  # all equal: nothing pruned, every weight 1
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=BATCH)
    weight = torch.ones(1, requires_grad=True)
    for step, batch in enumerate(loader):
        losses = (batch[0].squeeze(1) * 0.01 * weight) + 1.0  # an autograd loss
        loss = losses if mode == "per-sample" else losses.mean()
        indices = batch[-1] if route == "indices" else None
        if step == 3:  # a middle step: the epoch's preparation is behind it
            with _DispatchCount() as counter:
                handler.update(loss, indices=indices)
            break
        handler.update(loss, indices=indices)
    assert handler._run.unit_weights is not weighted
    assert counter.ops == DISPATCHES[mode, route, weighted]
