"""The handler as frameworks see it: writes reach the wrapped dataset, warnings for resumes,
the loss to log.

docs/pipelines.md: frameworks configure the dataset they are handed (timm's ``create_loader``
sets ``dataset.transform``); a resumed script that never loaded the handler's state is told
so; ``handler.unweighted_loss`` is the plain mean loss, ``update()``'s return value is the
re-weighted one.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from _data import IndexedDataset, sample_loss
from torch.utils.data import DataLoader, Dataset

from bls import BLS, InfoBatch, ResumeWarning


class Transformed(Dataset):
    """An image-folder-like data set whose ``transform`` a framework replaces."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.transform = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        value = torch.tensor([float(index)])
        return (value if self.transform is None else self.transform(value)), index


def test_a_write_of_the_wrapped_datasets_attribute_reaches_it_and_the_workers() -> None:
    data = Transformed(12)
    handler = InfoBatch(data, num_epochs=2)
    handler.transform = lambda x: x * 10  # what timm's create_loader does to its dataset
    assert data.transform is not None and "transform" not in vars(handler)
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=4, num_workers=2)
    for values, index in loader:
        assert torch.equal(values.squeeze(1), index.float() * 10)
        handler.update(torch.ones(4))


def test_writes_of_other_names_stay_on_the_handler() -> None:
    data = Transformed(12)
    handler = InfoBatch(data, num_epochs=2)
    handler.note = "mine"  # the wrapped data set has no such attribute
    assert vars(handler)["note"] == "mine" and not hasattr(data, "note")
    data.seed = 11
    handler.seed = 4  # the handler's own attribute, although the data set has one too
    assert handler.seed == 4 and data.seed == 11
    data.num_epochs = 99
    handler.num_epochs = 3  # set in the handler's constructor: stays the handler's
    assert handler.num_epochs == 3 and data.num_epochs == 99


def test_set_epoch_past_0_on_a_handler_that_loaded_nothing_warns() -> None:
    handler = BLS(InfoBatch(IndexedDataset(32), num_epochs=4), alpha=0.7).proxy()
    with pytest.warns(ResumeWarning, match=r"set_epoch\(2\) is the first epoch.*load_state_dict"):
        handler.sampler.set_epoch(2)


def test_a_loaded_or_fresh_run_does_not_warn() -> None:
    handler = BLS(InfoBatch(IndexedDataset(32), num_epochs=4), alpha=0.7).proxy()
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeWarning)
        for epoch in range(2):
            handler.sampler.set_epoch(epoch)
            for _, index in loader:
                handler.update(sample_loss(index.double(), epoch).float().mean())
        resumed = BLS(InfoBatch(IndexedDataset(32), num_epochs=4), alpha=0.7).proxy()
        resumed.load_state_dict(handler.state_dict())
        resumed.sampler.set_epoch(2)


def test_unweighted_loss_is_the_plain_mean_while_update_returns_the_reweighted_one() -> None:
    handler = InfoBatch(IndexedDataset(40), num_epochs=4, prune_ratio=0.5)
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=8)
    assert handler.unweighted_loss is None
    ratios = []
    for epoch in range(2):
        for _, index in loader:
            losses = sample_loss(index.double(), epoch).float()
            returned = handler.update(losses)
            torch.testing.assert_close(handler.unweighted_loss, losses.mean())
            ratios.append(float(returned / losses.mean()))
    assert max(ratios) > 1.05  # the pruned epoch re-weights: update() is not the plain mean
    assert handler.unweighted_loss.requires_grad is False
