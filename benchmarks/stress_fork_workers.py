"""Do DataLoader workers survive beside a live ``gloo`` process group? fork vs fork server.

Two ranks (``torch.multiprocessing.spawn``, ``gloo`` on CPU) loop for ``--seconds``: every
epoch builds a DataLoader with two workers started by the start method under test (so every
epoch starts two new workers while the process group's threads run), and every batch makes the
collectives a pruned DDP step makes (an ``all_gather`` of the batch loss, as ``handler.update``
does, and an ``all_reduce`` of a gradient-sized tensor). A run ends ``ok`` or with what stopped
it: a signal, a collective timing out after 60 s (the other rank stalled), or ``hung`` when the
launch outlives its deadline (``--seconds`` + 90 s) and is killed. Each launch runs in its own
process session, so a crash is reported, not inherited, and a hung launch is killed with its
ranks and workers. The ranks record the epochs they finish as they go, so a failure says when
it came.

This is the evidence behind the README's "Loader workers" advice; it stresses PyTorch's and
Python's machinery, not bls.

Run: ``python benchmarks/stress_fork_workers.py --seconds 120 --repeats 3`` (``--tiny`` for a
smoke run).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset

WORLD = 2
COLLECTIVE_TIMEOUT_S = 60


def _rank(rank: int, out: str, start_method: str, seconds: float) -> None:
    torch.set_num_threads(1)
    if start_method == "forkserver":  # the server imports torch once; its workers fork from it
        mp.get_context("forkserver").set_forkserver_preload(["torch"])
    dist.init_process_group(
        "gloo",
        init_method=f"file://{Path(out) / 'init'}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )
    data = TensorDataset(torch.randn(83, 8, generator=torch.Generator().manual_seed(rank)))
    gradient = torch.ones(1024)
    progress = Path(out) / f"rank{rank}.json"
    epochs = 0
    deadline = time.monotonic() + seconds
    while True:
        # The ranks agree whether to go on: unequal epoch counts would deadlock by themselves.
        done = torch.tensor([float(time.monotonic() >= deadline)])
        dist.all_reduce(done, op=dist.ReduceOp.MAX)
        if done.item():
            break
        loader = DataLoader(data, batch_size=8, num_workers=2, multiprocessing_context=start_method)
        for (x,) in loader:
            losses = [torch.empty(1) for _ in range(WORLD)]
            dist.all_gather(losses, x.mean().reshape(1))
            dist.all_reduce(gradient)
            gradient.fill_(1.0)
        epochs += 1
        progress.write_text(json.dumps({"epochs": epochs}))
    dist.barrier()
    dist.destroy_process_group()


def _launch(start_method: str, seconds: float, out: str) -> None:
    """One two-rank launch (``main`` runs it in its own process session); writes the outcome."""
    outcome = "ok"
    try:
        mp.spawn(_rank, args=(out, start_method, seconds), nprocs=WORLD)
    except Exception as error:  # what stopped a rank: a signal, a collective timeout, ...
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        outcome = lines[-1] if lines else type(error).__name__
    (Path(out) / "outcome.txt").write_text(outcome)


def _run_launch(start_method: str, seconds: float) -> dict[str, Any]:
    begun = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, __file__, "--launch", start_method, str(seconds), out]
        launch = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            launch.wait(timeout=seconds + COLLECTIVE_TIMEOUT_S + 30)
            outcome_file = Path(out) / "outcome.txt"
            outcome = outcome_file.read_text() if outcome_file.exists() else "no outcome"
        except subprocess.TimeoutExpired:
            outcome = "hung"
        # Whatever is left of the session: a hung launcher, or a rank or worker that a
        # collective timeout left deadlocked (they survive spawn's SIGTERM).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launch.pid, signal.SIGKILL)
        launch.wait()
        counts = [json.loads(p.read_text())["epochs"] for p in Path(out).glob("rank*.json")]
    epochs = min(counts) if len(counts) == WORLD else 0  # the epochs every rank finished
    return {"outcome": outcome, "epochs": epochs, "wall_s": round(time.perf_counter() - begun, 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import emit, print_machine

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="per launch")
    parser.add_argument("--repeats", type=int, default=3, help="launches per start method")
    parser.add_argument("--start-methods", nargs="+", default=["fork", "forkserver"])
    parser.add_argument("--tiny", action="store_true", help="a few seconds, fork server only")
    args = parser.parse_args(argv)
    if args.tiny:
        args.seconds, args.repeats, args.start_methods = 2.0, 1, ["forkserver"]
    print_machine()
    runs = []
    for start_method in args.start_methods:
        for repeat in range(args.repeats):
            run = _run_launch(start_method, args.seconds)
            run.update(start_method=start_method, repeat=repeat, seconds=args.seconds)
            runs.append(run)
            print(
                f"{start_method:>10} run {repeat}: {run['outcome']} after {run['wall_s']:.0f} s, "
                f"{run['epochs']:,} epochs finished (each starts 2 workers per rank)",
                flush=True,
            )
    result = {"runs": runs}
    emit(result)
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--launch"]:
        _launch(sys.argv[2], float(sys.argv[3]), sys.argv[4])
    else:
        main()
