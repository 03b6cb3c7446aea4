"""The library leaves the user's process alone (SPEC section 2).

Global ``random``, ``numpy.random`` and ``torch`` generators, unrelated DataLoaders and torch's
own classes behave exactly as if bls were not imported.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from _data import IndexedDataset
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler
from torch.utils.data import dataloader as dataloader_module

from bls import BLS, InfoBatch, SeTa


def global_states():
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def assert_same_states(a, b) -> None:
    assert a[0] == b[0]
    assert a[1][0] == b[1][0] and np.array_equal(a[1][1], b[1][1]) and a[1][2:] == b[1][2:]
    assert torch.equal(a[2], b[2])


def train(loader, handler=None, epochs: int = 3) -> None:
    for _ in range(epochs):
        for _, index in loader:
            loss = (index.float() % 5).mean()
            if handler is not None:
                handler.update(loss)


def test_global_random_state_as_without_the_library() -> None:
    """A pruned run consumes global randomness exactly like the same loop over a plain loader.

    The DataLoader itself draws one seed per epoch from torch's default generator; that is the
    same with or without pruning, and nothing else may be drawn.
    """
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    handler = BLS(SeTa(IndexedDataset(64), num_epochs=3, prune_ratio=0.3, num_group=3), 0.7).proxy()
    train(DataLoader(handler, sampler=handler.sampler, batch_size=8, num_workers=2), handler)
    handler.state_dict()
    with_library = global_states()

    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    data = IndexedDataset(64)
    train(DataLoader(data, sampler=SequentialSampler(data), batch_size=8, num_workers=2))
    without = global_states()
    assert_same_states(with_library, without)


def test_handler_operations_draw_nothing_global() -> None:
    torch.manual_seed(5)
    before = global_states()
    handler = InfoBatch(IndexedDataset(100), num_epochs=4, prune_ratio=0.5)
    for epoch in range(4):
        handler.sampler.set_epoch(epoch)
        last = list(iter(handler.sampler))[-1]
        handler.update(torch.ones(1), indices=torch.tensor([last]))
    assert_same_states(before, global_states())


def test_unrelated_loader_yields_what_it_would_alone() -> None:
    def unrelated_batches():
        data = IndexedDataset(40)
        loader = DataLoader(
            data, batch_size=6, shuffle=True, generator=torch.Generator().manual_seed(9)
        )
        return [index.tolist() for _ in range(2) for _, index in loader]

    alone = unrelated_batches()
    handler = InfoBatch(IndexedDataset(40), num_epochs=2)
    pruned_loader = DataLoader(handler, sampler=handler.sampler, batch_size=6, num_workers=2)
    data = IndexedDataset(40)
    loader = DataLoader(
        data, batch_size=6, shuffle=True, generator=torch.Generator().manual_seed(9)
    )
    interleaved = []
    for _ in range(2):
        pruned_batches = iter(pruned_loader)
        for _, index in loader:
            interleaved.append(index.tolist())
            pruned = next(pruned_batches, None)
            if pruned is not None:
                handler.update(torch.ones(len(pruned[1])))
    assert interleaved == alone


def test_torch_classes_are_not_patched() -> None:
    originals = (
        DataLoader.__iter__,
        BatchSampler.__iter__,
        dataloader_module._BaseDataLoaderIter.__next__,
        dataloader_module._MultiProcessingDataLoaderIter._try_put_index,
    )
    handler = InfoBatch(IndexedDataset(10), num_epochs=1)
    for _, index in DataLoader(handler, sampler=handler.sampler, batch_size=4):
        handler.update(torch.ones(len(index)))
    assert originals == (
        DataLoader.__iter__,
        BatchSampler.__iter__,
        dataloader_module._BaseDataLoaderIter.__next__,
        dataloader_module._MultiProcessingDataLoaderIter._try_put_index,
    )
