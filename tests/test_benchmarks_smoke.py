"""Every benchmark script runs (tiny sizes) and prints its figures and the machine.

The figures themselves are not asserted: timings belong in ``docs/performance.md``, written by
``benchmarks/run_all.py``, not in tests. What is asserted is that each script still runs
against the current library and reports what its section of the document needs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def describe_exit(returncode: int) -> str:
    """``exit status 1`` or ``killed by SIGABRT``: what a finished child process reports."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def _run(name: str, args: list[str], timeout: float = 120.0) -> tuple[str, Any]:
    """Run ``benchmarks/<name>.py`` in its own process, as a user does; return (stdout, result).

    A child process keeps a crash in a native kernel (a oneDNN convolution aborted the whole
    test session on one CPU) to this test, and keeps the scripts' ``torch.set_num_threads``
    and seeding out of the other tests.
    """
    return _run_script(BENCHMARKS / f"{name}.py", args, timeout)


def _run_script(script: Path, args: list[str], timeout: float) -> tuple[str, Any]:
    shown = " ".join([script.name, *args])
    command = [sys.executable, "-X", "faulthandler", str(script), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{shown} ran past {timeout:.0f} s; its stderr ends:\n{error.stderr!s:.4000}")
    if done.returncode != 0:
        pytest.fail(
            f"{shown} ended with {describe_exit(done.returncode)}; "
            f"its output ends:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    out = done.stdout
    assert out.startswith("machine: ") and "torch " in out and "numpy " in out
    line = [x for x in out.splitlines() if x.startswith("RESULT_JSON: ")]
    assert len(line) == 1
    return out, json.loads(line[0][len("RESULT_JSON: ") :])


def test_decision() -> None:
    out, result = _run("bench_decision", ["--tiny", "--repeats", "2"])
    assert re.search(r"decision InfoBatch N= +1,000: \d+\.\d+ s", out)
    assert re.search(r"decision SeTa +N= +20,000: \d+\.\d+ s", out)
    assert {r["data"] for r in result["quality"]} >= {"gamma (loss-like)", "small (exact DP)"}
    exact = next(r for r in result["quality"] if "exact" in r)
    # The bundled 1-D k-means is exact on small inputs; the DP in the script agrees.
    assert exact["ours"] == pytest.approx(exact["exact"], rel=1e-9)


# A stand-in for the reference InfoBatch (github.com/NUS-HPC-AI-Lab/InfoBatch): its interface
# only (the benchmark times ``update()`` after setting ``cur_batch_index``), and the DataLoader
# patch its module applies when imported, which the benchmark must undo.
FAKE_REFERENCE = """
import numpy as np
import torch
from torch.utils.data import Dataset
from torch.utils.data.dataloader import _BaseDataLoaderIter

_BaseDataLoaderIter.__next__ = None  # the real module replaces it too


class InfoBatch(Dataset):
    def __init__(self, dataset, num_epochs, prune_ratio=0.5, delta=0.875):
        self.dataset = dataset
        self.scores = torch.ones(len(dataset)) * 3
        self.weights = torch.ones(len(dataset))
        self.cur_batch_index = None

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return index, self.dataset[index]

    @property
    def sampler(self):
        return list(np.random.default_rng(0).permutation(len(self)))

    def update(self, values):
        weights = self.weights[self.cur_batch_index].to(values.device)
        self.scores[self.cur_batch_index.long()] = values.detach().clone().cpu()
        return (values * weights).mean()
"""


def test_update(tmp_path: Path) -> None:
    out, result = _run("bench_update", ["--tiny"])
    assert [r["route"] for r in result["update"]] == [
        "bls/order",
        "bls/indices",
        "per-sample/order",
        "per-sample/indices",
    ]
    assert result["reference_us"] is None and "reference InfoBatch update(): not given" in out
    assert re.search(r"update\(\) bls/order +\d+\.\d us/call \(reference not given", out)
    assert "bare loss.mean() with autograd" in out
    # Every route's dispatches were counted; the order route's are few.
    assert sum(result["dispatches"]["bls/order"].values()) <= 4
    package = tmp_path / "infobatch"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "infobatch.py").write_text(FAKE_REFERENCE)
    out, result = _run("bench_update", ["--tiny", "--reference", str(tmp_path)])
    assert result["reference_us"] > 0
    assert all(r["vs_reference"] > 0 for r in result["update"])
    assert re.search(r"update\(\) per-sample/order +\d+\.\d us/call \(\d+\.\d\dx the ref", out)


def test_compile() -> None:
    # update() inside a compiled step: compiled once for the whole run (not once per step),
    # and the run's scores and weights equal the eager run's bit for bit.
    out, result = _run("bench_compile", ["--tiny"], timeout=240.0)
    assert [r["score"] for r in result["rows"]] == ["bls", "per-sample"]
    for row in result["rows"]:
        assert row["steps"] > 8  # more steps than Dynamo's recompile limit
        assert row["compilations"] == 1 and row["exact"] is True
    assert re.search(r"bls +: \d+ graphs, \d+ break\(s\)", out)


def test_collectives() -> None:
    out, result = _run("bench_collectives", ["--tiny"])
    assert set(result["routes"]) == {
        "bls/order",
        "bls/indices",
        "per-sample/order",
        "per-sample/indices",
    }
    for row in result["routes"].values():
        assert max(row["collectives_per_epoch"]) <= 4 < min(row["steps_per_epoch"])
    assert "collectives bls/order" in out and "gloo ranks" in out


def test_memory() -> None:
    out, result = _run("bench_memory", ["--tiny", "--policies", "InfoBatch"])
    row = result["memory"][0]
    assert row["n"] == 100_000 and row["peak_rss_mib"] > 0
    assert row["state_bytes_per_sample"] <= 16.0
    assert "bytes/sample" in out and "peak RSS" in out


def test_end_to_end() -> None:
    out, result = _run("bench_end_to_end", ["--tiny"])
    assert 0.0 < result["ideal_saving"] < 1.0
    assert "ideal saving" in out and "ratio" in out


def test_datapath() -> None:
    out, result = _run("bench_datapath", ["--tiny"])
    assert result["sampler"]["bls"] > 0 and result["loader"]["ratio"] > 0
    assert "M indices/s" in out and "samples/s" in out


def test_gpu_script_cpu_fallback() -> None:
    out, result = _run("gpu_resnet18", ["--tiny", "--device", "cpu"])
    assert result["memory_format"] == "torch.contiguous_format"  # never channels_last on CPU
    assert [r["kind"] for r in result["runs"]] == ["Full", "InfoBatch", "BLS+InfoBatch"]
    assert all(r["steps"] > 0 for r in result["runs"])
    assert "steps/s" in out and "synchronised on 0 steps" in out


def test_worker_payload() -> None:
    out, result = _run("bench_worker_payload", ["--tiny"])
    small, large = result["payload"]
    # Only the stand-in dataset's length (a larger int) differs between the two sizes.
    assert abs(small["worker_payload_bytes"] - large["worker_payload_bytes"]) < 16
    assert large["worker_payload_bytes"] < 200
    assert large["whole_pickle_bytes"] > 100 * large["worker_payload_bytes"]
    assert "bytes per worker" in out and "first batch" in out


def test_a_crashing_script_fails_only_its_test(tmp_path: Path) -> None:
    # A native abort in the child becomes this test's failure message, naming the signal.
    script = tmp_path / "abort.py"
    script.write_text("import os\nprint('machine: x', flush=True)\nos.abort()\n")
    with pytest.raises(pytest.fail.Exception, match=r"abort\.py ended with killed by SIGABRT"):
        _run_script(script, [], timeout=60)
    assert describe_exit(2) == "exit status 2"


def test_fork_worker_stress() -> None:
    # Two gloo ranks that start DataLoader workers from a fork server every epoch, for 2 s.
    out, result = _run("stress_fork_workers", ["--tiny"])
    [run] = result["runs"]
    assert (run["start_method"], run["outcome"]) == ("forkserver", "ok")
    assert run["epochs"] >= 1
    assert "forkserver run 0: ok" in out
