"""Mean average precision at IoU 0.5 (mAP@0.5), small enough to read in one go.

The rule (PASCAL VOC 2010+ style, at one IoU threshold):

1. IoU of boxes ``(x1, y1, x2, y2)`` in continuous coordinates: area is ``(x2-x1)*(y2-y1)``,
   with no ``+1``.
2. Per class, the detections of all images are sorted by score, highest first (ties keep
   their input order: images in order, then detections in order). Each detection, in that
   order, is matched to the ground-truth box of its image and class with the highest IoU
   among those not matched yet; it is a true positive when that IoU is ``>= 0.5`` (the
   box is then matched), otherwise a false positive.
3. Precision and recall after each detection; AP is the area under the precision envelope
   (precision at recall ``r`` replaced by the highest precision at any recall ``>= r``),
   summed over the recall steps: ``AP = sum_k (r_k - r_{k-1}) * envelope_k``.
4. mAP is the mean AP over the classes with at least one ground-truth box. A class with
   ground truth but no detection has AP 0; detections of a class without ground truth are
   ignored. With no ground truth at all, mAP is 0. Crowd annotations are not treated
   specially (the shapes data set has none).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU matrix ``(len(a), len(b))`` of two sets of ``(x1, y1, x2, y2)`` boxes."""
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(dim=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))


def average_precision(tp: Sequence[bool], num_gt: int) -> float:
    """AP from the true-positive flags of detections sorted by score (rule 3)."""
    if num_gt == 0:
        return 0.0
    hits = torch.tensor(tp, dtype=torch.float64)
    true_positives = hits.cumsum(0)
    precision = true_positives / torch.arange(1, len(hits) + 1, dtype=torch.float64)
    recall = true_positives / num_gt
    envelope = precision.flip(0).cummax(0).values.flip(0)
    recall_steps = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64))
    return float((recall_steps * envelope).sum())


def mean_average_precision(
    predictions: Sequence[dict[str, torch.Tensor]],
    targets: Sequence[dict[str, torch.Tensor]],
    iou_threshold: float = 0.5,
) -> float:
    """mAP at ``iou_threshold`` of per-image predictions against per-image targets.

    Args:
        predictions: one dict per image with ``boxes`` ``(n, 4)``, ``scores`` ``(n,)`` and
            ``labels`` ``(n,)`` (what a torchvision detector returns in eval mode).
        targets: one dict per image, in the same order, with ``boxes`` and ``labels``.
        iou_threshold: the IoU a true positive needs (``>=``).

    Returns:
        mAP in ``[0, 1]`` (see the module docstring for the exact rule).
    """
    if len(predictions) != len(targets):
        raise ValueError(
            f"predictions: expected one per target image ({len(targets)}), got {len(predictions)}"
        )
    classes = sorted({int(c) for target in targets for c in target["labels"].tolist()})
    if not classes:
        return 0.0
    aps = []
    for cls in classes:
        gt_boxes = [t["boxes"][t["labels"] == cls].double().cpu() for t in targets]
        num_gt = sum(len(boxes) for boxes in gt_boxes)
        detections = []  # (score, image, box), in image then detection order
        for image, prediction in enumerate(predictions):
            keep = prediction["labels"] == cls
            for score, box in zip(
                prediction["scores"][keep].tolist(), prediction["boxes"][keep], strict=True
            ):
                detections.append((score, image, box.double().cpu()))
        detections.sort(key=lambda d: -d[0])  # stable: ties keep their order
        matched = [torch.zeros(len(boxes), dtype=torch.bool) for boxes in gt_boxes]
        tp = []
        for _, image, box in detections:
            if len(gt_boxes[image]) == 0:
                tp.append(False)
                continue
            iou = box_iou(box[None], gt_boxes[image])[0].masked_fill(matched[image], -1.0)
            best = int(iou.argmax())
            hit = bool(iou[best] >= iou_threshold)
            if hit:
                matched[image][best] = True
            tp.append(hit)
        aps.append(average_precision(tp, num_gt))
    return sum(aps) / len(aps)
