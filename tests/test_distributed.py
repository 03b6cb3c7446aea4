"""Pruning under a real 2-process ``gloo`` process group (docs/design.md, 'DDP collectives').

One ``torch.multiprocessing.spawn`` launch trains a small DDP model on every scenario below and
records what each rank saw (``tests/_ddp_worker.py``); the tests then check, per epoch and per
rank: equal batch counts, disjoint shards whose union is the epoch list, the plan every rank
decided against an independent recomputation, identical scores on both ranks after every step,
and the scores against a replay of the update rules (docs/design.md, 'Score sources') from the
recorded losses: after every step where every rank called ``state_dict()`` after it (which folds
every rank's deferred losses in), and at each epoch's last update where nobody did.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import _ddp_worker as worker
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from _replay import bls_replay

WORLD = 2
ROOT = Path(__file__).resolve().parents[1]

# Sizes are chosen so pruned epochs keep odd counts (trimmed to a multiple of the world size)
# and shards that leave a final batch of one (trimmed once more); full epochs of an odd N are
# padded, as DistributedSampler does.
SCENARIOS: list[dict[str, Any]] = [
    # name, policy, BLS alpha, N, batch, drop_last, set_epoch, explicit indices, bf16, workers
    dict(name="infobatch", policy="InfoBatch", alpha=None, n=103, batch=8, drop_last=False,
         set_epoch=True),
    dict(name="bls_infobatch_drop", policy="InfoBatch", alpha=0.7, n=103, batch=8,
         drop_last=True, set_epoch=False),
    dict(name="bls_seta", policy="SeTa", alpha=0.8, n=97, batch=5, drop_last=False,
         set_epoch=True, prune_ratio=0.3),
    dict(name="random_drop", policy="Random", alpha=None, n=101, batch=7, drop_last=True,
         set_epoch=False, prune_ratio=0.3),
    dict(name="bls_infobatch_explicit_bf16", policy="InfoBatch", alpha=0.7, n=91, batch=6,
         drop_last=False, set_epoch=True, explicit=True, bf16=True, num_workers=2),
    dict(name="seta_explicit_drop", policy="SeTa", alpha=None, n=61, batch=4, drop_last=True,
         set_epoch=True, explicit=True, prune_ratio=0.2),
    # keeps floor(0.5 * 3) = 1 sample in epoch 0: fewer than the ranks, padded, never empty
    dict(name="random_tiny", policy="Random", alpha=None, n=3, batch=2, drop_last=False,
         set_epoch=True, epochs=2),
    # Deferred: no state_dict() between steps, so every rank's losses of an epoch are gathered
    # and folded at once, at its last update (full epochs of an odd N are padded).
    dict(name="bls_infobatch_deferred", policy="InfoBatch", alpha=0.7, n=103, batch=8,
         drop_last=False, set_epoch=True, defer=True),
    dict(name="infobatch_deferred_drop", policy="InfoBatch", alpha=None, n=101, batch=7,
         drop_last=True, set_epoch=False, defer=True),
    dict(name="bls_seta_deferred", policy="SeTa", alpha=0.8, n=97, batch=5, drop_last=False,
         set_epoch=False, prune_ratio=0.3, defer=True, end_epoch=False),
    dict(name="random_tiny_deferred", policy="Random", alpha=None, n=3, batch=2,
         drop_last=False, set_epoch=True, epochs=2, defer=True),
    dict(name="bls_explicit_deferred", policy="InfoBatch", alpha=0.7, n=91, batch=6,
         drop_last=False, set_epoch=True, explicit=True, defer=True, num_workers=2),
    dict(name="infobatch_explicit_deferred_drop", policy="InfoBatch", alpha=None, n=101,
         batch=7, drop_last=True, set_epoch=False, explicit=True, defer=True),
]  # fmt: skip
for _cfg in SCENARIOS:
    _cfg.setdefault("epochs", 5)
    _cfg.setdefault("prune_ratio", 0.5)
    _cfg.setdefault("num_workers", 0)
NAMES = [cfg["name"] for cfg in SCENARIOS]
SYNCED = [cfg["name"] for cfg in SCENARIOS if not cfg.get("defer")]
DEFERRED = [cfg["name"] for cfg in SCENARIOS if cfg.get("defer")]
CONFIG = {cfg["name"]: cfg for cfg in SCENARIOS}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker.distributed_phase, args=(WORLD, str(out), SCENARIOS), nprocs=WORLD)
    return [torch.load(out / f"distributed_{r}.pt", weights_only=False) for r in range(WORLD)]


def expected_final_plan(raw: np.ndarray, n: int, batch: int, drop_last: bool) -> np.ndarray:
    """docs/design.md, 'Sharding over ranks', written independently of the handler: a pruned
    plan is cut to a multiple of the world size (then by one more row when a rank's last batch
    would hold one sample), a full plan, or one shorter than the world, is padded with its
    first indices."""
    if WORLD < raw.size < n:
        plan = raw[: raw.size - raw.size % WORLD]
        if not drop_last and batch > 1 and (plan.size // WORLD) % batch == 1 and plan.size > WORLD:
            plan = plan[:-WORLD]
        return plan
    pad = (-raw.size) % WORLD
    return np.concatenate((raw, raw[:pad]))


def initial_score(cfg: dict[str, Any]) -> float:
    return 0.0 if cfg["alpha"] is not None else 3.0


def scores_before(run: dict[str, Any], epoch: int, cfg: dict[str, Any]) -> torch.Tensor:
    if epoch == 0:
        return torch.full((cfg["n"],), initial_score(cfg))
    return run["epochs"][epoch - 1]["scores"][-1]


@pytest.mark.parametrize("name", NAMES)
def test_every_rank_runs_the_same_batches_of_disjoint_shards(
    ranks: list[dict[str, Any]], name: str
) -> None:
    cfg = CONFIG[name]
    runs = [r[name] for r in ranks]
    for epoch in range(cfg["epochs"]):
        plans = [run["epochs"][epoch]["plan"].numpy() for run in runs]
        np.testing.assert_array_equal(plans[0], plans[1])  # the identical epoch list
        plan = plans[0]
        assert plan.size % WORLD == 0
        shard_length = plan.size // WORLD
        counts = [len(run["epochs"][epoch]["batches"]) for run in runs]
        want = (
            shard_length // cfg["batch"] if cfg["drop_last"] else -(-shard_length // cfg["batch"])
        )
        assert counts == [want] * WORLD, (epoch, counts, want)
        delivered = [torch.cat(run["epochs"][epoch]["batches"]).numpy() for run in runs]
        for rank, seen in enumerate(delivered):
            shard = plan[rank::WORLD]
            assert runs[rank]["epochs"][epoch]["len_sampler"] == shard.size
            kept = shard[: want * cfg["batch"]] if cfg["drop_last"] else shard
            np.testing.assert_array_equal(seen, kept)
            if not cfg["drop_last"] and shard.size > 1:  # (one kept sample: no other way)
                assert all(b.numel() > 1 for b in runs[rank]["epochs"][epoch]["batches"])
        if np.unique(plan).size == plan.size:  # not padded: truly disjoint
            assert not set(delivered[0]) & set(delivered[1])
        if not cfg["drop_last"]:
            np.testing.assert_array_equal(np.sort(np.concatenate(delivered)), np.sort(plan))
        if plan.size >= cfg["n"]:
            assert set(plan) == set(range(cfg["n"]))  # padding loses no sample


@pytest.mark.parametrize("name", NAMES)
def test_plan_is_decided_from_the_previous_epochs_scores(
    ranks: list[dict[str, Any]], name: str
) -> None:
    cfg = CONFIG[name]
    run = ranks[0][name]
    reference = worker.build_handler(cfg)  # only for its policy and schedule
    for epoch in range(cfg["epochs"]):
        record = run["epochs"][epoch]
        assert record["handler_epoch"] == epoch
        scores = scores_before(run, epoch, cfg).numpy()
        rng = np.random.default_rng([worker.SEED, epoch])
        raw = reference.policy.plan(scores, epoch, reference.is_pruning_epoch(epoch), rng)
        want = expected_final_plan(raw.indices, cfg["n"], cfg["batch"], cfg["drop_last"])
        np.testing.assert_array_equal(record["plan"].numpy(), want)
        weights = torch.ones(cfg["n"])
        weights[torch.from_numpy(raw.upweighted)] = raw.up_weight
        torch.testing.assert_close(record["weights"], weights, rtol=0, atol=0)
        history = run["history"][epoch]
        assert (history["epoch"], history["kept"]) == (epoch, min(want.size, cfg["n"]))
        assert history["pruned"] == cfg["n"] - history["kept"]


def test_uneven_kept_counts_were_exercised(ranks: list[dict[str, Any]]) -> None:
    # Guards the scenarios above: the trimming paths must actually have been taken.
    odd_kept = trimmed_batch_of_one = padded = deferred_padded = 0
    for cfg in SCENARIOS:
        run = ranks[0][cfg["name"]]
        for epoch in range(cfg["epochs"]):
            kept = run["history"][epoch]["kept"]
            plan = run["epochs"][epoch]["plan"].numpy()
            scores = scores_before(run, epoch, cfg).numpy()
            reference = worker.build_handler(cfg)
            rng = np.random.default_rng([worker.SEED, epoch])
            raw = reference.policy.plan(scores, epoch, reference.is_pruning_epoch(epoch), rng)
            odd_kept += raw.indices.size < cfg["n"] and raw.indices.size % WORLD == 1
            trimmed_batch_of_one += raw.indices.size - plan.size >= WORLD
            padded += plan.size > cfg["n"]
            # A padded epoch repeats samples of its first row in its last: folded after it.
            deferred_padded += bool(cfg.get("defer")) and plan.size > cfg["n"]
            assert kept == min(plan.size, cfg["n"])
    assert odd_kept >= 3 and trimmed_batch_of_one >= 1 and padded >= 3 and deferred_padded >= 3


@pytest.mark.parametrize("name", NAMES)
def test_scores_identical_on_every_rank_after_every_step(
    ranks: list[dict[str, Any]], name: str
) -> None:
    cfg = CONFIG[name]
    for epoch in range(cfg["epochs"]):
        steps = [ranks[r][name]["epochs"][epoch]["scores"] for r in range(WORLD)]
        assert len(steps[0]) == len(steps[1]) > 0
        for step, (first, second) in enumerate(zip(*steps, strict=True)):
            assert torch.equal(first, second), (epoch, step)
    params = [ranks[r][name]["params"] for r in range(WORLD)]
    for first, second in zip(*params, strict=True):
        assert torch.equal(first, second)  # DDP kept the models in step too


def replay_step(
    score: np.ndarray, records: list[dict[str, Any]], step: int, alpha: float | None, n: int
) -> np.ndarray:
    """The update rules applied to every rank's batch of one step (rank 0's first)."""
    step_batches = []  # BLS: every rank's (indices, batch loss) of this step
    for record in records:
        index = record["batches"][step].numpy()
        loss = record["losses"][step].double().numpy()
        if alpha is None:
            score[index] = loss
        else:
            assert loss.shape == ()
            step_batches.append((index, float(loss)))
    if alpha is not None:
        score = bls_replay(step_batches, n, alpha, start=score).numpy()
    return score


@pytest.mark.parametrize("name", DEFERRED)
def test_deferred_scores_are_folded_at_each_epochs_last_update(
    ranks: list[dict[str, Any]], name: str
) -> None:
    """Without a state_dict() between steps, the scores stay those of the epoch's start until
    its last update(), which gathers every rank's losses and folds them: then they equal the
    replay of all the epoch's steps, in step order, on every rank."""
    cfg = CONFIG[name]
    alpha = cfg["alpha"]
    score = np.full(cfg["n"], initial_score(cfg), dtype=np.float64)
    for epoch in range(cfg["epochs"]):
        records = [ranks[r][name]["epochs"][epoch] for r in range(WORLD)]
        steps = len(records[0]["batches"])
        assert steps > 0
        start = score.copy()
        for step in range(steps):
            score = replay_step(score, records, step, alpha, cfg["n"])
        for rank, record in enumerate(records):
            for step in range(steps - 1):
                recorded = record["scores"][step].double().numpy()
                np.testing.assert_allclose(recorded, start, rtol=0, atol=1e-6 if alpha else 0)
            last = record["scores"][-1].double().numpy()
            np.testing.assert_allclose(last, score, rtol=0, atol=1e-6 if alpha else 0)
            assert torch.equal(record["scores"][-1], records[0]["scores"][-1]), rank


@pytest.mark.parametrize("name", SYNCED)
def test_scores_follow_the_update_rule_over_all_ranks(
    ranks: list[dict[str, Any]], name: str
) -> None:
    """Replay: BLS moves every sample of a rank's batch toward that rank's batch loss;
    per-sample scoring stores each sample's own last loss. Both ranks' batches of a step
    count before the next step."""
    cfg = CONFIG[name]
    alpha = cfg["alpha"]
    score = np.full(cfg["n"], initial_score(cfg), dtype=np.float64)
    for epoch in range(cfg["epochs"]):
        records = [ranks[r][name]["epochs"][epoch] for r in range(WORLD)]
        for step in range(len(records[0]["batches"])):
            score = replay_step(score, records, step, alpha, cfg["n"])
            recorded = records[0]["scores"][step].double().numpy()
            np.testing.assert_allclose(recorded, score, rtol=0, atol=1e-6 if alpha else 0)


def test_indices_are_gathered_as_int64(ranks: list[dict[str, Any]]) -> None:
    big = [torch.tensor([2**53 + 1 + r, -(2**62) + r], dtype=torch.int64) for r in range(WORLD)]
    for result in ranks:
        assert result["gather_equal"].dtype == torch.int64
        assert torch.equal(result["gather_equal"], torch.stack(big))
        pieces = result["gather_uneven"]
        assert [p.dtype for p in pieces] == [torch.int64] * WORLD
        for rank, (piece, sent) in enumerate(zip(pieces, big, strict=True)):
            assert torch.equal(piece, sent[: rank + 1])


def test_bf16_batch_losses_reach_the_scores_unrounded_twice(ranks: list[dict[str, Any]]) -> None:
    # The bf16 scenario's losses are bf16-representable; the replay above used them exactly,
    # so the float32 scores carry no second rounding from the gather.
    name = "bls_infobatch_explicit_bf16"
    for epoch in ranks[0][name]["epochs"]:
        for loss in epoch["losses"]:
            assert loss.to(torch.bfloat16).float() == loss
    assert math.isclose(ranks[0][name]["saved_ratio"], ranks[1][name]["saved_ratio"])


def test_the_ddp_example_under_torchrun(tmp_path: Path) -> None:
    """The README's command: ``torchrun --nproc_per_node=2 examples/ddp_train.py --epochs 3``."""
    checkpoint, summary_path = tmp_path / "checkpoint.pt", tmp_path / "summary.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["examples/ddp_train.py", "--epochs", "3", "--checkpoint", str(checkpoint)]
    command += ["--out", str(summary_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "2 process(es)" in done.stdout
    summary = json.loads(summary_path.read_text())
    assert summary["world_size"] == WORLD and len(summary["history"]) == 3
    for record, counts in zip(summary["history"], summary["batches_per_rank"], strict=True):
        # every rank ran ceil(kept / 2 / 32) batches: a shard of the (padded or trimmed) plan
        assert counts == [math.ceil(math.ceil(record["kept"] / WORLD) / 32)] * WORLD
    assert summary["history"][1]["pruned"] > 0
    state = torch.load(checkpoint, weights_only=True)
    assert state["epoch"] == 2 and state["pruning"]["epoch"] == 2
    assert state["pruning"]["scores"].tolist() == summary["scores"]
