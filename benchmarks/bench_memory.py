"""Memory per sample and an epoch decision at N = 100,000,000, each in a fresh process.

The child process imports the library, records its resident set, builds a handler over an
index-only data set (no memory per item), fills the scores with loss-like values in chunks,
decides two pruning epochs, runs one ``update()`` and reports: the state the handler keeps
(scores, weights, the plan, and the epoch's buffer of deferred per-sample losses that the first
``update()`` allocates) in bytes per sample, the decision time, and the peak resident set
(``resource.getrusage``) against the resident set before the handler existed.

Run: ``taskset -c 1 python benchmarks/bench_memory.py`` (``--tiny`` for a smoke run).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from _common import IndexDataset, emit, peak_rss_mib, print_machine

CHUNK = 1 << 22


def _current_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mib()


def child(n: int, policy: str) -> dict[str, Any]:
    """Runs inside the fresh process."""
    from bls import InfoBatch, SeTa

    torch.set_num_threads(1)
    before = _current_rss_mib()
    data = IndexDataset(n)
    if policy == "InfoBatch":
        handler: Any = InfoBatch(data, num_epochs=10, prune_ratio=0.5)
    else:
        handler = SeTa(data, num_epochs=10, prune_ratio=0.1, num_group=10)
    rng = np.random.default_rng(0)
    for start in range(0, n, CHUNK):  # chunks: no N-sized temporary of the benchmark's own
        stop = min(start + CHUNK, n)
        handler.scores[start:stop] = torch.from_numpy(
            rng.gamma(2.0, 0.5, stop - start).astype(np.float32)
        )
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no update() between the two decisions: expected
        for epoch in (1, 2):
            start_time = time.perf_counter()
            handler.sampler.set_epoch(epoch)
            iterator = iter(handler.sampler)
            times.append(time.perf_counter() - start_time)
    plan = iterator.shard
    batch = list(itertools.islice(iterator, 256))
    handler.update(torch.ones(len(batch)))  # allocates the epoch's buffer of deferred losses
    state = {
        "scores": handler.scores.element_size() * handler.scores.numel(),
        "weights": handler.weights.element_size() * handler.weights.numel(),
        "plan": plan.nbytes,
        "pending": handler._state.pending.element_size() * handler._state.pending.numel(),
    }
    # The plan shares memory with the device table on CPU (torch.from_numpy, .to(cpu) no-op).
    return {
        "policy": policy,
        "n": n,
        "kept": int(plan.size),
        "plan_dtype": str(plan.dtype),
        "decision_s": times,
        "state_bytes": state,
        "state_bytes_per_sample": sum(state.values()) / n,
        "rss_before_mib": before,
        "peak_rss_mib": peak_rss_mib(),
        "peak_extra_bytes_per_sample": (peak_rss_mib() - before) * 2**20 / n,
    }


def run_child(n: int, policy: str) -> dict[str, Any]:
    """Start a fresh interpreter (clean peak RSS) on the CPUs this process may use."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(n), policy],
        check=True,
        capture_output=True,
        text=True,
    )
    for line in out.stdout.splitlines():
        if line.startswith("CHILD_JSON: "):
            return dict(json.loads(line[len("CHILD_JSON: ") :]))
    raise RuntimeError(f"child printed no result:\n{out.stdout}\n{out.stderr}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000_000)
    parser.add_argument("--policies", nargs="*", default=["InfoBatch", "SeTa"])
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--child", nargs=2, metavar=("N", "POLICY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("CHILD_JSON: " + json.dumps(child(int(args.child[0]), args.child[1])))
        return {}
    torch.set_num_threads(1)
    info = print_machine()
    n = 100_000 if args.tiny else args.n
    rows = []
    for policy in args.policies:
        # --tiny runs in this process (a smoke run; its peak RSS is this process's, not a
        # fresh one's): starting an interpreter that imports torch costs seconds.
        r = child(n, policy) if args.tiny else run_child(n, policy)
        rows.append(r)
        s = r["state_bytes"]
        print(
            f"memory {policy:9s} N={n:,d}: state {r['state_bytes_per_sample']:.2f} bytes/sample "
            f"(scores {s['scores'] / n:.0f} + weights {s['weights'] / n:.0f} + plan "
            f"{s['plan'] / n:.2f} + deferred losses {s['pending'] / n:.2f}, plan "
            f"{r['plan_dtype']}, kept {r['kept']:,d}); decision "
            f"{r['decision_s'][0]:.2f} s / {r['decision_s'][1]:.2f} s (epochs 1, 2); peak RSS "
            f"{r['peak_rss_mib']:.0f} MiB (before the handler {r['rss_before_mib']:.0f} MiB, "
            f"peak extra {r['peak_extra_bytes_per_sample']:.1f} bytes/sample)"
        )
    result = {"machine": info, "memory": rows}
    emit(result)
    return result


if __name__ == "__main__":
    main()
