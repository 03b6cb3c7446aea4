"""How often the handler talks to the other ranks, under a real 2-process ``gloo`` group.

docs/design.md, 'DDP collectives': every rank defers its losses into its own pending buffer
(explicit indices too, in fixed slots) and the epoch's last ``update()`` gathers all of them at
once, so an epoch makes one collective (two with explicit indices) however many steps it has
(at most 4 is the bound). The child processes
(``tests/_ddp_worker.py``, ``collectives_phase``) count every ``torch.distributed`` collective
with wrappers installed in themselves only. They also check what saving needs: rank 0 alone
may call ``state_dict()`` after an epoch's last update (nothing is pending, nothing is
gathered); inside an epoch every rank calls it at the same step, and rank 0 calling it alone
raises, naming the missing rank, instead of waiting on a collective.
"""

from __future__ import annotations

from typing import Any

import _ddp_worker as worker
import pytest
import torch
import torch.multiprocessing as mp
from _replay import bls_replay

WORLD = 2
# Many steps per epoch (batch 4): the count must not grow with them. Odd N: full epochs are
# padded, so the fold of a padded epoch's repeated samples runs too.
SCENARIOS: list[dict[str, Any]] = [
    {"name": "bls", "policy": "InfoBatch", "alpha": 0.7, "n": 403, "batch": 4,
     "drop_last": False},
    {"name": "per_sample", "policy": "InfoBatch", "alpha": None, "n": 403, "batch": 4,
     "drop_last": False},
    {"name": "bls_seta_drop", "policy": "SeTa", "alpha": 0.6, "n": 480, "batch": 3,
     "drop_last": True, "prune_ratio": 0.3},
    # Explicit indices (return_indices=True): deferred in fixed slots, gathered in two.
    {"name": "bls_explicit", "policy": "InfoBatch", "alpha": 0.7, "n": 403, "batch": 4,
     "drop_last": False, "explicit": True},
    {"name": "per_sample_explicit_drop", "policy": "InfoBatch", "alpha": None, "n": 403,
     "batch": 4, "drop_last": True, "explicit": True},
]  # fmt: skip
for _cfg in SCENARIOS:
    _cfg.setdefault("epochs", 3)
    _cfg.setdefault("prune_ratio", 0.5)
NAMES = [cfg["name"] for cfg in SCENARIOS]
CONFIG = {cfg["name"]: cfg for cfg in SCENARIOS}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("collectives")
    mp.spawn(worker.collectives_phase, args=(WORLD, str(out), SCENARIOS), nprocs=WORLD)
    return [torch.load(out / f"collectives_{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("name", NAMES)
def test_an_epoch_of_many_steps_makes_at_most_four_collectives(
    ranks: list[dict[str, Any]], name: str
) -> None:
    for result in ranks:
        record = result[name]
        assert min(record["steps"]) >= 20  # many steps per epoch
        for calls in record["collectives"]:
            assert len(calls) <= 4, calls
            # One gather at the epoch's last update: the losses (explicit: indices, losses).
            assert calls == ["all_gather_single"] * (2 if CONFIG[name].get("explicit") else 1)


@pytest.mark.parametrize("name", NAMES)
def test_rank_0_alone_saves_at_an_epochs_end_without_waiting(
    ranks: list[dict[str, Any]], name: str
) -> None:
    saves = ranks[0][name]["saves"]
    assert len(saves) == CONFIG[name]["epochs"]
    for seconds, _ in saves:
        assert seconds < 2.0  # no wait for the other rank (its timeout here is 3 s)
    # The saved scores hold both ranks' losses: the final ones are what either rank ends with.
    assert torch.equal(saves[-1][1], ranks[0][name]["final_scores"])
    assert torch.equal(ranks[0][name]["final_scores"], ranks[1][name]["final_scores"])


@pytest.mark.parametrize("name", NAMES)
def test_a_mid_epoch_state_dict_on_every_rank_folds_every_ranks_losses(
    ranks: list[dict[str, Any]], name: str
) -> None:
    cfg = CONFIG[name]
    states = [result[name]["midepoch_state"] for result in ranks]
    assert torch.equal(states[0]["scores"], states[1]["scores"])
    assert states[0]["updates"] == states[1]["updates"] == 3 and not states[0]["epoch_finished"]
    # Replay the three steps of both ranks on the scores the epoch started with.
    start = ranks[0][name]["final_scores"].double()
    if cfg["alpha"] is None:
        expected = start.clone()
        for step in range(3):
            for result in ranks:
                index, loss = result[name]["midepoch_seen"][step]
                expected[index] = loss.double()
    else:
        steps = []
        for step in range(3):
            for result in ranks:
                index, loss = result[name]["midepoch_seen"][step]
                steps.append((index.tolist(), float(loss.float().mean())))
        expected = bls_replay(steps, cfg["n"], cfg["alpha"], start=start)
    torch.testing.assert_close(states[0]["scores"].double(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_rank_0_alone_mid_epoch_raises_instead_of_hanging(
    ranks: list[dict[str, Any]], name: str
) -> None:
    record = ranks[0][name]
    assert "rank(s) 1 did not call it" in record["alone_error"]
    assert "call it on every rank at the same step" in record["alone_error"]
    assert 2.5 < record["alone_seconds"] < 30
    assert "alone_error" not in ranks[1][name]
