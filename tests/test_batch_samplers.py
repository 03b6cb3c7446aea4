"""Losses reach their samples under batch samplers other than torch's stock one.

docs/design.md, 'How a loss finds its samples': a batch sampler that forms its own batches
(torchvision's ``GroupedBatchSampler``, length bucketing) breaks the order route, so it is
either tracked (``handler.sampler.track(...)``), given explicit indices, or refused at the
first ``update()``: never a crash on a missing attribute, never a silent misattribution.

Every test replays the batches the loader actually delivered (their indices, read from the
items) against the independent EMA of ``tests/_replay.py`` or a per-sample "last loss" table.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterator

import pytest
import torch
from _data import IndexedDataset, sample_loss
from _replay import bls_replay
from torch.utils.data import BatchSampler, DataLoader, Sampler

from bls import BLS, AttributionWarning, InfoBatch

N = 60
ALPHA = 0.7
EPOCHS = 4


class GroupedBatchSampler(BatchSampler):
    """Like torchvision's detection reference: groups by a key, never calls ``__init__``.

    Batches hold samples of one group, in the order groups fill up; at the end partial groups
    are topped up with repeated samples of their group, so batches may repeat indices and
    their positions are no run of the sampler's order. It has no ``drop_last``.
    """

    def __init__(self, sampler: Sampler[int], group_ids: list[int], batch_size: int) -> None:
        self.sampler = sampler
        self.group_ids = group_ids
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = defaultdict(list)
        seen: dict[int, list[int]] = defaultdict(list)
        for index in self.sampler:
            group = self.group_ids[index]
            buffers[group].append(index)
            seen[group].append(index)
            if len(buffers[group]) == self.batch_size:
                yield buffers.pop(group)
        for group, rest in sorted(buffers.items()):
            filler = (seen[group] * self.batch_size)[: self.batch_size - len(rest)]
            yield rest + filler

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)


class LengthBuckets:
    """Length bucketing with varying batch sizes; not a ``BatchSampler`` subclass."""

    def __init__(self, sampler: Sampler[int], sizes: tuple[int, ...] = (3, 5, 8)) -> None:
        self.sampler = sampler
        self.sizes = sizes

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        turn = 0
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.sizes[turn % len(self.sizes)]:
                yield batch
                batch, turn = [], turn + 1
        if batch:
            yield batch

    def __len__(self) -> int:
        return len(self.sampler)  # an upper bound is all a DataLoader needs


class ReversedBatches:
    """Regroups a stock ``BatchSampler``'s batches (last first): a stock one sits inside it."""

    def __init__(self, sampler: Sampler[int], batch_size: int) -> None:
        self.inner = BatchSampler(sampler, batch_size, drop_last=False)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(list(self.inner)[::-1])

    def __len__(self) -> int:
        return len(self.inner)


def groups() -> list[int]:
    """Three aspect-ratio groups of 40, 18 and 2 samples: partial groups get topped up, the
    smallest with its own samples again, so one batch holds an index more than once."""
    return [0 if i < 40 else 1 if i < 58 else 2 for i in range(N)]


def train(handler, loader, *, per_sample: bool, explicit: bool, epochs: int = EPOCHS):
    """Run the loop; returns every batch as ``(indices, losses)`` in update order."""
    delivered = []
    for epoch in range(epochs):
        for batch in loader:
            index = batch[-1] if explicit else batch[1]
            losses = sample_loss(index.double(), epoch).float()
            loss = losses if per_sample else losses.mean()
            handler.update(loss, indices=index if explicit else None)
            delivered.append((index.tolist(), losses, epoch))
    return delivered


def expected_bls(delivered) -> torch.Tensor:
    return bls_replay(((ids, losses.mean()) for ids, losses, _ in delivered), N, ALPHA).float()


def expected_per_sample(delivered) -> torch.Tensor:
    scores = torch.full((N,), 3.0)  # InfoBatch's initial score
    for ids, losses, _ in delivered:
        scores[torch.tensor(ids)] = losses
    return scores


def make(*, bls: bool, return_indices: bool = False):
    handler = InfoBatch(
        IndexedDataset(N), num_epochs=EPOCHS, prune_ratio=0.5, return_indices=return_indices
    )
    return BLS(handler, alpha=ALPHA).proxy() if bls else handler


WORKERS = [pytest.param(0, id="workers0"), pytest.param(2, id="workers2")]


@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("bls", [True, False], ids=["bls", "per_sample"])
def test_tracked_grouped_batch_sampler_attributes_exactly(workers: int, bls: bool) -> None:
    handler = make(bls=bls)
    batches = handler.sampler.track(GroupedBatchSampler(handler.sampler, groups(), 6))
    loader = DataLoader(handler, batch_sampler=batches, num_workers=workers)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no AttributionWarning, nothing else
        delivered = train(handler, loader, per_sample=not bls, explicit=False)
        handler.end_epoch()
    assert any(len(set(ids)) < len(ids) for ids, _, _ in delivered)  # repeats exercised
    expected = expected_bls(delivered) if bls else expected_per_sample(delivered)
    torch.testing.assert_close(handler.scores, expected, rtol=1e-6, atol=1e-6)
    per_epoch = [sum(1 for *_, e in delivered if e == epoch) for epoch in range(EPOCHS)]
    assert [r["updates"] for r in handler.history] == per_epoch
    kept = [r["kept"] for r in handler.history]
    assert kept[0] == N and min(kept) < N  # epoch 0 full, later epochs pruned


@pytest.mark.parametrize("bls", [True, False], ids=["bls", "per_sample"])
def test_grouped_batch_sampler_with_explicit_indices(bls: bool) -> None:
    handler = make(bls=bls, return_indices=True)
    loader = DataLoader(
        handler, batch_sampler=GroupedBatchSampler(handler.sampler, groups(), 6), num_workers=2
    )
    delivered = train(handler, loader, per_sample=not bls, explicit=True)
    expected = expected_bls(delivered) if bls else expected_per_sample(delivered)
    torch.testing.assert_close(handler.scores, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "make_batches, name",
    [
        (lambda s: GroupedBatchSampler(s, groups(), 6), "GroupedBatchSampler"),
        (LengthBuckets, "LengthBuckets"),
        (lambda s: ReversedBatches(s, 4), "ReversedBatches"),
    ],
    ids=["grouped", "buckets", "regrouped-stock"],
)
@pytest.mark.parametrize("bls", [True, False], ids=["bls", "per_sample"])
def test_order_route_refuses_a_batch_sampler_that_forms_its_own_batches(
    make_batches, name: str, bls: bool
) -> None:
    handler = make(bls=bls)
    before = handler.scores.clone()
    loader = DataLoader(handler, batch_sampler=make_batches(handler.sampler))
    _, index = next(iter(loader))
    losses = sample_loss(index.double(), 0).float()
    with pytest.raises(ValueError, match=rf"batch sampler {name} forms its own batches") as error:
        handler.update(losses.mean() if bls else losses)
    message = str(error.value)
    assert "handler.sampler.track(" in message and "return_indices=True" in message
    assert "\n" not in message
    assert torch.equal(handler.scores, before)  # nothing recorded


@pytest.mark.parametrize("bls", [True, False], ids=["bls", "per_sample"])
def test_tracked_length_buckets_with_varying_batch_sizes(bls: bool) -> None:
    handler = make(bls=bls)
    loader = DataLoader(
        handler, batch_sampler=handler.sampler.track(LengthBuckets(handler.sampler))
    )
    delivered = train(handler, loader, per_sample=not bls, explicit=False)
    assert {len(ids) for ids, _, _ in delivered} >= {3, 5, 8}
    expected = expected_bls(delivered) if bls else expected_per_sample(delivered)
    torch.testing.assert_close(handler.scores, expected, rtol=1e-6, atol=1e-6)


def test_a_stock_batch_sampler_passed_as_batch_sampler_keeps_the_order_route() -> None:
    handler = make(bls=True)
    loader = DataLoader(handler, batch_sampler=BatchSampler(handler.sampler, 8, drop_last=True))
    delivered = train(handler, loader, per_sample=False, explicit=False)
    assert all(len(ids) == 8 for ids, _, _ in delivered)
    torch.testing.assert_close(handler.scores, expected_bls(delivered), rtol=1e-6, atol=1e-6)


def test_a_skipped_update_under_a_tracked_sampler_is_reported() -> None:
    handler = make(bls=True)
    loader = DataLoader(
        handler,
        batch_sampler=handler.sampler.track(GroupedBatchSampler(handler.sampler, groups(), 6)),
    )
    batches = list(loader)  # 15 or more batches drawn, only the first updated
    handler.update(torch.tensor(1.0))
    with pytest.warns(AttributionWarning, match=rf"called 1 times for {len(batches)} batches"):
        handler.end_epoch()


def test_update_ahead_of_the_tracked_batches_is_an_error() -> None:
    handler = make(bls=True)
    loader = DataLoader(
        handler,
        batch_sampler=handler.sampler.track(GroupedBatchSampler(handler.sampler, groups(), 6)),
    )
    iterator = iter(loader)
    next(iterator)
    handler.update(torch.tensor(1.0))
    with pytest.raises(RuntimeError, match="has no batch yet"):
        handler.update(torch.tensor(1.0))


def test_track_forwards_the_wrapped_batch_samplers_attributes() -> None:
    handler = make(bls=True)
    inner = GroupedBatchSampler(handler.sampler, groups(), 6)
    tracked = handler.sampler.track(inner)
    assert tracked.batch_size == 6 and tracked.group_ids is inner.group_ids
    assert len(tracked) == len(inner)
    assert handler.sampler.track(tracked) is tracked  # wrapping twice is wrapping once
    with pytest.raises(TypeError, match="batch_sampler: expected an iterable"):
        handler.sampler.track(42)  # type: ignore[arg-type]


def test_a_lookahead_loader_is_refused_by_the_loader_class_the_user_chose() -> None:
    class _RepeatSampler:
        def __init__(self, sampler):
            self.sampler = sampler

        def __iter__(self):
            while True:
                yield from iter(self.sampler)

    class MultiEpochsDataLoader(DataLoader):
        """timm's loader: one iterator over a batch sampler repeated forever."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._DataLoader__initialized = False
            self.batch_sampler = _RepeatSampler(self.batch_sampler)
            self._DataLoader__initialized = True
            self.iterator = super().__iter__()

        def __len__(self):
            return len(self.batch_sampler.sampler)

        def __iter__(self):
            for _ in range(len(self)):
                yield next(self.iterator)

    handler = make(bls=True)
    with pytest.raises(TypeError, match=r"test_batch_samplers\..*MultiEpochsDataLoader \(through "):
        next(iter(MultiEpochsDataLoader(handler, sampler=handler.sampler, batch_size=4)))


def _stop_after(handler, loader, updates: int, *, explicit: bool) -> list[list[int]]:
    """Train epoch 0 whole and ``updates`` batches of epoch 1; returns epoch 1's batches."""
    seen = []
    for epoch in range(2):
        handler.sampler.set_epoch(epoch)
        for step, batch in enumerate(loader, start=1):
            index = batch[-1]
            handler.update(torch.tensor(1.0 + epoch), indices=index if explicit else None)
            if epoch == 1:
                seen.append(index.tolist())
                if step == updates:
                    return seen
    raise AssertionError("the epoch ended before the stop")


def test_a_tracked_mid_epoch_checkpoint_continues_from_the_last_updated_batch() -> None:
    handler = make(bls=True)
    tracked = handler.sampler.track(GroupedBatchSampler(handler.sampler, groups(), 6))
    seen = _stop_after(handler, DataLoader(handler, batch_sampler=tracked), 2, explicit=False)
    resumed = make(bls=True)
    resumed.load_state_dict(handler.state_dict())
    tracked = resumed.sampler.track(GroupedBatchSampler(resumed.sampler, groups(), 6))
    resumed.sampler.set_epoch(1)
    rest = [index.tolist() for _, index in DataLoader(resumed, batch_sampler=tracked)]
    trained = {i for batch in seen for i in batch}
    position = handler.state_dict()["position"]
    shard = resumed._run.shards.local(0).tolist()
    # The updated batches came from the shard before the saved position; the resumed pass
    # draws exactly the shard after it (its top-up repeats come from there too), so nothing
    # is trained twice, and what the grouped sampler had drawn but not batched is skipped.
    assert trained <= set(shard[:position])
    assert {i for batch in rest for i in batch} == set(shard[position:])


def test_an_untracked_batch_sampler_with_explicit_indices_restarts_the_epoch_with_a_warning():
    handler = make(bls=True, return_indices=True)
    loader = DataLoader(handler, batch_sampler=GroupedBatchSampler(handler.sampler, groups(), 6))
    _stop_after(handler, loader, 2, explicit=True)
    state = handler.state_dict()
    assert state["position"] == -1 and state["updates"] == 2
    resumed = make(bls=True, return_indices=True)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)
    loader = DataLoader(resumed, batch_sampler=GroupedBatchSampler(resumed.sampler, groups(), 6))
    with pytest.warns(AttributionWarning, match="the epoch restarts from its first batch"):
        rest = [batch[-1].tolist() for batch in loader]
    assert sum(len(batch) for batch in rest) >= resumed.history[-1]["kept"]
