"""The handler's declared state: checkpoints, damaged checkpoints and the worker payload."""

from __future__ import annotations

import io
import pickle
from multiprocessing.reduction import ForkingPickler
from typing import Any

import pytest
import torch
from _data import IndexedDataset, sample_loss
from torch.utils.data import DataLoader

from bls import BLS, InfoBatch
from bls.worker import WorkerDataset


def _trained(n: int = 64, epochs: int = 2) -> Any:
    handler = BLS(InfoBatch(IndexedDataset(n), num_epochs=4, prune_ratio=0.5), alpha=0.7).proxy()
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=8)
    for epoch in range(epochs):
        for _, index in loader:
            handler.update(sample_loss(index.double(), epoch).float().mean())
    return handler


def test_declared_fields() -> None:
    fields = {f.name: f for f in _trained()._state.fields}
    assert [name for name, f in fields.items() if f.saved] == [
        "scores", "weights", "epoch", "batch_size", "history", "warned_nonfinite"
    ]  # fmt: skip
    assert [name for name, f in fields.items() if f.per_epoch] == ["nonfinite", "table", "pending"]
    assert fields["pending"].ranks == "own" and fields["scores"].ranks == "same"


def test_state_round_trip_through_torch_save() -> None:
    handler = _trained()
    buffer = io.BytesIO()
    torch.save(handler.state_dict(), buffer)
    buffer.seek(0)
    fresh = BLS(InfoBatch(IndexedDataset(64), num_epochs=4, prune_ratio=0.5), alpha=0.7).proxy()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    # The open epoch's record holds what closing it would add (updates, nonfinite).
    assert torch.equal(fresh.scores, handler.scores)
    assert fresh.history == handler.state_dict()["history"]
    assert fresh.history[-1]["updates"] == 7
    assert fresh.state_dict()["batch_size"] == 8


def _damaged(change: dict[str, Any], drop: str | None = None) -> dict[str, Any]:
    state = {**_trained().state_dict(), **change}
    if drop:
        del state[drop]
    return state


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({}, r"state_dict: the checkpoint has no 'format' entry \(has: nothing\)"),
        (_damaged({}, drop="num_samples"), "has no 'num_samples' entry"),
        (
            _damaged({"format": 7}),
            "format 7 is not supported; this version of bls-prune reads format 1",
        ),
        (
            _damaged({"scores": torch.zeros(10)}),
            r"'scores' has shape \(10,\), this handler needs \(64,\)",
        ),
        (_damaged({"scores": torch.full((64,), float("nan"))}), "'scores' holds 64 non-finite"),
        (_damaged({"weights": [1.0] * 64}), "'weights' must be a tensor, got list"),
        (_damaged({"num_samples": 65}), "saved num_samples=65 does not match"),
        (_damaged({"scores": torch.full((64,), float("inf"))}), "'scores' holds 64 non-finite"),
        (_damaged({"epoch": "1"}), r"'epoch' is '1'; expected an int >= -1"),
        (_damaged({"epoch": True}), r"'epoch' is True; expected an int >= -1"),
        (_damaged({"seed": -3}), r"'seed' is -3; expected an int >= 0"),
        (_damaged({"history": 5}), r"'history' is 5; expected a list of dicts"),
        (_damaged({"history": [{"kept": 3}]}), r"'history' is .*expected a list of dicts"),
        (_damaged({"batch_size": 0}), r"'batch_size' is 0; expected -1 or an int >= 1"),
        (_damaged({"epoch_started": "yes"}), r"'epoch_started' is 'yes'; expected a bool"),
        (_damaged({"updates": -1}), r"'updates' is -1; expected an int >= 0"),
        (_damaged({"layout": [0, 8, False]}), r"'layout' is \[0, 8, False\]; expected"),
        (_damaged({}, drop="plan"), "has no 'plan' entry"),
        (_damaged({"plan": torch.tensor([0.5])}), "'plan' must be a 1-D integer tensor"),
        (_damaged({"plan": torch.tensor([3, 64])}), r"'plan' must be .* in \[0, 64\)"),
        (
            {"state": {}, "param_groups": []},  # an optimizer's state_dict, passed by mistake
            "has no 'format' entry .*'state', 'param_groups'",
        ),
    ],
    ids=[
        "empty",
        "no-num_samples",
        "format",
        "length",
        "nan",
        "not-a-tensor",
        "other-data",
        "inf",
        "epoch-str",
        "epoch-bool",
        "seed",
        "history",
        "history-record",
        "batch_size",
        "epoch_started",
        "updates",
        "layout",
        "no-plan",
        "plan-float",
        "plan-range",
        "foreign",
    ],
)
def test_damaged_checkpoints_name_what_is_wrong(state: dict[str, Any], message: str) -> None:
    handler = BLS(InfoBatch(IndexedDataset(64), num_epochs=4, prune_ratio=0.5), alpha=0.7).proxy()
    before = handler.scores.clone()
    with pytest.raises(ValueError, match=message):
        handler.load_state_dict(state)
    assert torch.equal(handler.scores, before)  # nothing half-loaded


def test_a_state_that_is_not_a_mapping_is_a_type_error() -> None:
    handler = BLS(InfoBatch(IndexedDataset(64), num_epochs=4, prune_ratio=0.5), alpha=0.7).proxy()
    with pytest.raises(
        TypeError, match=r"expected the dict handler\.state_dict\(\) returned, got list"
    ):
        handler.load_state_dict([1, 2])  # type: ignore[arg-type]


def _forking_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    ForkingPickler(buffer, pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def test_workers_receive_a_thin_view_whose_size_does_not_grow_with_n() -> None:
    small, large = _trained(64), _trained(6400)
    payloads = [_forking_bytes(h) for h in (small, large)]
    assert len(payloads[1]) - len(payloads[0]) < 16  # only the dataset's own length differs
    view = pickle.loads(payloads[1])
    assert isinstance(view, WorkerDataset) and len(view) == 6400 and view[5] == small[5]
    with pytest.raises(AttributeError, match="sampler: this is the worker view"):
        _ = view.sampler
    # An ordinary pickle still copies the whole handler, scores and all.
    clone = pickle.loads(pickle.dumps(large))
    assert torch.equal(clone.scores, large.scores) and len(pickle.dumps(large)) > 6400 * 8
