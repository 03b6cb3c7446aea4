"""Train a torchvision Faster R-CNN on generated shapes with BLS + InfoBatch pruning.

The detection recipe BLS was made for: a detector's loss is a dict of batch-level terms (RPN
objectness and box regression, RoI classification and box regression), each already a mean
over the anchors and RoIs sampled from the whole batch, so there is no per-image loss to score
samples with. BLS scores every image with an EMA of the batch loss of the batches it was in.

Recipe, top to bottom:

1. generate the shapes data set in COCO layout (``shapes.py``; reused when it is there),
2. read it back with a json + PIL loader (no pycocotools),
3. wrap the training split: ``BLS(InfoBatch(train_set, ..., return_indices=True)).proxy()``,
   so every item ``(image, target)`` gains its index as a last slot,
4. batch it by aspect ratio with a ``GroupedBatchSampler`` over ``handler.sampler``, as
   torchvision's detection reference does,
5. train: the loss is the **sum** of the loss dict (the reference's choice), passed to
   ``handler.update(loss, indices=...)``, whose return value is back-propagated,
6. after every epoch compute mAP@0.5 on the val split (``map50.py``) and print it.

``--method`` swaps the handler for the comparison of ``benchmarks/detection_study.py``:
``RandomPrune`` (a uniform subset each pruning epoch) or ``Full`` (no pruning), both scored by
BLS too so that ``update()`` takes the same scalar loss; ``--target-saving`` fixes the share of
sample-steps the run saves (budget-first pruning, ``docs/budget.md``), so two methods can be
compared at an equal saving.

Run ``python examples/detection/train.py --help`` for every flag. Writes ``results.json``
(per-epoch numbers, ``handler.history``, final scores and, with ``--record-updates``, every
``(indices, loss)`` pair given to ``update()``) into ``--output-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from torchvision.models.detection import FasterRCNN, fasterrcnn_mobilenet_v3_large_320_fpn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the example's own modules

from group_by_aspect_ratio import GroupedBatchSampler, aspect_ratio_groups
from map50 import mean_average_precision
from shapes import CATEGORIES, CocoDetection, matches, write_shapes

from bls import BLS, Full, InfoBatch, RandomPrune

METHODS = ("BLS_InfoBatch", "RandomPrune", "Full")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--output-dir", default="results/detection", help="results.json goes here")
    parser.add_argument(
        "--data-dir", default=None, help="the COCO-layout data set (default: OUTPUT_DIR/shapes)"
    )
    parser.add_argument("--num-train", type=int, default=256, help="training images to generate")
    parser.add_argument("--num-val", type=int, default=64, help="validation images to generate")
    parser.add_argument("--max-objects", type=int, default=3, help="shapes per image, at most")
    parser.add_argument(
        "--model",
        choices=["small", "mobilenet_v3_320"],
        default="small",
        help="small: Faster R-CNN on a 4-conv backbone; mobilenet_v3_320: "
        "torchvision's fasterrcnn_mobilenet_v3_large_320_fpn (weights=None)",
    )
    parser.add_argument(
        "--image-size", type=int, default=128, help="detector's min_size and max_size"
    )
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--aspect-ratio-group-factor",
        type=int,
        default=3,
        help="k of aspect_ratio_groups (0: one group)",
    )
    parser.add_argument("--lr", type=float, default=0.02, help="SGD learning rate")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--warmup-iters", type=int, default=50, help="linear warm-up steps")
    parser.add_argument(
        "--lr-drop",
        type=float,
        default=0.75,
        help="the learning rate drops 10x after this share of the epochs",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="BLS_InfoBatch",
        help="the handler: BLS(InfoBatch), BLS(RandomPrune) (scores unused) or BLS(Full) "
        "(nothing pruned)",
    )
    parser.add_argument(
        "--target-saving",
        type=float,
        default=None,
        help="share of sample-steps to save (budget-first pruning; replaces --prune-ratio; "
        "not for Full)",
    )
    parser.add_argument(
        "--prune-ratio",
        type=float,
        default=0.5,
        help="InfoBatch prune_ratio; 0 trains on every sample (the baseline)",
    )
    parser.add_argument("--delta", type=float, default=0.875, help="InfoBatch annealing start")
    parser.add_argument("--alpha", type=float, default=0.9, help="BLS EMA factor")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument(
        "--threads", type=int, default=min(4, os.cpu_count() or 1), help="torch.set_num_threads"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--record-updates",
        action="store_true",
        help="store every update()'s indices and loss in results.json",
    )
    args = parser.parse_args(argv)
    if args.method == "Full" and args.target_saving is not None:
        parser.error(f"--target-saving: Full prunes nothing, got {args.target_saving}")
    return args


def build_handler(args: argparse.Namespace, train_set: CocoDetection) -> Any:
    """The pruning handler of ``--method``, scoring by BLS (the detector has no per-image loss).

    Every method gets ``return_indices=True`` and the run's seed, so its items and its
    ``update(loss, indices=...)`` call are the same; for ``RandomPrune`` and ``Full`` the BLS
    scores are kept but decide nothing.
    """
    common: dict[str, Any] = {"seed": args.seed, "return_indices": True}
    if args.method == "Full":
        handler = Full(train_set, num_epochs=args.epochs, **common)
    else:
        budget = (
            {"target_saving": args.target_saving}
            if args.target_saving is not None
            else {"prune_ratio": args.prune_ratio}
        )
        policy = InfoBatch if args.method == "BLS_InfoBatch" else RandomPrune
        handler = policy(train_set, num_epochs=args.epochs, delta=args.delta, **budget, **common)
    return BLS(handler, alpha=args.alpha).proxy()


def describe(args: argparse.Namespace) -> str:
    """The handler in one phrase, for the report's first line."""
    if args.method == "Full":
        return f"BLS(Full(), alpha={args.alpha}) (nothing pruned)"
    budget = (
        f"target_saving={args.target_saving}"
        if args.target_saving is not None
        else f"prune_ratio={args.prune_ratio}"
    )
    policy = "InfoBatch" if args.method == "BLS_InfoBatch" else "RandomPrune"
    return f"BLS({policy}({budget}, delta={args.delta}), alpha={args.alpha})"


def build_model(name: str, num_classes: int, image_size: int) -> torch.nn.Module:
    """A Faster R-CNN trained from scratch: nothing is downloaded."""
    # Small images hold few objects: fewer proposals and sampled RoIs than the COCO defaults.
    settings: dict[str, Any] = {
        "min_size": image_size,
        "max_size": image_size,
        "rpn_pre_nms_top_n_train": 300,
        "rpn_post_nms_top_n_train": 100,
        "rpn_pre_nms_top_n_test": 150,
        "rpn_post_nms_top_n_test": 50,
        "rpn_batch_size_per_image": 128,
        "box_batch_size_per_image": 64,
        "box_detections_per_img": 20,
    }
    if name == "mobilenet_v3_320":
        return fasterrcnn_mobilenet_v3_large_320_fpn(
            weights=None, weights_backbone=None, num_classes=num_classes, **settings
        )

    def conv(cin: int, cout: int) -> list[torch.nn.Module]:
        return [
            torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            torch.nn.BatchNorm2d(cout),
            torch.nn.ReLU(inplace=True),
        ]

    backbone = torch.nn.Sequential(
        *conv(3, 16), torch.nn.MaxPool2d(2),
        *conv(16, 32), torch.nn.MaxPool2d(2),
        *conv(32, 64), torch.nn.MaxPool2d(2),
        *conv(64, 64),
    )  # fmt: skip
    backbone.out_channels = 64  # type: ignore[assignment]  # what FasterRCNN reads
    return FasterRCNN(
        backbone,
        rpn_anchor_generator=AnchorGenerator(
            sizes=((16, 32, 48),), aspect_ratios=((0.5, 1.0, 2.0),)
        ),
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(64 * 7 * 7, 256),
        box_predictor=FastRCNNPredictor(256, num_classes),
        **settings,
    )


def collate(batch: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """Detection batches stay lists (images differ in size): ``(images, targets[, indices])``."""
    columns = tuple(zip(*batch, strict=True))
    if len(columns) == 3:  # return_indices=True added the index as a last slot
        return list(columns[0]), list(columns[1]), torch.tensor(columns[2], dtype=torch.int64)
    return list(columns[0]), list(columns[1])


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader) -> float:
    model.eval()
    predictions, targets = [], []
    for images, batch_targets in loader:
        predictions.extend(model(images))
        targets.extend(batch_targets)
    model.train()
    return mean_average_precision(predictions, targets, iou_threshold=0.5)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data_dir) if args.data_dir else output_dir / "shapes"

    # 1-2. The data set, in COCO layout, and the loader that reads it back.
    if not matches(data_dir, args.num_train, args.num_val, args.seed, args.max_objects):
        write_shapes(
            data_dir, args.num_train, args.num_val, seed=args.seed, max_objects=args.max_objects
        )
    train_set = CocoDetection(data_dir, "train")
    val_set = CocoDetection(data_dir, "val")

    # 3. BLS + InfoBatch (or --method's handler); every item gains its index as a last slot.
    handler = build_handler(args, train_set)

    # 4. Aspect-ratio batches drawn from the handler's sampler.
    group_ids = aspect_ratio_groups(train_set.aspect_ratios(), k=args.aspect_ratio_group_factor)
    batch_sampler = GroupedBatchSampler(handler.sampler, group_ids, args.batch_size)
    loader = DataLoader(
        handler, batch_sampler=batch_sampler, collate_fn=collate, num_workers=args.workers
    )
    val_loader = DataLoader(val_set, batch_size=8, collate_fn=collate, num_workers=args.workers)

    torch.manual_seed(args.seed)  # the same initial weights whatever the method
    model = build_model(args.model, num_classes=len(CATEGORIES) + 1, image_size=args.image_size)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        parameters, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
    )
    # Per-epoch learning-rate drop: pruned epochs are shorter, so a per-step schedule sized
    # from full epochs would not reach its end (docs/lr-schedules.md).
    drop_epoch = max(1, round(args.lr_drop * args.epochs))
    epoch_schedule = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[drop_epoch], gamma=0.1
    )
    warmup = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, args.warmup_iters))
    )

    print(
        f"{len(train_set)} train / {len(val_set)} val images, groups {sorted(set(group_ids))}, "
        f"model {args.model}, {describe(args)}, loss = sum of the loss dict"
    )
    print(
        f"{'epoch':>5} {'kept':>5} {'batches':>7} {'saved':>6} {'loss':>7} {'mAP@.5':>7} "
        f"{'time':>6}"
    )
    epochs: list[dict[str, Any]] = []
    updates: list[tuple[list[int], float]] = []
    step = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in range(args.epochs):
        # 5. Train one epoch.
        epoch_start = time.perf_counter()
        handler.sampler.set_epoch(epoch)
        model.train()
        loss_sum, batches = 0.0, 0
        for images, targets, indices in loader:
            loss_dict = model(images, targets)
            loss = sum(loss_dict.values())  # a batch-level loss: no per-image form exists
            weighted = handler.update(loss, indices=indices)
            optimizer.zero_grad()
            weighted.backward()
            optimizer.step()
            step += 1
            if step < args.warmup_iters:
                warmup.step()
            loss_sum += float(handler.unweighted_loss)
            batches += 1
            if args.record_updates:
                updates.append((indices.tolist(), float(loss.detach())))
        epoch_schedule.step()

        # 6. Report.
        map50 = evaluate(model, val_loader)
        record = handler.history[-1]
        row = {
            "epoch": epoch,
            "pruning": record["pruning"],
            "kept": record["kept"],
            "batches": batches,
            "saved_ratio": handler.saved_ratio,
            "loss": loss_sum / max(1, batches),
            "map50": map50,
            "seconds": time.perf_counter() - epoch_start,
        }
        epochs.append(row)
        print(
            f"{epoch:>5} {row['kept']:>5} {batches:>7} {row['saved_ratio']:>6.1%} "
            f"{row['loss']:>7.3f} {map50:>7.3f} {row['seconds']:>5.1f}s",
            flush=True,
        )

    handler.end_epoch()
    result: dict[str, Any] = {
        "args": vars(args),
        "dataset_size": len(train_set),
        "epochs": epochs,
        "history": handler.history,
        "saved_ratio": handler.saved_ratio,
        "final_map50": epochs[-1]["map50"],
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
        "batches": sum(row["batches"] for row in epochs),
        "scores": handler.scores.tolist(),
    }
    if args.record_updates:
        result["updates"] = updates
    (output_dir / "results.json").write_text(json.dumps(result, indent=1))
    print(
        f"saved {handler.saved_ratio:.1%} of sample-steps, "
        f"final mAP@0.5 {result['final_map50']:.3f}, "
        f"{result['seconds']:.0f} s; wrote {output_dir / 'results.json'}"
    )
    return result


if __name__ == "__main__":
    main()
