"""Bad input gets a clear exception naming the argument (docs/design.md, 'Bad input')."""

from __future__ import annotations

import argparse

import pytest
import torch
from _data import IndexedDataset
from torch.utils.data import IterableDataset

from bls import BLS, Full, InfoBatch, RandomPrune, SeTa, Static, prune


class Stream(IterableDataset):
    def __iter__(self):
        yield from range(3)


DATA = IndexedDataset(20)


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (
            lambda: InfoBatch(DATA, 10, prune_ratio=1.0),
            ValueError,
            r"prune_ratio: .*\[0, 1\).*1\.0",
        ),
        (lambda: InfoBatch(DATA, 10, prune_ratio=-0.1), ValueError, r"prune_ratio: .*\[0, 1\)"),
        (lambda: SeTa(DATA, 10, prune_ratio=1.5), ValueError, "prune_ratio"),
        (lambda: RandomPrune(DATA, 10, prune_ratio=float("nan")), ValueError, "prune_ratio"),
        (lambda: Static(DATA, 10, prune_ratio="0.5"), TypeError, "prune_ratio"),
        (lambda: InfoBatch(DATA, 0), ValueError, r"num_epochs: expected an integer >= 1, got 0"),
        (lambda: InfoBatch(DATA, 2.5), TypeError, "num_epochs"),
        (lambda: InfoBatch(DATA, True), TypeError, "num_epochs"),
        (lambda: InfoBatch(DATA, 10, delta=1.2), ValueError, r"delta: .*\[0, 1\]"),
        (lambda: RandomPrune(DATA, 10, delta=-0.5), ValueError, "delta"),
        (lambda: SeTa(DATA, 10, num_group=0), ValueError, r"num_group: expected an integer >= 1"),
        (lambda: SeTa(DATA, 10, num_group=4, window_scale=0.1), ValueError, r"window_scale: round"),
        (lambda: SeTa(DATA, 10, window_scale=1.5), ValueError, "window_scale"),
        (lambda: SeTa(DATA, 10, window_scale=0), ValueError, "window_scale"),
        (lambda: InfoBatch(DATA, 10, seed=-1), ValueError, "seed"),
        (lambda: InfoBatch(IndexedDataset(0), 10), ValueError, "dataset: the dataset is empty"),
        (lambda: InfoBatch(Stream(), 10), TypeError, "dataset: an IterableDataset"),
        (lambda: InfoBatch(object(), 10), TypeError, "dataset: expected a map-style"),
        (lambda: BLS(InfoBatch(DATA, 10), alpha=1.0), ValueError, r"alpha: .*\[0, 1\)"),
        (lambda: BLS(InfoBatch(DATA, 10), alpha=-0.2), ValueError, "alpha"),
        (lambda: BLS(DATA, alpha=0.5), TypeError, "handler: expected a pruning dataset"),
        (lambda: InfoBatch(DATA, {"ratio": 0.5}), ValueError, "args: .*'epochs'"),
        (
            lambda: prune(DATA, {"prune_type": "Infobatchh", "epochs": 3}),
            ValueError,
            "prune_type: unknown value 'Infobatchh'",
        ),
        (lambda: prune(DATA, {"prune_type": "BLS_Full", "epochs": 3}), ValueError, "prune_type"),
    ],
)
def test_rejected(build, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build()


def test_set_epoch_rejects_negative() -> None:
    with pytest.raises(ValueError, match="epoch: expected an integer >= 0"):
        InfoBatch(DATA, 3).sampler.set_epoch(-1)


def test_bls_after_training_started_is_rejected() -> None:
    handler = InfoBatch(DATA, 3)
    handler.sampler.set_epoch(0)
    with pytest.raises(RuntimeError, match="before the first epoch"):
        BLS(handler, alpha=0.5).proxy()


def test_float_indices_rejected() -> None:
    handler = InfoBatch(DATA, 3, return_indices=True)
    next(iter(handler.sampler))
    with pytest.raises(TypeError, match="indices: expected integer"):
        handler.update(torch.ones(2), indices=torch.tensor([1.0, 2.0]))


def test_reference_style_arguments() -> None:
    args = argparse.Namespace(epochs=12, ratio=0.3, delta=0.5, num_group=4, window_scale=0.5)
    info = InfoBatch(DATA, args)
    assert (info.num_epochs, info.policy.prune_ratio, info.delta) == (12, 0.3, 0.5)
    seta = SeTa(DATA, args)
    assert (seta.policy.num_group, seta.policy.window_scale, seta.policy.prune_ratio) == (
        4,
        0.5,
        0.3,
    )
    as_dict = InfoBatch(DATA, {"num_epoch": 7, "prune_ratio": 0.2})
    assert (as_dict.num_epochs, as_dict.policy.prune_ratio, as_dict.delta) == (7, 0.2, 0.875)


@pytest.mark.parametrize(
    ("prune_type", "policy", "source"),
    [
        ("InfoBatch", "InfoBatch", "per-sample"),
        ("SeTa", "SeTa", "per-sample"),
        ("Static", "Static", "per-sample"),
        ("Random", "Random", "per-sample"),
        ("BLS_InfoBatch", "InfoBatch", "bls"),
        ("BLS_SeTa", "SeTa", "bls"),
        ("bls_random", "Random", "bls"),
        ("None", "Full", "none"),
        ("Full", "Full", "none"),
        (None, "Full", "none"),
    ],
)
def test_prune_factory(prune_type, policy: str, source: str) -> None:
    args = argparse.Namespace(prune_type=prune_type, epochs=5, ratio=0.5, alpha=0.6, delta=0.875)
    handler = prune(DATA, args)
    assert handler.policy.name == policy and handler.score_source.name == source
    if source == "bls":
        assert handler.score_source.alpha == 0.6
    if policy == "Full":
        assert isinstance(handler, Full)
