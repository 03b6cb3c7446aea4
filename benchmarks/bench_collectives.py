"""Collectives per epoch under a 2-rank ``gloo`` process group, for each way of calling update().

Two processes (``torch.multiprocessing.spawn``, CPU, ``gloo``) run ``--epochs`` epochs of
InfoBatch (prune 0.5) over ``--n`` samples, batch ``--batch`` per rank, with BLS and per-sample
scores, by the order route and with explicit indices. The loss is a fixed function of the
index (no model, so the only collectives are the handler's). Every ``torch.distributed``
collective is counted by wrappers installed in the two child processes only; an epoch's
count runs from its ``set_epoch`` to the end of its ``end_epoch()``, and includes a
``state_dict()`` that rank 0 alone calls after the epoch's last update (the usual "rank 0
saves"). Also timed: ``update()`` per call under the group, median over the epochs' calls.

Run: ``python benchmarks/bench_collectives.py`` (``--tiny`` for a smoke run).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _common import IndexDataset, emit, print_machine
from torch.utils.data import DataLoader

from bls import BLS, InfoBatch

WORLD = 2
ROUTES = ("bls/order", "bls/indices", "per-sample/order", "per-sample/indices")
COLLECTIVES = (
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_single",
    "all_gather_object",
    "all_reduce",
    "barrier",
    "broadcast",
    "gather",
    "reduce",
    "reduce_scatter_tensor",
    "scatter",
    "send",
    "recv",
)


def _count_collectives(calls: list[str]) -> None:
    """Wrap this process's ``torch.distributed`` collectives so each call is noted."""
    for name in COLLECTIVES:
        original = getattr(dist, name, None)
        if original is None:
            continue

        def counted(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            calls.append(_name)
            return _original(*args, **kw)

        setattr(dist, name, counted)


def _rank(rank: int, out: str, n: int, batch: int, epochs: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{Path(out) / 'pg'}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=120),
    )
    calls: list[str] = []
    _count_collectives(calls)
    results = {}
    for route in ROUTES:
        mode, how = route.split("/")
        explicit = how == "indices"
        handler: Any = InfoBatch(
            IndexDataset(n), num_epochs=epochs + 1, prune_ratio=0.5, return_indices=explicit
        )
        if mode == "bls":
            handler = BLS(handler, alpha=0.9).proxy()
        loader = DataLoader(handler, sampler=handler.sampler, batch_size=batch)
        per_epoch, steps, times = [], [], []
        for epoch in range(epochs):
            calls.clear()
            handler.sampler.set_epoch(epoch)
            count = 0
            for items in loader:
                indices = items[1] if explicit else items
                loss = (indices.double() * 0.37 + epoch).sin().float() + 1.0
                loss = loss.mean() if mode == "bls" else loss
                start = time.perf_counter()
                handler.update(loss, indices=indices if explicit else None)
                times.append(time.perf_counter() - start)
                count += 1
            if rank == 0:
                handler.state_dict()  # rank 0 alone, after the epoch's last update
            handler.end_epoch()
            per_epoch.append(len(calls))
            steps.append(count)
        results[route] = {
            "collectives_per_epoch": per_epoch,
            "steps_per_epoch": steps,
            "update_us": statistics.median(times) * 1e6,
        }
    if rank == 0:
        (Path(out) / "result.json").write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="data set size")
    parser.add_argument("--batch", type=int, default=64, help="batch size per rank")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run")
    args = parser.parse_args(argv)
    if args.tiny:
        args.n, args.batch, args.epochs = 2_001, 32, 2
    info = print_machine()
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.spawn(_rank, args=(out, args.n, args.batch, args.epochs), nprocs=WORLD)
        results = json.loads((Path(out) / "result.json").read_text())
    for route, row in results.items():
        print(
            f"collectives {route:19s} per epoch {row['collectives_per_epoch']} for "
            f"{row['steps_per_epoch']} steps per rank (N = {args.n:,d}, batch {args.batch}, "
            f"{WORLD} gloo ranks); update() {row['update_us']:.1f} us/call"
        )
    result = {"machine": info, "config": vars(args), "world_size": WORLD, "routes": results}
    emit(result)
    return result


if __name__ == "__main__":
    main()
