"""Tables, plots, findings and the results page of the accuracy study (``study.py``).

Everything here reads the run records that :func:`study.execute` returns (or ``runs.json``):
:func:`summarize` pairs each run with the Full run of the same task, run length and seed and
applies the lossless rule (:func:`verdict`); :func:`summarize_sweep` averages the score sweep;
:func:`write_report` writes the page. Nothing here trains.
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bls.diagnostics import random_overlap

if TYPE_CHECKING:
    from _study_tasks import Task
    from study import Profile

# Compared at one equal saving. "BLSres_X" is policy X with the residual batch-loss score.
TARGET_METHODS = (
    "RandomPrune",
    "Static",
    "InfoBatch",
    "SeTa",
    "BLS_InfoBatch",
    "BLS_SeTa",
    "BLSres_InfoBatch",
    "BLSres_SeTa",
)
# The control that asks whether *which* samples are skipped matters at all: Full, trained for
# 1 - target_saving of the epochs (the same one-cycle schedule, compressed).
SHORT_FULL = "Full, fewer epochs"
METHOD_ORDER = ("Full", SHORT_FULL, *TARGET_METHODS)
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


# ----------------------------------------------------------------------------- statistics
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


# ----------------------------------------------------------------------------- tables
def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, run length, group, method), compared seed by seed with Full."""
    full = {(r["task"], r["run_epochs"], r["seed"]): r for r in records if r["group"] == "baseline"}
    groups: dict[tuple[str, int, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["task"], r["run_epochs"], r["group"], r["method"])].append(r)
    rows = []
    for (task, run_epochs, group, method), runs in groups.items():
        accuracy = np.array([r["test_accuracy"] for r in runs]) * 100
        baseline = [full[(task, run_epochs, r["seed"])] for r in runs]
        pairs = list(zip(runs, baseline, strict=True))
        diffs = [100 * (r["test_accuracy"] - b["test_accuracy"]) for r, b in pairs]
        time_saved = [1 - r["train_time_s"] / b["train_time_s"] for r, b in pairs]
        cpu_saved = [1 - r["cpu_time_s"] / b["cpu_time_s"] for r, b in pairs]
        # Rounded, and -0.0 made 0.0: a report rebuilt from runs.json prints the same signs.
        mean, low, high = (round(v, 9) + 0.0 for v in paired_interval(diffs))
        is_full = group == "baseline"
        scored = "spearman_mean" in runs[0]
        rows.append(
            {
                "task": task,
                "run_epochs": run_epochs,
                "group": group,
                "method": method,
                "prune_ratio": runs[0]["prune_ratio"],
                "target_saving": runs[0]["target_saving"],
                "seeds": len(runs),
                "accuracy_mean": float(accuracy.mean()),
                "accuracy_std": float(accuracy.std(ddof=1)) if len(runs) > 1 else math.nan,
                "diff_mean_pp": 0.0 if is_full else mean,
                "diff_ci_low_pp": math.nan if is_full else low,
                "diff_ci_high_pp": math.nan if is_full else high,
                "saved_ratio": float(np.mean([r["saved_ratio"] for r in runs])),
                "beyond_well_learned": float(np.mean([r["beyond_well_learned"] for r in runs])),
                "time_saved": float(np.median(time_saved)),
                "cpu_saved": float(np.median(cpu_saved)),
                "train_time_s": float(np.mean([r["train_time_s"] for r in runs])),
                "verdict": "baseline" if is_full else verdict(low, high),
                "spearman_mean": float(np.mean([r["spearman_mean"] for r in runs]))
                if scored
                else math.nan,
                "spearman_last": float(np.mean([r["spearman_by_epoch"][-1] for r in runs]))
                if scored
                else math.nan,
                "overlap50_mean": float(np.mean([r["overlap50_mean"] for r in runs]))
                if scored
                else math.nan,
                "visits_spearman_mean": float(np.mean([r["visits_spearman_mean"] for r in runs]))
                if "visits_spearman_mean" in runs[0]
                else math.nan,
            }
        )
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    group_order = {"baseline": 0, "target": 1, "ratio": 2}
    rows.sort(
        key=lambda r: (r["task"], r["run_epochs"], group_order[r["group"]], order[r["method"]])
    )
    return rows


def summarize_sweep(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (run length, batch size, score, alpha): means over seeds, and Spearman by
    epoch."""
    groups: dict[tuple[int, int, str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        alpha = math.nan if r["score"] == "per-sample" else r["alpha"]
        groups[(r["epochs"], r["batch_size"], r["score"], alpha)].append(r)
    score_order = {"per-sample": 0, "ema": 1, "residual": 2}
    rows = []
    for (epochs, batch_size, score, alpha), runs in sorted(
        groups.items(),
        key=lambda kv: (
            kv[0][0],
            kv[0][1],
            score_order[kv[0][2]],
            -1 if math.isnan(kv[0][3]) else kv[0][3],
        ),
    ):
        by_epoch = np.mean([r["spearman_by_epoch"] for r in runs], axis=0)
        rows.append(
            {
                "epochs": epochs,
                "batch_size": batch_size,
                "score": score,
                "alpha": alpha,
                "eta": round(1.0 - alpha, 6) if score == "residual" else math.nan,
                "seeds": len(runs),
                "spearman_mean": float(np.mean([r["spearman_mean"] for r in runs])),
                "spearman_last": float(by_epoch[-1]),
                "overlap50_mean": float(np.mean([r["overlap50_mean"] for r in runs])),
                "hard_recall_mean": float(np.mean([r["hard_recall_mean"] for r in runs])),
                "spearman_by_epoch": [float(v) for v in by_epoch],
            }
        )
    return rows


def fmt(value: float | None, spec: str = ".2f") -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def score_label(row: dict[str, Any]) -> str:
    if row["score"] == "per-sample":
        return "per-sample loss (reference)"
    if row["score"] == "ema":
        return f"BLS EMA, alpha = {row['alpha']:g}"
    return f"residual, eta = {row['eta']:g}"


def accuracy_table(rows: list[dict[str, Any]], task: str, run_epochs: int, group: str) -> str:
    """Full and the rows of ``group`` for one task and run length."""
    setting = "prune ratio" if group == "ratio" else "saving rule"
    lines = [
        f"| method | {setting} | test acc. % (mean ± std) | Δ vs Full, pp [95% CI] | "
        "sample-steps saved | train time saved (wall / CPU) | verdict | Spearman(score, loss) | "
        "Spearman(score, times trained) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if (
            r["task"] != task
            or r["run_epochs"] != run_epochs
            or r["group"]
            not in (
                "baseline",
                group,
            )
        ):
            continue
        is_full = r["group"] == "baseline"
        diff = (
            "-"
            if is_full
            else (
                f"{r['diff_mean_pp']:+.2f} [{fmt(r['diff_ci_low_pp'], '+.2f')}, "
                f"{fmt(r['diff_ci_high_pp'], '+.2f')}]"
            )
        )
        if is_full:
            rule = "-"
        elif group == "ratio":
            rule = f"{r['prune_ratio']:.1f}"
        elif r["method"] == SHORT_FULL:
            rule = "fewer epochs"
        elif r["method"] == "Static":
            rule = "prune_ratio = t"
        else:
            rule = "target_saving"
        lines.append(
            f"| {r['method']} | {rule} | {r['accuracy_mean']:.2f} ± {fmt(r['accuracy_std'])} | "
            f"{diff} | {100 * r['saved_ratio']:.1f}% | {100 * r['time_saved']:.0f}% / "
            f"{100 * r['cpu_saved']:.0f}% | {r['verdict']} | {fmt(r['spearman_mean'], '+.3f')} | "
            f"{fmt(r['visits_spearman_mean'], '+.3f')} |"
        )
    return "\n".join(lines)


def epochs_table(rows: list[dict[str, Any]], task: str) -> str:
    """Equal-saving verdicts side by side for every run length of ``task``."""
    lengths = sorted({r["run_epochs"] for r in rows if r["task"] == task})
    header = "| method | " + " | ".join(f"{e} epochs: Δ pp [95% CI], verdict, rho" for e in lengths)
    lines = [header + " |", "|---|" + "---|" * len(lengths)]
    methods = [m for m in METHOD_ORDER[1:] if any(r["method"] == m for r in rows)]
    for method in methods:
        cells = []
        for e in lengths:
            match = [
                r
                for r in rows
                if r["task"] == task
                and r["run_epochs"] == e
                and r["group"] == "target"
                and r["method"] == method
            ]
            if not match:
                cells.append("-")
                continue
            r = match[0]
            rho = "" if math.isnan(r["spearman_mean"]) else f", rho {r['spearman_mean']:+.2f}"
            cells.append(
                f"{r['diff_mean_pp']:+.2f} [{fmt(r['diff_ci_low_pp'], '+.2f')}, "
                f"{fmt(r['diff_ci_high_pp'], '+.2f')}], {r['verdict']}{rho}"
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    full = [
        f"{e} epochs: {r['accuracy_mean']:.2f}%"
        for e in lengths
        for r in rows
        if r["task"] == task and r["run_epochs"] == e and r["group"] == "baseline"
    ]
    return "\n".join(lines) + "\n\nFull: " + ", ".join(full) + "."


def longest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sweep rows of the longest run length."""
    most = max((r["epochs"] for r in rows), default=0)
    return [r for r in rows if r["epochs"] == most]


def sweep_table(rows: list[dict[str, Any]], key: str) -> str:
    """Scores as rows, batch sizes as columns (rows of one run length)."""
    batch_sizes = sorted({r["batch_size"] for r in rows})
    header = "| score | " + " | ".join(f"B = {b}" for b in batch_sizes) + " |"
    lines = [header, "|---|" + "---|" * len(batch_sizes)]
    labels = list(dict.fromkeys(score_label(r) for r in rows))
    for label in labels:
        cells = []
        for b in batch_sizes:
            match = [r for r in rows if r["batch_size"] == b and score_label(r) == label]
            spec = "+.3f" if key.startswith("spearman") else ".3f"
            cells.append(fmt(match[0][key], spec) if match else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def by_epoch_table(
    rows: list[dict[str, Any]], batch_size: int, checkpoints: tuple[int, ...]
) -> str:
    """Spearman after epoch k (counted from 1) for every score at one batch size."""
    chosen = [r for r in rows if r["batch_size"] == batch_size]
    epochs = len(chosen[0]["spearman_by_epoch"]) if chosen else 0
    points = [k for k in checkpoints if 1 <= k <= epochs]
    header = "| score | " + " | ".join(f"after {k}" for k in points) + " |"
    lines = [header, "|---|" + "---|" * len(points)]
    for r in chosen:
        cells = [fmt(r["spearman_by_epoch"][k - 1], "+.3f") for k in points]
        lines.append(f"| {score_label(r)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_length_table(rows: list[dict[str, Any]], key: str) -> str:
    """Scores as rows; a column per (batch size, run length)."""
    columns = sorted({(r["batch_size"], r["epochs"]) for r in rows})
    header = "| score | " + " | ".join(f"B = {b}, {e} epochs" for b, e in columns) + " |"
    lines = [header, "|---|" + "---|" * len(columns)]
    for label in dict.fromkeys(score_label(r) for r in rows):
        cells = []
        for b, e in columns:
            match = [
                r
                for r in rows
                if r["batch_size"] == b and r["epochs"] == e and score_label(r) == label
            ]
            cells.append(fmt(match[0][key], "+.3f") if match else "-")
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
    names = []
    panels = sorted({(r["task"], r["run_epochs"]) for r in rows})
    fig, axes = plt.subplots(
        1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False, sharey=False
    )
    for ax, (task, run_epochs) in zip(axes[0], panels, strict=True):
        chosen = [
            r
            for r in rows
            if r["task"] == task and r["run_epochs"] == run_epochs and r["group"] == "target"
        ]
        positions = list(range(len(chosen)))[::-1]
        for y, r in zip(positions, chosen, strict=True):
            low, high = r["diff_ci_low_pp"], r["diff_ci_high_pp"]
            shade = {"lossless": "tab:green", "lossy": "tab:red"}.get(r["verdict"], "tab:orange")
            if not math.isnan(low):
                ax.plot([low, high], [y, y], color=shade, lw=2)
            ax.plot(r["diff_mean_pp"], y, "o", color=shade)
        ax.axvline(0.0, color="black", lw=1)
        ax.axvline(-MARGIN_PP, color="grey", ls="--", lw=1)
        ax.set_yticks(positions, [r["method"] for r in chosen], fontsize=8)
        saving = next((r["target_saving"] for r in chosen if r["target_saving"]), None)
        ax.set_title(f"{task}, {run_epochs} epochs, saving {fmt(saving, '.0%')}", fontsize=9)
        ax.set_xlabel("test accuracy - Full (pp), mean and 95% CI")
    fig.tight_layout()
    fig.savefig(out / "equal_saving.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    names.append("equal_saving.png")
    if sweep:
        sweep = longest(sweep)
        batch_sizes = sorted({r["batch_size"] for r in sweep})
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for b in batch_sizes:
            colour: str | None = None
            for kind, style in (("ema", "o-"), ("residual", "s:")):
                chosen = [r for r in sweep if r["batch_size"] == b and r["score"] == kind]
                for ax, key in zip(axes, ("spearman_mean", "spearman_last"), strict=True):
                    line = ax.plot(
                        [r["alpha"] for r in chosen],
                        [r[key] for r in chosen],
                        style,
                        color=colour,
                        label=f"{'EMA' if kind == 'ema' else 'residual'}, B={b}",
                    )
                    colour = line[0].get_color()
            reference = [r for r in sweep if r["batch_size"] == b and r["score"] == "per-sample"]
            for ax, key in zip(axes, ("spearman_mean", "spearman_last"), strict=True):
                if reference:
                    ax.axhline(reference[0][key], ls="--", color=colour, lw=1)
        axes[0].set_ylabel("Spearman(score, true loss), mean over epochs ≥ 1")
        axes[1].set_ylabel("Spearman(score, true loss), last epoch")
        for ax in axes:
            ax.set_xlabel("alpha (residual: eta = 1 - alpha); dashed: per-sample loss")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "alpha_sweep.png", dpi=110)
        plt.close(fig)
        names.append("alpha_sweep.png")

        fig, axes = plt.subplots(
            1, len(batch_sizes), figsize=(4.5 * len(batch_sizes), 3.8), squeeze=False
        )
        for ax, b in zip(axes[0], batch_sizes, strict=True):
            chosen = [r for r in sweep if r["batch_size"] == b]
            for kind, style in (("per-sample", "k--"), ("ema", "-"), ("residual", ":")):
                of_kind = [r for r in chosen if r["score"] == kind]
                if kind != "per-sample" and of_kind:
                    of_kind = [max(of_kind, key=lambda r: r["spearman_mean"])]
                for r in of_kind:
                    ax.plot(
                        range(1, len(r["spearman_by_epoch"]) + 1),
                        r["spearman_by_epoch"],
                        style,
                        label=score_label(r) + (" (best)" if kind != "per-sample" else ""),
                    )
            ax.set_title(f"B = {b}")
            ax.set_xlabel("epochs trained")
            ax.set_ylabel("Spearman(score, true loss)")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "spearman_by_epoch.png", dpi=110)
        plt.close(fig)
        names.append("spearman_by_epoch.png")
    return names


# ----------------------------------------------------------------------------- report
def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r[k] == v for k, v in match.items())), None)


def findings(rows: list[dict[str, Any]], sweep: list[dict[str, Any]]) -> list[str]:
    """Sentences computed from the numbers (so they stay true when the study is rerun)."""
    lines = []
    for task, run_epochs in sorted({(r["task"], r["run_epochs"]) for r in rows}):
        where = f"**{task}, {run_epochs} epochs**"
        for group in ("target", "ratio"):
            chosen = [
                r
                for r in rows
                if r["task"] == task and r["run_epochs"] == run_epochs and r["group"] == group
            ]
            if not chosen:
                continue
            title = (
                f"at equal saving ({100 * chosen[-1]['target_saving']:.0f}%)"
                if group == "target"
                else f"at prune ratio {chosen[0]['prune_ratio']:g}"
            )
            for verdict_name in ("lossless", "inconclusive", "lossy"):
                hits = [
                    f"{r['method']} ({r['diff_mean_pp']:+.2f} pp, saves "
                    f"{100 * r['saved_ratio']:.0f}%)"
                    for r in chosen
                    if r["verdict"] == verdict_name
                ]
                if hits:
                    lines.append(f"- {where} {title}, {verdict_name}: " + ", ".join(hits) + ".")
        for policy in ("InfoBatch", "SeTa"):
            common = {"task": task, "run_epochs": run_epochs, "group": "target"}
            own = _find(rows, method=policy, **common)
            ema = _find(rows, method=f"BLS_{policy}", **common)
            res = _find(rows, method=f"BLSres_{policy}", **common)
            rand = _find(rows, method="RandomPrune", **common)
            if own and ema:
                text = (
                    f"- {task}, {run_epochs} epochs, {policy} at equal saving: per-sample "
                    f"{own['accuracy_mean']:.2f}% (rho {own['spearman_mean']:+.2f}), BLS EMA "
                    f"{ema['accuracy_mean']:.2f}% (rho {ema['spearman_mean']:+.2f})"
                )
                if res:
                    text += (
                        f", residual {res['accuracy_mean']:.2f}% (rho {res['spearman_mean']:+.2f})"
                    )
                if rand:
                    text += f"; RandomPrune {rand['accuracy_mean']:.2f}%"
                lines.append(text + ".")
    for e, b in sorted({(r["epochs"], r["batch_size"]) for r in sweep}):
        reference = _find(sweep, epochs=e, batch_size=b, score="per-sample")
        text = f"- Sweep, {e} epochs, B={b}:"
        for kind, name, parameter in (("ema", "EMA", "alpha"), ("residual", "residual", "eta")):
            chosen = [
                r for r in sweep if r["epochs"] == e and r["batch_size"] == b and r["score"] == kind
            ]
            if not chosen:
                continue
            best = max(chosen, key=lambda r: r["spearman_mean"])
            last = max(chosen, key=lambda r: r["spearman_last"])
            text += (
                f" best {name} {parameter}={best[parameter]:g} (rho mean "
                f"{best['spearman_mean']:+.3f}; at the last epoch the best is {parameter}="
                f"{last[parameter]:g}, {last['spearman_last']:+.3f});"
            )
        if reference:
            text += (
                f" per-sample {reference['spearman_mean']:+.3f} (last epoch "
                f"{reference['spearman_last']:+.3f})."
            )
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
        else f"_No hand-written reading yet (`{relative}/reading.md`)._\n"
    )
    t = profile.target_saving
    long_profile = profile.name.startswith("long")
    title = (
        "# The long profile: 100 epochs, equal savings, and a residual score"
        if long_profile
        else "# Is it lossless? Results and score diagnostics"
    )
    workers = info.get("jobs", 1)
    parts = [
        title,
        "",
        f"_This page is written by `benchmarks/study.py`; edit `{relative}/reading.md` for the "
        "reading, then rerun (or edit the tables only by rerunning, or rebuild them with "
        "`--report-only`)._",
        "",
    ]
    if not long_profile:
        parts += [
            "The long profile (100-epoch runs, the residual score over 100 epochs): "
            "[results_long.md](results_long.md).",
            "",
        ]
    parts += [
        "## How to reproduce",
        "",
        f"```bash\n{command}\n```",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores (torch threads per run: "
        f"{info['torch_threads']}; {workers} run(s) at a time), torch {info['torch']}, numpy "
        f"{info['numpy']}, Python {info['python']}, {info['platform']}. Run on {info['date']}; "
        f"the whole study took {seconds / 60:.1f} minutes of wall time. Other jobs shared the "
        "cores, so the wall-clock *train time saved* (median over seeds of the paired saving) "
        "is noisy; the CPU-time saving (this thread's CPU time for the whole run, per-epoch "
        "test evaluation included, diagnostics excluded) is steadier; *sample-steps saved* is "
        "exact.",
        "",
        "## Setup",
        "",
        *[
            f"- {task.describe()}; model: "
            + ("SmallCNN (width 8, BatchNorm)" if name == "digits" else "MLP 256-256")
            + f"; {' and '.join(str(e) for e in profile.epochs[name])} epochs, batch "
            f"{profile.batch_size}, one-cycle SGD (peak lr {profile.lr[name]}), as "
            "`bls.app.train` runs it."
            for name, task in tasks.items()
        ],
        f"- **Equal saving.** Every pruning method runs with `RunConfig(target_saving={t:g})` "
        f"(budget-first pruning, [budget.md](budget.md)): each run skips {100 * t:.0f}% of its "
        "sample-steps, the pruning epochs from epoch 1 on (epoch 0 for RandomPrune) each "
        "pruning the same fixed count, so the methods differ only in *which* samples they skip. "
        f"Static has no budget and runs at `prune_ratio={t:g}`, which saves the same. The "
        f"control *{SHORT_FULL}* trains on all data for {1 - t:g} of the epochs (the same "
        "one-cycle schedule, compressed). Delta 0.875; SeTa 10 groups, window 0.5.",
        f"- **Scores.** InfoBatch and SeTa: the per-sample loss. BLS_*: the batch-loss EMA, "
        f"alpha {profile.alpha:g}. BLSres_*: the *residual* batch-loss score "
        f"`s_i <- s_i + eta * (L - mean_j s_j)` over the batch, eta = 1 - alpha = "
        f"{profile.eta:g} (defined in `benchmarks/_score_variants.py`, not in the library; see "
        "the sweep below).",
        f"- {profile.seeds} seeds; seed s gives every method the same initial weights and data "
        "order. Each run length has its own Full baseline.",
        f"- **Lossless rule**: for each seed, d = accuracy(method) - accuracy(Full). With the "
        f"mean of d and its two-sided 95% Student-t confidence interval over the seeds: "
        f"*lossless* if the interval's lower end is ≥ -{MARGIN_PP:g} percentage point "
        f"(non-inferiority at a {MARGIN_PP:g} pp margin); *lossy* if the whole interval is < 0 "
        f"and its lower end < -{MARGIN_PP:g} pp; otherwise *inconclusive* (the seeds disagree "
        "too much to tell).",
        "- *Spearman(score, loss)* (rho): the rank correlation between the handler's scores and "
        "the true per-sample losses (model in eval mode) after each epoch, mean over epochs ≥ 1 "
        "and seeds (`bls.diagnostics.ScoreTracker`). *Spearman(score, times trained)*: the "
        "same correlation with how many times each sample has been trained so far; under "
        "pruning it shows how much of a score is only its sample's visit count (mean over "
        "epochs ≥ 1).",
        "",
        "## Accuracy at equal saving",
        "",
    ]
    for name in tasks:
        for run_epochs in profile.epochs[name]:
            parts += [
                f"### {name}, {run_epochs} epochs",
                "",
                accuracy_table(rows, name, run_epochs, "target"),
                "",
            ]
    if len({e for name in tasks for e in profile.epochs[name]}) > 1:
        parts += ["## Verdicts by run length", ""]
        for name in tasks:
            parts += [f"### {name}", "", epochs_table(rows, name), ""]
    if any(r["group"] == "ratio" for r in rows):
        parts += [
            f"## At prune ratio {profile.prune_ratio:g} (savings differ)",
            "",
            "The setting of the earlier study: the same `prune_ratio` for every method. What "
            "each run saves then depends on how its scores spread, so these rows do **not** "
            "compare methods at equal cost; they show how far apart the savings fall.",
            "",
        ]
        for name in tasks:
            for run_epochs in profile.epochs[name]:
                parts += [
                    f"### {name}, {run_epochs} epochs, prune ratio {profile.prune_ratio:g}",
                    "",
                    accuracy_table(rows, name, run_epochs, "ratio"),
                    "",
                ]
    if sweep:
        last = longest(sweep)
        batch_sizes = sorted({r["batch_size"] for r in last})
        lengths = sorted({r["epochs"] for r in sweep})
        parts += [
            "## How well do batch-loss scores rank samples? (alpha, eta, batch size, epochs)",
            "",
            f"Task {profile.sweep_task}, {' and '.join(str(e) for e in lengths)} epochs, no "
            "pruning (prune ratio 0, so every score sees the same training), "
            f"{profile.sweep_seeds} seed(s). One run per run length, batch size and seed scores "
            "the batch losses with the EMA at every alpha and with the residual rule at "
            "eta = 1 - alpha side by side (`ScorePanel`); a second run records the per-sample "
            "loss as the reference. The per-sample score is each sample's loss during its last "
            "training step, so it reaches +1.000 at the end of a run, where the one-cycle "
            f"learning rate is almost 0. Runs of {lengths[-1]} epochs: Spearman correlation "
            "between the scores and the true per-sample losses, mean over epochs ≥ 1:",
            "",
            sweep_table(last, "spearman_mean"),
            "",
            "Spearman at the last epoch:",
            "",
            sweep_table(last, "spearman_last"),
            "",
            "Jaccard overlap of the 50% lowest-scored samples (the set each score would prune) "
            f"with the 50% lowest true losses, mean over epochs ≥ 1; chance level "
            f"{random_overlap(0.5):.3f}:",
            "",
            sweep_table(last, "overlap50_mean"),
            "",
            "Share of the 10% highest-loss samples that the score also ranks in its top 10% "
            "(`bls.diagnostics.hard_recall`; the samples a policy must keep), mean over epochs "
            "≥ 1; chance 0.100:",
            "",
            sweep_table(last, "hard_recall_mean"),
            "",
        ]
        if len(lengths) > 1:
            parts += [
                "### By run length",
                "",
                "The same scores after runs of each length (each its own one-cycle schedule). "
                "Spearman, mean over epochs ≥ 1:",
                "",
                run_length_table(sweep, "spearman_mean"),
                "",
                "Spearman at the last epoch:",
                "",
                run_length_table(sweep, "spearman_last"),
                "",
            ]
        parts += [
            "### Spearman by epoch",
            "",
            f"Runs of {lengths[-1]} epochs; the correlation after k epochs, mean over seeds.",
            "",
        ]
        for b in batch_sizes:
            parts += [f"B = {b}:", "", by_epoch_table(last, b, profile.checkpoints), ""]
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
