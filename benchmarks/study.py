"""Is pruning with BLS lossless? The accuracy study and the score diagnostics, end to end.

Recipe:

1. Build two tasks in memory (``_study_tasks.py``): the embedded 8x8 digits, and ``noisy16``,
   a generated 16x16 task with easy/medium/hard samples and 10% label noise.
2. Train every method at one **equal saving**: ``RunConfig(target_saving=t)`` fixes the share
   of sample-steps each run skips (budget-first pruning, ``docs/budget.md``), so methods differ
   only in *which* samples they skip. The methods: RandomPrune, Static (its ``prune_ratio`` is
   its saving), InfoBatch and SeTa (per-sample loss), BLS_InfoBatch and BLS_SeTa (batch-loss
   EMA), BLSres_InfoBatch and BLSres_SeTa (the residual batch-loss score of
   ``_score_variants.py``, not in the library), and the control *Full, fewer epochs* (all data,
   ``1 - t`` of the epochs: the same saving without any rule). Several seeds; each seed starts
   every method from the same initial weights, so methods are compared seed by seed with Full.
   The default profile also keeps one ``prune_ratio`` setting, where the savings differ.
3. Judge each method by a stated rule: the 95% t confidence interval of the paired accuracy
   difference to Full: *lossless* when its lower end is at least ``-margin`` (non-inferiority,
   margin 1 percentage point); :func:`verdict` states the rule.
4. Score diagnostics: after every epoch, the Spearman correlation between the handler's scores
   and the true per-sample losses (:class:`bls.diagnostics.ScoreTracker`); and a sweep without
   pruning (so the training does not depend on the scores) that scores one run with the EMA at
   every ``alpha`` and the residual rule at ``eta = 1 - alpha`` side by side, per batch size,
   against the per-sample loss as reference.
5. Write the runs (JSON), the tables (CSV), the plots (PNG) and the results page.

Profiles: ``default`` (15-20 epochs, 5 seeds; ``docs/results.md``) and ``long`` (100 epochs
and a 20-epoch arm on the same data, smaller noisy16, 3 seeds; ``docs/results_long.md``).

Run:  ``python benchmarks/study.py``                          (default; about 20 min on 2 cores)
      ``python benchmarks/study.py --profile long --jobs 2``  (long; under 30 min on 2 cores)
      ``python benchmarks/study.py --quick --out /tmp/study --doc /tmp/study/results.md``
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import platform
import sys
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _score_variants import BatchResidual, PanelTracker, ScorePanel
from _study_tasks import Task, build_task
from study_report import (
    SHORT_FULL,
    TARGET_METHODS,
    accuracy_table,
    findings,
    longest,
    plot,
    summarize,
    summarize_sweep,
    sweep_table,
    write_csv,
    write_report,
)

import bls.app.train as engine
from bls import BudgetWarning
from bls.app.models import SmallCNN, build_model
from bls.app.train import RunConfig, train
from bls.diagnostics import ScoreTracker, spearman
from bls.scores import BatchLossEMA, ScoreSource

REPO = Path(__file__).resolve().parent.parent
# Every target method but the two without scores.
SCORED_METHODS = tuple(m for m in TARGET_METHODS if m not in ("RandomPrune", "Static"))


@dataclass
class Profile:
    """Sizes of one study.

    Attributes:
        name: ``default`` or ``long`` (a ``-quick`` suffix for the test's tiny versions).
        seeds: seeds of the accuracy runs.
        scale: share of each task's training set.
        epochs: the run lengths per task; each length is a separate comparison with its own
            Full baseline.
        target_saving: the saving every method is held to.
        methods: methods compared at ``target_saving`` (besides Full and the short control).
        ratio_methods: methods also run at ``prune_ratio`` (their savings differ); may be empty.
        prune_ratio: the ratio of ``ratio_methods``.
        sweep_task, sweep_epochs, sweep_alphas, sweep_batch_sizes, sweep_seeds: the score
            sweep without pruning (EMA at each alpha, residual at ``eta = 1 - alpha``), at
            each run length of ``sweep_epochs``.
        checkpoints: epochs (counted from 1) at which the Spearman-by-epoch tables report.
        alpha: the BLS EMA factor of the accuracy runs; their residual score uses
            ``eta = 1 - alpha``.
    """

    name: str
    seeds: int
    scale: dict[str, float]
    epochs: dict[str, tuple[int, ...]]
    target_saving: float
    methods: tuple[str, ...]
    ratio_methods: tuple[str, ...]
    prune_ratio: float
    sweep_task: str
    sweep_epochs: tuple[int, ...]
    sweep_alphas: tuple[float, ...]
    sweep_batch_sizes: tuple[int, ...]
    sweep_seeds: int
    checkpoints: tuple[int, ...]
    tasks: tuple[str, ...] = ("digits", "noisy16")
    lr: dict[str, float] = field(default_factory=lambda: {"digits": 0.1, "noisy16": 0.05})
    batch_size: int = 64
    alpha: float = 0.9

    @property
    def eta(self) -> float:
        return round(1.0 - self.alpha, 6)


DEFAULT = Profile(
    name="default",
    seeds=5,
    scale={"digits": 1.0, "noisy16": 1.0},
    epochs={"digits": (20,), "noisy16": (15,)},
    target_saving=0.4,
    methods=TARGET_METHODS,
    ratio_methods=("InfoBatch", "SeTa", "BLS_InfoBatch", "BLS_SeTa"),
    prune_ratio=0.5,
    sweep_task="noisy16",
    sweep_epochs=(15,),
    sweep_alphas=(0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99),
    sweep_batch_sizes=(16, 64, 256),
    sweep_seeds=2,
    checkpoints=(1, 2, 5, 10, 15),
)
LONG = Profile(
    name="long",
    seeds=4,
    scale={"digits": 1.0, "noisy16": 0.25},
    epochs={"digits": (20, 100), "noisy16": (20, 100)},
    target_saving=0.4,
    methods=TARGET_METHODS,
    ratio_methods=(),
    prune_ratio=0.5,
    sweep_task="noisy16",
    sweep_epochs=(20, 100),
    sweep_alphas=(0.0, 0.5, 0.7, 0.9, 0.95, 0.99, 0.995, 0.999),
    sweep_batch_sizes=(16, 64, 256),
    sweep_seeds=2,
    checkpoints=(1, 2, 5, 10, 20, 50, 100),
)
QUICK = dataclasses.replace(
    DEFAULT,
    name="default-quick",
    seeds=2,
    scale={"digits": 0.1, "noisy16": 0.05},
    epochs={"digits": (4,), "noisy16": (4,)},
    ratio_methods=("InfoBatch", "BLS_InfoBatch"),
    batch_size=32,
    sweep_epochs=(4,),
    sweep_alphas=(0.0, 0.9),
    sweep_batch_sizes=(32,),
    sweep_seeds=1,
    checkpoints=(1, 4),
)
LONG_QUICK = dataclasses.replace(
    LONG,
    name="long-quick",
    seeds=2,
    scale={"noisy16": 0.05},
    tasks=("noisy16",),
    epochs={"noisy16": (4, 6)},
    methods=("RandomPrune", "BLS_InfoBatch", "BLSres_InfoBatch"),
    sweep_epochs=(4, 6),
    sweep_alphas=(0.9,),
    sweep_batch_sizes=(32,),
    sweep_seeds=1,
    checkpoints=(1, 6),
)
PROFILES = {"default": DEFAULT, "long": LONG}
QUICK_PROFILES = {"default": QUICK, "long": LONG_QUICK}
# where each profile writes by default: (data folder, page)
OUTPUTS = {
    "default": (REPO / "docs" / "results", REPO / "docs" / "results.md"),
    "long": (REPO / "docs" / "results" / "long", REPO / "docs" / "results_long.md"),
}


# ----------------------------------------------------------------------------- helpers
def machine() -> dict[str, Any]:
    """CPU model, core count, threads and library versions of this run."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def make_model(task: Task) -> nn.Module:
    """digits: a small CNN with BatchNorm (width 8); noisy16: a 256-256 MLP."""
    if task.name == "digits":
        return SmallCNN(1, task.num_classes, width=8)
    return build_model("mlp", 1, task.num_classes, task.image_size)


def short_epochs(epochs: int, target_saving: float) -> int:
    """Epochs of the *Full, fewer epochs* control: ``round((1 - t) * E)``, at least 1."""
    return max(1, round((1.0 - target_saving) * epochs))


# ----------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class Job:
    """One training run of the study (picklable, so ``--jobs`` can send it to a worker).

    Attributes:
        task: task name; ``scale`` its share of the training set.
        group: ``baseline`` (Full), ``target`` (equal saving), ``ratio`` (at ``prune_ratio``)
            or ``sweep`` (no pruning, scores only).
        label: the method as reported (``BLSres_InfoBatch``, ``Full, fewer epochs``, ...).
        cfg: the engine's settings.
        run_epochs: the run length this job is compared at (the control trains fewer).
        track: record the score diagnostics after every epoch.
        residual_eta: score with :class:`BatchResidual` at this step size instead.
        panel: sweep only: ``(kind, alpha)`` members scored side by side, ``kind`` ``ema`` or
            ``residual`` (``eta = 1 - alpha``).
    """

    task: str
    scale: float
    group: str
    label: str
    cfg: RunConfig
    run_epochs: int
    track: bool = False
    residual_eta: float | None = None
    panel: tuple[tuple[str, float], ...] = ()


_TASKS: dict[tuple[str, float], Task] = {}


class VisitCounter(torch.utils.data.Dataset):
    """The training set, counting how often each sample is read (how often it was trained).

    ``counts[i]`` is the number of reads of sample ``i`` so far; the diagnostics' own reads
    (the true per-sample losses) are undone by the caller.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.counts = np.zeros(len(dataset), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        self.counts[index] += 1
        return self.dataset[index]


def task_for(name: str, scale: float) -> Task:
    """The task, built once per process (the data are fixed whatever the seed)."""
    if (name, scale) not in _TASKS:
        _TASKS[(name, scale)] = build_task(name, scale=scale)
    return _TASKS[(name, scale)]


@contextlib.contextmanager
def score_source_installed(source: ScoreSource | None) -> Iterator[None]:
    """While active, ``bls.app.train`` scores with ``source``, installed before the first epoch.

    The engine builds its handler with ``bls.app.train.build_handler``; this wraps that
    function for the one run, so the study keeps the engine's loop, schedule and seeding for
    every score source. The wrapped builder checks that it was used.
    """
    if source is None:
        yield
        return
    original = engine.build_handler
    built: list[Any] = []

    def build_with_source(dataset: Any, cfg: RunConfig) -> Any:
        handler = original(dataset, cfg)
        handler.use_score_source(source)  # before the first epoch: allowed, resets the scores
        built.append(handler)
        return handler

    engine.build_handler = build_with_source
    try:
        yield
    finally:
        engine.build_handler = original
    if len(built) != 1:
        raise RuntimeError("bls.app.train did not build its handler with build_handler")


def panel_members(panel: tuple[tuple[str, float], ...]) -> tuple[tuple[str, ScoreSource], ...]:
    members: list[tuple[str, ScoreSource]] = []
    for kind, alpha in panel:
        if kind == "ema":
            members.append((f"ema {alpha:g}", BatchLossEMA(alpha=alpha)))
        else:
            members.append((f"residual {alpha:g}", BatchResidual(eta=round(1.0 - alpha, 6))))
    return tuple(members)


def execute(job: Job) -> list[dict[str, Any]]:
    """Train ``job`` once; one record per score it measured (a panel gives several).

    ``cpu_time_s`` is the CPU time of this thread during the run without the diagnostics
    (so it includes the per-epoch test evaluation); unlike the wall time it hardly depends on
    what else the machine runs. A job that trains fewer epochs than ``run_epochs`` counts the
    missing ones as saved (the *Full, fewer epochs* control).
    """
    task = task_for(job.task, job.scale)
    cfg = job.cfg
    source: ScoreSource | None = None
    tracker: ScoreTracker | PanelTracker | None = None
    if job.panel:
        source = ScorePanel(members=panel_members(job.panel))
        tracker = PanelTracker(source)
    elif job.track:
        tracker = ScoreTracker(prune_ratios=(0.3, 0.5))
    if job.residual_eta is not None:
        source = BatchResidual(eta=job.residual_eta)
    diagnostics_cpu = [0.0]
    # Under pruning, how much of a score is just how often its sample was trained?
    train_set = VisitCounter(task.train) if isinstance(tracker, ScoreTracker) else task.train
    visits_spearman: list[float] = []

    def on_epoch_end(epoch: int, handler: Any, model: nn.Module) -> None:
        if tracker is not None:
            before = time.thread_time()
            counter = train_set if isinstance(train_set, VisitCounter) else None
            visits = counter.counts.copy() if counter is not None else None
            tracker(epoch, handler, model)
            if counter is not None and visits is not None:
                counter.counts[:] = visits  # the tracker's reads are not training
                if job.group != "sweep":
                    visits_spearman.append(spearman(handler.scores, visits))
            diagnostics_cpu[0] += time.thread_time() - before

    cpu_start = time.thread_time()
    with score_source_installed(source), warnings.catch_warnings():
        # the count of samples pruned beyond the well-learned set is recorded below instead
        warnings.simplefilter("ignore", BudgetWarning)
        result = train(
            make_model(task), train_set, task.test, cfg, progress=False, on_epoch_end=on_epoch_end
        )
    cpu_time = time.thread_time() - cpu_start - diagnostics_cpu[0]
    saved = result.saved_ratio
    if job.run_epochs > cfg.epochs:
        saved = 1.0 - result.sample_steps / (len(task.train) * job.run_epochs)
    record: dict[str, Any] = {
        "task": job.task,
        "group": job.group,
        "method": job.label,
        "score_source": result.history[-1].get("score") if result.history else None,
        "prune_ratio": cfg.prune_ratio if job.group == "ratio" else 0.0,
        "target_saving": cfg.target_saving,
        "alpha": cfg.alpha,
        "eta": job.residual_eta,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "run_epochs": job.run_epochs,
        "test_accuracy": result.test_accuracy,
        "saved_ratio": saved,
        "sample_steps": result.sample_steps,
        "beyond_well_learned": int(
            sum(int(h.get("beyond_well_learned", 0)) for h in result.history)
        ),
        "train_time_s": result.train_time_s,
        "cpu_time_s": cpu_time,
        "wall_time_s": result.wall_time_s,
        "accuracy_by_epoch": [e.test_accuracy for e in result.epochs],
        "kept_by_epoch": [e.kept for e in result.epochs],
    }
    if job.group == "sweep":  # the sweep reports scores only: keep runs.json small
        del record["accuracy_by_epoch"], record["kept_by_epoch"]
    if isinstance(tracker, ScoreTracker):
        record["spearman_by_epoch"] = [r.spearman for r in tracker.records]
        record["spearman_mean"] = tracker.mean_spearman(first_epoch=1)
        if visits_spearman:
            record["visits_spearman_by_epoch"] = visits_spearman
            finite = [v for v in visits_spearman[1:] if not math.isnan(v)]
            record["visits_spearman_mean"] = float(np.mean(finite)) if finite else math.nan
        record["overlap50_mean"] = tracker.mean_overlap(0.5, first_epoch=1)
        record["hard_recall_mean"] = float(
            np.mean([r.hard_recall for r in tracker.records[1:]] or [math.nan])
        )
        if job.group == "sweep":
            record |= {"score": "per-sample", "alpha": math.nan, "eta": math.nan}
        return [record]
    if isinstance(tracker, PanelTracker):
        records = []
        for (kind, alpha), (label, _) in zip(job.panel, tracker.panel.members, strict=True):
            rows = tracker.records[label]
            records.append(
                record
                | {
                    "method": label,
                    "score": kind,
                    "alpha": alpha,
                    "eta": round(1.0 - alpha, 6) if kind == "residual" else math.nan,
                    "spearman_by_epoch": [r["spearman"] for r in rows],
                    "spearman_mean": tracker.mean(label, "spearman"),
                    "overlap50_mean": tracker.mean(label, "overlap50"),
                    "hard_recall_mean": tracker.mean(label, "hard_recall"),
                }
            )
        return records
    return [record]


def method_job(profile: Profile, task: str, method: str, group: str, epochs: int, seed: int) -> Job:
    """The job of ``method`` at the profile's equal saving (``target``) or ratio (``ratio``)."""
    base: dict[str, Any] = {
        "alpha": profile.alpha,
        "epochs": epochs,
        "batch_size": profile.batch_size,
        "lr": profile.lr[task],
        "seed": seed,
    }
    t = profile.target_saving
    scale = profile.scale[task]
    if method == "Full":
        return Job(task, scale, group, method, RunConfig(method="Full", **base), epochs)
    if method == SHORT_FULL:
        short = base | {"epochs": short_epochs(epochs, t)}
        return Job(task, scale, group, method, RunConfig(method="Full", **short), epochs)
    residual = method.startswith("BLSres_")
    engine_method = method.replace("BLSres_", "BLS_")
    if group == "ratio":
        cfg = RunConfig(method=engine_method, prune_ratio=profile.prune_ratio, **base)
    elif method == "Static":  # no budget: its prune_ratio is exactly its saving
        cfg = RunConfig(method="Static", prune_ratio=t, **base)
    else:
        cfg = RunConfig(method=engine_method, target_saving=t, **base)
    return Job(
        task,
        scale,
        group,
        method,
        cfg,
        epochs,
        track=method in SCORED_METHODS,
        residual_eta=profile.eta if residual else None,
    )


def accuracy_jobs(profile: Profile) -> list[Job]:
    jobs = []
    for task in profile.tasks:
        for epochs in profile.epochs[task]:
            for seed in range(profile.seeds):
                jobs.append(method_job(profile, task, "Full", "baseline", epochs, seed))
                for method in (SHORT_FULL, *profile.methods):
                    jobs.append(method_job(profile, task, method, "target", epochs, seed))
                for method in profile.ratio_methods:
                    jobs.append(method_job(profile, task, method, "ratio", epochs, seed))
    return jobs


def sweep_jobs(profile: Profile) -> list[Job]:
    """Scores without pruning (so every score sees the same training), per batch size.

    ``RandomPrune`` at ratio 0 records the per-sample loss: the reference. ``BLS_Random`` at
    ratio 0 trains on all data with the scalar loss and scores it with a panel: the EMA at
    every alpha and the residual rule at ``eta = 1 - alpha``.
    """
    task = profile.sweep_task
    panel = tuple(("ema", a) for a in profile.sweep_alphas) + tuple(
        ("residual", a) for a in profile.sweep_alphas
    )
    scale = profile.scale[task]
    jobs = []
    for epochs in profile.sweep_epochs:
        for batch_size in profile.sweep_batch_sizes:
            for seed in range(profile.sweep_seeds):
                base: dict[str, Any] = {
                    "prune_ratio": 0.0,
                    "batch_size": batch_size,
                    "epochs": epochs,
                    "lr": profile.lr[task],
                    "seed": seed,
                }
                reference = RunConfig(method="RandomPrune", **base)
                jobs.append(Job(task, scale, "sweep", "per-sample", reference, epochs, True))
                scored = RunConfig(method="BLS_Random", **base)
                jobs.append(Job(task, scale, "sweep", "panel", scored, epochs, panel=panel))
    return jobs


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def run_jobs(jobs: list[Job], workers: int, threads: int) -> list[dict[str, Any]]:
    """Run every job (in ``workers`` processes when > 1), in order; print one line per run."""
    records: list[dict[str, Any]] = []
    if workers > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, context, _init_worker, (threads,)) as pool:
            results = pool.map(execute, jobs)
            for job, result in zip(jobs, results, strict=True):
                records += result
                _print_run(job, result)
        return records
    for job in jobs:
        result = execute(job)
        records += result
        _print_run(job, result)
    return records


def _print_run(job: Job, result: list[dict[str, Any]]) -> None:
    first = result[0]
    text = (
        f"  {job.task:8s} E={job.run_epochs:3d} B={job.cfg.batch_size:3d} seed {job.cfg.seed} "
        f"{job.group:8s} {job.label:18s} acc {first['test_accuracy']:.4f}  "
        f"saved {first['saved_ratio']:.3f}  train {first['train_time_s']:.1f}s"
    )
    rhos = [f"{r['method']} {r['spearman_mean']:+.3f}" for r in result if "spearman_mean" in r]
    if len(rhos) == 1:
        text += f"  rho {first['spearman_mean']:+.3f}"
    elif rhos:
        text += "  rho " + ", ".join(rhos)
    print(text, flush=True)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="default")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the test's profile)")
    parser.add_argument("--out", type=Path, default=None, help="data folder (per profile)")
    parser.add_argument("--doc", type=Path, default=None, help="results page (per profile)")
    parser.add_argument("--seeds", type=int, default=None, help="override the seed count")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (processes)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the score sweep")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: rebuild the tables, plots and page from OUT/runs.json",
    )
    args = parser.parse_args(argv)
    out, doc = OUTPUTS[args.profile]
    out = args.out or out
    doc = args.doc or doc
    if args.report_only:
        return report_only(out, doc)

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    profile = (QUICK_PROFILES if args.quick else PROFILES)[args.profile]
    if args.seeds is not None:
        profile = dataclasses.replace(profile, seeds=args.seeds)
    out.mkdir(parents=True, exist_ok=True)
    info = machine() | {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "jobs": args.jobs,
    }
    print("machine:", json.dumps(info), flush=True)
    tasks = {name: task_for(name, profile.scale[name]) for name in profile.tasks}
    for task in tasks.values():
        print(task.describe(), flush=True)
    jobs = accuracy_jobs(profile)
    if not args.no_sweep:
        jobs += sweep_jobs(profile)
    print(f"{len(jobs)} runs:", flush=True)
    records = run_jobs(jobs, args.jobs, args.threads)

    seconds = time.perf_counter() - started
    command = "python benchmarks/study.py"
    command += f" --profile {args.profile}" if args.profile != "default" else ""
    command += " --quick" if args.quick else ""
    command += f" --jobs {args.jobs}" if args.jobs > 1 else ""
    payload = {
        "machine": info,
        "profile": dataclasses.asdict(profile),
        "seconds": seconds,
        "command": command,
        "runs": [r for r in records if r["group"] != "sweep"],
        "sweep_runs": [r for r in records if r["group"] == "sweep"],
    }
    write_runs(out / "runs.json", payload)
    publish(payload, profile, tasks, out, doc)
    return 0


def _rounded(value: Any) -> Any:
    """Floats to 6 significant digits, in nested lists and dicts (runs.json stays small)."""
    if isinstance(value, float):
        return value if not math.isfinite(value) else float(f"{value:.6g}")
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def write_runs(path: Path, payload: dict[str, Any]) -> None:
    """``runs.json``: the settings, then one run record per line (floats to 6 digits)."""
    head = {k: v for k, v in payload.items() if k not in ("runs", "sweep_runs")}
    lines = [json.dumps(head, default=str)[:-1] + ","]
    for key in ("runs", "sweep_runs"):
        records = [json.dumps(_rounded(r), default=str) for r in payload[key]]
        lines.append(f' "{key}": [')
        lines.append(",\n".join(records))
        lines.append(" ]," if key == "runs" else " ]")
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")


def profile_from_dict(fields: dict[str, Any]) -> Profile:
    """The :class:`Profile` that ``dataclasses.asdict`` wrote into ``runs.json``."""
    values = dict(fields)
    for key in (
        "methods",
        "ratio_methods",
        "sweep_epochs",
        "sweep_alphas",
        "sweep_batch_sizes",
        "checkpoints",
    ):
        values[key] = tuple(values[key])
    values["tasks"] = tuple(values["tasks"])
    values["epochs"] = {k: tuple(v) for k, v in values["epochs"].items()}
    return Profile(**values)


def report_only(out: Path, doc: Path) -> int:
    """Rebuild every table, plot and the page from a finished study's ``runs.json``."""
    payload = json.loads((out / "runs.json").read_text())
    profile = profile_from_dict(payload["profile"])
    tasks = {name: task_for(name, profile.scale[name]) for name in profile.tasks}
    publish(payload, profile, tasks, out, doc)
    return 0


def publish(
    payload: dict[str, Any], profile: Profile, tasks: dict[str, Task], out: Path, doc: Path
) -> None:
    """Write the CSV tables, the plots and the results page; print the tables."""
    rows = summarize(payload["runs"])
    sweep_records = payload["sweep_runs"]
    sweep_rows = summarize_sweep(sweep_records) if sweep_records else []
    info, seconds, command = payload["machine"], payload["seconds"], payload["command"]
    write_csv(out / "summary.csv", rows)
    if sweep_rows:
        write_csv(
            out / "sweep.csv",
            [{k: v for k, v in r.items() if k != "spearman_by_epoch"} for r in sweep_rows],
        )
    pictures = plot(rows, sweep_rows, out)
    doc.parent.mkdir(parents=True, exist_ok=True)
    write_report(doc, out, profile, info, rows, sweep_rows, pictures, tasks, seconds, command)

    for name in tasks:
        for run_epochs in profile.epochs[name]:
            print(
                f"\n{name}, {run_epochs} epochs\n"
                + accuracy_table(rows, name, run_epochs, "target")
            )
    if sweep_rows:
        print(
            "\nSpearman(score, true loss) by score and batch size\n"
            + sweep_table(longest(sweep_rows), "spearman_mean")
        )
    print("\n" + "\n".join(findings(rows, sweep_rows)))
    print(f"\nwrote {doc} and {out}/; the study took {seconds / 60:.1f} minutes")


if __name__ == "__main__":
    raise SystemExit(main())
