"""Stop after epoch k, resume in a new process: the same index lists, weights and scores.

Two launches of two processes each (``tests/_ddp_worker.py``): the first trains every scenario
for all epochs, single-process and then under a 2-rank ``gloo`` DDP group, and checkpoints
(handler, model, optimizer) after epoch ``STOP``; the second, a fresh set of processes, loads
those checkpoints with ``torch.load(..., weights_only=True)`` and trains the remaining epochs.
Everything observed from epoch ``STOP + 1`` on must match element by element.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import _ddp_worker as worker
import pytest
import torch
import torch.multiprocessing as mp

WORLD = 2
STOP = 1  # checkpoint after epoch 1 of 4: the resumed part prunes (2) and anneals (3)
SCENARIOS: list[dict[str, Any]] = [
    {"name": f"{'bls_' if alpha else ''}{policy.lower()}", "policy": policy, "alpha": alpha}
    for policy in ("InfoBatch", "SeTa", "Random")
    for alpha in (None, 0.8)
]
for _number, _cfg in enumerate(SCENARIOS):
    _cfg.update(
        n=83,
        batch=8,
        drop_last=bool(_number % 2),
        epochs=4,
        prune_ratio=0.5 if _cfg["policy"] != "SeTa" else 0.3,
        set_epoch=_number % 3 == 0,
        end_epoch=_number % 3 == 1,  # state_dict() right after the last update(), or closed
        num_workers=2,
        persistent_workers=bool(_number % 2),
    )
KEYS = [f"{mode}/{cfg['name']}" for mode in ("single", "ddp") for cfg in SCENARIOS]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("resume")
    loaded: dict[str, Any] = {"out": out}
    for resume in (False, True):
        # (pg_init must not be reused by the second launch's process group)
        (out / "pg_init").unlink(missing_ok=True)
        args = (WORLD, str(out), SCENARIOS, STOP, resume)
        mp.spawn(worker.resume_phase, args=args, nprocs=WORLD)
        phase = "resumed" if resume else "full"
        for rank in range(WORLD):
            for key, run in torch.load(out / f"{phase}_{rank}.pt", weights_only=False).items():
                loaded[f"{phase}/{key}/{rank}"] = run
    return loaded


def _pairs(runs: dict[str, Any], key: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    # Under DDP every rank ran the scenario; single-process runs were split over the processes.
    ranks = [r for r in range(WORLD) if f"full/{key}/{r}" in runs]
    assert len(ranks) == (WORLD if key.startswith("ddp") else 1)
    pairs = [(runs[f"full/{key}/{r}"], runs[f"resumed/{key}/{r}"]) for r in ranks]
    return pairs


def _equal(first: torch.Tensor, second: torch.Tensor) -> None:
    assert first.dtype == second.dtype and first.shape == second.shape
    assert torch.equal(first, second), (first, second)


@pytest.mark.parametrize("key", KEYS)
def test_resumed_run_repeats_the_uninterrupted_one(runs: dict[str, Any], key: str) -> None:
    for full, resumed in _pairs(runs, key):
        assert [e["epoch"] for e in resumed["epochs"]] == list(range(STOP + 1, 4))
        for want, got in zip(full["epochs"][STOP + 1 :], resumed["epochs"], strict=True):
            _equal(want["plan"], got["plan"])
            _equal(want["weights"], got["weights"])
            assert len(want["batches"]) == len(got["batches"]) > 0
            for name in ("batches", "losses", "scores"):
                for first, second in zip(want[name], got[name], strict=True):
                    _equal(first, second)
        _equal(full["final_scores"], resumed["final_scores"])
        for first, second in zip(full["params"], resumed["params"], strict=True):
            _equal(first, second)
        assert resumed["history"] == full["history"]
        assert resumed["saved_ratio"] == full["saved_ratio"]


def test_the_resumed_epochs_actually_pruned(runs: dict[str, Any]) -> None:
    # Otherwise the comparison above would hold trivially for full, shuffled epochs.
    for cfg in SCENARIOS:
        history = runs[f"full/ddp/{cfg['name']}/0"]["history"]
        assert any(r["pruned"] > 0 for r in history[STOP + 1 :]), cfg["name"]


def _plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, torch.Tensor | bool | int | float | str)


@pytest.mark.parametrize("mode", ["single", "ddp"])
def test_checkpoint_is_plain_tensors_and_numbers(runs: dict[str, Any], mode: str) -> None:
    for cfg in SCENARIOS:
        path = runs["out"] / f"ckpt_{mode}_{cfg['name']}.pt"
        state = torch.load(path, weights_only=True)["handler"]
        assert _plain(state)
        assert state["epoch"] == STOP and state["scores"].shape == (cfg["n"],)
        assert state["scores"].dtype == torch.float32


def test_checkpoint_files_exist_for_every_scenario(runs: dict[str, Any]) -> None:
    names = sorted(p.name for p in Path(runs["out"]).glob("ckpt_*.pt"))
    assert len(names) == 2 * len(SCENARIOS)


FILES = ("checkpoint.pt", "summary.json")


def test_the_ddp_example_resumes_exactly_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    path = Path(__file__).resolve().parents[1] / "examples" / "ddp_train.py"
    spec = importlib.util.spec_from_file_location("ddp_train_example", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    common = ["--epochs", "3", "--workers", "0", "--policy", "SeTa", "--prune-ratio", "0.3"]
    with torch.random.fork_rng():  # the example seeds the global generator
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        monkeypatch.chdir(fresh)  # the defaults, from a user's working folder
        full = example.main(common)
        stopped = example.main([*common, "--output-dir", str(tmp_path / "b"), "--stop-after", "1"])
        resumed = example.main([*common, "--output-dir", str(tmp_path / "b"), "--resume"])
    assert len(stopped["history"]) == 2 and resumed["start_epoch"] == 2
    assert resumed["scores"] == full["scores"]
    assert resumed["history"] == full["history"]
    assert resumed["accuracy"] == full["accuracy"]
    assert resumed["saved_ratio"] == full["saved_ratio"] > 0
    # Everything the example writes lands in its output folder (results/ is git-ignored).
    written = sorted(str(p.relative_to(fresh)) for p in fresh.rglob("*"))
    assert written == ["results", "results/ddp_train", *(f"results/ddp_train/{n}" for n in FILES)]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == list(FILES)
