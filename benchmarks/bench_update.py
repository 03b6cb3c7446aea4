"""Per-call cost of ``handler.update()`` on CPU, batch 256.

Four ways of calling it: BLS (scalar mean loss) and per-sample (``reduction='none'``) scoring,
each by the order route (the k-th call is the k-th batch) and with explicit indices
(``return_indices=True``). Each is measured in epoch 0 (every weight is 1, so the weight lookup
is skipped) and in a pruning epoch (InfoBatch up-weights part of the batch, so it is not). The
loss comes from a small linear model with autograd; only the ``update()`` call is timed, plus
the epoch's share of folding deferred batches into the scores (one process, order route: done
once, vectorised, when the scores are next read; here by ``end_epoch()``), spread over the
epoch's calls. The bare ``loss.mean()`` on the same loss is the floor any wrapper pays.

Run: ``taskset -c 1 python benchmarks/bench_update.py`` (``--tiny`` for a smoke run).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import IndexDataset, emit, print_machine
from torch.utils.data import BatchSampler

from bls import BLS, InfoBatch

BATCH = 256
FEATURES = 64
CLASSES = 10


def _losses(batches: int, per_sample: bool) -> list[torch.Tensor]:
    """Fresh autograd losses, made before timing so only update() is measured."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(FEATURES, CLASSES, generator=generator, requires_grad=True)
    out = []
    for _ in range(batches):
        x = torch.randn(BATCH, FEATURES, generator=generator)
        y = torch.randint(0, CLASSES, (BATCH,), generator=generator)
        loss = torch.nn.functional.cross_entropy(x @ weight, y, reduction="none")
        out.append(loss if per_sample else loss.mean())
    return out


def time_updates(mode: str, route: str, n: int, epochs: int = 2) -> list[dict[str, Any]]:
    """Median microseconds per update() call in each epoch."""
    explicit = route == "indices"
    handler: Any = InfoBatch(
        IndexDataset(n), num_epochs=10, prune_ratio=0.5, return_indices=explicit
    )
    if mode == "bls":
        handler = BLS(handler, alpha=0.9).proxy()
    rows = []
    for epoch in range(epochs):
        handler.sampler.set_epoch(epoch)
        batches = list(iter(BatchSampler(handler.sampler, BATCH, drop_last=False)))
        # The order route needs every batch drawn before its update(); draw them all first.
        full = [b for b in batches if len(b) == BATCH]
        losses = _losses(len(full), per_sample=mode == "per-sample")
        index_tensors = [torch.tensor(b) for b in full]
        times = []
        for loss, indices in zip(losses, index_tensors, strict=True):
            if explicit:
                start = time.perf_counter()
                handler.update(loss, indices=indices)
            else:
                start = time.perf_counter()
                handler.update(loss)
            times.append(time.perf_counter() - start)
        weighted = not handler._run.unit_weights
        start = time.perf_counter()
        scores = handler.scores  # folds the epoch's deferred batches in
        flush = time.perf_counter() - start
        assert scores.shape == (n,)
        median = statistics.median(times)
        rows.append(
            {
                "mode": mode,
                "route": route,
                "epoch": epoch,
                "weighted": weighted,
                "us": (median + flush / len(times)) * 1e6,
                "median_us": median * 1e6,
                "flush_ms": flush * 1e3,
                "calls": len(times),
            }
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the partial last batch had no update()
            handler.end_epoch()
    return rows


def bare_mean_us(calls: int) -> float:
    losses = _losses(calls, per_sample=True)
    times = []
    for loss in losses:
        start = time.perf_counter()
        loss.mean()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128_000, help="data set size")
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    info = print_machine()
    n = 4 * BATCH + 7 if args.tiny else args.n
    rows = []
    for mode, route in itertools.product(("bls", "per-sample"), ("order", "indices")):
        for row in time_updates(mode, route, n):
            rows.append(row)
            print(
                f"update() {mode:10s} route={route:7s} epoch {row['epoch']} "
                f"({'weights looked up' if row['weighted'] else 'all weights 1'}): "
                f"{row['us']:.1f} us/call ({row['median_us']:.1f} us median over {row['calls']} "
                f"calls + {row['flush_ms']:.2f} ms folding them in), batch {BATCH}"
            )
    bare = bare_mean_us(max(50, n // BATCH))
    print(f"bare loss.mean() with autograd: {bare:.1f} us/call, batch {BATCH}")
    result = {"machine": info, "update": rows, "bare_mean_us": bare, "batch": BATCH, "n": n}
    emit(result)
    return result


if __name__ == "__main__":
    main()
