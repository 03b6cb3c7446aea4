"""Per-call cost of ``handler.update()`` on CPU, batch 256, beside the reference InfoBatch.

One pruned epoch (InfoBatch, prune ratio 0.5, from loss-like scores, so part of every batch is
up-weighted) through real ``DataLoader``s, stepped in lock-step: at every step each of six
calls is timed on its own, in an order that rotates from step to step, on a fresh autograd loss
of that step (a linear model, made before the clock starts):

* ours, four routes: BLS (the scalar mean loss) and per-sample (``reduction='none'``) scoring,
  each by the order route (the k-th call is the k-th batch) and with explicit indices
  (``return_indices=True``);
* the public reference implementation's ``update()`` (github.com/NUS-HPC-AI-Lab/InfoBatch,
  ``infobatch/infobatch.py``), imported from a local copy given by ``--reference PATH`` (the
  folder that holds its ``infobatch`` package); its ``cur_batch_index`` is set from the batch,
  untimed, and the DataLoader patch it applies when imported is undone at once, so every
  loader here iterates the stock way. Without ``--reference`` it is reported "not given";
* a bare ``loss.mean()`` on the same per-sample loss: the floor any wrapper pays.

Where our route defers work (the order route copies each batch's losses into a buffer that
the scores absorb in one vectorised step), that step is timed separately and its share per
call is reported too. The torch operations one ``update()`` dispatches are counted by a
``TorchDispatchMode`` in a separate, untimed pass.

Run: ``taskset -c 1 python benchmarks/bench_update.py --reference /tmp/infobatch``
(``--tiny`` for a smoke run).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from _common import IndexDataset, emit, print_machine
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import _BaseDataLoaderIter

from bls import BLS, InfoBatch

BATCH = 256
FEATURES = 64
CLASSES = 10
ROUTES = ("bls/order", "bls/indices", "per-sample/order", "per-sample/indices")


def load_reference(path: str | None) -> Any:
    """The reference ``InfoBatch`` class from the folder ``path``, or ``None``.

    Its module replaces ``_BaseDataLoaderIter.__next__`` when imported; that is undone here,
    so only its ``update()`` is compared and every loader iterates as torch's does.
    """
    if path is None:
        return None
    folder = Path(path).resolve()
    if not (folder / "infobatch" / "infobatch.py").is_file():
        raise SystemExit(f"--reference: {folder} has no infobatch/infobatch.py")
    stock_next = _BaseDataLoaderIter.__next__
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module("infobatch.infobatch")
    finally:
        _BaseDataLoaderIter.__next__ = stock_next  # type: ignore[method-assign]
        sys.path.remove(str(folder))
    return module.InfoBatch


class Model:
    """A linear model over fixed random features: ``loss(indices)`` is a fresh autograd loss."""

    def __init__(self, n: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, FEATURES, generator=generator)
        self.y = torch.randint(0, CLASSES, (n,), generator=generator)
        self.weight = torch.randn(FEATURES, CLASSES, generator=generator, requires_grad=True)

    def loss(self, indices: torch.Tensor) -> torch.Tensor:
        logits = self.x[indices] @ self.weight
        return torch.nn.functional.cross_entropy(logits, self.y[indices], reduction="none")


def loss_like(n: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(1).gamma(2.0, 0.5, n).astype(np.float32))


def build(route: str, n: int) -> tuple[Any, DataLoader[Any]]:
    """One of our handlers over ``n`` samples, its scores loss-like, and its loader."""
    mode, how = route.split("/")
    handler: Any = InfoBatch(
        IndexDataset(n), num_epochs=10, prune_ratio=0.5, return_indices=how == "indices"
    )
    if mode == "bls":
        handler = BLS(handler, alpha=0.9).proxy()
    handler.scores = loss_like(n)  # epoch 0 then prunes, and up-weights the kept easy ones
    return handler, DataLoader(handler, sampler=handler.sampler, batch_size=BATCH)


def time_epoch(n: int, reference: Any) -> dict[str, Any]:
    model = Model(n)
    handlers = {route: build(route, n) for route in ROUTES}
    for handler, _ in handlers.values():
        handler.sampler.set_epoch(0)
    iterators = {route: iter(loader) for route, (_, loader) in handlers.items()}
    ref_iter = None
    if reference is not None:
        ref = reference(IndexDataset(n), num_epochs=10, prune_ratio=0.5)
        ref.scores = loss_like(n)
        ref_iter = iter(DataLoader(ref, sampler=ref.sampler, batch_size=BATCH))
    times: dict[str, list[float]] = {name: [] for name in (*ROUTES, "reference", "bare mean")}
    clock = time.perf_counter
    step = 0
    while True:
        batches = {}
        for route, iterator in iterators.items():
            batches[route] = next(iterator, None)
        ref_batch = next(ref_iter, None) if ref_iter is not None else None
        if any(b is None for b in batches.values()) or (ref_iter is not None and ref_batch is None):
            break
        calls = []
        for route in ROUTES:
            handler = handlers[route][0]
            batch = batches[route]
            indices = batch[1] if route.endswith("indices") else batch
            loss = model.loss(indices)
            if route.startswith("bls"):
                loss = loss.mean()  # the loop's ordinary mean loss
            if route.endswith("indices"):
                calls.append((route, handler.update, (loss,), {"indices": indices}))
            else:
                calls.append((route, handler.update, (loss,), {}))
        bare_loss = model.loss(batches["per-sample/order"])
        calls.append(("bare mean", bare_loss.mean, (), {}))
        if ref_batch is not None:
            ref.cur_batch_index = ref_batch[0]  # untimed, as the issue specifies
            calls.append(("reference", ref.update, (model.loss(ref_batch[0]),), {}))
        shift = step % len(calls)
        for name, fn, args, kwargs in calls[shift:] + calls[:shift]:
            start = clock()
            fn(*args, **kwargs)
            times[name].append(clock() - start)
        step += 1
    # The order routes' deferred losses: folded in one step when the scores are next read.
    fold_ms = {}
    for route, (handler, _) in handlers.items():
        for batch in iterators[route]:  # the rest of the epoch, untimed
            indices = batch[1] if route.endswith("indices") else batch
            loss = model.loss(indices)
            loss = loss.mean() if route.startswith("bls") else loss
            handler.update(loss, indices=indices if route.endswith("indices") else None)
        start = clock()
        scores = handler.scores
        fold_ms[route] = (clock() - start) * 1e3
        assert scores.shape == (n,) and not handler._run.unit_weights
        handler.end_epoch()
    return {"times": times, "fold_ms": fold_ms, "steps": step}


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


def count_dispatches(n: int) -> dict[str, dict[str, int]]:
    """The torch operations one ``update()`` dispatches, per route (a middle batch, untimed)."""
    model = Model(n)
    out = {}
    for route in ROUTES:
        handler, loader = build(route, n)
        handler.sampler.set_epoch(0)
        for k, batch in enumerate(loader):
            indices = batch[1] if route.endswith("indices") else batch
            loss = model.loss(indices)
            loss = loss.mean() if route.startswith("bls") else loss
            explicit = indices if route.endswith("indices") else None
            if k == 2:
                with _Count() as counter:
                    handler.update(loss, indices=explicit)
                out[route] = dict(counter.ops)
                break
            handler.update(loss, indices=explicit)
    bare = model.loss(torch.arange(BATCH))
    with _Count() as counter:
        bare.mean()
    out["bare mean"] = dict(counter.ops)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128_000, help="data set size")
    parser.add_argument(
        "--reference",
        default=None,
        help="folder holding the reference's infobatch/ package (a local copy; not downloaded)",
    )
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    info = print_machine()
    reference = load_reference(args.reference)
    n = 8 * BATCH + 7 if args.tiny else args.n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference's own warnings, if any
        timed = time_epoch(n, reference)
    medians = {name: statistics.median(t) * 1e6 for name, t in timed["times"].items() if t}
    ref_us = medians.get("reference")
    bare_us = medians["bare mean"]
    rows = []
    print(
        f"update() per call, batch {BATCH}, N = {n:,d}, one pruned InfoBatch epoch (prune 0.5), "
        f"{timed['steps']} steps, medians of call-by-call timings in one run"
    )
    print(f"reference InfoBatch update(): {'not given' if ref_us is None else f'{ref_us:.1f} us'}")
    print(f"bare loss.mean() with autograd: {bare_us:.1f} us")
    for route in ROUTES:
        us = medians[route]
        fold = timed["fold_ms"][route]
        row = {
            "route": route,
            "us": us,
            "fold_ms": fold,
            "us_all_included": us + fold * 1e3 / timed["steps"],
            "vs_reference": None if ref_us is None else us / ref_us,
            "vs_bare_mean": us / bare_us,
            "calls": len(timed["times"][route]),
        }
        rows.append(row)
        against = "reference not given" if ref_us is None else f"{us / ref_us:.2f}x the reference"
        print(
            f"update() {route:19s} {us:5.1f} us/call ({against}, {us / bare_us:.2f}x a bare "
            f"mean); folding in {fold:.2f} ms per epoch, {row['us_all_included']:.1f} us/call "
            "all included"
        )
    dispatches = count_dispatches(min(n, 16 * BATCH))
    for route, ops in dispatches.items():
        shown = ", ".join(f"{name} {count}" for name, count in sorted(ops.items()))
        print(f"dispatches {route:19s} {sum(ops.values())}: {shown}")
    result = {
        "machine": info,
        "batch": BATCH,
        "n": n,
        "steps": timed["steps"],
        "reference_us": ref_us,
        "reference_given": ref_us is not None,
        "bare_mean_us": bare_us,
        "update": rows,
        "dispatches": dispatches,
    }
    emit(result)
    return result


if __name__ == "__main__":
    main()
