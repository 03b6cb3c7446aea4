"""The detection example (examples/detection/): COCO files, mAP@0.5, batching and a short run.

Every test carries ``@pytest.mark.vision`` and runs in the vision environment
(``scripts/test-vision.sh``); the example run skips where torchvision is missing. The run is a
subprocess, so a native crash fails one test; its recorded ``(indices, loss)`` pairs are
replayed with the independent BLS rule of ``_replay.py``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from _replay import bls_replay
from torch.utils.data import Sampler

pytestmark = pytest.mark.vision

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "detection"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"detection_{name}", EXAMPLE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shapes = _load("shapes")
map50 = _load("map50")
grouping = _load("group_by_aspect_ratio")


# ---------------------------------------------------------------------- COCO files
def test_generated_coco_files_round_trip(tmp_path: Path) -> None:
    root = shapes.write_shapes(tmp_path / "a", 6, 3, seed=1)
    for split, count in (("train", 6), ("val", 3)):
        coco = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
        assert {c["id"]: c["name"] for c in coco["categories"]} == {
            1: "rectangle",
            2: "ellipse",
            3: "triangle",
        }
        assert [image["id"] for image in coco["images"]] == list(range(1, count + 1))
        assert [a["id"] for a in coco["annotations"]] == list(
            range(1, len(coco["annotations"]) + 1)
        )
        dataset = shapes.CocoDetection(root, split)
        assert len(dataset) == count
        for index, info in enumerate(coco["images"]):
            image, target = dataset[index]
            assert image.shape == (3, info["height"], info["width"])
            assert image.dtype == torch.float32 and 0.0 <= image.min() <= image.max() <= 1.0
            objects = [a for a in coco["annotations"] if a["image_id"] == info["id"]]
            assert 1 <= len(objects) <= 3
            expected = torch.tensor(
                [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in objects)]
            )
            assert torch.equal(target["boxes"], expected)
            assert target["labels"].tolist() == [a["category_id"] for a in objects]
            assert target["iscrowd"].tolist() == [0] * len(objects)
            assert (target["area"] > 0).all() and int(target["image_id"]) == info["id"]
            # The boxes hold the drawn shapes: foreground channels are >= 130/255, the
            # background's <= 114/255, so every bright pixel lies in a box, each box has some.
            bright = image.max(dim=0).values >= 0.5
            inside = torch.zeros_like(bright)
            for x1, y1, x2, y2 in expected.long().tolist():
                assert 0 <= x1 < x2 <= info["width"] and 0 <= y1 < y2 <= info["height"]
                assert bright[y1:y2, x1:x2].any()
                inside[y1:y2, x1:x2] = True
            assert not (bright & ~inside).any()
    # Deterministic: the same arguments write the same files.
    again = shapes.write_shapes(tmp_path / "b", 6, 3, seed=1)
    for name in ("instances_train.json", "instances_val.json"):
        assert (root / "annotations" / name).read_text() == (
            again / "annotations" / name
        ).read_text()
    first, second = shapes.CocoDetection(root, "train"), shapes.CocoDetection(again, "train")
    assert all(torch.equal(first[i][0], second[i][0]) for i in range(6))
    assert shapes.matches(root, 6, 3, seed=1, max_objects=3)
    assert not shapes.matches(root, 7, 3, seed=1, max_objects=3)


# ---------------------------------------------------------------------- mAP@0.5
def _pred(
    boxes: list[list[float]], scores: list[float], labels: list[int]
) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def _gt(boxes: list[list[float]], labels: list[int]) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def test_map50_hand_made_cases() -> None:
    mean_ap = map50.mean_average_precision
    gt = _gt([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1])
    # TP (IoU 1), FP (no overlap), TP (IoU 81/119): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    preds = _pred([[0, 0, 10, 10], [50, 50, 60, 60], [21, 21, 31, 31]], [0.9, 0.8, 0.7], [1, 1, 1])
    assert mean_ap([preds], [gt]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # The FP ranked last instead: recall 1 is reached at precision 1.
    preds = _pred([[0, 0, 10, 10], [50, 50, 60, 60], [21, 21, 31, 31]], [0.9, 0.1, 0.7], [1, 1, 1])
    assert mean_ap([preds], [gt]) == pytest.approx(1.0)
    # A duplicate of a matched box is a FP; a class with ground truth and no detection has
    # AP 0; detections of a class without ground truth (label 3) are ignored.
    gt = _gt([[0, 0, 10, 10], [40, 40, 50, 50]], [1, 2])
    preds = _pred([[0, 0, 10, 10], [0, 0, 10, 10], [40, 40, 50, 50]], [0.9, 0.8, 0.99], [1, 1, 3])
    assert mean_ap([preds], [gt]) == pytest.approx((1.0 + 0.0) / 2)
    # IoU exactly 0.5 is a match, just below it is not.
    gt = _gt([[0, 0, 10, 10]], [1])
    assert mean_ap([_pred([[0, 0, 10, 5]], [0.5], [1])], [gt]) == pytest.approx(1.0)
    assert mean_ap([_pred([[0, 0, 10, 4.9]], [0.5], [1])], [gt]) == pytest.approx(0.0)
    # Two images, ranked together: FP (0.9, image 1), TP (0.6, image 0), TP (0.3, image 1);
    # the envelope is 2/3 at both recall steps.
    targets = [_gt([[0, 0, 10, 10]], [1]), _gt([[30, 30, 40, 40]], [1])]
    predictions = [
        _pred([[0, 0, 10, 10]], [0.6], [1]),
        _pred([[0, 0, 5, 5], [30, 30, 40, 40]], [0.9, 0.3], [1, 1]),
    ]
    assert mean_ap(predictions, targets) == pytest.approx(2 / 3)
    # A detection takes the unmatched box it overlaps most (IoU 0.82 over 0.43), so the
    # second detection still finds its own box.
    gt = _gt([[0, 0, 10, 10], [5, 0, 15, 10]], [1, 1])
    preds = _pred([[4, 0, 14, 10], [0, 0, 10, 10]], [0.9, 0.8], [1, 1])
    assert mean_ap([preds], [gt]) == pytest.approx(1.0)
    # No detections at all, and no ground truth at all.
    assert mean_ap([_pred([], [], [])], [gt]) == 0.0
    assert mean_ap([preds], [_gt([], [])]) == 0.0
    with pytest.raises(ValueError, match="predictions: expected one per target image"):
        mean_ap([], [gt])


def test_box_iou_matches_torchvision() -> None:
    ops = pytest.importorskip("torchvision.ops")
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(20, 2, generator=generator) * 50
    sizes = torch.rand(20, 2, generator=generator) * 30 + 1
    boxes = torch.cat([corners, corners + sizes], dim=1)
    torch.testing.assert_close(map50.box_iou(boxes[:8], boxes), ops.box_iou(boxes[:8], boxes))


# ---------------------------------------------------------------------- batching
class _ListSampler(Sampler[int]):
    def __init__(self, order: list[int]) -> None:
        self.order = order

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def test_aspect_ratio_groups_bins() -> None:
    # Edges 2 ** linspace(-1, 1, 7) for k = 3; a ratio on an edge goes to the bin above.
    ratios = [0.4, 0.5, 0.75, 1.0, 4 / 3, 1.9, 2.0, 3.0]
    assert grouping.aspect_ratio_groups(ratios, k=3) == [0, 1, 2, 4, 5, 6, 7, 7]
    assert grouping.aspect_ratio_groups(ratios, k=0) == [0] * 8


def test_grouped_batch_sampler_forms_single_group_batches() -> None:
    group_ids = [0, 1, 0, 1, 1, 0, 2, 1, 0, 1, 2]
    order = [10, 0, 1, 2, 3, 4, 5, 6, 7, 8]
    sampler = grouping.GroupedBatchSampler(_ListSampler(order), group_ids, batch_size=3)
    assert not hasattr(sampler, "drop_last")  # BatchSampler.__init__ is not called
    # Group 1 fills at index 4, group 0 at 5; then 10 // 3 = 3 batches are owed one more, and
    # the fullest partial buffer (group 2: [10, 6]; group 1 holds [7], group 0 [8]) is topped
    # up from the group's own indices.
    assert list(sampler) == [[1, 3, 4], [0, 2, 5], [10, 6, 10]]
    assert len(sampler) == len(order) // 3
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1"):
        grouping.GroupedBatchSampler(_ListSampler(order), group_ids, batch_size=0)


# ---------------------------------------------------------------------- the example
def test_detection_example_short_run(tmp_path: Path) -> None:
    pytest.importorskip("torchvision")
    n, epochs, batch_size, alpha = 24, 3, 4, 0.9
    out = tmp_path / "run"
    command = [
        sys.executable,
        str(EXAMPLE / "train.py"),
        "--output-dir", str(out),
        "--num-train", str(n),
        "--num-val", "8",
        "--epochs", str(epochs),
        "--batch-size", str(batch_size),
        "--alpha", str(alpha),
        "--warmup-iters", "5",
        "--threads", "1",
        "--record-updates",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "loss = sum of the loss dict" in done.stdout
    assert "saved" in done.stdout.splitlines()[-1]
    result = json.loads((out / "results.json").read_text())
    assert (out / "shapes" / "annotations" / "instances_train.json").is_file()

    # Accounting: epoch 0 keeps all (equal scores), epoch 1 prunes, epoch 2 anneals.
    kept = [record["kept"] for record in result["history"]]
    assert [record["pruning"] for record in result["history"]] == [True, True, False]
    assert kept[0] == n and kept[1] < n and kept[2] == n
    assert result["saved_ratio"] == pytest.approx(sum(n - k for k in kept) / (n * epochs))
    for row, record in zip(result["epochs"], result["history"], strict=True):
        assert row["kept"] == record["kept"]
        assert row["batches"] == record["kept"] // batch_size  # the grouped sampler's length
        assert math.isfinite(row["loss"]) and 0.0 <= row["map50"] <= 1.0

    # Every batch went to update() with its own indices: replaying the recorded pairs with the
    # independent BLS rule gives the handler's scores.
    updates = result["updates"]
    assert len(updates) == sum(row["batches"] for row in result["epochs"])
    assert all(len(indices) == batch_size for indices, _ in updates)
    assert all(0 <= i < n for indices, _ in updates for i in indices)
    scores = torch.tensor(result["scores"], dtype=torch.float64)
    assert torch.isfinite(scores).all()
    expected = bls_replay([(indices, loss) for indices, loss in updates], n, alpha)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)
    assert np.unique(np.concatenate([u[0] for u in updates])).size > n // 2


# ---------------------------------------------------------------------- the study
def _load_study() -> ModuleType:
    path = ROOT / "benchmarks" / "detection_study.py"
    spec = importlib.util.spec_from_file_location("detection_study", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(method: str, seed: int, map50: float, batches: int, seconds: float) -> dict:
    return {
        "method": method,
        "seed": seed,
        "map50": map50,
        "saved_ratio": 0.0 if method == "Full" else 0.3,
        "batches": batches,
        "train_seconds": seconds,
        "train_cpu_seconds": seconds,
    }


def test_detection_study_pairs_runs_by_seed() -> None:
    study = _load_study()
    # BLS_InfoBatch - Full per seed: -1, -2, -3 points; RandomPrune - Full: 0, +1, -1.
    full = [0.90, 0.80, 0.85]
    records = [_run("Full", s, m, 48, 100.0) for s, m in enumerate(full)]
    records += [_run("BLS_InfoBatch", s, m - (s + 1) / 100, 34, 80.0) for s, m in enumerate(full)]
    records += [
        _run("RandomPrune", s, m + [0, 1, -1][s] / 100, 33, 70.0) for s, m in enumerate(full)
    ]
    summary = study.summarize(records, [0, 1, 2])
    bls_row, random_row = summary["methods"]["BLS_InfoBatch"], summary["methods"]["RandomPrune"]
    half = 4.303 * 1.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n), sd of [-1, -2, -3] is 1
    assert bls_row["diff_points"] == pytest.approx([-1.0, -2.0, -3.0])
    assert (bls_row["diff_mean"], bls_row["diff_ci_low"], bls_row["diff_ci_high"]) == (
        pytest.approx((-2.0, -2.0 - half, -2.0 + half))
    )
    assert bls_row["verdict"] == "inconclusive"  # low end < -2 points, high end > 0
    assert random_row["diff_mean"] == pytest.approx(0.0)
    assert random_row["verdict"] == "inconclusive"  # sd 1, so the low end is -2.48
    assert summary["methods"]["Full"]["map50_mean_points"] == pytest.approx(85.0)
    assert bls_row["batches_saved"] == pytest.approx(1 - 34 / 48)
    assert random_row["cpu_saved_median"] == pytest.approx(0.3)
    head = summary["bls_vs_random"]
    assert head["diff_points"] == pytest.approx([-1.0, -3.0, -2.0])
    assert head["reading"].startswith("no difference beyond seed noise")


def test_detection_study_tiny_run(tmp_path: Path) -> None:
    pytest.importorskip("torchvision")
    out = tmp_path / "study"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "detection_study.py"),
        "--tiny",
        "--jobs", "2",
        "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=170, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.startswith("reproduce: ")
    data = json.loads((out / "results_detection.json").read_text())
    assert data["config"]["seeds"] == 1 and data["seeds"] == [0]
    runs = {run["method"]: run for run in data["runs"]}
    assert sorted(runs) == ["BLS_InfoBatch", "Full", "RandomPrune"]
    for run in runs.values():
        assert 0.0 <= run["map50"] <= 1.0
        assert len(run["map50_by_epoch"]) == data["config"]["epochs"]
        assert run["train_seconds"] > 0 and run["train_cpu_seconds"] > 0
    assert runs["Full"]["saved_ratio"] == 0.0
    target = data["config"]["target_saving"]
    saved = [runs[m]["saved_ratio"] for m in ("BLS_InfoBatch", "RandomPrune")]
    assert abs(saved[0] - saved[1]) <= 0.02 and all(abs(s - target) <= 0.02 for s in saved)
    # One seed: no interval, so no verdict either way.
    assert data["summary"]["methods"]["BLS_InfoBatch"]["diff_ci_low"] is None
    assert data["summary"]["methods"]["BLS_InfoBatch"]["verdict"] == "inconclusive"

    page = (out / "results_detection.md").read_text().splitlines()
    assert page[0].startswith("# Detection")
    assert data["command"] in page  # the command that reproduces it, in a code block
    assert data["command"].endswith("detection_study.py --tiny --jobs 2 --out " + str(out))
    header = page.index(next(line for line in page if line.startswith("| method |")))
    rows = [line.split(" | ") for line in page[header + 2 : header + 5]]
    assert [row[0] for row in rows] == ["| Full", "| BLS_InfoBatch", "| RandomPrune"]
    assert all(len(row) == 7 for row in rows)
    for row in rows:
        assert 0.0 <= float(row[1].split(" ± ")[0]) <= 100.0
