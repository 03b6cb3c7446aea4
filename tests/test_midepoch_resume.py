"""A checkpoint taken after any update(), resumed in a new process, continues exactly.

docs/pipelines.md, "Resuming mid-epoch": the resumed run trains exactly the remaining batches
of the interrupted epoch, then the same epochs, scores and weights as the uninterrupted run,
with the stock DataLoader (workers prefetching), torchdata's StatefulDataLoader (its state
saved beside the handler's) and two ``gloo`` ranks where rank 0 alone saves. The runs happen
in child processes (``tests/_midepoch.py``): the first trains uninterrupted and then stops
mid-epoch, the second is a fresh interpreter that loads the checkpoint.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import _midepoch as runs
import pytest
import torch
import torchdata.stateful_dataloader  # the CI environment installs it (.ci/run)

SCRIPT = Path(__file__).resolve().parent / "_midepoch.py"


def _phase(phase: str, out: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), phase, str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if phase.startswith("ddp"):
        return {rank: torch.load(out / f"{phase}_{rank}.pt") for rank in (0, 1)}
    return torch.load(out / f"{phase}.pt")


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("midepoch")
    return _phase("first", out), _phase("resume", out)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("midepoch_ddp")
    return _phase("ddp-first", out), _phase("ddp-resume", out)


def _check(first: dict[str, Any], resumed: dict[str, Any]) -> None:
    full, stopped = first["full"], first["stopped"]
    # The stop is mid-epoch, in a pruning epoch, and the uninterrupted run is not trivial.
    assert stopped[-1][0] == runs.STOP_EPOCH
    assert sum(1 for epoch, _ in stopped if epoch == runs.STOP_EPOCH) == runs.STOP_UPDATE
    assert full["history"][runs.STOP_EPOCH]["pruned"] > 0
    # Exactly the remaining batches, then the same epochs: one concatenated index list.
    assert resumed["seen"][0][0] == runs.STOP_EPOCH
    assert stopped + resumed["seen"] == full["seen"]
    assert torch.equal(resumed["scores"], full["scores"])
    assert torch.equal(resumed["weights"], full["weights"])
    assert resumed["history"] == full["history"]
    assert resumed["saved_ratio"] == full["saved_ratio"]
    assert full["warnings"] == [] and resumed["warnings"] == []


@pytest.mark.parametrize("name", [cfg["name"] for cfg in runs.SCENARIOS])
def test_a_mid_epoch_checkpoint_resumes_exactly(single: tuple[dict, dict], name: str) -> None:
    first, resumed = single
    _check(first[name], resumed[name])


def test_stateful_dataloader_trains_exactly_as_the_stock_loader(
    single: tuple[dict, dict],
) -> None:
    stock, stateful = single[0]["stock-bls-set_epoch"], single[0]["stateful-bls"]
    assert stateful["full"]["seen"] == stock["full"]["seen"]
    assert [r["kept"] for r in stateful["full"]["history"]] == [
        r["kept"] for r in stock["full"]["history"]
    ]
    assert len(stateful["full"]["history"]) == runs.EPOCHS  # not one epoch more per pass
    assert torch.equal(stateful["full"]["scores"], stock["full"]["scores"])


@pytest.mark.parametrize("name", [cfg["name"] for cfg in runs.DDP_SCENARIOS])
def test_two_ranks_resume_exactly_from_rank_0s_checkpoint(
    ddp: tuple[dict, dict], name: str
) -> None:
    first, resumed = ddp
    for rank in (0, 1):
        _check(first[rank][name], resumed[rank][name])
    # Every rank holds the same scores; the ranks' batches are disjoint within a step.
    assert torch.equal(resumed[0][name]["scores"], resumed[1][name]["scores"])
    ours = {i for _, batch in first[0][name]["full"]["seen"][:3] for i in batch}
    theirs = {i for _, batch in first[1][name]["full"]["seen"][:3] for i in batch}
    assert not ours & theirs


def _stateful(handler: Any) -> Any:
    return torchdata.stateful_dataloader.StatefulDataLoader(
        handler, sampler=handler.sampler, batch_size=runs.BATCH
    )


def test_loader_and_handler_states_from_different_steps_are_refused() -> None:
    handler = runs._handler({"bls": True})
    loader = _stateful(handler)
    for step, _ in enumerate(loader, start=1):
        handler.update(torch.tensor(1.0))
        if step == 2:
            loader_state = loader.state_dict()
        if step == 3:
            break
    resumed = runs._handler({"bls": True})
    resumed.load_state_dict(handler.state_dict())
    loader = _stateful(resumed)
    loader.load_state_dict(loader_state)
    with pytest.raises(ValueError, match=r"loader's state is at position 16 .* checkpoint at 24"):
        next(iter(loader))


def test_loading_the_loader_state_before_the_handlers_is_refused() -> None:
    handler = runs._handler({"bls": True})
    loader = _stateful(handler)
    for epoch in range(2):
        handler.sampler.set_epoch(epoch)
        for step, _ in enumerate(loader, start=1):
            handler.update(torch.tensor(1.0))
            if (epoch, step) == (1, 2):
                break
    loader_state = loader.state_dict()
    fresh = runs._handler({"bls": True})
    loader = _stateful(fresh)
    loader.load_state_dict(loader_state)
    with pytest.raises(ValueError, match=r"loader's state is in epoch 1 but the handler is in"):
        next(iter(loader))
