"""update() never reads tensor values back to the host (no host-device synchronisation).

On a GPU, ``.item()``, ``.cpu()``, ``.tolist()``, ``.numpy()`` and the implicit conversions
(``bool(t)``, ``int(t)``, ``float(t)``, ``operator.index(t)``) each wait for the device. These
tests make every one of them raise while ``update()`` runs, in BLS and per-sample mode, by the
order route and with explicit indices, in epochs where every weight is 1 and in epochs where
InfoBatch up-weights (the weight lookup runs). A second check runs ``update()`` on the ``meta``
device, whose tensors have shapes but no values: any value read there fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from bls import BLS, InfoBatch, SeTa

FORBIDDEN = ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")
_MISSING = object()


class HostRead(AssertionError):
    """A tensor value was read back to the host inside update()."""


@contextmanager
def no_host_reads() -> Iterator[None]:
    """Make every host read-back of a tensor raise ``HostRead`` inside the block."""
    saved = {name: torch.Tensor.__dict__.get(name, _MISSING) for name in FORBIDDEN}

    def forbid(name: str) -> Any:
        def raiser(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            raise HostRead(f"Tensor.{name} called on the update() path")

        return raiser

    for name in FORBIDDEN:
        setattr(torch.Tensor, name, forbid(name))
    try:
        yield
    finally:
        for name, original in saved.items():
            if original is _MISSING:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)


def test_the_guard_catches_every_host_read() -> None:
    # The guard itself must work, or the tests below would pass vacuously.
    t = torch.tensor([1.5])
    for read in (
        lambda: t.item(),
        lambda: t.cpu(),
        lambda: t.tolist(),
        lambda: t.numpy(),
        lambda: bool(t),
        lambda: int(t),
        lambda: float(t),
        lambda: [0, 1][torch.tensor(1)],
    ):
        with no_host_reads(), pytest.raises(HostRead):
            read()
    assert t.item() == 1.5  # restored afterwards


def _handler(mode: str, explicit: bool, policy: str = "InfoBatch") -> Any:
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(96, 4, generator=generator), torch.arange(96) % 3)
    if policy == "InfoBatch":
        handler: Any = InfoBatch(data, num_epochs=4, prune_ratio=0.5, return_indices=explicit)
    else:
        handler = SeTa(data, num_epochs=4, prune_ratio=0.1, num_group=3, return_indices=explicit)
    return BLS(handler, alpha=0.5).proxy() if mode == "bls" else handler


@pytest.mark.parametrize("policy", ["InfoBatch", "SeTa"])
@pytest.mark.parametrize("explicit", [False, True], ids=["order", "indices"])
@pytest.mark.parametrize("mode", ["bls", "per-sample"])
def test_update_reads_nothing_back(mode: str, explicit: bool, policy: str) -> None:
    handler = _handler(mode, explicit, policy)
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=16)
    weight = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    weighted_epochs = 0
    for _epoch in range(3):
        for step, batch in enumerate(loader):
            x, y = batch[0], batch[1]
            per_sample = torch.nn.functional.cross_entropy(x @ weight, y, reduction="none")
            loss = per_sample.mean() if mode == "bls" else per_sample
            with no_host_reads():
                out = handler.update(loss, indices=batch[2]) if explicit else handler.update(loss)
                if step % 3 == 2:
                    # Reading the scores folds the deferred batches in: no host reads either.
                    assert handler.scores.dim() == 1
            out.backward()
        weighted_epochs += not handler._run.unit_weights
    # The path really ran: scores moved off their start, and (InfoBatch) an up-weighted epoch
    # exercised the weight lookup.
    assert not torch.all(handler.scores == handler.scores[0])
    if policy == "InfoBatch":
        assert weighted_epochs >= 1
    assert [r["updates"] for r in handler.history[:2]] == [
        -(-r["kept"] // 16) for r in handler.history[:2]
    ]


@pytest.mark.parametrize("explicit", [False, True], ids=["order", "indices"])
@pytest.mark.parametrize("mode", ["bls", "per-sample"])
def test_update_runs_on_values_it_cannot_read(mode: str, explicit: bool) -> None:
    # Meta tensors carry shapes only; reading a value from one raises. Epoch bookkeeping at
    # epoch end reads the non-finite count once (allowed), so only the updates run on meta.
    handler = _handler(mode, explicit)
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=16)
    steps = 0
    for batch in loader:
        loss = torch.empty(() if mode == "bls" else (len(batch[1]),), device="meta")
        out = handler.update(loss, indices=batch[2]) if explicit else handler.update(loss)
        assert out.device.type == "meta" and out.dim() == 0
        steps += 1
        if steps == 3:
            break
    assert handler.scores.device.type == "meta" and handler._run.updates == 3
