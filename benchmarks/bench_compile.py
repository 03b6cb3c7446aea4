"""``update()`` inside a ``torch.compile``d training step: graph breaks, recompilations, exactness.

A small MLP trains for ``--epochs`` epochs of InfoBatch (prune 0.5) over ``--n`` generated
samples, batch ``--batch``, once eagerly and once with the whole step compiled::

    def step(x, y):
        loss = loss_fn(model(x), y)
        return handler.update(loss)       # inside the compiled function

for BLS (a scalar mean loss) and per-sample scores (``reduction='none'``). ``update()`` is
excluded from tracing (``torch.compiler.disable``): it keeps per-step Python state (which
batch this is), which Dynamo would otherwise guard on and recompile for at every step. So the
compiled step is the model's graph, one break at ``update()``, and the code after it.

Measured: Dynamo's graph count and graph-break count of one step (``torch._dynamo.explain``),
how many times the step was compiled over the whole run (a counting backend; it must not grow
with the number of steps), whether the scores and weights after the run equal the eager run's
bit for bit (``aot_eager``: the same kernels as eager, so any difference would be the
library's), and the step time eager vs compiled with ``--backend`` (default ``inductor``).

Run: ``python benchmarks/bench_compile.py`` (``--tiny`` for a smoke run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import torch._dynamo as dynamo
from _common import emit, print_machine
from torch.utils.data import DataLoader, TensorDataset

from bls import BLS, InfoBatch


def _data(n: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 32, generator=generator)
    y = (x[:, :4].sum(dim=1) > 0).long() + (x[:, 4] > 1).long()
    return TensorDataset(x, y)


def _setup(args: argparse.Namespace, per_sample: bool) -> tuple[Any, torch.nn.Module, Any]:
    torch.manual_seed(0)
    policy = InfoBatch(_data(args.n), num_epochs=args.epochs, prune_ratio=0.5)
    handler = policy if per_sample else BLS(policy, alpha=0.7).proxy()
    model = torch.nn.Sequential(
        torch.nn.Linear(32, args.width), torch.nn.ReLU(), torch.nn.Linear(args.width, 3)
    )
    return handler, model, torch.optim.SGD(model.parameters(), lr=0.05)


def train(
    args: argparse.Namespace, per_sample: bool, backend: Any | None
) -> tuple[Any, list[float]]:
    """One run; ``backend`` ``None`` is eager. Returns the handler and per-step seconds."""
    handler, model, optimizer = _setup(args, per_sample)
    reduction = "none" if per_sample else "mean"

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = torch.nn.functional.cross_entropy(model(x), y, reduction=reduction)
        return handler.update(loss)

    run = step if backend is None else torch.compile(step, backend=backend, dynamic=False)
    times = []
    for epoch in range(args.epochs):
        handler.sampler.set_epoch(epoch)
        loader = DataLoader(handler, sampler=handler.sampler, batch_size=args.batch, drop_last=True)
        for x, y in loader:
            start = time.perf_counter()
            loss = run(x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
    return handler, times


def explain_step(args: argparse.Namespace, per_sample: bool) -> dict[str, Any]:
    """Dynamo's view of one step: graphs, breaks and their reasons."""
    handler, model, _ = _setup(args, per_sample)
    reduction = "none" if per_sample else "mean"
    handler.sampler.set_epoch(0)
    x, y = next(iter(DataLoader(handler, sampler=handler.sampler, batch_size=args.batch)))

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = torch.nn.functional.cross_entropy(model(x), y, reduction=reduction)
        return handler.update(loss)

    dynamo.reset()
    explained = dynamo.explain(step)(x, y)
    return {
        "graphs": explained.graph_count,
        "graph_breaks": explained.graph_break_count,
        "reasons": sorted({r.reason.splitlines()[0][:120] for r in explained.break_reasons}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16384)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--tiny", action="store_true", help="a smoke run (small, aot_eager only)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.n, args.batch, args.epochs, args.width, args.backend = 1024, 64, 2, 16, "aot_eager"
    torch.set_num_threads(1)
    machine = print_machine()
    aot_eager = dynamo.lookup_backend("aot_eager")
    rows = []
    for per_sample in (False, True):
        name = "per-sample" if per_sample else "bls"
        view = explain_step(args, per_sample)
        compiles = 0

        def counting(gm: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> Any:
            nonlocal compiles
            compiles += 1
            return aot_eager(gm, inputs)

        dynamo.reset()
        eager, eager_times = train(args, per_sample, None)
        dynamo.reset()
        compiled, _ = train(args, per_sample, counting)
        steps = len(eager_times)
        exact = torch.equal(eager.scores, compiled.scores) and torch.equal(
            eager.weights, compiled.weights
        )
        dynamo.reset()
        _, backend_times = train(args, per_sample, args.backend)
        warm = len(backend_times) // 4  # the first steps include compilation
        row = {
            "score": name,
            "steps": steps,
            "graphs": view["graphs"],
            "graph_breaks": view["graph_breaks"],
            "break_reasons": view["reasons"],
            "compilations": compiles,
            "exact": exact,
            "eager_ms": 1e3 * statistics.median(eager_times[warm:]),
            "compiled_ms": 1e3 * statistics.median(backend_times[warm:]),
        }
        rows.append(row)
        print(
            f"{name:10s}: {row['graphs']} graphs, {row['graph_breaks']} break(s) "
            f"({'; '.join(row['break_reasons'])}), compiled {compiles} time(s) over "
            f"{steps} steps, scores and weights equal to eager: {exact}; step "
            f"{row['eager_ms']:.3f} ms eager, {row['compiled_ms']:.3f} ms {args.backend}"
        )
    emit({"machine": machine, "backend": args.backend, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
