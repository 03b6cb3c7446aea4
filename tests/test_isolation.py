"""The library leaves the user's process alone (docs/design.md, 'Isolation').

Global ``random``, ``numpy.random`` and ``torch`` generators, unrelated DataLoaders and torch's
own classes behave exactly as if bls were not imported.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from _data import IndexedDataset
from _fresh import run_fresh
from torch.utils.data import DataLoader, SequentialSampler

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


# Run in a fresh interpreter: torch's originals are recorded BEFORE bls is imported, so a patch
# made at import time is caught as well as one made while training. The frameworks the
# integrations build on are imported first, so only bls's own code is judged.
_FRESH_PROCESS_CHECK = r"""
import json, random
import numpy as np
import torch
import torch.distributed
import torch.nn.functional
import torch.utils.data
import torch.utils.data._utils.collate
import torch.utils.data._utils.fetch
import torch.utils.data.dataloader as dataloader
import torch.utils.data.distributed
import torch.utils.data.sampler as sampler
import lightning.pytorch
import transformers.trainer_utils
from transformers import Trainer, TrainerCallback

CLASSES = {
    "DataLoader": torch.utils.data.DataLoader,
    "_BaseDataLoaderIter": dataloader._BaseDataLoaderIter,
    "_SingleProcessDataLoaderIter": dataloader._SingleProcessDataLoaderIter,
    "_MultiProcessingDataLoaderIter": dataloader._MultiProcessingDataLoaderIter,
    "Dataset": torch.utils.data.Dataset,
    "Sampler": sampler.Sampler,
    "BatchSampler": sampler.BatchSampler,
    "SequentialSampler": sampler.SequentialSampler,
    "RandomSampler": sampler.RandomSampler,
    "DistributedSampler": torch.utils.data.distributed.DistributedSampler,
    "_MapDatasetFetcher": torch.utils.data._utils.fetch._MapDatasetFetcher,
    "Tensor": torch.Tensor,
    "Module": torch.nn.Module,
    "Optimizer": torch.optim.Optimizer,
    "Trainer": Trainer,
    "LightningModule": lightning.pytorch.LightningModule,
}
MODULES = {
    "torch": torch,
    "torch.distributed": torch.distributed,
    "torch.nn.functional": torch.nn.functional,
    "torch.utils.data": torch.utils.data,
    "torch.utils.data.dataloader": dataloader,
    "torch.utils.data._utils.collate": torch.utils.data._utils.collate,
}
def snapshot():
    owners = {**CLASSES, **MODULES}
    return {name: dict(vars(owner)) for name, owner in owners.items()}
def rng_states():
    return random.getstate(), np.random.get_state(), torch.get_rng_state()

before = snapshot()
random.seed(7)
np.random.seed(7)
torch.manual_seed(7)
states = rng_states()

import bls
import bls.integrations.hf
import bls.integrations.lightning
from torch.utils.data import DataLoader, TensorDataset

data = TensorDataset(torch.arange(64.0).reshape(64, 1), torch.arange(64) % 2)
handler = bls.BLS(bls.InfoBatch(data, num_epochs=3, prune_ratio=0.5), alpha=0.7).proxy()
# The loader draws its base seed from its own generator, so nothing may touch the global ones.
loader = DataLoader(
    handler, sampler=handler.sampler, batch_size=8, generator=torch.Generator().manual_seed(0)
)
for epoch in range(3):
    handler.sampler.set_epoch(epoch)
    for x, y in loader:
        handler.update((x[:, 0] % 5 + y).mean())
handler.load_state_dict(handler.state_dict())

after = snapshot()
patched = sorted(
    f"{owner}.{key}"
    for owner, members in before.items()
    for key, value in members.items()
    if after[owner].get(key, object()) is not value
)
added = sorted(
    f"{owner}.{key}"
    for owner, members in after.items()
    if owner in CLASSES
    for key in members.keys() - before[owner].keys()
)
now = rng_states()
moved = [
    name
    for name, same in (
        ("random", now[0] == states[0]),
        ("numpy.random", now[1][0] == states[1][0] and np.array_equal(now[1][1], states[1][1])
         and now[1][2:] == states[1][2:]),
        ("torch", torch.equal(now[2], states[2])),
    )
    if not same
]
kept = [record["kept"] for record in handler.history]
print(json.dumps({"patched": patched, "added": added, "rng_moved": moved, "kept": kept}))
"""


def test_torch_classes_are_not_patched() -> None:
    """Importing bls and its integrations and a pruned run change no torch attribute or RNG."""
    report = run_fresh(_FRESH_PROCESS_CHECK, timeout=240)
    kept = report.pop("kept")
    assert len(kept) == 3 and kept[0] == 64 and min(kept) < 64, kept  # the run pruned
    assert report == {"patched": [], "added": [], "rng_moved": []}
