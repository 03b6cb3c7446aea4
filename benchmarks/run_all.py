"""Run the whole benchmark suite and write ``docs/performance.md``, its plot and
``docs/worker_payload.md``.

    python benchmarks/run_all.py --reference /tmp/infobatch

Each benchmark runs in its own interpreter. Those whose target is "one CPU core" run under
``taskset -c <core>`` (when available) with one torch thread; the end-to-end training, the
DataLoader comparison, the two-rank collectives count and the worker payload use the whole
machine. ``--reference`` is a local copy of the reference InfoBatch (the folder holding its
``infobatch/`` package), whose ``update()`` is timed beside ours; nothing is downloaded, and
without it the comparison reads "not given". Takes about 6-9 minutes on a 2-core machine.
``--tiny`` runs every script at smoke-test size (and writes to ``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IMAGENET = 1_281_167

TARGETS = {
    "infobatch_1e7": 1.0,
    "seta_1e7": 2.0,
    "imagenet": 0.25,
    "order_vs_reference": 0.5,
    "order_vs_bare_mean": 3.0,
    "indices_vs_reference": 0.8,
    "collectives_per_epoch": 4,
    "bytes_per_sample": 16.0,
    "e2e_ratio": 0.95,
    "loader_ratio": 0.97,
}

#: Why each torch operation on the update() path is there (docs/performance.md's table).
WHY_DISPATCHED = {
    "mean": "the loss to back-propagate: a new autograd tensor (BLS with weights 1, "
    "per-sample); on the explicit route with BLS also the batch's mean weight",
    "mul": "the loss times the batch's mean weight (BLS) or per-sample weights",
    "dot": "per-sample, up-weighted: mean(loss_i * weight_i) in one operation, the dot "
    "product with weight_i / b prepared for the epoch",
    "detach": "`.data`: the measurement's values without autograd, for the copy",
    "copy_": "the measurement into its slot of the epoch's buffer, safe from later "
    "in-place changes to the caller's loss",
    "_to_copy": "explicit route: a copy of the indices (as int64 on the loss's device) and "
    "of the measurement (float32), kept until the scores absorb them",
    "index_select": "explicit route, up-weighted: the batch's weights, whose indices only "
    "the call knows",
}


def run(script: str, args: list[str], pin: str | None) -> tuple[dict[str, Any], str, float]:
    """Run one script; return its RESULT_JSON, its printed lines and the wall time."""
    command = [sys.executable, str(HERE / script), *args]
    if pin is not None and shutil.which("taskset"):
        command = ["taskset", "-c", pin, *command]
    shown = " ".join(["python", f"benchmarks/{script}", *args])
    if command[0] == "taskset":
        shown = f"taskset -c {pin} {shown}"
    print(f"$ {shown}", flush=True)
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if pin is not None else dict(os.environ)
    out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    if out.returncode:
        raise RuntimeError(f"{shown} failed:\n{out.stdout}\n{out.stderr}")
    lines = [x for x in out.stdout.splitlines() if not x.startswith("RESULT_JSON: ")]
    print("\n".join(lines), flush=True)
    result = next(
        json.loads(x[len("RESULT_JSON: ") :])
        for x in out.stdout.splitlines()
        if x.startswith("RESULT_JSON: ")
    )
    return result, f"$ {shown}\n" + "\n".join(lines), seconds


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def plot(decision: list[dict[str, Any]], memory: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for policy, marker in (("InfoBatch", "o"), ("SeTa", "s")):
        points = sorted(
            [(r["n"], r["seconds"]) for r in decision if r["policy"] == policy]
            + [(r["n"], min(r["decision_s"])) for r in memory if r["policy"] == policy]
        )
        ax.loglog(*zip(*points, strict=True), marker=marker, label=policy)
    ax.plot([1e7], [TARGETS["infobatch_1e7"]], "k_", markersize=18)
    ax.plot([1e7], [TARGETS["seta_1e7"]], "k_", markersize=18)
    ax.plot([IMAGENET], [TARGETS["imagenet"]], "k_", markersize=18, label="targets")
    ax.set_xlabel("samples N")
    ax.set_ylabel("epoch decision time (s), one core")
    ax.set_title("Start-of-epoch decision (incl. shuffled index array)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def lscpu() -> dict[str, str]:
    """``lscpu``'s fields (model name, family, model, hypervisor), or ``{}`` without it."""
    if not shutil.which("lscpu"):
        return {}
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    fields = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_name(info: dict[str, str], fallback: str) -> str:
    """``Intel(R) Xeon(R) Processor (family 6, model 207), KVM`` from ``lscpu``."""
    if not info.get("Model name"):
        return fallback
    name = info["Model name"]
    if info.get("CPU family") and info.get("Model"):
        name += f" (family {info['CPU family']}, model {info['Model']})"
    if info.get("Hypervisor vendor"):
        name += f", {info['Hypervisor vendor']} guest"
    return name


PAYLOAD_HEADER = (
    "| N | bytes per worker | whole handler (bytes) | first batch (s) | "
    "first batch, whole handler (s) |"
)


def payload_row(r: dict[str, Any]) -> str:
    return (
        f"| {r['n']:,d} | {r['worker_payload_bytes']:,d} | {r['whole_pickle_bytes']:,d} | "
        f"{r['first_batch_s']:.2f} | {r['first_batch_whole_s']:.2f} |"
    )


def payload_page(payload: dict[str, Any], cpu: str, stamp: str, tiny: bool) -> str:
    """``docs/worker_payload.md``, from one run of ``bench_worker_payload.py``."""
    m, rows = payload["machine"], payload["payload"]
    repeats = len(rows[0]["first_batch_runs_s"]) if rows else 0
    lines = [
        "# What a DataLoader worker receives",
        "",
        "`spawn` and `forkserver` DataLoader workers get their dataset pickled through",
        "`multiprocessing`. A pruning handler sends only its `bls.worker.WorkerDataset`: the "
        "wrapped",
        "dataset and how to attach an index (`return_indices`). Scores, weights and the epoch "
        "plan stay",
        "in the main process, where the sampler and `update()` run. `pickle.dumps(handler)` "
        "still copies",
        "the whole handler.",
        "",
        f"Written by `python benchmarks/run_all.py` on {stamp} UTC ({cpu}, {m['cores']} cores, "
        f"torch {m['torch']}); the figures alone: `python benchmarks/bench_worker_payload.py` "
        "(about a minute).",
        "",
    ]
    if tiny:
        lines += ["**Smoke-test sizes (`--tiny`): these numbers do not measure anything.**", ""]
    lines += [
        "After one epoch of `BLS(InfoBatch(prune_ratio=0.5))` was decided and iterated "
        "(wrapped dataset: a stand-in of length N whose item i is i). The first-batch time "
        "runs from `iter(loader)` to the first batch of a `forkserver` DataLoader with two "
        f"workers started afresh, median of {repeats}, beside the same loader whose workers "
        "receive the whole handler, interleaved in one run:",
        "",
        PAYLOAD_HEADER,
        "|---:|---:|---:|---:|---:|",
        *[payload_row(r) for r in rows],
        "",
        "The payload does not grow with N (only the stand-in's length, a larger int, differs; "
        "`tests/test_state.py` checks it). The first batch is dominated by starting the "
        "workers; the whole handler adds its pickle to every worker start.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--core", default="1", help="the CPU for single-core benchmarks")
    parser.add_argument("--tiny", action="store_true", help="smoke-test sizes")
    parser.add_argument(
        "--reference",
        default=None,
        help="folder holding a local copy of the reference's infobatch/ package",
    )
    parser.add_argument(
        "--payload-out",
        type=Path,
        default=None,
        help="where the worker-payload page goes (default: worker_payload.md beside --out)",
    )
    args = parser.parse_args(argv)
    tiny = ["--tiny"] if args.tiny else []
    pin = args.core
    started = time.perf_counter()
    logs = []
    decision, log, _ = run("bench_decision.py", tiny, pin)
    logs.append(log)
    reference = [] if args.reference is None else ["--reference", args.reference]
    update, log, _ = run("bench_update.py", [*tiny, *reference], pin)
    logs.append(log)
    collectives, log, _ = run("bench_collectives.py", tiny, None)
    logs.append(log)
    memory, log, _ = run("bench_memory.py", tiny, pin)
    logs.append(log)
    sampler, log, _ = run("bench_datapath.py", [*tiny, "--part", "sampler"], pin)
    logs.append(log)
    loader, log, _ = run("bench_datapath.py", [*tiny, "--part", "loader"], None)
    logs.append(log)
    e2e, log, _ = run("bench_end_to_end.py", tiny, None)
    logs.append(log)
    compiled, log, _ = run("bench_compile.py", tiny, pin)
    logs.append(log)
    sizes = [] if args.tiny else ["--sizes", "1000", "100000", "10000000"]
    payload, log, _ = run("bench_worker_payload.py", [*tiny, *sizes], None)
    logs.append(log)
    total = time.perf_counter() - started
    cpu = lscpu()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    png = args.out.parent / "performance_decision_time.png"
    has_plot = plot(decision["decision"], memory["memory"], png)
    m = decision["machine"]

    def seconds(policy: str, n: int) -> float | None:
        for r in decision["decision"]:
            if r["policy"] == policy and r["n"] == n:
                return float(r["seconds"])
        return None

    by_route = {r["route"]: r for r in update["update"]}
    state = max(r["state_bytes_per_sample"] for r in memory["memory"])
    summary = []
    for label, policy, n, target in (
        ("InfoBatch decision, N = 10,000,000", "InfoBatch", 10_000_000, TARGETS["infobatch_1e7"]),
        (
            "SeTa decision (keep 0.9, 10 groups), N = 10,000,000",
            "SeTa",
            10_000_000,
            TARGETS["seta_1e7"],
        ),
        ("InfoBatch decision, N = 1,281,167", "InfoBatch", IMAGENET, TARGETS["imagenet"]),
        ("SeTa decision, N = 1,281,167", "SeTa", IMAGENET, TARGETS["imagenet"]),
    ):
        value = seconds(policy, n)
        if value is not None:
            summary.append((label, f"<= {target} s", f"{value:.3f} s", verdict(value <= target)))
    ratios = [q["ratio"] for q in decision["quality"]]
    if ratios:
        summary.append(
            (
                "1-D grouping within-group SS / scikit-learn KMeans (k-means++)",
                "<= 1",
                f"{max(ratios):.4f} (worst of {len(ratios)} data sets)",
                verdict(max(ratios) <= 1.0),
            )
        )
    for route in ("bls/order", "per-sample/order", "bls/indices", "per-sample/indices"):
        r = by_route[route]
        bound = "order_vs_reference" if route.endswith("order") else "indices_vs_reference"
        against = r["vs_reference"]
        summary.append(
            (
                f"update() per call, {route}, batch {update['batch']}, pruned epoch: "
                "/ reference InfoBatch update()",
                f"<= {TARGETS[bound]}x",
                "reference not given" if against is None else f"{against:.2f}x",
                "not measured" if against is None else verdict(against <= TARGETS[bound]),
            )
        )
        if route.endswith("order"):
            summary.append(
                (
                    f"update() per call, {route}: / a bare `loss.mean()`",
                    f"<= {TARGETS['order_vs_bare_mean']:.0f}x",
                    f"{r['vs_bare_mean']:.2f}x",
                    verdict(r["vs_bare_mean"] <= TARGETS["order_vs_bare_mean"]),
                )
            )
    most = max(max(r["collectives_per_epoch"]) for r in collectives["routes"].values())
    steps = min(min(r["steps_per_epoch"]) for r in collectives["routes"].values())
    recompiled = max(r["compilations"] for r in compiled["rows"])
    exact = all(r["exact"] for r in compiled["rows"])
    summary.append(
        (
            "update() inside a torch.compile'd step: compilations over the run, result exact",
            "1, exact",
            f"{recompiled}, {'exact' if exact else 'NOT exact'}",
            verdict(recompiled == 1 and exact),
        )
    )
    summary.append(
        (
            f"collectives per epoch under {collectives['world_size']} gloo ranks (every route; "
            f">= {steps} steps per epoch)",
            f"<= {TARGETS['collectives_per_epoch']}",
            str(most),
            verdict(most <= TARGETS["collectives_per_epoch"]),
        )
    )
    summary.append(
        (
            "host-device synchronisations in update()",
            "none",
            "none (tests/test_no_sync.py: host reads raise; meta-device run)",
            "yes",
        )
    )
    summary.append(
        (
            "handler state per sample (scores + weights + plan + deferred losses)",
            f"<= {TARGETS['bytes_per_sample']:.0f} B",
            f"{state:.2f} B",
            verdict(state <= TARGETS["bytes_per_sample"]),
        )
    )
    for r in memory["memory"]:
        summary.append(
            (
                f"{r['policy']} at N = {r['n']:,d}: fits and decides",
                "fits",
                f"{min(r['decision_s']):.2f} s, peak RSS {r['peak_rss_mib'] / 1024:.2f} GiB",
                "yes",
            )
        )
    summary.append(
        (
            "end to end: measured wall-time saving / ideal saving (InfoBatch 0.5, num_workers=2)",
            f">= {TARGETS['e2e_ratio']}",
            f"{e2e['ratio']:.3f}",
            verdict(e2e["ratio"] >= 0.95),
        )
    )
    summary.append(
        (
            "end to end, main-process CPU time instead of wall time (same runs)",
            f">= {TARGETS['e2e_ratio']}",
            f"{e2e['cpu_ratio']:.3f}",
            verdict(e2e["cpu_ratio"] >= 0.95),
        )
    )
    summary.append(
        (
            "end to end, from the time measured inside the library (same runs)",
            f">= {TARGETS['e2e_ratio']}",
            f"{e2e['library_ratio']:.3f}",
            verdict(e2e["library_ratio"] >= 0.95),
        )
    )
    lr = loader["loader"]["ratio"]
    summary.append(
        (
            "pruned loader samples/s / plain loader over the same indices (num_workers=2)",
            f">= {TARGETS['loader_ratio']}",
            f"{lr:.3f}",
            verdict(lr >= TARGETS["loader_ratio"]),
        )
    )

    md: list[str] = []
    add = md.append
    add("# Performance")
    add("")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    add(
        "Written by `python benchmarks/run_all.py"
        + (" --reference /tmp/infobatch" if args.reference else "")
        + f"` (this exact command reproduces it; the suite took {total / 60:.1f} min). "
        f"Generated {stamp} UTC."
    )
    add("")
    add(
        f"Machine: {cpu_name(cpu, m['cpu'])} (`lscpu`), {m['cores']} cores, {m['ram_gib']} GiB "
        f"RAM; Python {m['python']}, torch {m['torch']}, NumPy {m['numpy']}. Single-core "
        f"figures ran under `taskset -c {pin}` with one torch thread; the end-to-end and "
        "DataLoader figures use two loader workers and every core, the collectives two `gloo` "
        "ranks. Timings are medians of repeated runs (`time.perf_counter`). The machine is "
        "shared with other jobs and virtualised: absolute times move by tens of percent "
        "between runs, ratios measured in one run far less."
    )
    add("")
    add(
        "Reproduce: `python benchmarks/run_all.py --reference /tmp/infobatch`, where "
        "`/tmp/infobatch` holds a local copy of the reference implementation "
        "(github.com/NUS-HPC-AI-Lab/InfoBatch, `infobatch/__init__.py` and "
        "`infobatch/infobatch.py`"
        + (f", here {args.reference}" if args.reference else "")
        + "); it is never downloaded by the benchmarks nor part of this repository."
    )
    if args.tiny:
        add("")
        add("**Smoke-test sizes (`--tiny`): these numbers do not measure the targets.**")
    add("")
    add("## Summary against the targets")
    add("")
    add("| target | bound | measured | met |")
    add("|---|---|---|---|")
    for row in summary:
        add("| " + " | ".join(row) + " |")
    add("")
    add("## Epoch decision time")
    add("")
    add(
        "`sampler.set_epoch(e)` followed by `iter(sampler)`: reading the scores, the policy, the "
        "weights, the shuffled index array and handing it to the iterator. Loss-like (gamma) "
        "scores; InfoBatch prune ratio 0.5; SeTa prune ratio 0.1 (keep 0.9), 10 groups, window "
        "0.5. One core."
    )
    add("")
    add("| N | InfoBatch (s) | kept | SeTa (s) | kept |")
    add("|---:|---:|---:|---:|---:|")
    sizes = sorted({r["n"] for r in decision["decision"]})
    by = {(r["policy"], r["n"]): r for r in decision["decision"]}
    for n in sizes:
        i, s = by[("InfoBatch", n)], by[("SeTa", n)]
        add(
            f"| {n:,d} | {i['seconds']:.4f} | {i['kept']:,d} | {s['seconds']:.4f} | "
            f"{s['kept']:,d} |"
        )
    for r in memory["memory"]:
        add(
            f"| {r['n']:,d} ({r['policy']}, fresh process) | "
            + (
                f"{min(r['decision_s']):.2f} | {r['kept']:,d} | | |"
                if r["policy"] == "InfoBatch"
                else f" | | {min(r['decision_s']):.2f} | {r['kept']:,d} |"
            )
        )
    add("")
    if has_plot:
        add(f"![decision time against N]({png.name})")
        add("")
    if decision.get("hot_spots"):
        biggest = max(r["n"] for r in decision["decision"])
        add(f"### Where the time goes at N = {biggest:,d}")
        add("")
        add(
            "cProfile own time of one decision (Cython/NumPy calls made inside a Python "
            "function, such as `Generator.permutation` inside `plan`, count towards it)."
        )
        add("")
        add("| policy | function | calls | seconds |")
        add("|---|---|---:|---:|")
        for policy, rows in decision["hot_spots"].items():
            for r in rows:
                add(f"| {policy} | `{r['function']}` | {r['calls']} | {r['seconds']:.3f} |")
        add("")
    if decision["quality"]:
        add("### 1-D grouping quality (SeTa)")
        add("")
        add(
            "Within-group sum of squares, k = 10, of `bls.kmeans1d.kmeans_1d` against "
            "scikit-learn's `KMeans(init='k-means++', n_init=1, random_state=0)` on the same "
            "values; the exact optimum by dynamic programming where the data is small. "
            "scikit-learn is used by the benchmark only; the library does not depend on it."
        )
        add("")
        add(
            "| data | n | bls (s) | scikit-learn (s) | bls SS | scikit-learn SS | ratio "
            "| exact SS |"
        )
        add("|---|---:|---:|---:|---:|---:|---:|---:|")
        for q in decision["quality"]:
            exact = f"{q['exact']:.6g}" if "exact" in q else ""
            add(
                f"| {q['data']} | {q['n']:,d} | {q['ours_s']:.2f} | {q['sklearn_s']:.2f} | "
                f"{q['ours']:.6g} | {q['sklearn']:.6g} | {q['ratio']:.6f} | {exact} |"
            )
        add("")
    add("## update() per call")
    add("")
    ref_us = update["reference_us"]
    add(
        f"CPU, one torch thread, batch {update['batch']}, N = {update['n']:,d}: one pruned "
        "InfoBatch epoch (prune 0.5, from loss-like scores, so part of every batch is "
        f"up-weighted; {update['steps']} steps) through real DataLoaders stepped in lock-step. "
        "At every step each call below is timed on its own, on a fresh autograd loss of that "
        "step (a linear model, made before the clock starts), in an order that rotates from "
        "step to step; medians over the steps. The reference is the public InfoBatch's "
        "`update()` (per-sample losses; its `cur_batch_index` set from the batch, untimed; its "
        "import-time DataLoader patch undone). Ours defers: the order route copies each "
        "batch's losses into a buffer, the explicit route keeps a copy of them and of the "
        "indices, and the scores absorb them in one vectorised step when next read (here at "
        "the epoch's end); that step is timed on its own and spread over the calls in the "
        "last column."
    )
    add("")
    add(
        "| call | us / call (median) | / reference | / bare `loss.mean()` | folding in per "
        "epoch (ms) | us / call, all included |"
    )
    add("|---|---:|---:|---:|---:|---:|")
    add(
        "| reference InfoBatch `update()` | "
        + (
            "not given | | | | |"
            if ref_us is None
            else f"{ref_us:.1f} | 1.00 | {ref_us / update['bare_mean_us']:.2f} | | |"
        )
    )
    for r in update["update"]:
        against = "not given" if r["vs_reference"] is None else f"{r['vs_reference']:.2f}"
        add(
            f"| ours, {r['route']} | {r['us']:.1f} | {against} | {r['vs_bare_mean']:.2f} | "
            f"{r['fold_ms']:.2f} | {r['us_all_included']:.1f} |"
        )
    add(f"| bare `loss.mean()` with autograd | {update['bare_mean_us']:.1f} | | 1.00 | | |")
    add("")
    add(
        "Torch operations one `update()` dispatches in that epoch (a middle step, counted by a "
        "`TorchDispatchMode`; `tests/test_deferred.py` asserts these lists, also with every "
        "weight 1, where `mean` stands in for `mul`/`dot`):"
    )
    add("")
    add("| call | dispatches | operations |")
    add("|---|---:|---|")
    for route, ops in update["dispatches"].items():
        shown = ", ".join(f"`{name}` {count}" for name, count in sorted(ops.items()))
        add(f"| {route} | {sum(ops.values())} | {shown} |")
    add("")
    add("Why each remains:")
    add("")
    for name, why in WHY_DISPATCHED.items():
        add(f"- `{name}`: {why}.")
    add("")
    add(
        "The order route knows every batch's indices once the epoch's iteration begins, so "
        "the weights a step needs (per-sample views, or one `(batches,)` tensor of mean "
        "weights for BLS) are made then, once, vectorised: a step gathers no weights and "
        "makes no index view. What remains above a bare mean is the copy and the Python of "
        "the call: a few checks (the batch exists and was drawn, the loss has its shape), "
        "which cost more here than in a tight loop because every call runs cold, after the "
        "loaders and the other calls of its step."
    )
    add("")
    add(
        "No host-device synchronisation: `tests/test_no_sync.py` makes `.item()`, `.cpu()`, "
        "`.tolist()`, `.numpy()` and `bool/int/float/index` conversions raise inside `update()` "
        "(BLS and per-sample, order route and explicit indices, InfoBatch and SeTa), and runs "
        "`update()` on `meta` tensors, which have no values to read. On a GPU, "
        "`benchmarks/gpu_resnet18.py` runs every `update()` under "
        '`torch.cuda.set_sync_debug_mode("error")`.'
    )
    add("")
    add("## Under DDP: collectives per epoch")
    add("")
    cc = collectives["config"]
    add(
        f"{collectives['world_size']} `gloo` ranks on this machine, InfoBatch (prune 0.5), "
        f"N = {cc['n']:,d}, batch {cc['batch']} per rank, {cc['epochs']} epochs; every "
        "`torch.distributed` collective counted by wrappers installed in the two processes "
        "only, from each epoch's `set_epoch` to the end of its `end_epoch()`, including a "
        "`state_dict()` that rank 0 alone calls after the epoch's last update. Each rank "
        "defers its losses (explicit indices too, in fixed slots of the loader's batch size) "
        "and the epoch's last `update()` gathers every rank's at once (one `all_gather`, two "
        "with explicit indices: indices and losses), with shapes every rank knows, so no "
        "host sync on CUDA. At the epoch's end nothing is pending: rank 0 alone may save."
    )
    add("")
    add("| call | collectives per epoch | steps per epoch and rank | update() us / call |")
    add("|---|---|---|---:|")
    for route, r in collectives["routes"].items():
        add(
            f"| {route} | {', '.join(map(str, r['collectives_per_epoch']))} | "
            f"{', '.join(map(str, r['steps_per_epoch']))} | {r['update_us']:.1f} |"
        )
    add("")
    add(
        "Mid-epoch, a `state_dict()` needs every rank's deferred losses: every rank calls it "
        "at the same step (rank 0 may then write it alone), and it gathers them as the "
        "epoch's end does. A rank that calls it alone waits for the others' keys in the "
        "process group's store (not in a collective, which would pair with another one) and "
        "raises `RuntimeError` after `bls.distributed.AGREE_TIMEOUT` (60 s), naming the ranks "
        "that did not call it; `tests/test_collectives.py` checks all of this. Explicit "
        "indices under a batch sampler of the loop's own, under Accelerate's sharding (the "
        "Hugging Face `PruningTrainer`) or with tracked batches are still recorded at every "
        "step (four collectives), since no rank knows the others' batch lengths there."
    )
    add("")
    add("## Inside a torch.compile'd step")
    add("")
    add(
        "A small MLP, InfoBatch (prune 0.5), one torch thread; the whole training step "
        "`loss = loss_fn(model(x), y); return handler.update(loss)` compiled, against the same "
        "run eagerly. `update()` is excluded from tracing (`torch.compiler.disable`): it keeps "
        "per-step Python state that Dynamo would otherwise guard on and recompile for at every "
        "step. Graphs and breaks are Dynamo's count for one step (`torch._dynamo.explain`); "
        "compilations are counted over the whole run by a counting `aot_eager` backend, whose "
        "run's scores and weights are compared bit for bit with the eager run's; step times "
        f"(medians after the first quarter of the steps) use the `{compiled['backend']}` "
        "backend. Reproduce alone: `python benchmarks/bench_compile.py`."
    )
    add("")
    add("| score | steps | graphs | graph breaks | compilations | equal to eager | "
        "step eager (ms) | step compiled (ms) |")  # fmt: skip
    add("|---|---:|---:|---:|---:|---|---:|---:|")
    for r in compiled["rows"]:
        add(
            f"| {r['score']} | {r['steps']} | {r['graphs']} | {r['graph_breaks']} | "
            f"{r['compilations']} | {'yes' if r['exact'] else '**no**'} | "
            f"{r['eager_ms']:.3f} | {r['compiled_ms']:.3f} |"
        )
    add("")
    add("## Memory")
    add("")
    add(
        "A fresh process per policy builds the handler over an index-only data set, fills "
        "the scores, decides two pruning epochs and runs one `update()`. State = scores "
        "(float32) + weights (float32) + the epoch's index plan (int32 below 2**31 samples) + "
        "the epoch's buffer of deferred per-sample losses (float32, one per planned sample, "
        "allocated by the first `update()`; one per batch with BLS). An epoch that keeps every "
        "sample has a plan and a buffer of 4 bytes per sample each: 16 bytes per sample, the "
        "bound. Peak RSS from "
        "`resource.getrusage`; 'before' is the interpreter with torch imported."
    )
    add("")
    add(
        "| policy | N | state B/sample | plan dtype | decision (s), epochs 1 and 2 | "
        "RSS before (MiB) | peak RSS (MiB) | peak extra B/sample |"
    )
    add("|---|---:|---:|---|---|---:|---:|---:|")
    for r in memory["memory"]:
        add(
            f"| {r['policy']} | {r['n']:,d} | {r['state_bytes_per_sample']:.2f} | "
            f"{r['plan_dtype']} | {r['decision_s'][0]:.2f}, {r['decision_s'][1]:.2f} | "
            f"{r['rss_before_mib']:.0f} | {r['peak_rss_mib']:.0f} | "
            f"{r['peak_extra_bytes_per_sample']:.1f} |"
        )
    add("")
    add("## End to end")
    add("")
    c = e2e["config"]
    add(
        f"A small CNN (two 3x3 conv + BN layers, 8x8 RGB images, N = {c['n']:,d}), SGD, batch "
        f"{c['batch']}, {c['epochs']} epochs, `num_workers={c['workers']}` with persistent "
        "workers, one torch thread in the main process. Full and InfoBatch(prune 0.5, delta "
        "0.875, per-sample losses) run the same loop, and a plain loader without any handler "
        f"for reference. {c['repeats']} repeats; within each, the three runs interleave epoch "
        "by epoch (order alternating). Every repeat does the same work (same seeds, same plans), "
        "and the Full and InfoBatch runs of a repeat share the machine's slow drifts, so the "
        "measured saving is the median over repeats of the paired `1 - t_InfoBatch / t_Full`. "
        "The sum over epochs of each epoch's best time over the repeats is given too; minima "
        "of noisy epochs favour the run with more short epochs, so it is not the headline."
    )
    add("")
    t = e2e["seconds"]
    bt = e2e["best_seconds"]
    add("| loop | seconds (best per epoch, summed) | seconds (median run) |")
    add("|---|---:|---:|")
    add(f"| plain `DataLoader(shuffle=True)`, no handler | {bt['plain']:.2f} | {t['plain']:.2f} |")
    add(f"| `bls.Full` | {bt['Full']:.2f} | {t['Full']:.2f} |")
    add(f"| `bls.InfoBatch(prune_ratio=0.5)` | {bt['InfoBatch']:.2f} | {t['InfoBatch']:.2f} |")
    add("")
    add(
        f"Kept per epoch: {e2e['kept']}. Ideal saving `1 - sum(kept) / (N * E)` = "
        f"{e2e['ideal_saving']:.4f}; measured saving, median of the paired "
        f"`1 - t_InfoBatch / t_Full` = {e2e['measured_saving']:.4f} (per repeat: "
        f"{', '.join(f'{x:.3f}' for x in e2e['paired_savings'])}); ratio "
        f"**{e2e['ratio']:.3f}** (single repeats range from "
        f"{min(e2e['paired_savings']) / e2e['ideal_saving']:.2f} to "
        f"{max(e2e['paired_savings']) / e2e['ideal_saving']:.2f}). From the best-epoch sums: "
        "saving "
        f"{e2e['best_saving']:.4f}, ratio {e2e['best_ratio']:.3f}. `bls.Full` "
        "against the "
        f"plain loader: {e2e['full_vs_plain']:+.1%}. All runs (s): {e2e['runs']}."
    )
    add("")
    cs = e2e["cpu_seconds"]
    add(
        "The same runs in the main process's CPU time (`time.process_time()`, median of the "
        "repeats), where the training loop, `update()` and the sampler run and where the time "
        "other tenants of a shared virtual machine take does not count: plain "
        f"{cs['plain']:.2f} s, Full {cs['Full']:.2f} s, InfoBatch {cs['InfoBatch']:.2f} s; "
        f"CPU-time saving / ideal = **{e2e['cpu_ratio']:.3f}**. Wall time on this 2-core VM "
        "varies by about 20% between identical epochs (per-epoch times are in the JSON), which "
        "is why the wall-time ratio moves between repeats."
    )
    add("")
    ls = e2e["library_seconds"]
    add(
        "Time spent inside the library itself (the epoch's decision in `set_epoch` plus every "
        "`update()`, wall time, median of the repeats) is measured directly and is far steadier: "
        f"Full {ls['Full']:.3f} s, InfoBatch {ls['InfoBatch']:.3f} s "
        f"({ls['InfoBatch'] / t['InfoBatch']:.2%} of the InfoBatch run). Had all other time "
        "(model, data) scaled exactly with the samples trained on, the ratio would be "
        f"**{e2e['library_ratio']:.3f}**: what the library itself costs. The gap between this "
        "and the wall-time ratio is the machine's noise plus costs outside the library that do "
        "not shrink with the epoch (a pruned epoch's partial last batch, loader start-up)."
    )
    add("")
    add("## Data path")
    add("")
    s = sampler["sampler"]
    add(
        f"The sampler keeps the epoch as a NumPy index array and the iterator converts it to "
        f"`int` in fixed-size chunks (never a per-epoch Python list). Iterating one epoch, "
        f"N = {sampler['config']['sampler_n']:,d}, one core: bls "
        f"{s['bls'] / 1e6:.2f} M indices/s; `RandomSampler` {s['RandomSampler'] / 1e6:.2f} M/s; "
        f"`SubsetRandomSampler` (list of ints) {s['SubsetRandomSampler'] / 1e6:.2f} M/s."
    )
    add("")
    lc = loader["config"]
    rate = loader["loader"]["samples_per_s"]
    add(
        f"Through a `DataLoader` (uint8 3x32x32 images converted and flipped per item, batch "
        f"{lc['batch']}, `num_workers={lc['workers']}`, persistent workers, N = "
        f"{lc['loader_n']:,d}, InfoBatch pruning epoch keeping {loader['loader']['kept']:,d}), "
        f"{lc['epochs']} epochs, each running both loaders back to back (order alternating). "
        "Samples/s of each loader's best epoch (other processes only ever slow an epoch "
        "down); the median "
        "of the per-epoch paired ratios was "
        f"{loader['loader']['paired_median_ratio']:.3f}:"
    )
    add("")
    add("| loader | samples/s |")
    add("|---|---:|")
    add(f"| `DataLoader(handler, sampler=handler.sampler)` | {rate['pruned']:,.0f} |")
    add(f"| `DataLoader(data, sampler=SubsetRandomSampler(kept))` | {rate['plain']:,.0f} |")
    add(f"| ratio | **{loader['loader']['ratio']:.3f}** |")
    add("")
    add("## What DataLoader workers receive")
    add("")
    add(
        "`spawn`/`forkserver` workers get their dataset pickled; a handler sends only its "
        "worker view (the wrapped dataset and how to attach an index), never scores, weights "
        "or the plan. After one `BLS(InfoBatch)` epoch was decided and iterated, over a "
        "stand-in data set of length N; the first batch of a `forkserver` DataLoader with two "
        "workers started afresh, beside the same loader whose workers receive the whole "
        "handler (details: [worker_payload.md](worker_payload.md)):"
    )
    add("")
    add(PAYLOAD_HEADER)
    add("|---:|---:|---:|---:|---:|")
    for r in payload["payload"]:
        add(payload_row(r))
    add("")
    add("## GPU")
    add("")
    add(
        "**CUDA figures are unmeasured**: no GPU was lent when this file was generated, so "
        "nothing here was timed on one. `python benchmarks/gpu_resnet18.py` trains a "
        "CIFAR-style ResNet-18 (pure torch, in the script) on random 32x32 data held on the "
        "GPU: Full, InfoBatch (per-sample) and BLS+InfoBatch, reporting steps/s, the saving "
        "ratio and whether any `update()` synchronised "
        '(`torch.cuda.set_sync_debug_mode("error")` around every call); it is sized for well '
        "under 5 minutes on one H200. Its CPU fallback runs in "
        "`tests/test_benchmarks_smoke.py`."
    )
    add("")
    add("## Raw output")
    add("")
    add("```text")
    add("\n\n".join(logs))
    add("```")
    args.out.write_text("\n".join(md) + "\n")
    payload_out = args.payload_out or args.out.parent / "worker_payload.md"
    payload_out.write_text(payload_page(payload, cpu_name(cpu, m["cpu"]), stamp, args.tiny))
    print(f"wrote {args.out}, {png.name} and {payload_out.name} in {total:.0f} s")


if __name__ == "__main__":
    main()
