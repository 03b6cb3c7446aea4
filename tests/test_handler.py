"""End-to-end behaviour of the handler with the stock DataLoader.

The rules are docs/design.md's 'Policies', 'How a loss finds its samples' and 'Bad input';
the score sources on their own are tested in tests/test_scores.py, the sampler in
tests/test_sampler.py.

The data set's items carry their own index, and the "loss" is a known function of the index
and the epoch, so the expected score of every sample is computed here independently from the
batches the loader actually delivered, and compared with what the handler recorded.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from _data import DictDataset, IndexedDataset, sample_loss
from _replay import bls_replay
from torch.utils.data import DataLoader

from bls import BLS, AttributionWarning, FewBatchesWarning, InfoBatch, RandomPrune, SeTa, Static

EPOCHS = 5


def run(handler, epochs: int = EPOCHS, *, bls: bool, **loader_options):
    """Train-like loop; returns the index tensors of every epoch, as the loader delivered them."""
    loader = DataLoader(handler, sampler=handler.sampler, **{"batch_size": 16, **loader_options})
    delivered = []
    for epoch in range(epochs):
        seen = []
        for _, index in loader:
            losses = sample_loss(index.double(), epoch).float()
            handler.update(losses.mean() if bls else losses)
            seen.append(index)
        delivered.append(seen)
    return delivered


def expected_scores(delivered, size: int, *, alpha: float | None) -> np.ndarray:
    """Replay the batches: per-sample (alpha None) or batch-loss EMA (tests/_replay.py), float64."""
    batches = [
        (index, sample_loss(index.double(), epoch).float().double())
        for epoch, epoch_batches in enumerate(delivered)
        for index in epoch_batches
    ]
    if alpha is not None:
        return bls_replay(((i, losses.mean()) for i, losses in batches), size, alpha).numpy()
    scores = np.full(size, 3.0)
    for index, losses in batches:
        scores[index.numpy()] = losses.numpy()
    return scores


LOADERS = [
    pytest.param({"num_workers": 0}, id="workers0"),
    pytest.param({"num_workers": 2}, id="workers2"),
    pytest.param({"num_workers": 2, "drop_last": True}, id="workers2-drop_last"),
    pytest.param(
        {"num_workers": 2, "persistent_workers": True, "pin_memory": True}, id="persistent-pin"
    ),
    pytest.param(
        {"num_workers": 0, "drop_last": True, "batch_size": 7}, id="workers0-drop_last-b7"
    ),
]


@pytest.mark.parametrize("options", LOADERS)
def test_per_sample_scores_reach_the_right_samples(options: dict) -> None:
    handler = InfoBatch(IndexedDataset(203), num_epochs=EPOCHS, prune_ratio=0.5)
    delivered = run(handler, bls=False, **options)
    expected = expected_scores(delivered, 203, alpha=None)
    assert np.allclose(handler.scores.numpy(), expected, rtol=1e-6)
    # The loader delivered exactly the plan's indices, each once, as many as "kept".
    for record, batches in zip(handler.history, delivered, strict=True):
        flat = torch.cat(batches)
        assert flat.unique().numel() == flat.numel()
        dropped = record["kept"] - flat.numel()
        assert dropped == 0 or (
            options.get("drop_last") and 0 < dropped < options.get("batch_size", 16)
        )


def test_annealing_boundary_in_history() -> None:
    handler = InfoBatch(IndexedDataset(80), num_epochs=8, prune_ratio=0.5, delta=0.5)
    run(handler, epochs=8, bls=False, num_workers=0)
    assert [r["pruning"] for r in handler.history] == [True] * 4 + [False] * 4
    assert all(r["kept"] == 80 for r in handler.history[4:])
    assert handler.history[0]["kept"] == 80  # equal initial scores: epoch 0 is full
    assert any(r["kept"] < 80 for r in handler.history[1:4])
    pruned = sum(80 - r["kept"] for r in handler.history)
    assert handler.saved_ratio == pytest.approx(pruned / (80 * 8))


def test_batch_of_one_is_trimmed_only_for_pruned_epochs() -> None:
    # 34 * 0.5 = 17 kept, batch 16: the last batch would hold one sample.
    handler = RandomPrune(IndexedDataset(34), num_epochs=2, prune_ratio=0.5, delta=0.5)
    model = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.BatchNorm1d(4))
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=16)
    sizes = []
    for _ in range(2):
        batch_sizes = []
        for x, index in loader:
            model(x)  # BatchNorm in training mode raises on a batch of one
            handler.update(torch.ones(len(index)))
            batch_sizes.append(len(index))
        sizes.append(batch_sizes)
    assert sizes[0] == [16]
    assert handler.history[0]["kept"] == 16 and handler.history[0]["pruned"] == 18
    assert sizes[1] == [16, 16, 2]  # annealing epoch: full data, untouched


def test_update_twice_for_one_batch_is_an_error() -> None:
    handler = InfoBatch(IndexedDataset(40), num_epochs=2)
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=8)
    next(iter(loader))
    handler.update(torch.ones(8))
    with pytest.raises(RuntimeError, match="has no batch yet"):
        handler.update(torch.ones(8))


def test_skipped_update_is_reported_when_the_epoch_ends() -> None:
    handler = BLS(InfoBatch(IndexedDataset(40), num_epochs=3), alpha=0.5).proxy()
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=8)
    for k, _ in enumerate(loader):
        if k != 2:
            handler.update(torch.tensor(1.0))
    with pytest.warns(AttributionWarning, match="called 4 times for 5 batches"):
        handler.end_epoch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        handler.end_epoch()  # reported once
        for _ in loader:
            handler.update(torch.tensor(1.0))
        handler.end_epoch()


def test_extra_update_after_the_last_batch_is_an_error() -> None:
    handler = InfoBatch(IndexedDataset(16), num_epochs=2)
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=8, num_workers=2)
    for _ in loader:
        handler.update(torch.ones(8))
    with pytest.raises(RuntimeError, match="only 2 batches"):
        handler.update(torch.ones(8))


def test_update_before_any_batch() -> None:
    handler = InfoBatch(IndexedDataset(16), num_epochs=2)
    with pytest.raises(RuntimeError, match="before any batch was drawn"):
        handler.update(torch.ones(4))
    handler.sampler.set_epoch(0)
    with pytest.raises(RuntimeError, match="before any batch was drawn"):
        handler.update(torch.ones(4))


def test_per_sample_length_mismatch() -> None:
    handler = InfoBatch(IndexedDataset(16), num_epochs=2)
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=8)
    next(iter(loader))
    with pytest.raises(
        ValueError, match=r"loss: per-sample scoring needs one loss per sample .*length 8"
    ):
        handler.update(torch.ones(5))
    with pytest.raises(ValueError, match="wrap the handler with BLS"):
        handler.update(torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"loss: expected a torch\.Tensor"):
        handler.update(1.0)  # type: ignore[arg-type]


def test_return_indices_dict_and_tuple_items() -> None:
    data = DictDataset(30)
    handler = BLS(InfoBatch(data, num_epochs=3, return_indices=True), alpha=0.5).proxy()
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=8, num_workers=2)
    steps = []
    for epoch in range(3):
        for batch in loader:
            assert torch.equal(batch["x"].squeeze(1).long(), batch["index"])
            loss = batch["x"].mean() * (epoch + 1)
            handler.update(loss, indices=batch["index"])
            steps.append((batch["index"], loss.item()))
    reference = bls_replay(steps, 30, 0.5).numpy()
    assert np.allclose(handler.scores.numpy(), reference, rtol=1e-6)
    with pytest.raises(ValueError, match="indices"):
        next(iter(loader))
        handler.update(torch.tensor(1.0))
    tuple_handler = InfoBatch(IndexedDataset(5), num_epochs=1, return_indices=True)
    assert tuple_handler[3][-1] == 3 and len(tuple_handler[3]) == 3


def test_wrapper_stays_in_the_fetch_path_with_getitems() -> None:
    data = DictDataset(20)
    handler = InfoBatch(data, num_epochs=1, return_indices=True)
    batch = next(iter(DataLoader(handler, sampler=handler.sampler, batch_size=5)))
    assert "index" in batch  # the handler's __getitems__ ran, not only the wrapped one
    assert data.getitems_calls == 1


def test_attribute_forwarding_and_pickle() -> None:
    handler = BLS(SeTa(IndexedDataset(40), num_epochs=3, prune_ratio=0.2), alpha=0.8).proxy()
    assert handler.classes == ("even", "odd")
    with pytest.raises(AttributeError):
        _ = handler.no_such_attribute
    run(handler, epochs=2, bls=True)
    clone = pickle.loads(pickle.dumps(handler))
    assert torch.equal(clone.scores, handler.scores)
    assert clone.history == handler.history
    assert clone.score_source == handler.score_source


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_spawned_workers(context: str) -> None:
    handler = BLS(InfoBatch(IndexedDataset(48), num_epochs=2, prune_ratio=0.5), alpha=0.7).proxy()
    delivered = run(
        handler,
        epochs=2,
        bls=True,
        num_workers=2,
        persistent_workers=True,  # start the (slow to import) workers once
        multiprocessing_context=context,
    )
    assert np.allclose(handler.scores.numpy(), expected_scores(delivered, 48, alpha=0.7), rtol=1e-5)


def test_static_subset_is_fixed_across_epochs() -> None:
    handler = Static(IndexedDataset(60), num_epochs=4, prune_ratio=0.5, seed=1)
    delivered = run(handler, epochs=4, bls=False)
    sets = [set(torch.cat(b).tolist()) for b in delivered]
    assert all(s == sets[0] for s in sets) and len(sets[0]) == 30
    assert handler.saved_ratio == pytest.approx(0.5)


def test_seed_reproducible_and_different_seeds_differ() -> None:
    def plans(seed: int):
        handler = InfoBatch(IndexedDataset(120), num_epochs=4, seed=seed)
        return [torch.cat(b).tolist() for b in run(handler, epochs=4, bls=False)]

    assert plans(3) == plans(3)
    assert plans(3) != plans(4)


@pytest.mark.parametrize(
    ("size", "batch_size"), [(40, 64), (40, 40), (40, 20), (200, 64), (90, 64)]
)
def test_bls_warns_once_when_an_epoch_has_fewer_than_two_batches(
    size: int, batch_size: int
) -> None:
    handler = BLS(InfoBatch(IndexedDataset(size), num_epochs=6, prune_ratio=0.5), alpha=0.7)
    handler = handler.proxy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(handler, 6, bls=True, batch_size=batch_size)
    few = [w for w in caught if issubclass(w.category, FewBatchesWarning)]
    # The first epoch whose plan fits in one batch (drop_last=False: ceil(kept / batch) < 2).
    single = [r["epoch"] for r in handler.history if r["kept"] <= batch_size]
    if not single:
        assert few == []
        return
    assert len(few) == 1  # once per run, not every epoch
    message = str(few[0].message)
    assert message.startswith(f"epoch {single[0]}: the loader makes 1 batch(es) of batch_size")
    assert "fewer than two batches" in message


def test_per_sample_scores_need_no_second_batch() -> None:
    # Per-sample losses tell samples apart inside one batch: no warning, and InfoBatch prunes.
    handler = InfoBatch(IndexedDataset(40), num_epochs=4, prune_ratio=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FewBatchesWarning)
        run(handler, 4, bls=False, batch_size=64)
    assert handler.saved_ratio > 0
