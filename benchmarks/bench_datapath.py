"""The data path: indices reach the DataLoader as fast as from a plain sampler.

Two measurements:

* the sampler alone: indices per second when iterating ``handler.sampler`` over a decided
  epoch (the epoch is held as a NumPy index array; the iterator converts it to ``int`` in
  fixed-size chunks, never one per-epoch Python list) against torch's ``RandomSampler`` and
  ``SubsetRandomSampler`` over the same number of indices;
* the loader: samples per second through ``DataLoader(handler, sampler=handler.sampler,
  num_workers=2)`` in a pruning epoch against a plain ``DataLoader(data,
  sampler=SubsetRandomSampler(kept), num_workers=2)`` over the indices a pruned epoch kept (a
  recording ``BatchSampler`` in the main process notes them; the items are untouched). Items
  are uint8 32x32 RGB images converted to float with a flip (real per-item work in the
  workers). Which loader goes first alternates from epoch to epoch. The headline compares
  each loader's best epoch (other processes only ever slow an epoch down); the median of the
  per-epoch paired ratios is printed beside it.

Run: ``python benchmarks/bench_datapath.py`` (``--tiny`` for a smoke run). The sampler part
runs on one core (``taskset`` by ``run_all.py``); the loader part uses two workers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from _common import IndexDataset, emit, loss_like_scores, print_machine
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    SubsetRandomSampler,
)

from bls import InfoBatch


class Uint8Images(Dataset[tuple[torch.Tensor, int]]):
    """uint8 3x32x32 images; ``__getitem__`` converts to float and flips at random."""

    def __init__(self, n: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
        self.y = torch.randint(0, 10, (n,), generator=generator).tolist()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.x[index].float().div_(255.0)
        if index % 2:  # deterministic stand-in for a random flip: same work, no global RNG
            image = image.flip(-1)
        return image, self.y[index]


def sampler_rate(n: int, repeats: int) -> dict[str, float]:
    """Indices per second: the pruning sampler vs torch's samplers, same count of indices."""
    handler = InfoBatch(IndexDataset(n), num_epochs=1000, prune_ratio=0.5)
    handler.scores.copy_(loss_like_scores(n, seed=3))
    rates: dict[str, list[float]] = {"bls": [], "RandomSampler": [], "SubsetRandomSampler": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no update() calls: only the indices are measured
        for epoch in range(1, repeats + 1):
            handler.sampler.set_epoch(epoch)
            iterator = iter(handler.sampler)
            assert isinstance(iterator.shard, np.ndarray)  # held as an array, not a list
            kept = iterator.shard.size
            start = time.perf_counter()
            for _ in iterator:
                pass
            rates["bls"].append(kept / (time.perf_counter() - start))
            subset = iterator.shard.tolist()  # ints, as a user would pass them
            for name, sampler in (
                ("RandomSampler", RandomSampler(range(kept))),
                ("SubsetRandomSampler", SubsetRandomSampler(subset)),
            ):
                start = time.perf_counter()
                for _ in sampler:
                    pass
                rates[name].append(kept / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


class _RecordingBatchSampler(BatchSampler):
    """A ``BatchSampler`` that keeps the batches of its latest pass."""

    def __iter__(self) -> Iterator[list[int]]:
        self.batches: list[list[int]] = []
        for batch in super().__iter__():
            self.batches.append(batch)
            yield batch

    def indices(self) -> list[int]:
        return [i for batch in self.batches for i in batch]


def loader_rate(n: int, epochs: int, batch: int, workers: int) -> dict[str, Any]:
    """Samples per second through the pruned loader and a plain one over the same indices."""
    data = Uint8Images(n)
    handler = InfoBatch(data, num_epochs=1000, prune_ratio=0.5)
    handler.scores.copy_(loss_like_scores(n, seed=4))
    # The batch sampler notes each batch of indices in the main process (a burden on the pruned
    # loader only), so each pruned epoch's kept indices are known without touching the items.
    recorder = _RecordingBatchSampler(handler.sampler, batch, drop_last=False)
    pruned = DataLoader(
        handler, batch_sampler=recorder, num_workers=workers, persistent_workers=workers > 0
    )
    # The plain loader keeps its workers too; its sampler gets a pruned epoch's kept indices.
    subset = SubsetRandomSampler([0])
    plain = DataLoader(
        data,
        sampler=subset,
        batch_size=batch,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    rates: dict[str, list[float]] = {"pruned": [], "plain": []}

    def rate(loader: DataLoader[Any]) -> float:
        iterator = iter(loader)  # worker start-up is not part of the data rate
        next(iterator)
        seen = 0
        start = time.perf_counter()
        for item in iterator:
            seen += len(item[1])
        return seen / (time.perf_counter() - start)

    kept: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no update() calls: only the data path is measured
        for epoch in range(1, epochs + 2):  # epoch 1 warms both loaders' workers up
            handler.sampler.set_epoch(epoch)
            # Alternate which loader goes first; the plain one always reads the indices of the
            # latest pruned epoch (the one just run, or the previous one).
            if epoch % 2:
                pruned_rate = rate(pruned)
                kept = recorder.indices()
                subset.indices = kept  # Python ints, as a user would pass them
                plain_rate = rate(plain)
            else:
                plain_rate = rate(plain)
                pruned_rate = rate(pruned)
                kept = recorder.indices()
                subset.indices = kept
            assert len(set(kept)) == len(kept) < n  # a pruned epoch, no repeats
            if epoch > 1:
                rates["pruned"].append(pruned_rate)
                rates["plain"].append(plain_rate)
    del pruned, plain
    medians = {name: statistics.median(values) for name, values in rates.items()}
    # Each epoch's two runs are adjacent in time, so their ratio cancels the slow drifts of a
    # shared machine; the headline is the median of these paired ratios.
    paired = [a / b for a, b in zip(rates["pruned"], rates["plain"], strict=True)]
    # Headline: the best epoch of each loader (other processes only ever slow an epoch down).
    best = {name: max(values) for name, values in rates.items()}
    return {
        "samples_per_s": best,
        "ratio": best["pruned"] / best["plain"],
        "median_samples_per_s": medians,
        "paired_median_ratio": statistics.median(paired),
        "all": rates,
        "kept": len(kept),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sampler-n", type=int, default=2_000_000)
    parser.add_argument("--loader-n", type=int, default=60_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--part", choices=("both", "sampler", "loader"), default="both")
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run")
    args = parser.parse_args(argv)
    if args.tiny:
        args.sampler_n, args.loader_n, args.epochs, args.workers = 20_000, 2_000, 2, 0
    torch.set_num_threads(1)
    info = print_machine()
    result: dict[str, Any] = {"machine": info, "config": vars(args)}
    if args.part in ("both", "sampler"):
        rates = sampler_rate(args.sampler_n, repeats=3)
        result["sampler"] = rates
        print(
            f"sampler N={args.sampler_n:,d} (InfoBatch keeps ~70%): bls "
            f"{rates['bls'] / 1e6:.2f} M indices/s, RandomSampler "
            f"{rates['RandomSampler'] / 1e6:.2f} M/s, SubsetRandomSampler "
            f"{rates['SubsetRandomSampler'] / 1e6:.2f} M/s"
        )
    if args.part in ("both", "loader"):
        loader = loader_rate(args.loader_n, args.epochs, args.batch, args.workers)
        result["loader"] = loader
        rate = loader["samples_per_s"]
        print(
            f"loader N={args.loader_n:,d} (kept {loader['kept']:,d}), batch {args.batch}, "
            f"num_workers={args.workers}: pruned {rate['pruned']:,.0f} samples/s, plain "
            f"SubsetRandomSampler over the same indices {rate['plain']:,.0f} samples/s (best "
            f"epoch of {args.epochs}), ratio {loader['ratio']:.3f}; median of per-epoch paired "
            f"ratios {loader['paired_median_ratio']:.3f}"
        )
    emit(result)
    return result


if __name__ == "__main__":
    main()
