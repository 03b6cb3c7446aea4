"""What a DataLoader worker receives of a pruning handler, and how soon it yields a batch.

A ``spawn`` or ``forkserver`` worker gets its dataset pickled through ``multiprocessing``. The
handler sends only its :class:`bls.worker.WorkerDataset` (the wrapped dataset and how to attach
an index), never its scores, weights or epoch plan. For each ``N`` this prints, after one epoch
of ``BLS(InfoBatch)`` was decided and iterated:

* the bytes ``multiprocessing`` sends per worker (``ForkingPickler``), beside the bytes of a
  whole-handler ``pickle.dumps`` (what a worker received when the handler pickled whole);
* the first-batch latency of a ``forkserver`` DataLoader with two workers: from ``iter(loader)``
  to the first batch, workers started afresh (median of ``--repeats``), beside the same loader
  whose workers receive the whole handler (``WholeHandler``, the former payload), in one run.

The wrapped dataset is a list-free stand-in of length ``N`` (item ``i`` is ``i``), so the
figures are the handler's own.

Run: ``python benchmarks/bench_worker_payload.py`` (about a minute on 2 cores; ``--tiny`` for a
smoke run).
"""

from __future__ import annotations

import argparse
import io
import pickle
import statistics
import sys
import time
import warnings
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import IndexDataset, emit, print_machine
from torch.utils.data import DataLoader, Dataset

from bls import BLS, InfoBatch


def forking_bytes(obj: Any) -> int:
    """Bytes ``multiprocessing`` writes to send ``obj`` to a new process."""
    buffer = io.BytesIO()
    ForkingPickler(buffer, pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.tell()


class WholeHandler(Dataset[Any]):
    """Reads through the handler but travels to workers whole, as handlers did before."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    def __len__(self) -> int:
        return len(self.handler)

    def __getitem__(self, index: int) -> Any:
        return self.handler[index]

    def __reduce__(self) -> tuple[Any, ...]:
        return WholeHandler, (pickle.loads(pickle.dumps(self.handler)),)


def first_batch_seconds(handler: Any, dataset: Any, epoch: int, batch: int) -> float:
    loader = DataLoader(
        dataset,
        sampler=handler.sampler,
        batch_size=batch,
        num_workers=2,
        multiprocessing_context="forkserver",
    )
    handler.sampler.set_epoch(epoch)
    start = time.perf_counter()
    batches = iter(loader)
    next(batches)
    seconds = time.perf_counter() - start
    del batches  # shuts the workers down
    return seconds


def measure(n: int, repeats: int) -> dict[str, Any]:
    epochs = 2 * repeats + 2
    handler = BLS(InfoBatch(IndexDataset(n), num_epochs=epochs, prune_ratio=0.5), alpha=0.7)
    handler = handler.proxy()
    batch = 256
    first = iter(DataLoader(handler, sampler=handler.sampler, batch_size=batch))
    next(first)
    handler.update(torch.tensor(1.0))  # the epoch has scores, weights, a plan and a buffer
    thin, whole = forking_bytes(handler), len(pickle.dumps(handler, pickle.HIGHEST_PROTOCOL))
    thin_s, whole_s = [], []
    for repeat in range(repeats):  # interleaved, so both see the same machine
        thin_s.append(first_batch_seconds(handler, handler, 2 * repeat + 1, batch))
        whole_s.append(first_batch_seconds(handler, WholeHandler(handler), 2 * repeat + 2, batch))
    return {
        "n": n,
        "worker_payload_bytes": thin,
        "whole_pickle_bytes": whole,
        "first_batch_s": statistics.median(thin_s),
        "first_batch_whole_s": statistics.median(whole_s),
        "first_batch_runs_s": thin_s,
        "first_batch_whole_runs_s": whole_s,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run")
    args = parser.parse_args(argv)
    if args.tiny:
        args.sizes, args.repeats = [1_000, 100_000], 1
    info = print_machine()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # epochs end after one batch here: expected
        rows = [measure(n, args.repeats) for n in args.sizes]
    for row in rows:
        print(
            f"worker payload N={row['n']:>12,d}: {row['worker_payload_bytes']:,d} bytes per "
            f"worker (whole handler: {row['whole_pickle_bytes']:,d} bytes); first batch from "
            f"forkserver workers {row['first_batch_s']:.2f} s, with the whole handler "
            f"{row['first_batch_whole_s']:.2f} s (medians of {len(row['first_batch_runs_s'])})"
        )
    result = {"machine": info, "config": vars(args), "payload": rows}
    emit(result)
    return result


if __name__ == "__main__":
    main()
