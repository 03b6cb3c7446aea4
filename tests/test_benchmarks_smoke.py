"""Every benchmark script runs (tiny sizes) and prints its figures and the machine.

The figures themselves are not asserted: timings belong in ``docs/performance.md``, written by
``benchmarks/run_all.py``, not in tests. What is asserted is that each script still runs
against the current library and reports what its section of the document needs.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str) -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _restore_torch_state() -> Iterator[None]:
    # The scripts pin torch to one thread and seed their models; keep that out of other tests.
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        yield
    torch.set_num_threads(threads)


def _run(name: str, args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, Any]:
    result = _load(name).main(args)
    out = capsys.readouterr().out
    assert out.startswith("machine: ") and "torch " in out and "numpy " in out
    line = [x for x in out.splitlines() if x.startswith("RESULT_JSON: ")]
    assert len(line) == 1
    assert json.loads(line[0][len("RESULT_JSON: ") :]).keys() == result.keys()
    return out, result


def test_decision(capsys: pytest.CaptureFixture[str]) -> None:
    out, result = _run("bench_decision", ["--tiny", "--repeats", "2"], capsys)
    assert re.search(r"decision InfoBatch N= +1,000: \d+\.\d+ s", out)
    assert re.search(r"decision SeTa +N= +20,000: \d+\.\d+ s", out)
    assert {r["data"] for r in result["quality"]} >= {"gamma (loss-like)", "small (exact DP)"}
    exact = next(r for r in result["quality"] if "exact" in r)
    # The bundled 1-D k-means is exact on small inputs; the DP in the script agrees.
    assert exact["ours"] == pytest.approx(exact["exact"], rel=1e-9)


def test_update(capsys: pytest.CaptureFixture[str]) -> None:
    out, result = _run("bench_update", ["--tiny"], capsys)
    assert len(result["update"]) == 8  # 2 modes x 2 routes x 2 epochs
    assert {r["weighted"] for r in result["update"]} == {False, True}
    assert re.search(r"update\(\) bls +route=order +epoch 1 .*: \d+\.\d us/call", out)
    assert "bare loss.mean()" in out


def test_memory(capsys: pytest.CaptureFixture[str]) -> None:
    out, result = _run("bench_memory", ["--tiny", "--policies", "InfoBatch"], capsys)
    row = result["memory"][0]
    assert row["n"] == 100_000 and row["peak_rss_mib"] > 0
    assert row["state_bytes_per_sample"] <= 16.0
    assert "bytes/sample" in out and "peak RSS" in out


def test_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    out, result = _run("bench_end_to_end", ["--tiny"], capsys)
    assert 0.0 < result["ideal_saving"] < 1.0
    assert "ideal saving" in out and "ratio" in out


def test_datapath(capsys: pytest.CaptureFixture[str]) -> None:
    out, result = _run("bench_datapath", ["--tiny"], capsys)
    assert result["sampler"]["bls"] > 0 and result["loader"]["ratio"] > 0
    assert "M indices/s" in out and "samples/s" in out


def test_gpu_script_cpu_fallback(capsys: pytest.CaptureFixture[str]) -> None:
    out, result = _run("gpu_resnet18", ["--tiny", "--device", "cpu"], capsys)
    assert [r["kind"] for r in result["runs"]] == ["Full", "InfoBatch", "BLS+InfoBatch"]
    assert all(r["steps"] > 0 for r in result["runs"])
    assert "steps/s" in out and "synchronised on 0 steps" in out


def test_fork_worker_stress(capsys: pytest.CaptureFixture[str]) -> None:
    # Two gloo ranks that start DataLoader workers from a fork server every epoch, for 2 s.
    out, result = _run("stress_fork_workers", ["--tiny"], capsys)
    [run] = result["runs"]
    assert (run["start_method"], run["outcome"]) == ("forkserver", "ok")
    assert run["epochs"] >= 1
    assert "forkserver run 0: ok" in out
