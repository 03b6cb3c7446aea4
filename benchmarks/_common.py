"""Shared helpers of the benchmark scripts: machine facts, timing, result hand-off.

Every benchmark prints human-readable lines and, last, one ``RESULT_JSON: {...}`` line that
``run_all.py`` parses to build ``docs/performance.md``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:  # run from a clone without installing
    sys.path.insert(0, str(ROOT / "src"))


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, the CPUs this process may run on, library versions."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = float("nan")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gib = int(line.split()[1]) / 2**20
                break
    except OSError:
        pass
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "affinity": affinity,
        "ram_gib": round(ram_gib, 1),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def print_machine() -> dict[str, Any]:
    info = machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores (this process on CPUs "
        f"{info['affinity']}, torch threads {info['torch_threads']}), {info['ram_gib']} GiB RAM, "
        f"python {info['python']}, torch {info['torch']}, numpy {info['numpy']}"
        + (f", GPU {info['cuda']}" if info["cuda"] else "")
    )
    return info


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs (after ``warmup``)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def peak_rss_mib() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(result: dict[str, Any]) -> None:
    """Print the machine-readable result line for ``run_all.py``."""
    print("RESULT_JSON: " + json.dumps(result, default=float))


class IndexDataset:
    """A map-style dataset of ``n`` items that are their own index (no memory per item)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


def loss_like_scores(n: int, seed: int = 0) -> torch.Tensor:
    """Per-sample-loss-like scores: a gamma distribution with a heavy right tail."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.gamma(2.0, 0.5, n).astype(np.float32))
