"""Is pruning with BLS lossless? The accuracy study and the score diagnostics, end to end.

Recipe:

1. Build two tasks in memory (``_study_tasks.py``): the embedded 8x8 digits, and ``noisy16``,
   a larger 16x16 task with easy/medium/hard samples and 10% label noise.
2. Train every method (Full, RandomPrune, Static, InfoBatch, SeTa, BLS_InfoBatch, BLS_SeTa) at
   two prune ratios with several seeds, using :func:`bls.app.train.train`. Each seed starts
   every method from the same initial weights, so methods are compared seed by seed (paired).
3. Judge each (task, method, ratio) by a stated rule: the 95% t confidence interval of the
   paired accuracy difference to Full: *lossless* when its lower end is at least
   ``-margin`` (non-inferiority, margin 1 percentage point); :func:`verdict` states the rule.
4. Score diagnostics (:mod:`bls.diagnostics`): after every epoch, the Spearman correlation
   between the handler's scores and the true per-sample losses, and the overlap of the sets
   each would prune; a sweep over the BLS EMA factor ``alpha`` and the batch size, without
   pruning (so only the score changes), against the per-sample score as reference.
5. Write the runs (JSON), the tables (CSV), the plots (PNG) and ``docs/results.md``.

Run:  ``python benchmarks/study.py``   (the committed results; about 15 minutes on 2 cores)
      ``python benchmarks/study.py --quick --out /tmp/study --doc /tmp/study/results.md``
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _study_tasks import Task, build_task

from bls.app.models import SmallCNN, build_model
from bls.app.train import RunConfig, train
from bls.diagnostics import ScoreTracker, random_overlap

REPO = Path(__file__).resolve().parent.parent
PRUNING_METHODS = ("RandomPrune", "Static", "InfoBatch", "SeTa", "BLS_InfoBatch", "BLS_SeTa")
SCORED_METHODS = ("InfoBatch", "SeTa", "BLS_InfoBatch", "BLS_SeTa")
# The control that asks whether *which* samples are skipped matters at all: Full, trained for
# fewer epochs (the same one-cycle schedule, compressed), saving 40% of the sample-steps.
SHORT_SHARE = 0.6
SHORT_FULL = "Full, 0.6 epochs"
MARGIN_PP = 1.0  # non-inferiority margin, percentage points of test accuracy
# two-sided 95% quantiles of Student's t by degrees of freedom (larger df: the next smaller key)
T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    12: 2.179,
    15: 2.131,
    20: 2.086,
    30: 2.042,
    60: 2.000,
}


@dataclass
class Profile:
    """Sizes of one study: the full one, or the quick one the test suite runs."""

    seeds: int
    scale: float  # share of each task's training set
    epochs: dict[str, int]
    prune_ratios: tuple[float, ...]
    sweep_task: str
    sweep_alphas: tuple[float, ...]
    sweep_batch_sizes: tuple[int, ...]
    sweep_seeds: int
    tasks: tuple[str, ...] = ("digits", "noisy16")
    lr: dict[str, float] = field(default_factory=lambda: {"digits": 0.1, "noisy16": 0.05})
    batch_size: int = 64
    alpha: float = 0.7


FULL = Profile(
    seeds=5,
    scale=1.0,
    epochs={"digits": 20, "noisy16": 15},
    prune_ratios=(0.3, 0.5),
    sweep_task="noisy16",
    sweep_alphas=(0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99),
    sweep_batch_sizes=(16, 64, 256),
    sweep_seeds=2,
)
QUICK = Profile(
    seeds=2,
    scale=0.1,
    epochs={"digits": 3, "noisy16": 3},
    prune_ratios=(0.3, 0.5),
    sweep_task="noisy16",
    sweep_alphas=(0.0, 0.9),
    sweep_batch_sizes=(32,),
    sweep_seeds=1,
)


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


def t_quantile(df: int) -> float:
    if df < 1:
        return math.nan
    keys = [k for k in T975 if k <= df]
    return T975[max(keys)] if df <= 60 else 1.96


def paired_interval(differences: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t confidence interval of paired differences."""
    values = np.asarray(differences, dtype=np.float64)
    mean = float(values.mean())
    if values.size < 2:
        return mean, math.nan, math.nan
    half = t_quantile(values.size - 1) * float(values.std(ddof=1)) / math.sqrt(values.size)
    return mean, mean - half, mean + half


def verdict(low: float, high: float, margin: float = MARGIN_PP) -> str:
    """The lossless rule, on the 95% CI ``[low, high]`` of accuracy(method) - accuracy(Full).

    - ``lossless``: ``low >= -margin`` (the method is at most ``margin`` pp worse, at 95%);
    - ``lossy``: ``high < 0`` and ``low < -margin`` (significantly worse, and possibly by
      more than the margin);
    - ``inconclusive``: otherwise (too much seed noise to tell).
    """
    if math.isnan(low):
        return "inconclusive"
    if low >= -margin:
        return "lossless"
    if high < 0:
        return "lossy"
    return "inconclusive"


# ----------------------------------------------------------------------------- runs
def run_one(
    task: Task, cfg: RunConfig, track: bool, label: str | None = None, full_epochs: int = 0
) -> dict[str, Any]:
    """Train once; return a flat record (accuracy, savings, timings and score diagnostics).

    ``cpu_time_s`` is the CPU time of this thread during the run without the diagnostics
    (so it includes the per-epoch test evaluation); unlike the wall time it hardly depends on
    what else the machine runs. ``full_epochs`` > ``cfg.epochs`` counts the missing epochs as
    saved (the "Full, fewer epochs" control).
    """
    tracker = ScoreTracker(prune_ratios=(0.3, 0.5)) if track else None
    diagnostics_cpu = [0.0]

    def on_epoch_end(epoch: int, handler: Any, model: nn.Module) -> None:
        if tracker is not None:
            before = time.thread_time()
            tracker(epoch, handler, model)
            diagnostics_cpu[0] += time.thread_time() - before

    cpu_start = time.thread_time()
    result = train(
        make_model(task), task.train, task.test, cfg, progress=False, on_epoch_end=on_epoch_end
    )
    cpu_time = time.thread_time() - cpu_start - diagnostics_cpu[0]
    saved = result.saved_ratio
    if full_epochs > cfg.epochs:
        saved = 1.0 - result.sample_steps / (len(task.train) * full_epochs)
    record: dict[str, Any] = {
        "task": task.name,
        "method": label or cfg.method,
        "prune_ratio": cfg.prune_ratio if cfg.method != "Full" else 0.0,
        "alpha": cfg.alpha,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "test_accuracy": result.test_accuracy,
        "saved_ratio": saved,
        "sample_steps": result.sample_steps,
        "train_time_s": result.train_time_s,
        "cpu_time_s": cpu_time,
        "wall_time_s": result.wall_time_s,
        "accuracy_by_epoch": [e.test_accuracy for e in result.epochs],
        "kept_by_epoch": [e.kept for e in result.epochs],
    }
    if tracker is not None:
        record["spearman_by_epoch"] = [r.spearman for r in tracker.records]
        record["overlap50_by_epoch"] = [r.overlap[0.5] for r in tracker.records]
        record["spearman_mean"] = tracker.mean_spearman(first_epoch=1)
        record["overlap30_mean"] = tracker.mean_overlap(0.3, first_epoch=1)
        record["overlap50_mean"] = tracker.mean_overlap(0.5, first_epoch=1)
        record["hard_recall_mean"] = float(
            np.mean([r.hard_recall for r in tracker.records[1:]] or [math.nan])
        )
    return record


def main_runs(profile: Profile, tasks: dict[str, Task]) -> list[dict[str, Any]]:
    records = []
    for name, task in tasks.items():
        epochs = profile.epochs[name]
        configs = [("Full", 0.0)] + [(m, r) for r in profile.prune_ratios for m in PRUNING_METHODS]
        configs.append((SHORT_FULL, 0.0))
        for seed in range(profile.seeds):
            for method, ratio in configs:
                short = method == SHORT_FULL
                cfg = RunConfig(
                    method="Full" if short else method,
                    prune_ratio=ratio,
                    alpha=profile.alpha,
                    epochs=max(1, round(SHORT_SHARE * epochs)) if short else epochs,
                    batch_size=profile.batch_size,
                    lr=profile.lr[name],
                    seed=seed,
                )
                record = run_one(
                    task, cfg, method in SCORED_METHODS, label=method, full_epochs=epochs
                )
                records.append(record)
                print(
                    f"  {name:8s} seed {seed} {method:16s} r={ratio:.1f}  "
                    f"acc {record['test_accuracy']:.4f}  saved {record['saved_ratio']:.3f}  "
                    f"train {record['train_time_s']:.1f}s"
                    + (
                        f"  rho {record['spearman_mean']:+.3f}" if "spearman_mean" in record else ""
                    ),
                    flush=True,
                )
    return records


def sweep_runs(profile: Profile, task: Task) -> list[dict[str, Any]]:
    """BLS scores without pruning (so every alpha sees the same training), per batch size.

    ``BLS_Random`` at prune ratio 0 trains on all data every epoch; only the scores differ
    between alphas. ``RandomPrune`` at ratio 0 records the per-sample loss: the reference.
    """
    records = []
    for batch_size in profile.sweep_batch_sizes:
        for seed in range(profile.sweep_seeds):
            settings = [("RandomPrune", 0.0)] + [("BLS_Random", a) for a in profile.sweep_alphas]
            for method, alpha in settings:
                cfg = RunConfig(
                    method=method,
                    prune_ratio=0.0,
                    alpha=alpha,
                    batch_size=batch_size,
                    epochs=profile.epochs[task.name],
                    lr=profile.lr[task.name],
                    seed=seed,
                )
                record = run_one(task, cfg, track=True)
                record["score"] = "per-sample" if method == "RandomPrune" else "BLS"
                records.append(record)
                print(
                    f"  sweep B={batch_size:3d} seed {seed} {record['score']:10s} "
                    f"alpha {alpha:.2f}  rho {record['spearman_mean']:+.3f}  "
                    f"overlap50 {record['overlap50_mean']:.3f}",
                    flush=True,
                )
    return records


# ----------------------------------------------------------------------------- tables
def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, method, prune ratio), compared seed by seed with Full."""
    full = {(r["task"], r["seed"]): r for r in records if r["method"] == "Full"}
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["task"], r["method"], r["prune_ratio"])].append(r)
    rows = []
    for (task, method, ratio), runs in groups.items():
        accuracy = np.array([r["test_accuracy"] for r in runs]) * 100
        baseline = [full[(task, r["seed"])] for r in runs]
        diffs = [
            100 * (r["test_accuracy"] - b["test_accuracy"])
            for r, b in zip(runs, baseline, strict=True)
        ]
        time_saved = [
            1 - r["train_time_s"] / b["train_time_s"] for r, b in zip(runs, baseline, strict=True)
        ]
        cpu_saved = [
            1 - r["cpu_time_s"] / b["cpu_time_s"] for r, b in zip(runs, baseline, strict=True)
        ]
        mean, low, high = paired_interval(diffs)
        row: dict[str, Any] = {
            "task": task,
            "method": method,
            "prune_ratio": ratio,
            "seeds": len(runs),
            "accuracy_mean": float(accuracy.mean()),
            "accuracy_std": float(accuracy.std(ddof=1)) if len(runs) > 1 else math.nan,
            "diff_mean_pp": mean if method != "Full" else 0.0,
            "diff_ci_low_pp": low if method != "Full" else math.nan,
            "diff_ci_high_pp": high if method != "Full" else math.nan,
            "saved_ratio": float(np.mean([r["saved_ratio"] for r in runs])),
            "time_saved": float(np.median(time_saved)),
            "cpu_saved": float(np.median(cpu_saved)),
            "train_time_s": float(np.mean([r["train_time_s"] for r in runs])),
            "verdict": "baseline" if method == "Full" else verdict(low, high),
            "spearman_mean": float(np.mean([r["spearman_mean"] for r in runs]))
            if "spearman_mean" in runs[0]
            else math.nan,
            "overlap50_mean": float(np.mean([r["overlap50_mean"] for r in runs]))
            if "overlap50_mean" in runs[0]
            else math.nan,
        }
        rows.append(row)
    order = {m: i for i, m in enumerate(("Full", SHORT_FULL, *PRUNING_METHODS))}
    rows.sort(key=lambda r: (r["task"], r["prune_ratio"], order[r["method"]]))
    return rows


def summarize_sweep(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[int, str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        alpha = r["alpha"] if r["score"] == "BLS" else math.nan
        groups[(r["batch_size"], r["score"], alpha)].append(r)
    rows = []
    for (batch_size, score, alpha), runs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1] == "BLS", kv[0][2])
    ):
        rows.append(
            {
                "batch_size": batch_size,
                "score": score,
                "alpha": alpha,
                "seeds": len(runs),
                "spearman_mean": float(np.mean([r["spearman_mean"] for r in runs])),
                "spearman_last": float(np.mean([r["spearman_by_epoch"][-1] for r in runs])),
                "overlap30_mean": float(np.mean([r["overlap30_mean"] for r in runs])),
                "overlap50_mean": float(np.mean([r["overlap50_mean"] for r in runs])),
                "hard_recall_mean": float(np.mean([r["hard_recall_mean"] for r in runs])),
            }
        )
    return rows


def fmt(value: float, spec: str = ".2f") -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def accuracy_table(rows: list[dict[str, Any]], task: str) -> str:
    lines = [
        "| method | prune ratio | test acc. % (mean ± std) | Δ vs Full, pp [95% CI] | "
        "sample-steps saved | train time saved (wall / CPU) | verdict | Spearman(score, loss) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["task"] != task:
            continue
        diff = (
            "-"
            if r["method"] == "Full"
            else (
                f"{r['diff_mean_pp']:+.2f} [{fmt(r['diff_ci_low_pp'], '+.2f')}, "
                f"{fmt(r['diff_ci_high_pp'], '+.2f')}]"
            )
        )
        ratio = "-" if r["method"].startswith("Full") else f"{r['prune_ratio']:.1f}"
        lines.append(
            f"| {r['method']} | {ratio} | {r['accuracy_mean']:.2f} ± {fmt(r['accuracy_std'])} | "
            f"{diff} | {100 * r['saved_ratio']:.1f}% | {100 * r['time_saved']:.0f}% / "
            f"{100 * r['cpu_saved']:.0f}% | "
            f"{r['verdict']} | {fmt(r['spearman_mean'], '+.3f')} |"
        )
    return "\n".join(lines)


def sweep_table(rows: list[dict[str, Any]], key: str) -> str:
    batch_sizes = sorted({r["batch_size"] for r in rows})
    header = "| score | " + " | ".join(f"B = {b}" for b in batch_sizes) + " |"
    lines = [header, "|---|" + "---|" * len(batch_sizes)]
    labels = sorted(
        {(r["score"] == "BLS", r["alpha"]) for r in rows},
        key=lambda k: (k[0], -1 if math.isnan(k[1]) else k[1]),
    )
    for is_bls, alpha in labels:
        cells = []
        for b in batch_sizes:
            match = [
                r
                for r in rows
                if r["batch_size"] == b
                and (r["score"] == "BLS") == is_bls
                and (not is_bls or r["alpha"] == alpha)
            ]
            cells.append(
                fmt(match[0][key], "+.3f" if key.startswith("spearman") else ".3f")
                if match
                else "-"
            )
        label = f"BLS, alpha = {alpha:.2f}" if is_bls else "per-sample loss (reference)"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# ----------------------------------------------------------------------------- plots
def plot(rows: list[dict[str, Any]], sweep: list[dict[str, Any]], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional; the tables carry the numbers
        print("matplotlib not installed: no plots")
        return []
    tasks = sorted({r["task"] for r in rows})
    profile_ratios = {r["prune_ratio"] for r in rows if not r["method"].startswith("Full")}
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
    colours = dict(zip(PRUNING_METHODS, plt.get_cmap("tab10").colors, strict=False))
    for ax, task in zip(axes[0], tasks, strict=True):
        full = next(r for r in rows if r["task"] == task and r["method"] == "Full")
        ax.axhline(full["accuracy_mean"], color="black", lw=1, label="Full")
        ax.axhspan(
            full["accuracy_mean"] - MARGIN_PP,
            full["accuracy_mean"],
            color="grey",
            alpha=0.15,
            label=f"Full - {MARGIN_PP:g} pp",
        )
        for r in rows:
            if r["task"] != task or r["method"] == "Full":
                continue
            if r["method"] == SHORT_FULL:
                ax.errorbar(
                    100 * r["saved_ratio"],
                    r["accuracy_mean"],
                    yerr=r["accuracy_std"],
                    fmt="D",
                    color="black",
                    capsize=3,
                    label=SHORT_FULL,
                )
                continue
            marker = "o" if r["prune_ratio"] == min(profile_ratios) else "s"
            ax.errorbar(
                100 * r["saved_ratio"],
                r["accuracy_mean"],
                yerr=r["accuracy_std"],
                fmt=marker,
                color=colours[r["method"]],
                capsize=3,
                label=f"{r['method']} r={r['prune_ratio']:.1f}",
            )
        ax.set_title(f"{task}: test accuracy vs share of sample-steps saved")
        ax.set_xlabel("sample-steps saved (%)")
        ax.set_ylabel("test accuracy (%), mean ± std over seeds")
        ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_saved.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    names = ["accuracy_vs_saved.png"]
    if sweep:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for b in sorted({r["batch_size"] for r in sweep}):
            bls = [r for r in sweep if r["batch_size"] == b and r["score"] == "BLS"]
            ref = [r for r in sweep if r["batch_size"] == b and r["score"] != "BLS"]
            for ax, key in zip(axes, ("spearman_mean", "overlap50_mean"), strict=True):
                line = ax.plot(
                    [r["alpha"] for r in bls], [r[key] for r in bls], "o-", label=f"BLS, B={b}"
                )
                if ref:
                    ax.axhline(
                        ref[0][key], ls="--", color=line[0].get_color(), label=f"per-sample, B={b}"
                    )
        axes[0].set_ylabel("Spearman(score, true loss), mean over epochs ≥ 1")
        axes[1].set_ylabel("Jaccard of the 50% lowest-scored sets")
        axes[1].axhline(random_overlap(0.5), color="grey", lw=1, label="chance")
        for ax in axes:
            ax.set_xlabel("BLS EMA factor alpha")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "alpha_sweep.png", dpi=110)
        plt.close(fig)
        names.append("alpha_sweep.png")
    return names


# ----------------------------------------------------------------------------- report
def setting(row: dict[str, Any]) -> str:
    """``InfoBatch r=0.5``; the Full rows have no ratio."""
    if row["method"].startswith("Full"):
        return row["method"]
    return f"{row['method']} r={row['prune_ratio']:.1f}"


def findings(rows: list[dict[str, Any]], sweep: list[dict[str, Any]]) -> list[str]:
    """Sentences computed from the numbers (so they stay true when the study is rerun)."""
    lines = []
    for task in sorted({r["task"] for r in rows}):
        for verdict_name in ("lossless", "inconclusive", "lossy"):
            hits = [
                f"{setting(r)} (saves {100 * r['saved_ratio']:.0f}%)"
                for r in rows
                if r["task"] == task and r["verdict"] == verdict_name
            ]
            if hits:
                lines.append(f"- **{task}**, {verdict_name}: " + ", ".join(hits) + ".")
        for policy in ("InfoBatch", "SeTa"):
            for ratio in sorted({r["prune_ratio"] for r in rows if r["method"] == policy}):
                own = next(
                    (
                        r
                        for r in rows
                        if r["task"] == task and r["method"] == policy and r["prune_ratio"] == ratio
                    ),
                    None,
                )
                bls = next(
                    (
                        r
                        for r in rows
                        if r["task"] == task
                        and r["method"] == f"BLS_{policy}"
                        and r["prune_ratio"] == ratio
                    ),
                    None,
                )
                if own and bls:
                    lines.append(
                        f"- {task}, {policy} r={ratio:.1f}: BLS {bls['accuracy_mean']:.2f}% vs "
                        f"per-sample {own['accuracy_mean']:.2f}% (saves "
                        f"{100 * bls['saved_ratio']:.0f}% vs {100 * own['saved_ratio']:.0f}%); "
                        f"score-loss Spearman {bls['spearman_mean']:+.2f} vs "
                        f"{own['spearman_mean']:+.2f}."
                    )
    for b in sorted({r["batch_size"] for r in sweep}):
        bls = [r for r in sweep if r["batch_size"] == b and r["score"] == "BLS"]
        ref = [r for r in sweep if r["batch_size"] == b and r["score"] != "BLS"]
        if not bls:
            continue
        best = max(bls, key=lambda r: r["spearman_mean"])
        zero = next((r for r in bls if r["alpha"] == 0.0), None)
        text = (
            f"- Sweep, B={b}: the BLS correlation peaks at alpha={best['alpha']:.2f} "
            f"({best['spearman_mean']:+.3f}"
        )
        text += f"; alpha=0: {zero['spearman_mean']:+.3f}" if zero else ""
        text += f"; per-sample reference {ref[0]['spearman_mean']:+.3f})." if ref else ")."
        lines.append(text)
    return lines


def write_report(
    path: Path,
    out: Path,
    profile: Profile,
    info: dict[str, Any],
    rows: list[dict[str, Any]],
    sweep: list[dict[str, Any]],
    pictures: list[str],
    tasks: dict[str, Task],
    seconds: float,
    command: str,
) -> None:
    relative = os.path.relpath(out, path.parent)
    reading_file = out / "reading.md"
    reading = (
        reading_file.read_text()
        if reading_file.exists()
        else ("_No hand-written reading yet (`docs/results/reading.md`)._\n")
    )
    parts = [
        "# Is it lossless? Results and score diagnostics",
        "",
        "_This page is written by `benchmarks/study.py`; edit `docs/results/reading.md` for the "
        "reading, then rerun (or edit the tables only by rerunning)._",
        "",
        "## How to reproduce",
        "",
        f"```bash\n{command}\n```",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores (torch threads per run: "
        f"{info['torch_threads']}), torch {info['torch']}, numpy {info['numpy']}, Python "
        f"{info['python']}, {info['platform']}. Run on {info['date']}; the whole study took "
        f"{seconds / 60:.1f} minutes. Other jobs shared the 2 cores, so the wall-clock *train "
        "time saved* (median over seeds of the paired saving) is noisy; the CPU-time saving "
        "(this thread's CPU time for the whole run, per-epoch test evaluation included, "
        "diagnostics excluded) is steadier; *sample-steps saved* is exact.",
        "",
        "## Setup",
        "",
        *[
            f"- {task.describe()}; model: "
            + ("SmallCNN (width 8, BatchNorm)" if name == "digits" else "MLP 256-256")
            + f"; {profile.epochs[name]} epochs, batch {profile.batch_size}, one-cycle SGD "
            f"(peak lr {profile.lr[name]}), as `bls.app.train` runs it."
            for name, task in tasks.items()
        ],
        f"- Methods: Full, {', '.join(PRUNING_METHODS)} at prune ratios "
        f"{', '.join(f'{r:g}' for r in profile.prune_ratios)}; delta 0.875; BLS alpha "
        f"{profile.alpha}; SeTa 10 groups, window 0.5. {profile.seeds} seeds; seed s gives every "
        "method the same initial weights. Control: *Full, 0.6 epochs* trains on all data for "
        f"{SHORT_SHARE:g} of the epochs (the same one-cycle schedule, compressed), saving "
        f"{100 * (1 - SHORT_SHARE):.0f}% of the sample-steps without any pruning rule.",
        f"- **Lossless rule**: for each seed, d = accuracy(method) - accuracy(Full). With the "
        f"mean of d and its two-sided 95% Student-t confidence interval over the seeds: "
        f"*lossless* if the interval's lower end is ≥ -{MARGIN_PP:g} percentage point "
        f"(non-inferiority at a {MARGIN_PP:g} pp margin); *lossy* if the whole interval is < 0 "
        f"and its lower end < -{MARGIN_PP:g} pp; otherwise *inconclusive* (the seeds disagree "
        "too much to tell).",
        "- *Spearman(score, loss)*: the rank correlation between the handler's scores and the "
        "true per-sample losses (model in eval mode) after each epoch, mean over epochs ≥ 1 and "
        "seeds (`bls.diagnostics.ScoreTracker`).",
        "",
        "## Accuracy and savings",
        "",
    ]
    for name in tasks:
        parts += [f"### {name}", "", accuracy_table(rows, name), ""]
    if sweep:
        parts += [
            "## Does the EMA filter batch-composition noise? (alpha x batch size)",
            "",
            f"Task {profile.sweep_task}, no pruning (prune ratio 0, so every alpha sees the "
            f"same training), {profile.sweep_seeds} seed(s). Spearman correlation between the "
            "scores and the true per-sample losses, mean over epochs ≥ 1:",
            "",
            sweep_table(sweep, "spearman_mean"),
            "",
            "Jaccard overlap of the 50% lowest-scored samples (the set each score would prune) "
            f"with the 50% lowest true losses; chance level {random_overlap(0.5):.3f}:",
            "",
            sweep_table(sweep, "overlap50_mean"),
            "",
            "Share of the 10% highest-loss samples that the score also ranks in its top 10% "
            "(`bls.diagnostics.hard_recall`; the samples a policy must keep); chance 0.100:",
            "",
            sweep_table(sweep, "hard_recall_mean"),
            "",
        ]
    for picture in pictures:
        parts += [f"![{picture}]({relative}/{picture})", ""]
    parts += [
        "## Findings computed from the numbers",
        "",
        *findings(rows, sweep),
        "",
        "## Reading",
        "",
        reading.strip(),
        "",
        f"Raw data: `{relative}/runs.json`, `{relative}/summary.csv`, `{relative}/sweep.csv`.",
        "",
    ]
    path.write_text("\n".join(parts))


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the test's profile)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "results.md")
    parser.add_argument("--seeds", type=int, default=None, help="override the seed count")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the alpha/batch sweep")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: rebuild the tables, plots and page from OUT/runs.json",
    )
    args = parser.parse_args(argv)
    if args.report_only:
        return report_only(args.out, args.doc)

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    profile = QUICK if args.quick else FULL
    if args.seeds is not None:
        profile = dataclasses.replace(profile, seeds=args.seeds)
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine() | {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    print("machine:", json.dumps(info), flush=True)

    tasks = {name: build_task(name, scale=profile.scale) for name in profile.tasks}
    for task in tasks.values():
        print(task.describe(), flush=True)
    print("main runs:", flush=True)
    records = main_runs(profile, tasks)
    sweep_records: list[dict[str, Any]] = []
    if not args.no_sweep:
        print("alpha x batch-size sweep:", flush=True)
        sweep_records = sweep_runs(profile, tasks[profile.sweep_task])

    seconds = time.perf_counter() - started
    command = "python benchmarks/study.py" + (" --quick" if args.quick else "")
    payload = {
        "machine": info,
        "profile": dataclasses.asdict(profile),
        "seconds": seconds,
        "command": command,
        "runs": records,
        "sweep_runs": sweep_records,
    }
    (args.out / "runs.json").write_text(json.dumps(payload, indent=1, default=str))
    publish(payload, profile, tasks, args.out, args.doc)
    return 0


def report_only(out: Path, doc: Path) -> int:
    """Rebuild every table, plot and the page from a finished study's ``runs.json``."""
    payload = json.loads((out / "runs.json").read_text())
    fields = payload["profile"]
    for key in ("prune_ratios", "sweep_alphas", "sweep_batch_sizes", "tasks"):
        fields[key] = tuple(fields[key])
    profile = Profile(**fields)
    tasks = {name: build_task(name, scale=profile.scale) for name in profile.tasks}
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
        write_csv(out / "sweep.csv", sweep_rows)
    pictures = plot(rows, sweep_rows, out)
    doc.parent.mkdir(parents=True, exist_ok=True)
    write_report(doc, out, profile, info, rows, sweep_rows, pictures, tasks, seconds, command)

    for name in tasks:
        print(f"\n{name}\n" + accuracy_table(rows, name))
    if sweep_rows:
        print(
            "\nSpearman(score, true loss) by alpha and batch size\n"
            + sweep_table(sweep_rows, "spearman_mean")
        )
    print("\n" + "\n".join(findings(rows, sweep_rows)))
    print(f"\nwrote {doc} and {out}/; the study took {seconds / 60:.1f} minutes")


if __name__ == "__main__":
    raise SystemExit(main())
