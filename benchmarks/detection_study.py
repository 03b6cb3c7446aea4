"""Detection evidence: Full vs BLS_InfoBatch vs RandomPrune at one equal saving, by mAP@0.5.

Recipe:

1. Generate one shapes data set per seed (``examples/detection/shapes.py``) before any run, so
   parallel runs never write the same files.
2. Run ``examples/detection/train.py`` once per (seed, method), each in its own subprocess with
   one torch thread: ``--method Full``, ``--method BLS_InfoBatch --target-saving t`` and
   ``--method RandomPrune --target-saving t``. Budget-first pruning (``docs/budget.md``) makes
   both pruning methods skip the same share ``t`` of sample-steps, so they differ only in
   *which* images they skip. Seed ``s`` fixes the data set, the initial weights and the
   sampler's seed of all three methods.
3. Read every run's ``results.json``: the final epoch's mAP@0.5 on the validation split (the
   rule of ``examples/detection/map50.py``), the saved share of sample-steps, the batches, the
   wall and CPU time of training and evaluation.
4. Pair every run with the run of the same seed: ``d = mAP(method) - mAP(Full)`` and
   ``d = mAP(BLS_InfoBatch) - mAP(RandomPrune)``, in mAP points (mAP x 100); the mean of ``d``
   and its two-sided 95% Student-t interval over the seeds (``study_report.paired_interval``);
   the verdict of ``study_report.verdict`` at a margin of :data:`MARGIN_POINTS` points.
5. Print the machine and every number; write the page (``--doc``) and the JSON (``--json``).

Run:  ``.venv-vision/bin/python benchmarks/detection_study.py --jobs 2``   (under 25 min, 2 cores)
      ``.venv-vision/bin/python benchmarks/detection_study.py --tiny --out /tmp/det``  (seconds)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "detection"
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(EXAMPLE))

from shapes import matches, write_shapes  # noqa: E402
from study_report import paired_interval, verdict  # noqa: E402

METHODS = ("Full", "BLS_InfoBatch", "RandomPrune")
#: Non-inferiority margin in mAP points (mAP@0.5 x 100). On the 128 validation images (about
#: 250 boxes, some 85 per class) one box more or less found moves a class's AP by about 1.2
#: points and the mAP by about 0.4, so 2 points is five or so boxes. Chosen before the runs.
MARGIN_POINTS = 2.0

#: The study's configuration (``--tiny`` replaces it). Smaller than the example's defaults
#: (256 images, 16 epochs) so that 9 runs fit in about 20 minutes on two shared cores.
DEFAULT = {
    "seeds": 3,
    "num_train": 192,
    "num_val": 128,
    "epochs": 12,
    "batch_size": 4,
    "warmup_iters": 50,
    "target_saving": 0.3,
}
TINY = {
    "seeds": 1,
    "num_train": 20,
    "num_val": 4,
    "epochs": 4,
    "batch_size": 4,
    "warmup_iters": 3,
    "target_saving": 0.3,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--tiny", action="store_true", help="1 seed, 4 epochs, 20 images: a smoke run"
    )
    for key, value in DEFAULT.items():
        kind = float if isinstance(value, float) else int
        parser.add_argument(
            f"--{key.replace('_', '-')}",
            type=kind,
            default=None,
            help=f"(default {value}; --tiny {TINY[key]})",
        )
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, one torch thread each")
    parser.add_argument(
        "--out", default="results/detection_study", help="runs and data sets go here"
    )
    parser.add_argument(
        "--doc",
        default=None,
        help="the results page (default: docs/results_detection.md; --tiny: OUT/...)",
    )
    parser.add_argument(
        "--json", default=None, help="the JSON (default: the page's path with .json)"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild the page and JSON from the runs in OUT and the JSON, without training",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds one run may take")
    args = parser.parse_args(argv)
    profile = TINY if args.tiny else DEFAULT
    for key, value in profile.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.doc is None:
        args.doc = (
            str(Path(args.out) / "results_detection.md")
            if args.tiny
            else str(ROOT / "docs" / "results_detection.md")
        )
    if args.json is None:
        args.json = str(Path(args.doc).with_suffix(".json"))
    if args.jobs < 1:
        parser.error(f"--jobs: expected an integer >= 1, got {args.jobs}")
    return args


def machine() -> dict[str, Any]:
    """CPU model (``lscpu``), cores, load, torch / torchvision / Python versions."""
    cpu = platform.processor() or "unknown CPU"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in lscpu.splitlines()
            if line.startswith("Model name")
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    import torch  # only for the versions: the runs import it in their own processes
    import torchvision

    import bls

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": os.getloadavg()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "bls": str(Path(bls.__file__).parent),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    commit = done.stdout.strip()
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return commit + (" (with uncommitted changes)" if status.stdout.strip() else "")


def train_command(args: argparse.Namespace, method: str, seed: int, out: Path) -> list[str]:
    """The ``train.py`` command line of one run (everything not named stays at its default)."""
    command = [
        sys.executable, str(EXAMPLE / "train.py"),
        "--method", method,
        "--seed", str(seed),
        "--output-dir", str(out / f"{method}-seed{seed}"),
        "--data-dir", str(out / f"shapes-seed{seed}"),
        "--num-train", str(args.num_train),
        "--num-val", str(args.num_val),
        "--epochs", str(args.epochs),
        "--batch-size", str(args.batch_size),
        "--warmup-iters", str(args.warmup_iters),
        "--threads", "1",
    ]  # fmt: skip
    if method != "Full":
        command += ["--target-saving", str(args.target_saving)]
    return command


def read_run(out: Path, method: str, seed: int, process_seconds: float) -> dict[str, Any]:
    """The record of one finished run, from its ``results.json``."""
    result = json.loads((out / f"{method}-seed{seed}" / "results.json").read_text())
    history = result["history"]
    # InfoBatch's re-weighting of the kept well-learned images: |W| / (|W| - pruned from W).
    upweight = []
    for epoch in history:
        from_well_learned = epoch.get("budget_pruned", 0) - epoch.get("beyond_well_learned", 0)
        well_learned = epoch.get("well_learned", 0)
        kept = well_learned - from_well_learned
        upweight.append(well_learned / kept if from_well_learned > 0 and kept > 0 else 1.0)
    return {
        "method": method,
        "seed": seed,
        "map50": result["final_map50"],
        "best_map50": max(row["map50"] for row in result["epochs"]),
        "map50_by_epoch": [row["map50"] for row in result["epochs"]],
        "saved_ratio": result["saved_ratio"],
        "kept_by_epoch": [epoch["kept"] for epoch in history],
        "well_learned_by_epoch": [epoch.get("well_learned") for epoch in history],
        "upweight_by_epoch": upweight,
        "beyond_well_learned": sum(epoch.get("beyond_well_learned", 0) for epoch in history),
        "batches": result["batches"],
        "train_seconds": result["seconds"],
        "train_cpu_seconds": result["cpu_seconds"],
        "process_seconds": process_seconds,
    }


def run_one(args: argparse.Namespace, method: str, seed: int, out: Path) -> dict[str, Any]:
    """Train one (method, seed) in a subprocess and return its record."""
    command = train_command(args, method, seed, out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=args.timeout, check=False
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = done.stdout[-2000:] + "\n" + done.stderr[-4000:]
        raise RuntimeError(f"{method} seed {seed} failed ({done.returncode}):\n{tail}")
    record = read_run(out, method, seed, wall)
    print(
        f"  {method:<13} seed {seed}: mAP@0.5 {record['map50']:.4f} "
        f"(best epoch {record['best_map50']:.4f}), "
        f"saved {record['saved_ratio']:.2%}, {record['batches']} batches, "
        f"{record['train_seconds']:.0f} s wall / {record['train_cpu_seconds']:.0f} s CPU "
        f"({wall:.0f} s with start-up)",
        flush=True,
    )
    return record


def summarize(records: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Per-method means and the paired comparisons (mAP points, 95% t intervals)."""
    by = {(r["method"], r["seed"]): r for r in records}
    methods: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        runs = [by[method, s] for s in seeds]
        maps = [100 * r["map50"] for r in runs]
        row: dict[str, Any] = {
            "map50_mean_points": statistics.fmean(maps),
            "map50_std_points": statistics.stdev(maps) if len(maps) > 1 else math.nan,
            "saved_ratio_mean": statistics.fmean(r["saved_ratio"] for r in runs),
            "batches_saved": statistics.fmean(
                1 - r["batches"] / by["Full", r["seed"]]["batches"] for r in runs
            ),
            "wall_saved_median": statistics.median(
                1 - r["train_seconds"] / by["Full", r["seed"]]["train_seconds"] for r in runs
            ),
            "cpu_saved_median": statistics.median(
                1 - r["train_cpu_seconds"] / by["Full", r["seed"]]["train_cpu_seconds"]
                for r in runs
            ),
        }
        if method != "Full":
            diffs = [100 * (by[method, s]["map50"] - by["Full", s]["map50"]) for s in seeds]
            mean, low, high = paired_interval(diffs)
            row.update(
                diff_points=diffs, diff_mean=mean, diff_ci_low=low, diff_ci_high=high,
                verdict=verdict(low, high, margin=MARGIN_POINTS),
            )  # fmt: skip
        methods[method] = row
    diffs = [100 * (by["BLS_InfoBatch", s]["map50"] - by["RandomPrune", s]["map50"]) for s in seeds]
    mean, low, high = paired_interval(diffs)
    if math.isnan(low):
        reading = "one seed: no interval"
    elif low > 0:
        reading = "BLS_InfoBatch beats RandomPrune (the interval is above 0)"
    elif high < 0:
        reading = "RandomPrune beats BLS_InfoBatch (the interval is below 0)"
    else:
        reading = "no difference beyond seed noise (the interval contains 0)"
    head_to_head = {
        "diff_points": diffs,
        "diff_mean": mean,
        "diff_ci_low": low,
        "diff_ci_high": high,
        "reading": reading,
    }
    return {"methods": methods, "bls_vs_random": head_to_head}


def finite(value: Any) -> Any:
    """``value`` with every NaN float replaced by ``None`` (strict JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    return value


SETUP = """\
## Setup

- **Task**: the detection example (`examples/detection/train.py`, model `small`: torchvision's
  `FasterRCNN` on a 4-conv backbone, trained from scratch) on its generated shapes data set:
  {num_train} training and {num_val} validation images (128x96, 96x128 or 112x112 pixels, one to
  three shapes of three classes), image size 128, {epochs} epochs, batch {batch_size} in
  aspect-ratio groups, SGD lr 0.02 with a {warmup_iters}-step warm-up and a 10x drop after 75% of
  the epochs, loss = the sum of the detector's loss dict; every other flag at the example's
  default. The example's defaults are 256 images and 16 epochs; this is smaller so that the nine
  runs fit in about 20 minutes on two shared cores.
- **Methods**: *Full* (`--method Full`: nothing pruned), *BLS_InfoBatch* and *RandomPrune*
  (`--method ... --target-saving {target_saving}`). Budget-first pruning ([budget.md](budget.md))
  fixes the share of sample-steps each pruning run skips at {saving:.0%}, so the two differ only
  in *which* images they skip. BLS_InfoBatch prunes from epoch 1 on (its scores start equal),
  RandomPrune from epoch 0; both train on everything after delta = 0.875 of the epochs. BLS
  scores every image by an EMA (alpha 0.9) of the summed loss of its batches; RandomPrune and
  Full keep the same scores but do not use them.
- **Seeds**: {num_seeds} ({seed_list}). Seed s fixes the data set, the initial weights and the
  sampler's seed of all three methods, so the runs are compared seed by seed.
- **Metric**: the final epoch's mAP@0.5 on the validation split, by the rule of
  `examples/detection/map50.py` (PASCAL VOC 2010+ style: per class, the detections ranked by
  score are matched greedily to unmatched ground truth at IoU >= 0.5; AP is the area under the
  precision envelope; mAP the mean over the classes with ground truth), in mAP points (x 100).
- **Verdict rule** (the rule of [results.md](results.md), with a margin for mAP): for each seed
  d = mAP(method) - mAP(Full); with the mean of d and its two-sided 95% Student-t interval over
  the seeds: *lossless* if the interval's lower end is >= -{margin:g} mAP points
  (non-inferiority at a {margin:g}-point margin); *lossy* if the whole interval is < 0 and its
  lower end < -{margin:g}; otherwise *inconclusive*. The margin was fixed before the runs: on
  {num_val} validation images, one box more or less found moves the mAP by roughly
  {box_points:.1f} points, so the margin is about {margin_boxes:.0f} boxes.
"""


def points(value: float, sign: bool = True) -> str:
    """A number of mAP points for the page (``n/a`` for NaN)."""
    if math.isnan(value):
        return "n/a"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def interval(row: dict[str, Any]) -> str:
    """``mean [low, high]`` of a paired difference, in points."""
    low, high = points(row["diff_ci_low"]), points(row["diff_ci_high"])
    return f"{points(row['diff_mean'])} [{low}, {high}]"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def write_page(path: Path, data: dict[str, Any]) -> None:
    """The results page: how to reproduce, the setup, the tables (numbers from ``data``)."""
    config, summary, info, seeds = data["config"], data["summary"], data["machine"], data["seeds"]
    by = {(r["method"], r["seed"]): r for r in data["runs"]}
    methods, head = summary["methods"], summary["bls_vs_random"]
    # About 2 boxes per image, a third of them per class; one box is 1/n of its class's recall.
    box_points = 100 / (config["num_val"] * 2 / 3) / 3
    lines = [
        "# Detection: Full vs BLS_InfoBatch vs RandomPrune at equal saving (mAP@0.5)",
        "",
        "_Written by `benchmarks/detection_study.py`; rerun it rather than editing the numbers._ "
        "The example and its reading: [detection.md](detection.md).",
        "",
        "## How to reproduce",
        "",
        "```bash",
        data["command"],
        "```",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores (`lscpu`); one torch thread per run, "
        f"{config['jobs']} run(s) at a time; torch {info['torch']}, torchvision "
        f"{info['torchvision']}, Python {info['python']}, {info['platform']}; commit "
        f"{data['commit']}, bls imported from `{info['bls']}`. Run on {data['date']}; the whole "
        "study took "
        f"{data['wall_minutes']:.1f} minutes of wall time. Load average "
        f"{info['load_average_at_start']:.1f} at the start and {data['load_average_at_end']:.1f} "
        "at the end: other jobs shared the cores, so the wall-clock savings are noisy, the "
        "CPU-time savings steadier, and the sample-steps saved exact. Times are those of "
        "training and the per-epoch evaluation, without start-up and data generation.",
        "",
        SETUP.format(
            **config,
            saving=config["target_saving"],
            num_seeds=len(seeds),
            seed_list=", ".join(map(str, seeds)),
            margin=config["margin_points"],
            box_points=box_points,
            margin_boxes=config["margin_points"] / box_points,
        ),
        "## Results",
        "",
    ]
    rows = []
    for method in METHODS:
        row = methods[method]
        full = method == "Full"
        rows.append(
            [
                method,
                f"{row['map50_mean_points']:.2f} ± {points(row['map50_std_points'], sign=False)}",
                "-" if full else interval(row),
                f"{row['saved_ratio_mean']:.1%}",
                f"{row['batches_saved']:.1%}",
                f"{row['wall_saved_median']:.0%} / {row['cpu_saved_median']:.0%}",
                "baseline" if full else row["verdict"],
            ]
        )
    header = ["method", "mAP@0.5, points (mean ± std)", "Δ vs Full, points [95% CI]"]
    header += ["sample-steps saved", "batches saved", "time saved (wall / CPU, median)", "verdict"]
    lines += table(header, rows)
    lines += [
        "",
        f"**BLS_InfoBatch - RandomPrune**, paired by seed: {interval(head)} mAP points (mean "
        f"[95% CI]): {head['reading']}.",
        "",
        "### Per seed",
        "",
    ]
    rows = []
    for i, seed in enumerate(seeds):
        runs = [by[method, seed] for method in METHODS]
        rows.append(
            [str(seed)]
            + [f"{100 * run['map50']:.2f}" for run in runs]
            + [points(methods[m]["diff_points"][i]) for m in METHODS[1:]]
            + [points(head["diff_points"][i])]
            + [" / ".join(f"{run['saved_ratio']:.2%}" for run in runs[1:])]
            + [" / ".join(f"{run['train_seconds']:.0f}" for run in runs)]
            + [" / ".join(f"{run['train_cpu_seconds']:.0f}" for run in runs)]
        )
    header = ["seed", *(f"{m} mAP" for m in METHODS), "BLS_InfoBatch - Full"]
    header += ["RandomPrune - Full", "BLS_InfoBatch - RandomPrune", "saved (BLS / Random)"]
    header += ["wall s (Full / BLS / Random)", "CPU s (Full / BLS / Random)"]
    lines += table(header, rows)
    lines += ["", "### mAP@0.5 by epoch (mean over seeds, points)", ""]
    rows = []
    for epoch in range(config["epochs"]):
        curve = [
            statistics.fmean(by[m, s]["map50_by_epoch"][epoch] for s in seeds) for m in METHODS
        ]
        rows.append([str(epoch)] + [f"{100 * value:.1f}" for value in curve])
    lines += table(["epoch", *METHODS], rows)
    kept = {method: by[method, seeds[0]]["kept_by_epoch"] for method in METHODS[1:]}
    beyond = [by["BLS_InfoBatch", seed]["beyond_well_learned"] for seed in seeds]
    first = by["BLS_InfoBatch", seeds[0]]
    upweight = ", ".join(
        f"{weight:.1f}x"
        for weight, well_learned in zip(
            first["upweight_by_epoch"], first["well_learned_by_epoch"], strict=True
        )
        if well_learned
    )
    lines += [
        "",
        f"Images kept per epoch (seed {seeds[0]}, of {config['num_train']}): BLS_InfoBatch "
        f"{kept['BLS_InfoBatch']}, RandomPrune {kept['RandomPrune']}. Images BLS_InfoBatch pruned "
        f"beyond its well-learned set (those below the mean score), summed over the epochs, per "
        f"seed: {beyond} (`beyond_well_learned`, [budget.md](budget.md)). InfoBatch up-weights "
        "the well-learned images it keeps by |W| / (|W| - pruned); per pruning epoch (seed "
        f"{seeds[0]}): {upweight}.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def execute(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """Steps 1-2: generate the data sets and train every (seed, method); the run's data."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seeds))
    command = shlex.join(
        [
            os.path.relpath(sys.executable, Path.cwd()),
            "benchmarks/detection_study.py",
            *(argv if argv is not None else sys.argv[1:]),
        ]
    )
    info = machine()
    print(f"reproduce: {command}")
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, torchvision "
        f"{info['torchvision']}, Python {info['python']}, "
        f"load average {info['load_average_at_start']:.1f}"
    )
    config = {key: getattr(args, key) for key in DEFAULT} | {
        "jobs": args.jobs,
        "margin_points": MARGIN_POINTS,
    }
    print("config: " + ", ".join(f"{k}={v}" for k, v in config.items()), flush=True)

    commit = git_commit()  # before the runs: the tree may change while they train
    start = time.perf_counter()
    for seed in seeds:  # 1. before any run, so parallel runs never write the same files
        root = out / f"shapes-seed{seed}"
        if not matches(root, args.num_train, args.num_val, seed, 3):
            write_shapes(root, args.num_train, args.num_val, seed=seed, max_objects=3)
    jobs = [(method, seed) for seed in seeds for method in METHODS]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # 2. each run is its own process
        records = list(pool.map(lambda job: run_one(args, job[0], job[1], out), jobs))
    return {
        "command": command,
        "machine": info,
        "load_average_at_end": os.getloadavg()[0],
        "commit": commit,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_minutes": (time.perf_counter() - start) / 60,
        "config": config,
        "seeds": seeds,
        "metric": "final-epoch mAP@0.5 on the val split, examples/detection/map50.py",
        "runs": records,
    }


def rebuild(args: argparse.Namespace) -> dict[str, Any]:
    """``--report-only``: the data of the earlier study (``--json``), its runs read again."""
    data = json.loads(Path(args.json).read_text())
    data["runs"] = [
        read_run(Path(args.out), run["method"], run["seed"], run["process_seconds"])
        for run in data["runs"]
    ]
    return data


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    data = rebuild(args) if args.report_only else execute(args, argv)
    summary = data["summary"] = summarize(data["runs"], data["seeds"])  # 4.
    for method in METHODS:
        row = summary["methods"][method]
        std = points(row["map50_std_points"], sign=False)
        versus = "" if method == "Full" else f", Δ vs Full {interval(row)}, {row['verdict']}"
        print(
            f"{method:<13} mAP@0.5 {row['map50_mean_points']:.2f} ± {std} points{versus}; saved "
            f"{row['saved_ratio_mean']:.2%} of sample-steps, {row['batches_saved']:.1%} of "
            f"batches, time {row['wall_saved_median']:.0%} wall / {row['cpu_saved_median']:.0%} CPU"
        )
    head = summary["bls_vs_random"]
    print(f"BLS_InfoBatch - RandomPrune: {interval(head)} points: {head['reading']}")
    print(f"the study took {data['wall_minutes']:.1f} min")

    Path(args.json).parent.mkdir(parents=True, exist_ok=True)  # 5.
    Path(args.json).write_text(json.dumps(finite(data), indent=1, allow_nan=False))
    write_page(Path(args.doc), data)
    print(f"wrote {args.doc} and {args.json}")
    return data


if __name__ == "__main__":
    main()
