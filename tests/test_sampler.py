"""The sampler of ``bls.sampler`` (docs/design.md, 'How a loss finds its samples' and
'Sharding over ranks').

``PruningSampler`` knows nothing of scores: it asks a plan source for the epoch's indices and
reports what it read of the loader iterating it (``discover_loader``). Its own behaviour is
tested here with a stand-in plan source that records what the sampler reports, and with the
real handler for what the handler does with it: ``len(sampler)``, ``set_epoch`` deciding an
epoch once, the refused loaders, the order-route fallback without a ``BatchSampler``, and the
epoch iterator (plain ``int``s, ``position``, pickling mid-epoch). Expected values are literal
or written out independently here.
"""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from _data import IndexedDataset, sample_loss
from _replay import bls_replay
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

import bls.sampler
from bls import BLS, AttributionWarning, InfoBatch, RandomPrune
from bls.sampler import LoaderInfo, PruningSampler, _EpochIterator


class RecordingSource:
    """A stand-in plan source: yields ``0 .. n-1`` and records every ``LoaderInfo`` it gets."""

    seed = 7

    def __init__(self, n: int) -> None:
        self.n = n
        self.epoch = -1
        self.loaders: list[LoaderInfo] = []

    def __len__(self) -> int:
        return self.n

    def plan_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def iterate_epoch(self, loader: LoaderInfo) -> Iterator[int]:
        self.loaders.append(loader)
        return iter(range(self.n))

    def epoch_length(self, *, whole_plan: bool = False) -> int:
        return self.n

    def track_batch(self, batch: list[int]) -> None:
        pass


class Numbers(Dataset[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


class ChunkBatches:
    """A batch sampler that is not a torch ``BatchSampler``: consecutive runs of ``size``."""

    def __init__(self, sampler: Any, size: int) -> None:
        self.sampler = sampler
        self.size = size

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.size:
                yield batch
                batch = []
        if batch:
            yield batch

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.size)


class _RepeatSampler:
    """timm's MultiEpochsDataLoader helper: re-iterates the batch sampler forever."""

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[Any]:
        while True:
            yield from iter(self.sampler)


class MultiEpochsDataLoader(DataLoader):
    """timm's loader, reduced: one iterator kept across epochs over a repeating batch sampler,
    so it reads the next epoch's indices before the loop has finished the current one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._DataLoader__initialized = False
        self.batch_sampler = _RepeatSampler(self.batch_sampler)
        self._DataLoader__initialized = True
        self.iterator = super().__iter__()

    def __len__(self) -> int:
        return len(self.batch_sampler.sampler)

    def __iter__(self) -> Iterator[Any]:
        for _ in range(len(self)):
            yield next(self.iterator)


# ---------------------------------------------------------------- discover_loader


@pytest.mark.parametrize(
    ("options", "batch_size", "drop_last"),
    [
        ({"batch_size": 4}, 4, False),
        ({"batch_size": 3, "drop_last": True}, 3, True),
        ({"batch_size": None}, 1, False),  # no batching: one sample per step
    ],
)
def test_discover_loader_reads_the_stock_batch_sampler(
    options: dict[str, Any], batch_size: int, drop_last: bool
) -> None:
    source = RecordingSource(10)
    loader = DataLoader(Numbers(10), sampler=PruningSampler(source), **options)
    items = [item.tolist() if isinstance(item, torch.Tensor) else item for item in loader]
    assert len(source.loaders) == 1
    found = source.loaders[0]
    assert (found.batch_size, found.drop_last, found.in_order) == (batch_size, drop_last, True)
    assert found.sharded_by_framework is False
    want = {
        4: [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]],
        3: [[0, 1, 2], [3, 4, 5], [6, 7, 8]],
        1: list(range(10)),
    }[batch_size]
    assert items == want


def test_discover_loader_reads_in_order_false() -> None:
    source = RecordingSource(8)
    sampler = PruningSampler(source)
    loader = DataLoader(Numbers(8), sampler=sampler, batch_size=4, num_workers=2, in_order=False)
    assert sorted(torch.cat(list(loader)).tolist()) == list(range(8))
    assert source.loaders[0].in_order is False


@pytest.mark.parametrize("where", ["custom-batch-sampler", "no-loader"])
def test_discover_loader_without_a_batch_sampler_knows_no_batch_size(where: str) -> None:
    source = RecordingSource(10)
    sampler = PruningSampler(source)
    if where == "no-loader":
        assert list(iter(sampler)) == list(range(10))
    else:
        loader = DataLoader(Numbers(10), batch_sampler=ChunkBatches(sampler, 4))
        assert [b.tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    found = source.loaders[0]
    assert found.batch_size is None and found.drop_last is False and found.in_order is True


def test_every_iteration_asks_the_source_again() -> None:
    source = RecordingSource(5)
    sampler = PruningSampler(source)
    assert list(sampler) == list(sampler) == [0, 1, 2, 3, 4]
    assert len(source.loaders) == 2


# ---------------------------------------------------------------- refused loaders


def test_in_order_false_is_rejected() -> None:
    handler = InfoBatch(IndexedDataset(16), num_epochs=2)
    loader = DataLoader(
        handler, sampler=handler.sampler, batch_size=4, num_workers=2, in_order=False
    )
    with pytest.raises(ValueError, match="in_order"):
        next(iter(loader))


def test_lookahead_loader_is_rejected() -> None:
    handler = InfoBatch(IndexedDataset(16), num_epochs=2)
    with pytest.raises(TypeError, match="_RepeatSampler reads the next epoch"):
        next(iter(_RepeatSampler(handler.sampler)))


def test_multi_epochs_data_loader_is_rejected() -> None:
    handler = InfoBatch(IndexedDataset(16), num_epochs=2)
    loader = MultiEpochsDataLoader(handler, sampler=handler.sampler, batch_size=4)
    with pytest.raises(TypeError, match="reads the next epoch's indices before the current"):
        next(iter(loader))


# ---------------------------------------------------------------- len(sampler)


def test_len_sampler() -> None:
    handler = RandomPrune(IndexedDataset(50), num_epochs=3, prune_ratio=0.5)
    assert len(handler.sampler) == 50 and len(handler) == 50
    handler.sampler.set_epoch(0)
    assert len(handler.sampler) == 25
    assert len(list(iter(handler.sampler))) == 25


def test_len_after_set_epoch_counts_the_trim() -> None:
    # 41 samples, batch 8: a pruned epoch of 25 would end in a batch of one and is trimmed;
    # len(loader) announced before iterating must match what the epoch yields.
    handler = BLS(InfoBatch(IndexedDataset(41), num_epochs=4), alpha=0.5).proxy()
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=8)
    for epoch in range(3):
        handler.sampler.set_epoch(epoch)
        announced = len(loader), len(handler.sampler)
        batches = 0
        yielded = 0
        for _, index in loader:
            handler.update(sample_loss(index.double(), epoch).float().mean())
            batches += 1
            yielded += len(index)
        assert announced == (batches, yielded)
        assert yielded % 8 != 1 or yielded == 41  # full epochs stay as they are


# ---------------------------------------------------------------- set_epoch


def test_set_epoch_twice_decides_once() -> None:
    handler = InfoBatch(IndexedDataset(64), num_epochs=4)
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=8)
    for _, index in DataLoader(handler, sampler=handler.sampler, batch_size=16):  # epoch 0
        handler.update(sample_loss(index.double(), 0).float())
    handler.sampler.set_epoch(1)
    batches = iter(loader)
    _, first = next(batches)
    handler.update(torch.ones(len(first)))
    handler.sampler.set_epoch(1)  # again, mid-epoch (a wrapper calling it too)
    for _, index in batches:
        handler.update(torch.ones(len(index)))
    assert [r["epoch"] for r in handler.history] == [0, 1]
    handler.end_epoch()
    assert handler.history[1]["updates"] == math.ceil(handler.history[1]["kept"] / 8)


def test_iteration_without_set_epoch_starts_the_next_epoch() -> None:
    handler = RandomPrune(IndexedDataset(20), num_epochs=6, prune_ratio=0.5)
    assert handler.sampler.epoch == 0 and handler.epoch == -1  # nothing decided yet
    first = list(handler.sampler)  # decides epoch 0
    second = list(handler.sampler)  # a second iteration: epoch 1
    assert [r["epoch"] for r in handler.history] == [0, 1]
    assert len(first) == len(second) == 10 and first != second
    handler.sampler.set_epoch(1)  # the epoch already decided: a no-op, also after iterating
    assert [r["epoch"] for r in handler.history] == [0, 1]
    handler.sampler.set_epoch(3)  # another epoch number decides that epoch
    assert handler.epoch == 3 and handler.sampler.epoch == 3
    third = list(handler.sampler)  # iterates the epoch set_epoch decided, not the next one
    handler.sampler.set_epoch(1)  # decided again: its record is replaced, not duplicated
    again = list(handler.sampler)
    assert [r["epoch"] for r in handler.history] == [0, 3, 1]
    assert again == second  # same (seed, epoch) and no score moved: the same plan
    assert third != second


def test_set_epoch_rejects_bad_epochs() -> None:
    sampler = InfoBatch(IndexedDataset(8), num_epochs=2).sampler
    with pytest.raises(ValueError, match="epoch"):
        sampler.set_epoch(-1)
    with pytest.raises(TypeError, match="epoch"):
        sampler.set_epoch(1.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- DistributedSampler's attributes


def test_distributed_sampler_attributes_are_read_only_views() -> None:
    handler = RandomPrune(IndexedDataset(50), num_epochs=3, prune_ratio=0.5, seed=11)
    sampler = handler.sampler
    assert isinstance(sampler, DistributedSampler)  # by type, so Lightning keeps it
    assert sampler.dataset is handler
    before = {
        "num_replicas": 1,  # no process group
        "rank": 0,
        "epoch": 0,  # nothing decided: 0, not -1
        "shuffle": True,
        "seed": 11,
        "drop_last": False,
        "num_samples": 50,
        "total_size": 50,
    }
    assert {name: getattr(sampler, name) for name in before} == before
    sampler.set_epoch(0)  # a pruning epoch: 25 of 50
    assert (sampler.epoch, sampler.num_samples, sampler.total_size) == (0, 25, 25)
    sampler.set_epoch(2)  # annealing (2 + 1 > 0.875 * 3): all 50
    assert (sampler.epoch, sampler.num_samples, sampler.total_size) == (2, 50, 50)
    for name in [*before, "dataset"]:
        with pytest.raises(AttributeError):
            setattr(sampler, name, 4)
    assert sampler.num_replicas == 1 and sampler.epoch == 2 and sampler.dataset is handler


def test_rank_and_replicas_are_read_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    # The process group may be initialised after the handler was built (Lightning does so):
    # the attributes follow what the process group says at the time they are read.
    handler = RandomPrune(IndexedDataset(50), num_epochs=3, prune_ratio=0.5)
    sampler = handler.sampler
    assert (sampler.rank, sampler.num_replicas) == (0, 1)
    monkeypatch.setattr(bls.sampler, "rank_and_world_size", lambda: (1, 2))
    assert (sampler.rank, sampler.num_replicas) == (1, 2)
    assert sampler.total_size == 2 * len(sampler) == 100


# ---------------------------------------------------------------- no BatchSampler: the fallback


def _loader_without_batch_sampler(handler: Any, where: str) -> Iterator[list[int]]:
    """Yields the index lists of an epoch whose batches no torch ``BatchSampler`` formed."""
    if where == "custom-batch-sampler":
        for batch in DataLoader(handler, batch_sampler=ChunkBatches(handler.sampler, 6)):
            yield batch[1].tolist()
    else:  # the loop batches the sampler's indices itself
        indices = iter(handler.sampler)
        while batch := [index for _, index in zip(range(6), indices, strict=False)]:
            yield batch


def test_per_sample_mode_learns_the_batch_size_from_the_first_loss() -> None:
    # No BatchSampler among the callers: the loop batches the sampler's indices itself.
    handler = InfoBatch(IndexedDataset(40), num_epochs=3, prune_ratio=0.5)
    assert handler.state_dict()["batch_size"] == -1  # not known before the first loss
    with warnings.catch_warnings():
        warnings.simplefilter("error", AttributionWarning)  # every batch was attributed
        sizes: list[list[int]] = []
        for epoch in range(3):
            sizes.append([])
            for batch in _loader_without_batch_sampler(handler, "no-loader"):
                index = torch.tensor(batch)
                losses = sample_loss(index.double(), epoch).float()
                handler.update(losses)
                assert torch.equal(handler.scores[index], losses)  # exactly these samples
                sizes[-1].append(len(batch))
            assert handler.state_dict()["batch_size"] == 6  # learned, kept across epochs
            handler.end_epoch()
    assert sizes[0] == [6, 6, 6, 6, 6, 6, 4]  # epoch 0 keeps all 40
    assert sizes[2] == [6, 6, 6, 6, 6, 6, 4]  # epoch 2 anneals: all 40 again
    pruned = handler.history[1]["kept"]
    assert pruned < 40 and sizes[1][:-1] == [6] * (len(sizes[1]) - 1)
    assert sum(sizes[1]) == pruned and sizes[1][-1] > 1  # no batch of one


def test_bls_mode_without_a_batch_sampler_asks_for_explicit_indices() -> None:
    handler = BLS(InfoBatch(IndexedDataset(40), num_epochs=2), alpha=0.5).proxy()
    next(_loader_without_batch_sampler(handler, "no-loader"))
    with pytest.raises(RuntimeError, match=r"batch size could not be read.*return_indices=True"):
        handler.update(torch.tensor(1.0))


@pytest.mark.parametrize("where", ["custom-batch-sampler", "no-loader"])
def test_the_explicit_route_works_without_a_batch_sampler(where: str) -> None:
    handler = BLS(InfoBatch(IndexedDataset(40), num_epochs=2, return_indices=True), 0.5).proxy()
    steps = []
    for batch in _loader_without_batch_sampler(handler, where):
        loss = sample_loss(torch.tensor(batch, dtype=torch.float64), 0).mean()
        handler.update(loss.float(), indices=batch)
        steps.append((batch, loss.float().item()))
    assert sum(len(batch) for batch, _ in steps) == 40
    expected = bls_replay(steps, 40, 0.5)
    torch.testing.assert_close(handler.scores.double(), expected, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- batch_size=None


def test_batch_size_none_is_one_sample_per_step() -> None:
    per_sample = InfoBatch(IndexedDataset(12), num_epochs=2)
    bls_handler = BLS(InfoBatch(IndexedDataset(12), num_epochs=2), alpha=0.5).proxy()
    for handler in (per_sample, bls_handler):
        loader = DataLoader(handler, sampler=handler.sampler, batch_size=None)
        assert len(loader) == 12
        steps = 0
        for x, index in loader:
            assert isinstance(index, int) and x.shape == (1,)  # an item, not a batch
            loss = torch.tensor([float(index)]) if handler is per_sample else x[0] + 1.0
            handler.update(loss)
            steps += 1
        assert steps == 12
        assert handler.state_dict()["batch_size"] == 1
        handler.end_epoch()
    assert per_sample.scores.tolist() == [float(i) for i in range(12)]
    # BLS: every sample was a batch of its own, so 0.5 * 0 + 0.5 * (i + 1).
    assert bls_handler.scores.tolist() == [0.5 * (i + 1) for i in range(12)]


# ---------------------------------------------------------------- the epoch iterator


def test_epoch_iterator_yields_plain_ints_and_counts_its_position() -> None:
    iterator = _EpochIterator(np.array([7, 3, 9, 1], dtype=np.int32))
    assert iter(iterator) is iterator  # BatchSampler re-wraps it: it must continue
    assert iterator.position == 0
    first = next(iterator)
    assert first == 7 and type(first) is int
    assert iterator.position == 1
    rest = list(iterator)
    assert rest == [3, 9, 1] and all(type(i) is int for i in rest)
    assert iterator.position == 4  # the final, empty next() is not counted past the end
    with pytest.raises(StopIteration):
        next(iterator)
    assert iterator.position == 4


def test_the_sampler_yields_plain_ints_and_its_iterator_counts_what_the_loader_drew() -> None:
    handler = InfoBatch(IndexedDataset(30), num_epochs=2)
    indices = list(handler.sampler)
    assert sorted(indices) == list(range(30)) and all(type(i) is int for i in indices)
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=8)
    batches = iter(loader)
    next(batches)
    iterator = handler._run.iterator
    assert iterator is not None and iterator.position == 8
    next(batches)
    assert iterator.position == 16


def test_epoch_iterator_pickled_mid_epoch_continues_where_it_stopped() -> None:
    # 9000 indices span three of the iterator's 4096-index chunks; stop inside the second.
    iterator = _EpochIterator(np.arange(8999, -1, -1, dtype=np.int64))
    drawn = [next(iterator) for _ in range(5000)]
    assert drawn == list(range(8999, 3999, -1))
    clone = pickle.loads(pickle.dumps(iterator))
    assert clone.position == 5000
    following = next(clone)
    assert following == 3999 and type(following) is int and clone.position == 5001
    assert list(clone) == list(range(3998, -1, -1))
    assert clone.position == 9000
    assert iterator.position == 5000 and next(iterator) == 3999  # the original is unaffected


def test_pickled_copy_mid_epoch_keeps_attributing() -> None:
    # The handler's copy carries the epoch iterator's position, so its next update() finds
    # the batch the original loader drew.
    handler = BLS(InfoBatch(IndexedDataset(32), num_epochs=2), alpha=0.5).proxy()
    batches = iter(DataLoader(handler, sampler=handler.sampler, batch_size=8))
    _, first = next(batches)
    clone = pickle.loads(pickle.dumps(handler))
    clone.update(torch.tensor(2.0))
    handler.update(torch.tensor(2.0))
    assert torch.equal(clone.scores, handler.scores)
    assert torch.all(clone.scores[first] == 1.0)
